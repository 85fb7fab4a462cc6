//! Log output: every line on stderr starts with an RFC 3339 UTC timestamp to the
//! millisecond; `--log-format json` writes one JSON object per line instead
//! (`timestamp`, `level`, `target`, `message` and the event's fields).

use std::fmt;
use std::io::IsTerminal;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use crate::cli::{Cli, LogFormat};

/// `2026-12-06T12:40:01.123Z`.
pub fn timestamp_millis(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    let millis = t.millisecond();
    let whole = t.replace_nanosecond(0).unwrap_or(t);
    let base = whole
        .format(&Rfc3339)
        .unwrap_or_else(|_| whole.unix_timestamp().to_string());
    // `base` ends in `Z`; put the milliseconds before it.
    match base.strip_suffix('Z') {
        Some(head) => format!("{head}.{millis:03}Z"),
        None => base,
    }
}

/// A time in a message: RFC 3339, UTC, to the second (`2026-12-06T12:40:01Z`).
pub fn to_second(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    let whole = t.replace_nanosecond(0).unwrap_or(t);
    whole
        .format(&Rfc3339)
        .unwrap_or_else(|_| whole.unix_timestamp().to_string())
}

struct MillisUtc;

impl FormatTime for MillisUtc {
    fn format_time(&self, w: &mut Writer<'_>) -> fmt::Result {
        write!(w, "{}", timestamp_millis(OffsetDateTime::now_utc()))
    }
}

pub fn init(cli: &Cli) {
    let default = match (cli.quiet, cli.verbose) {
        (true, _) => "error",
        (false, 0) => "info,hyper=warn,reqwest=warn,rustls=warn,tss_esapi=off",
        (false, 1) => "debug,hyper=info,rustls=info,h2=info",
        _ => "trace",
    };
    let filter =
        EnvFilter::try_from_env("CERTFLEET_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => builder
            .with_target(cli.verbose > 0)
            .with_ansi(std::io::stderr().is_terminal())
            .with_timer(MillisUtc)
            .init(),
        LogFormat::Json => builder.event_format(JsonLines).init(),
    }
}

/// One JSON object per event.
struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let mut fields = JsonFields(serde_json::Map::new());
        event.record(&mut fields);
        let mut object = serde_json::Map::new();
        object.insert(
            "timestamp".into(),
            timestamp_millis(OffsetDateTime::now_utc()).into(),
        );
        object.insert("level".into(), meta.level().as_str().into());
        object.insert("target".into(), meta.target().into());
        for (k, v) in fields.0 {
            object.insert(k, v);
        }
        let line = serde_json::Value::Object(object).to_string();
        writeln!(writer, "{line}")
    }
}

struct JsonFields(serde_json::Map<String, serde_json::Value>);

impl Visit for JsonFields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().to_owned(), format!("{value:?}").into());
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.into());
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_owned(), value.into());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_owned(), value.into());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_owned(), value.into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_to_the_millisecond_and_second() {
        let t = OffsetDateTime::from_unix_timestamp_nanos(1_796_318_055_333_333_334).expect("time");
        assert_eq!(timestamp_millis(t), "2026-12-03T17:14:15.333Z");
        assert_eq!(to_second(t), "2026-12-03T17:14:15Z");
        let whole = OffsetDateTime::from_unix_timestamp(1_796_318_055).expect("time");
        assert_eq!(timestamp_millis(whole), "2026-12-03T17:14:15.000Z");
    }
}
