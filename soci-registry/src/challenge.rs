//! `WWW-Authenticate` parsing (RFC 9110 §11.6.1) for the challenges registries send.

/// One challenge: a scheme (lowercased) and its `name=value` parameters (names lowercased).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Challenge {
    pub(crate) scheme: String,
    pub(crate) params: Vec<(String, String)>,
}

impl Challenge {
    pub(crate) fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

fn is_tchar(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
}

struct Cursor<'a> {
    s: &'a [u8],
    i: usize,
}

impl Cursor<'_> {
    fn skip_ws(&mut self) {
        while self.i < self.s.len() && (self.s[self.i] == b' ' || self.s[self.i] == b'\t') {
            self.i += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn token(&mut self) -> Option<String> {
        let start = self.i;
        while self.i < self.s.len() && is_tchar(self.s[self.i]) {
            self.i += 1;
        }
        (self.i > start).then(|| String::from_utf8_lossy(&self.s[start..self.i]).into_owned())
    }

    /// token68 may end in `=` padding; accepted only where a parameter list is not possible.
    fn token68_tail(&mut self) {
        while self.i < self.s.len() && self.s[self.i] == b'=' {
            self.i += 1;
        }
    }

    fn quoted(&mut self) -> Option<String> {
        // Caller checked the opening quote.
        self.i += 1;
        let mut out = Vec::new();
        while self.i < self.s.len() {
            match self.s[self.i] {
                b'"' => {
                    self.i += 1;
                    return Some(String::from_utf8_lossy(&out).into_owned());
                }
                b'\\' if self.i + 1 < self.s.len() => {
                    out.push(self.s[self.i + 1]);
                    self.i += 2;
                }
                c => {
                    out.push(c);
                    self.i += 1;
                }
            }
        }
        None // unterminated
    }

    /// True if the next thing is `token BWS "="` (not `==`), i.e. an auth-param rather than a new scheme.
    fn at_param(&self) -> bool {
        let mut j = self.i;
        while j < self.s.len() && is_tchar(self.s[j]) {
            j += 1;
        }
        if j == self.i {
            return false;
        }
        while j < self.s.len() && (self.s[j] == b' ' || self.s[j] == b'\t') {
            j += 1;
        }
        j < self.s.len() && self.s[j] == b'=' && self.s.get(j + 1) != Some(&b'=')
    }
}

/// Parses every challenge in one header value. Malformed trailing input ends parsing; what was parsed
/// up to there is returned.
pub(crate) fn parse(header: &str) -> Vec<Challenge> {
    let mut c = Cursor {
        s: header.as_bytes(),
        i: 0,
    };
    let mut out = Vec::new();
    loop {
        c.skip_ws();
        while c.peek() == Some(b',') {
            c.i += 1;
            c.skip_ws();
        }
        let Some(scheme) = c.token() else { break };
        let mut ch = Challenge {
            scheme: scheme.to_ascii_lowercase(),
            params: Vec::new(),
        };
        c.skip_ws();
        if !c.at_param() {
            // token68 or nothing
            if c.token().is_some() {
                c.token68_tail();
            }
            out.push(ch);
            continue;
        }
        loop {
            c.skip_ws();
            if !c.at_param() {
                break;
            }
            let Some(name) = c.token() else { break };
            c.skip_ws();
            c.i += 1; // '=' (checked by at_param)
            c.skip_ws();
            let value = if c.peek() == Some(b'"') {
                match c.quoted() {
                    Some(v) => v,
                    None => {
                        out.push(ch);
                        return out;
                    }
                }
            } else {
                c.token().unwrap_or_default()
            };
            ch.params.push((name.to_ascii_lowercase(), value));
            c.skip_ws();
            if c.peek() == Some(b',') {
                c.i += 1;
                c.skip_ws();
                while c.peek() == Some(b',') {
                    c.i += 1;
                    c.skip_ws();
                }
                continue;
            }
            break;
        }
        out.push(ch);
        if c.i >= c.s.len() {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_hub_bearer() {
        let v = parse(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/ubuntu:pull""#,
        );
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].scheme, "bearer");
        assert_eq!(v[0].param("realm"), Some("https://auth.docker.io/token"));
        assert_eq!(v[0].param("service"), Some("registry.docker.io"));
        assert_eq!(v[0].param("scope"), Some("repository:library/ubuntu:pull"));
    }

    #[test]
    fn multiple_challenges_quotes_and_escapes() {
        let v = parse(
            r#"Basic realm="a, \"b\"", charset=UTF-8 , Bearer realm="https://t/x",scope="repository:a:pull,push", Negotiate abc=="#,
        );
        assert_eq!(v.len(), 3, "{v:?}");
        assert_eq!(v[0].scheme, "basic");
        assert_eq!(v[0].param("realm"), Some(r#"a, "b""#));
        assert_eq!(v[0].param("charset"), Some("UTF-8"));
        assert_eq!(v[1].scheme, "bearer");
        assert_eq!(v[1].param("scope"), Some("repository:a:pull,push"));
        assert_eq!(v[2].scheme, "negotiate");
        assert!(v[2].params.is_empty());
    }

    #[test]
    fn malformed_is_tolerated() {
        assert!(parse("").is_empty());
        assert_eq!(parse("Bearer").len(), 1);
        let v = parse(r#"Bearer realm="unterminated"#);
        assert_eq!(v.len(), 1);
        assert!(v[0].params.is_empty());
        let v = parse("Basic realm = x , ,");
        assert_eq!(v[0].param("realm"), Some("x"));
    }
}
