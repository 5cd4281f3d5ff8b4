//! Structured logs. On Cloud Run every line is one JSON object in Cloud Logging's
//! format (`severity`, `message`, `time`, and the event's fields), carrying the fields
//! of every span it was logged in as its own keys — a run's `run_id` and `kind` come
//! from the run's span (`tracing::info_span!("run", …)`), not from each line — and,
//! when the request brought a W3C `traceparent`, the trace Cloud Logging groups lines
//! by (`logging.googleapis.com/trace`: `projects/PROJECT/traces/TRACE_ID`, with
//! `logging.googleapis.com/spanId`; <https://cloud.google.com/logging/docs/structured-logging>).
//! Locally, readable text.

use std::fmt;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::env;

/// The span field naming the request's trace (a W3C trace id, 32 hex digits), and the
/// one naming its span (`crate::server`'s request span sets both).
pub const TRACE_FIELD: &str = "trace_id";
pub const SPAN_FIELD: &str = "span_id";

/// Installs the global subscriber once; later calls are no-ops (tests call it freely).
pub fn init(service: &str) {
    let filter = EnvFilter::try_from_env(env::LOG).unwrap_or_else(|_| EnvFilter::new("info"));
    let json = match std::env::var(env::LOG_FORMAT).ok().as_deref() {
        Some("json") => true,
        Some("text") => false,
        _ => std::env::var(env::CLOUD_RUN_SERVICE).is_ok(),
    };
    // Err when one is installed already: that one stays.
    if json {
        let _ = cloud_logging(service, std::env::var(env::PROJECT).ok(), std::io::stderr).with(filter).try_init();
    } else {
        let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false).try_init();
    }
}

/// The Cloud Logging subscriber writing to `writer`: `project` makes a request's trace
/// id a trace resource name. [`init`] installs it; tests give it a buffer.
pub fn cloud_logging<W>(service: &str, project: Option<String>, writer: W) -> impl Subscriber + for<'a> LookupSpan<'a> + Send + Sync
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::registry()
        .with(SpanFieldsLayer)
        .with(tracing_subscriber::fmt::layer().event_format(CloudLoggingFormat { service: service.to_owned(), project }).with_writer(writer))
}

/// Lines written in memory, for tests of what is logged: give it to [`cloud_logging`]
/// (it is a `MakeWriter`), then read [`LogBuffer::lines`].
#[derive(Clone, Default)]
pub struct LogBuffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl LogBuffer {
    /// Every line written so far, each parsed as the JSON object it must be.
    pub fn lines(&self) -> Vec<Value> {
        let bytes = self.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
        String::from_utf8_lossy(&bytes).lines().map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not one JSON object ({e}): {line}"))).collect()
    }
}

impl std::io::Write for LogBuffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'w> MakeWriter<'w> for LogBuffer {
    type Writer = LogBuffer;
    fn make_writer(&'w self) -> LogBuffer {
        self.clone()
    }
}

/// Keeps each span's fields as JSON in its extensions, so [`CloudLoggingFormat`] can
/// give them to every line logged inside it, as keys of their own.
struct SpanFieldsLayer;

/// One span's fields.
#[derive(Default)]
struct SpanFields(Map<String, Value>);

impl<S> Layer<S> for SpanFieldsLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = JsonFields::default();
        attrs.record(&mut fields);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(SpanFields(fields.0));
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            let mut extensions = span.extensions_mut();
            let mut fields = JsonFields(extensions.remove::<SpanFields>().map(|f| f.0).unwrap_or_default());
            values.record(&mut fields);
            extensions.insert(SpanFields(fields.0));
        }
    }
}

/// One JSON object per event in the shape Cloud Logging parses from stdout/stderr.
struct CloudLoggingFormat {
    service: String,
    project: Option<String>,
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
        // Fields of enclosing spans (run_id, kind, tenant, the trace…), the innermost
        // winning, so every line of a run carries them without naming them itself.
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                if let Some(stored) = span.extensions().get::<SpanFields>() {
                    line.extend(stored.0.iter().map(|(k, v)| (k.clone(), v.clone())));
                }
            }
        }
        line.extend(fields.0);
        if let Some(Value::String(trace)) = line.remove(TRACE_FIELD) {
            let name = match &self.project {
                Some(project) => format!("projects/{project}/traces/{trace}"),
                None => trace,
            };
            line.insert("logging.googleapis.com/trace".into(), Value::String(name));
        }
        if let Some(span) = line.remove(SPAN_FIELD) {
            line.insert("logging.googleapis.com/spanId".into(), span);
        }
        writeln!(writer, "{}", Value::Object(line))
    }
}

fn chrono_now() -> String {
    use converge_core::Clock;
    converge_core::SystemClock.now().to_rfc3339()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_has_cloud_loggings_fields_its_spans_fields_and_the_trace() {
        let buffer = LogBuffer::default();
        tracing::subscriber::with_default(cloud_logging("reconciler", Some("my-project".into()), buffer.clone()), || {
            let run = tracing::info_span!("run", run_id = "batch-1", kind = "reconcile");
            let _run = run.enter();
            tracing::info!("started");
            let request = tracing::info_span!("request", trace_id = "4bf92f3577b34da6a3ce929d0e0e4736", span_id = "00f067aa0ba902b7");
            let _request = request.enter();
            tracing::warn!(tenant = "acme", silent = 2u64, "silent drift");
        });
        let lines = buffer.lines();
        assert_eq!(lines.len(), 2, "{lines:?}");
        let (first, second) = (&lines[0], &lines[1]);
        assert_eq!((first["severity"].as_str(), first["message"].as_str()), (Some("INFO"), Some("started")));
        assert_eq!((first["run_id"].as_str(), first["kind"].as_str()), (Some("batch-1"), Some("reconcile")), "the run's span gives its id: {first}");
        assert!(first.get("logging.googleapis.com/trace").is_none(), "no trace outside a traced request");
        chrono::DateTime::parse_from_rfc3339(first["time"].as_str().unwrap()).expect("time is RFC 3339");
        assert_eq!(second["severity"], "WARNING");
        assert_eq!((second["tenant"].as_str(), second["silent"].as_u64(), second["run_id"].as_str()), (Some("acme"), Some(2), Some("batch-1")));
        assert_eq!(second["logging.googleapis.com/trace"], "projects/my-project/traces/4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(second["logging.googleapis.com/spanId"], "00f067aa0ba902b7");
        assert!(second.get(TRACE_FIELD).is_none() && second.get(SPAN_FIELD).is_none());
        assert_eq!(second["service"], "reconciler");
    }

    #[test]
    fn a_field_recorded_later_reaches_the_lines_after_it() {
        let buffer = LogBuffer::default();
        tracing::subscriber::with_default(cloud_logging("etl", None, buffer.clone()), || {
            let run = tracing::info_span!("run", run_id = tracing::field::Empty);
            let _run = run.enter();
            tracing::info!("before");
            run.record("run_id", "batch-2");
            tracing::error!("after");
        });
        let lines = buffer.lines();
        assert!(lines[0].get("run_id").is_none());
        assert_eq!((lines[1]["run_id"].as_str(), lines[1]["severity"].as_str()), (Some("batch-2"), Some("ERROR")));
    }
}
