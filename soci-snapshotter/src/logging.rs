//! JSON log lines in the reference daemon's shape: one object per line with `level`, `msg`, `time`
//! (RFC 3339, fixed-width nanoseconds, UTC) and the event's fields at top level (spec §5.1).

use std::fmt;

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Formats events as logrus-style JSON.
#[derive(Debug, Default, Clone, Copy)]
pub struct JsonFormat;

struct Collect(serde_json::Map<String, serde_json::Value>);

impl Visit for Collect {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(key(field), serde_json::Value::String(format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0
            .insert(key(field), serde_json::Value::String(value.to_string()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(key(field), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(key(field), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(key(field), value.into());
    }
}

fn key(f: &Field) -> String {
    if f.name() == "message" {
        "msg".into()
    } else {
        f.name().to_string()
    }
}

/// Current UTC time as `2006-01-02T15:04:05.000000000Z`.
pub fn now_rfc3339() -> String {
    rfc3339(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default(),
    )
}

/// Formats a time since the Unix epoch as `2006-01-02T15:04:05.000000000Z`.
pub fn rfc3339(d: std::time::Duration) -> String {
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // civil-from-days (Howard Hinnant's algorithm)
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60,
        d.subsec_nanos()
    )
}

impl<S, N> FormatEvent<S, N> for JsonFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut c = Collect(serde_json::Map::new());
        // Span fields (e.g. the request key) first, so event fields win.
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                if let Some(f) = span
                    .extensions()
                    .get::<tracing_subscriber::fmt::FormattedFields<N>>()
                {
                    if let Ok(serde_json::Value::Object(m)) =
                        serde_json::from_str::<serde_json::Value>(&format!(
                            "{{{}}}",
                            json_fields(f)
                        ))
                    {
                        c.0.extend(m);
                    }
                }
            }
        }
        event.record(&mut c);
        let level = match *event.metadata().level() {
            tracing::Level::TRACE => "trace",
            tracing::Level::DEBUG => "debug",
            tracing::Level::INFO => "info",
            tracing::Level::WARN => "warning",
            tracing::Level::ERROR => "error",
        };
        let mut m = serde_json::Map::new();
        m.insert("level".into(), level.into());
        m.insert("msg".into(), c.0.remove("msg").unwrap_or_else(|| "".into()));
        m.insert("time".into(), now_rfc3339().into());
        m.extend(c.0);
        writeln!(w, "{}", serde_json::Value::Object(m))
    }
}

/// Span fields are formatted by the default formatter as `a=1 b="x y"` (quoted when recorded with
/// `?`); turn them into JSON members (values kept as strings).
fn json_fields(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        while i < b.len() && b[i] == b' ' {
            i += 1;
        }
        let ks = i;
        while i < b.len() && b[i] != b'=' && b[i] != b' ' {
            i += 1;
        }
        if i >= b.len() || b[i] != b'=' {
            continue;
        }
        let key = &s[ks..i];
        i += 1;
        let val = if i < b.len() && b[i] == b'"' {
            let vs = i;
            i += 1;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' {
                    i += 1;
                }
                i += 1;
            }
            i = (i + 1).min(b.len());
            serde_json::from_str::<String>(&s[vs..i])
                .unwrap_or_else(|_| s[vs..i].trim_matches('"').to_string())
        } else {
            let vs = i;
            while i < b.len() && b[i] != b' ' {
                i += 1;
            }
            s[vs..i].to_string()
        };
        out.push(format!(
            "{}:{}",
            serde_json::Value::String(key.into()),
            serde_json::Value::String(val)
        ));
    }
    out.join(",")
}

/// Installs the global subscriber writing JSON lines to stderr at `level`
/// (`trace|debug|info|warn|error|fatal|panic`).
pub fn init(level: &str) -> Result<(), String> {
    let filter = match level {
        "trace" => tracing::level_filters::LevelFilter::TRACE,
        "debug" => tracing::level_filters::LevelFilter::DEBUG,
        "info" => tracing::level_filters::LevelFilter::INFO,
        "warn" | "warning" => tracing::level_filters::LevelFilter::WARN,
        "error" | "fatal" | "panic" => tracing::level_filters::LevelFilter::ERROR,
        other => return Err(format!("invalid log level {other:?}: must be one of trace, debug, info, warn, error, fatal, panic")),
    };
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    // The gRPC/HTTP stack logs every frame at debug; keep it at info unless trace is asked for.
    let quiet = if filter == tracing::level_filters::LevelFilter::TRACE {
        filter
    } else {
        filter.min(tracing::level_filters::LevelFilter::INFO)
    };
    let targets = tracing_subscriber::filter::Targets::new()
        .with_default(filter)
        .with_target("h2", quiet)
        .with_target("hyper", quiet)
        .with_target("hyper_util", quiet)
        .with_target("tower", quiet)
        .with_target("tonic", quiet)
        .with_target("reqwest", quiet)
        .with_target("rustls", quiet);
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .event_format(JsonFormat)
        .with_filter(targets);
    tracing_subscriber::registry()
        .with(layer)
        .try_init()
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn span_fields_with_spaces() {
        let j = super::json_fields(r#"key="default/1/extract-1 sha256:abc" n=3"#);
        let v: serde_json::Value = serde_json::from_str(&format!("{{{j}}}")).unwrap();
        assert_eq!(v["key"], "default/1/extract-1 sha256:abc");
        assert_eq!(v["n"], "3");
    }

    #[test]
    fn time_is_fixed_width() {
        let t = super::now_rfc3339();
        assert_eq!(t.len(), "2006-01-02T15:04:05.000000000Z".len(), "{t}");
        assert!(t.starts_with("20"));
    }
}
