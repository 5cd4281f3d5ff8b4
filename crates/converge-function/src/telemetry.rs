//! Structured logs. On Cloud Run every line is one JSON object in Cloud Logging's
//! format (`severity`, `message`, `time`, and the event's fields, run ids included);
//! locally, readable text.

use std::fmt;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

use crate::env;

/// Installs the global subscriber once; later calls are no-ops (tests call it freely).
pub fn init(service: &str) {
    let filter = EnvFilter::try_from_env(env::LOG).unwrap_or_else(|_| EnvFilter::new("info"));
    let json = match std::env::var(env::LOG_FORMAT).ok().as_deref() {
        Some("json") => true,
        Some("text") => false,
        _ => std::env::var(env::CLOUD_RUN_SERVICE).is_ok(),
    };
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let result = if json {
        builder.event_format(CloudLoggingFormat { service: service.to_owned() }).try_init()
    } else {
        builder.with_target(false).try_init()
    };
    let _ = result;
}

/// One JSON object per event in the shape Cloud Logging parses from stdout/stderr.
struct CloudLoggingFormat {
    service: String,
}

fn severity(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "ERROR",
        Level::WARN => "WARNING",
        Level::INFO => "INFO",
        Level::DEBUG | Level::TRACE => "DEBUG",
    }
}

#[derive(Default)]
struct JsonFields(Map<String, Value>);

impl Visit for JsonFields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), Value::String(value.to_owned()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_owned(), Value::Bool(value));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.insert(field.name().to_owned(), Value::String(format!("{value:?}")));
    }
}

impl<S, N> FormatEvent<S, N> for CloudLoggingFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let mut fields = JsonFields::default();
        event.record(&mut fields);
        let mut line = Map::new();
        line.insert("severity".into(), Value::String(severity(event.metadata().level()).into()));
        line.insert("time".into(), Value::String(chrono_now()));
        let message = fields.0.remove("message").unwrap_or(Value::String(String::new()));
        line.insert("message".into(), message);
        line.insert("service".into(), Value::String(self.service.clone()));
        line.insert("target".into(), Value::String(event.metadata().target().to_owned()));
        // Fields of enclosing spans (run_id, tenant…) so every line of a run carries them.
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                if let Some(stored) = span.extensions().get::<tracing_subscriber::fmt::FormattedFields<N>>() {
                    if !stored.fields.is_empty() {
                        line.insert(span.name().to_owned(), Value::String(stored.fields.to_string()));
                    }
                }
            }
        }
        line.extend(fields.0);
        writeln!(writer, "{}", Value::Object(line))
    }
}

fn chrono_now() -> String {
    use converge_core::Clock;
    converge_core::SystemClock.now().to_rfc3339()
}
