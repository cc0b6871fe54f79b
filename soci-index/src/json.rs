//! JSON encoding and decoding that matches Go's `encoding/json` byte for byte.
//!
//! SOCI indexes are content addressed, and a Go snapshotter re-encodes a fetched index and stores it
//! under the original digest (spec §4.2, §4.8). Our output must therefore be exactly what Go's
//! `json.Marshal` produces for the same value:
//!
//! * compact: no whitespace at all;
//! * struct fields in declaration order (serde derive keeps field order), map keys sorted byte-wise
//!   (all our maps are `BTreeMap<String, _>`, whose order is the byte order of the UTF-8 keys);
//! * strings escaped the way Go escapes them with HTML escaping on (the `json.Marshal` default):
//!   `"` and `\` as `\"` `\\`; `\b` `\f` `\n` `\r` `\t` by name (Go 1.22 and later; older Go wrote
//!   `\u0008` and `\u000c`); every other byte below 0x20 as `\u00xx` with lowercase hex; `<`, `>` and
//!   `&` as `\u003c`, `\u003e`, `\u0026`; U+2028 and U+2029 as `\u2028`, `\u2029`. DEL (0x7f) and all
//!   other characters are written raw.
//!
//! Decoding accepts invalid UTF-8 the way Go does: every byte that is not part of a valid UTF-8
//! sequence becomes U+FFFD before parsing.
//!
//! Known divergences from Go's decoder (all on input Go would not produce): object keys are matched
//! case-sensitively (Go also accepts `"MediaType"` for `mediaType`), a repeated struct field is an
//! error (Go keeps the last one), and a lone UTF-16 surrogate escape such as `"\ud800"` is an error
//! (Go substitutes U+FFFD).

use std::borrow::Cow;
use std::io;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::ser::{CharEscape, Formatter};

use crate::error::{Error, JsonError, Result};

const HEX: &[u8; 16] = b"0123456789abcdef";

/// A `serde_json` formatter that writes compact output with Go's string escaping.
#[derive(Debug, Default, Clone, Copy)]
struct GoFormatter;

impl Formatter for GoFormatter {
    fn write_string_fragment<W>(&mut self, writer: &mut W, fragment: &str) -> io::Result<()>
    where
        W: ?Sized + io::Write,
    {
        // serde_json has already split out `"`, `\` and control characters; what is left to escape
        // are Go's HTML-safe replacements and the two JavaScript line terminators.
        let bytes = fragment.as_bytes();
        let mut start = 0;
        for (i, c) in fragment.char_indices() {
            let escaped: &[u8] = match c {
                '<' => b"\\u003c",
                '>' => b"\\u003e",
                '&' => b"\\u0026",
                '\u{2028}' => b"\\u2028",
                '\u{2029}' => b"\\u2029",
                _ => continue,
            };
            writer.write_all(&bytes[start..i])?;
            writer.write_all(escaped)?;
            start = i + c.len_utf8();
        }
        writer.write_all(&bytes[start..])
    }

    fn write_char_escape<W>(&mut self, writer: &mut W, char_escape: CharEscape) -> io::Result<()>
    where
        W: ?Sized + io::Write,
    {
        let control = |b: u8| {
            [
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0xf)],
            ]
        };
        match char_escape {
            CharEscape::Quote => writer.write_all(b"\\\""),
            CharEscape::ReverseSolidus => writer.write_all(b"\\\\"),
            // Go never escapes '/'; serde_json does not ask for it either, but be exact if it does.
            CharEscape::Solidus => writer.write_all(b"/"),
            CharEscape::Backspace => writer.write_all(b"\\b"),
            CharEscape::FormFeed => writer.write_all(b"\\f"),
            CharEscape::LineFeed => writer.write_all(b"\\n"),
            CharEscape::CarriageReturn => writer.write_all(b"\\r"),
            CharEscape::Tab => writer.write_all(b"\\t"),
            CharEscape::AsciiControl(b) => writer.write_all(&control(b)),
        }
    }
}

/// Serializes `value` exactly as Go's `json.Marshal` would.
///
/// The value's `Serialize` impl must describe it the way the Go struct does (field order,
/// omitted-when-empty fields); every model in this crate does.
///
/// # Errors
///
/// [`Error::Encode`] if the value's `Serialize` impl fails (e.g. a map with non-string keys).
pub fn to_vec<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(256);
    to_writer(&mut out, value)?;
    Ok(out)
}

