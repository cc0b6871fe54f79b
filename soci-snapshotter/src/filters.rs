//! containerd list filters (`name==x,labels."a.b"==y`), as used by `List`.
//!
//! Grammar: a filter is selectors joined by `,` (all must match); several filters are alternatives
//! (any may match). A selector is a field path (components joined by `.`, each an identifier or a
//! double-quoted string), optionally followed by `==`, `!=` or `~=` and a value (quoted or bare up
//! to the next `,`). A bare field path tests presence. `~=` is a substring match here (containerd
//! uses a regular expression; substring is the common case and avoids a regex engine).

use crate::error::{Error, Result};

#[derive(Debug, Clone, PartialEq)]
enum Op {
    Present,
    Eq(String),
    Ne(String),
    Match(String),
}

#[derive(Debug, Clone, PartialEq)]
struct Selector {
    path: Vec<String>,
    op: Op,
}

/// A parsed filter: selectors that must all match.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter(Vec<Selector>);

/// Something with field paths (`name`, `parent`, `kind`, `labels.<k>`).
pub trait Fields {
    /// The value at `path`, or `None` if absent.
    fn field(&self, path: &[String]) -> Option<String>;
}

impl Filter {
    /// Parses one filter string.
    pub fn parse(s: &str) -> Result<Filter> {
        let mut p = Parser {
            s: s.as_bytes(),
            i: 0,
            src: s,
        };
        let mut sels = Vec::new();
        loop {
            p.skip_ws();
            if p.i >= p.s.len() {
                break;
            }
            sels.push(p.selector()?);
            p.skip_ws();
            if p.i < p.s.len() {
                if p.s[p.i] == b',' {
                    p.i += 1;
                } else {
                    return Err(p.err("expected ','"));
                }
            }
        }
        Ok(Filter(sels))
    }

    /// True when every selector matches.
    pub fn matches(&self, f: &impl Fields) -> bool {
        self.0.iter().all(|sel| {
            let v = f.field(&sel.path);
            match &sel.op {
                Op::Present => v.is_some(),
                Op::Eq(x) => v.as_deref().unwrap_or("") == x && (v.is_some() || x.is_empty()),
                Op::Ne(x) => v.as_deref() != Some(x.as_str()),
                Op::Match(x) => v.map(|v| v.contains(x.as_str())).unwrap_or(false),
            }
        })
    }
}

/// True when `filters` is empty or any filter matches.
pub fn any_match(filters: &[Filter], f: &impl Fields) -> bool {
    filters.is_empty() || filters.iter().any(|x| x.matches(f))
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
    src: &'a str,
}

impl Parser<'_> {
    fn err(&self, what: &str) -> Error {
        Error::InvalidArgument(format!(
            "parse error at {} in filter {:?}: {what}",
            self.i, self.src
        ))
    }

    fn skip_ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }

    fn quoted(&mut self) -> Result<String> {
        let q = self.s[self.i];
        self.i += 1;
        let mut out = Vec::new();
        while self.i < self.s.len() {
            let c = self.s[self.i];
            self.i += 1;
            if c == q {
                return String::from_utf8(out).map_err(|_| self.err("invalid utf-8"));
            }
            if c == b'\\' && self.i < self.s.len() {
                let e = self.s[self.i];
                self.i += 1;
                out.push(match e {
                    b'n' => b'\n',
                    b't' => b'\t',
                    other => other,
                });
            } else {
                out.push(c);
            }
        }
        Err(self.err("unterminated quoted string"))
    }

    fn component(&mut self) -> Result<String> {
        self.skip_ws();
        if self.i < self.s.len() && (self.s[self.i] == b'"' || self.s[self.i] == b'`') {
            return self.quoted();
        }
        let start = self.i;
        while self.i < self.s.len()
            && (self.s[self.i].is_ascii_alphanumeric() || b"_-/".contains(&self.s[self.i]))
        {
            self.i += 1;
        }
        if start == self.i {
            return Err(self.err("expected field name"));
        }
        Ok(self.src[start..self.i].to_string())
    }

    fn value(&mut self) -> Result<String> {
        self.skip_ws();
        if self.i < self.s.len() && (self.s[self.i] == b'"' || self.s[self.i] == b'`') {
            return self.quoted();
        }
        let start = self.i;
        while self.i < self.s.len() && self.s[self.i] != b',' {
            self.i += 1;
        }
        Ok(self.src[start..self.i].trim().to_string())
    }

    fn selector(&mut self) -> Result<Selector> {
        let mut path = vec![self.component()?];
        loop {
            self.skip_ws();
            if self.i < self.s.len() && self.s[self.i] == b'.' {
                self.i += 1;
                path.push(self.component()?);
            } else {
                break;
            }
        }
        self.skip_ws();
        let rest = &self.s[self.i..];
        let op = if rest.starts_with(b"==") {
            self.i += 2;
            Op::Eq(self.value()?)
        } else if rest.starts_with(b"!=") {
            self.i += 2;
            Op::Ne(self.value()?)
        } else if rest.starts_with(b"~=") {
            self.i += 2;
            Op::Match(self.value()?)
        } else {
            Op::Present
        };
        Ok(Selector { path, op })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    struct S {
        name: String,
        parent: String,
        labels: BTreeMap<String, String>,
    }
    impl Fields for S {
        fn field(&self, path: &[String]) -> Option<String> {
            match path.first().map(String::as_str) {
                Some("name") => Some(self.name.clone()),
                Some("parent") => Some(self.parent.clone()),
                Some("labels") => self.labels.get(&path[1..].join(".")).cloned(),
                _ => None,
            }
        }
    }

    #[test]
    fn containerd_remote_snapshot_lookup() {
        let s = S {
            name: "default/3/sha256:abc".into(),
            parent: String::new(),
            labels: [(
                "containerd.io/snapshot.ref".to_string(),
                "sha256:abc".to_string(),
            )]
            .into(),
        };
        let f =
            Filter::parse(r#"labels."containerd.io/snapshot.ref"==sha256:abc,parent=="""#).unwrap();
        assert!(f.matches(&s));
        let f = Filter::parse(r#"labels."containerd.io/snapshot.ref"=="sha256:def""#).unwrap();
        assert!(!f.matches(&s));
        assert!(Filter::parse("labels.\"containerd.io/snapshot.ref\"")
            .unwrap()
            .matches(&s));
        assert!(!Filter::parse("labels.nope").unwrap().matches(&s));
        assert!(Filter::parse("name~=sha256").unwrap().matches(&s));
        assert!(Filter::parse("name!=x").unwrap().matches(&s));
        assert!(Filter::parse("name==\"unterminated").is_err());
    }
}
