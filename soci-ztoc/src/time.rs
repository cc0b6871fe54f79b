//! `mod_time` text: RFC 3339 with trailing fractional zeros trimmed (Go's `RFC3339Nano`).

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Formats seconds + nanoseconds since the epoch as UTC RFC 3339. Years outside 0..=9999 give
/// an empty string, as the reference producer writes.
pub(crate) fn format_rfc3339(secs: i64, nanos: u32) -> String {
    let Ok(t) = OffsetDateTime::from_unix_timestamp_nanos(
        i128::from(secs) * 1_000_000_000 + i128::from(nanos),
    ) else {
        return String::new();
    };
    if !(0..=9999).contains(&t.year()) {
        return String::new();
    }
    let mut s = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    );
    let ns = t.nanosecond();
    if ns != 0 {
        let frac = format!("{ns:09}");
        s.push('.');
        s.push_str(frac.trim_end_matches('0'));
    }
    s.push('Z');
    s
}

/// Parses RFC 3339 text with any offset into (seconds, nanoseconds) since the epoch.
pub(crate) fn parse_rfc3339(s: &str) -> Option<(i64, u32)> {
    let t = OffsetDateTime::parse(s, &Rfc3339).ok()?;
    Some((t.unix_timestamp(), t.nanosecond()))
}

/// Parses a PAX time value (`[+-]seconds[.fraction]`, as Go's `archive/tar` accepts it) into
/// (seconds, nanoseconds), rounding the fraction down to nanoseconds. Negative times are
/// normalised so nanoseconds are positive.
pub(crate) fn parse_pax_time(v: &[u8]) -> Option<(i64, u32)> {
    let s = std::str::from_utf8(v).ok()?;
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    // The seconds are required; the fraction is digits only and may be empty.
    let secs: i64 = whole.parse().ok()?;
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut nanos: u32 = 0;
    for (i, d) in frac.bytes().take(9).enumerate() {
        nanos += u32::from(d - b'0') * 10u32.pow(8 - i as u32);
    }
    if whole.starts_with('-') && nanos != 0 {
        Some((secs.checked_sub(1)?, 1_000_000_000 - nanos))
    } else {
        Some((secs, nanos))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_go_rfc3339nano() {
        assert_eq!(format_rfc3339(0, 0), "1970-01-01T00:00:00Z");
        assert_eq!(format_rfc3339(1677661200, 0), "2023-03-01T09:00:00Z");
        assert_eq!(
            format_rfc3339(1677661200, 500_000_000),
            "2023-03-01T09:00:00.5Z"
        );
        assert_eq!(
            format_rfc3339(1677661200, 123_456_789),
            "2023-03-01T09:00:00.123456789Z"
        );
        assert_eq!(
            format_rfc3339(1677661200, 1_000),
            "2023-03-01T09:00:00.000001Z"
        );
        assert_eq!(format_rfc3339(-1, 0), "1969-12-31T23:59:59Z");
        // Years outside 0..=9999 cannot be written as RFC 3339: empty, like the reference.
        assert_eq!(format_rfc3339(253_402_300_799, 0), "9999-12-31T23:59:59Z");
        assert_eq!(format_rfc3339(253_402_300_800, 0), "");
        assert_eq!(format_rfc3339(-62_167_219_200, 0), "0000-01-01T00:00:00Z");
        assert_eq!(format_rfc3339(-62_167_219_201, 0), "");
        assert_eq!(format_rfc3339(i64::MAX, 0), "");
        assert_eq!(format_rfc3339(i64::MIN, 0), "");
    }

    #[test]
    fn parses_any_offset() {
        assert_eq!(
            parse_rfc3339("2023-03-01T10:00:00+01:00"),
            Some((1677661200, 0))
        );
        assert_eq!(
            parse_rfc3339("2023-03-01T09:00:00.5Z"),
            Some((1677661200, 500_000_000))
        );
        assert_eq!(parse_rfc3339(""), None);
    }

    #[test]
    fn pax_times() {
        assert_eq!(
            parse_pax_time(b"1677661200.5"),
            Some((1677661200, 500_000_000))
        );
        assert_eq!(parse_pax_time(b"1677661200"), Some((1677661200, 0)));
        assert_eq!(parse_pax_time(b"-1.25"), Some((-2, 750_000_000)));
        assert_eq!(parse_pax_time(b"1.1234567891"), Some((1, 123_456_789)));
        assert_eq!(parse_pax_time(b"x"), None);
        assert_eq!(parse_pax_time(b""), None);
        assert_eq!(parse_pax_time(b"-0.5"), Some((-1, 500_000_000)));
        assert_eq!(parse_pax_time(b"+5"), Some((5, 0)));
        assert_eq!(parse_pax_time(b"5."), Some((5, 0)));
        // Go's reader requires the seconds and rejects signs in the fraction.
        assert_eq!(parse_pax_time(b".5"), None);
        assert_eq!(parse_pax_time(b"-"), None);
        assert_eq!(parse_pax_time(b"1.-5"), None);
    }
}