/// Like [`to_vec`], writing into `writer`.
///
/// # Errors
///
/// [`Error::Encode`] if serialization or the writer fails.
pub fn to_writer<W: io::Write, T: Serialize + ?Sized>(writer: W, value: &T) -> Result<()> {
    let mut ser = serde_json::Serializer::with_formatter(writer, GoFormatter);
    value
        .serialize(&mut ser)
        .map_err(|e| Error::Encode(JsonError(e)))
}

/// Serializes `value` like Go's `json.MarshalIndent(value, prefix, indent)`.
///
/// # Errors
///
/// [`Error::Encode`] if the value cannot be serialized.
pub fn to_vec_indent<T: Serialize + ?Sized>(
    value: &T,
    prefix: &str,
    indent: &str,
) -> Result<Vec<u8>> {
    let compact = to_vec(value)?;
    Ok(indent_valid(&compact, prefix, indent))
}

/// Re-indents a JSON document like Go's `json.Indent`: string contents are copied unchanged, each
/// element goes on its own line starting with `prefix` followed by one `indent` per nesting level,
/// `:` is followed by one space, empty objects and arrays stay `{}` and `[]`, leading whitespace is
/// dropped and trailing whitespace is kept. The first line gets no prefix.
///
/// This is what `soci index info` prints (spec §6.2).
///
/// # Errors
///
/// [`Error::Decode`] if `src` is not a single valid JSON value.
pub fn indent(src: &[u8], prefix: &str, indent: &str) -> Result<Vec<u8>> {
    // Validate first so the token walk below only ever sees well-formed input.
    from_slice_named::<serde::de::IgnoredAny>(src, "JSON document")?;
    Ok(indent_valid(src, prefix, indent))
}

/// The token walk of [`indent`]; `src` must be valid JSON.
fn indent_valid(src: &[u8], prefix: &str, indent: &str) -> Vec<u8> {
    let is_space = |b: u8| matches!(b, b' ' | b'\t' | b'\n' | b'\r');
    let end = src.iter().rposition(|&b| !is_space(b)).map_or(0, |p| p + 1);
    let mut out = Vec::with_capacity(src.len() * 2);
    let mut depth = 0usize;
    // Set after an opening bracket: the newline is written only once we know the container is not
    // empty, so `{}` and `[]` stay compact.
    let mut need_indent = false;
    let newline = |out: &mut Vec<u8>, depth: usize| {
        out.push(b'\n');
        out.extend_from_slice(prefix.as_bytes());
        for _ in 0..depth {
            out.extend_from_slice(indent.as_bytes());
        }
    };
    let mut i = 0;
    while i < end {
        let b = src[i];
        if is_space(b) {
            i += 1;
            continue;
        }
        if need_indent && b != b'}' && b != b']' {
            need_indent = false;
            depth += 1;
            newline(&mut out, depth);
        }
        match b {
            b'"' => {
                let start = i;
                i += 1;
                while i < end && src[i] != b'"' {
                    if src[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
                out.extend_from_slice(&src[start..=i.min(end - 1)]);
            }
            b'{' | b'[' => {
                out.push(b);
                need_indent = true;
            }
            b',' => {
                out.push(b);
                newline(&mut out, depth);
            }
            b':' => out.extend_from_slice(b": "),
            b'}' | b']' => {
                if need_indent {
                    need_indent = false;
                } else {
                    depth = depth.saturating_sub(1);
                    newline(&mut out, depth);
                }
                out.push(b);
            }
            _ => out.push(b),
        }
        i += 1;
    }
    out.extend_from_slice(&src[end..]);
    out
}

/// Deserializes `bytes` with Go's leniency for invalid UTF-8 (see the module docs).
///
/// `what` names the document in the error ("SOCI index", "image manifest", ...).
pub(crate) fn from_slice_named<T: DeserializeOwned>(bytes: &[u8], what: &'static str) -> Result<T> {
    let text = go_lossy_utf8(bytes);
    serde_json::from_str(&text).map_err(|e| Error::Decode {
        what,
        source: JsonError(e),
    })
}

/// Deserializes a JSON document with Go's leniency for invalid UTF-8 (see the module docs).
///
/// # Errors
///
/// [`Error::Decode`] if the document is not valid JSON for `T`.
pub fn from_slice<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    from_slice_named(bytes, "JSON document")
}

/// Replaces every byte that is not part of a valid UTF-8 sequence with U+FFFD, one replacement per
/// byte, as Go's `utf8.DecodeRune` loop does (Rust's `from_utf8_lossy` would merge a truncated
/// sequence into a single replacement).
pub(crate) fn go_lossy_utf8(bytes: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => {
            let mut out = String::with_capacity(bytes.len() + 16);
            let mut rest = bytes;
            while !rest.is_empty() {
                match std::str::from_utf8(rest) {
                    Ok(s) => {
                        out.push_str(s);
                        break;
                    }
                    Err(e) => {
                        let (valid, after) = rest.split_at(e.valid_up_to());
                        // `valid` is valid UTF-8 by construction of `valid_up_to`.
                        out.push_str(std::str::from_utf8(valid).unwrap_or_default());
                        out.push('\u{fffd}');
                        rest = after.get(1..).unwrap_or_default();
                    }
                }
            }
            Cow::Owned(out)
        }
    }
}

/// Encodes raw bytes as a Go JSON string, including the quotes: bytes that are not valid UTF-8
/// become `\ufffd`, one per byte, exactly as Go's encoder coerces invalid strings.
///
/// Useful for names that come from tar headers (zTOC entries), which need not be UTF-8.
#[must_use]
pub fn encode_go_string(bytes: &[u8]) -> Vec<u8> {
    match std::str::from_utf8(bytes) {
        Ok(text) => {
            let mut out = Vec::with_capacity(text.len() + 2);
            // Encoding a `str` into a Vec cannot fail.
            let _ = to_writer(&mut out, text);
            out
        }
        Err(_) => encode_invalid_as_escape(bytes),
    }
}

/// Slow path of [`encode_go_string`] for input with invalid UTF-8.
fn encode_invalid_as_escape(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + 16);
    out.push(b'"');
    let mut rest = bytes;
    while !rest.is_empty() {
        let (valid, invalid_len) = match std::str::from_utf8(rest) {
            Ok(s) => (s, 0),
            Err(e) => {
                let (v, _) = rest.split_at(e.valid_up_to());
                (std::str::from_utf8(v).unwrap_or_default(), 1)
            }
        };
        let mut inner = Vec::with_capacity(valid.len() + 2);
        let _ = to_writer(&mut inner, valid);
        // Strip the quotes serde_json added around the fragment.
        out.extend_from_slice(&inner[1..inner.len() - 1]);
        if invalid_len == 0 {
            break;
        }
        out.extend_from_slice(b"\\ufffd");
        rest = &rest[valid.len() + invalid_len..];
    }
    out.push(b'"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(s: &str) -> String {
        String::from_utf8(to_vec(s).unwrap()).unwrap()
    }

    #[test]
    fn escapes_like_go() {
        assert_eq!(enc("a<b>&c"), r#""a\u003cb\u003e\u0026c""#);
        assert_eq!(enc("\u{2028}x\u{2029}"), r#""\u2028x\u2029""#);
        assert_eq!(enc("\"\\/"), r#""\"\\/""#);
        assert_eq!(enc("\u{8}\u{c}\n\r\t"), r#""\b\f\n\r\t""#);
        assert_eq!(
            enc("\u{0}\u{1}\u{1f}\u{b}"),
            r#""\u0000\u0001\u001f\u000b""#
        );
        assert_eq!(enc("\u{7f}é☃\u{fffd}"), "\"\u{7f}é☃\u{fffd}\"");
    }

    #[test]
    fn invalid_utf8_is_replaced_per_byte() {
        assert_eq!(go_lossy_utf8(b"a\xe2\x82b"), "a\u{fffd}\u{fffd}b");
        assert_eq!(go_lossy_utf8(b"\xff"), "\u{fffd}");
        assert_eq!(
            encode_go_string(b"a\xffb<"),
            br#""a\ufffdb\u003c""#.to_vec()
        );
        assert_eq!(
            encode_go_string(b"\xed\xa0\x80"),
            br#""\ufffd\ufffd\ufffd""#.to_vec()
        );
        assert_eq!(
            encode_go_string("ok\u{fffd}".as_bytes()),
            "\"ok\u{fffd}\"".as_bytes()
        );
    }

    #[test]
    fn indent_matches_go() {
        let src = br#"{"a":[1,{"b":"x:,{"},[],{}],"c":{}} "#;
        let got = indent(src, "", "  ").unwrap();
        let want = "{\n  \"a\": [\n    1,\n    {\n      \"b\": \"x:,{\"\n    },\n    [],\n    {}\n  ],\n  \"c\": {}\n} ";
        assert_eq!(String::from_utf8(got).unwrap(), want);
        let got = indent(b"[1,2]", ">", "\t").unwrap();
        assert_eq!(got, b"[\n>\t1,\n>\t2\n>]");
        assert!(indent(b"{", "", " ").is_err());
    }
}
