//! What every Converge function binary runs on: its settings (every environment
//! variable, read once), serving (listen, health, shutdown), telemetry, caller auth,
//! the one mapping of outcomes to HTTP statuses and the scheduled functions' front.
//!
//! # Layout
//!
//! - [`env`]: every environment variable Converge reads, in one place.
//! - [`settings`]: [`Settings`] read from the environment, failing fast with the name
//!   of a missing or wrong setting.
//! - [`telemetry`]: tracing setup: human-readable locally, JSON in Cloud Logging's
//!   format on Cloud Run.
//! - [`answer`]: the one place a function's answer (done, recorded, refused, or failed
//!   with a core `ErrorKind`) becomes an HTTP status.
//! - [`server`]: `listen(address)` (a listen queue sized for Cloud Run's 1,000 concurrent
//!   requests), the health route and `serve(listener, router, shutdown)`.
//! - [`scheduled`]: the shared front of the scheduled functions (caller auth, body
//!   limit, Scheduler or Pub/Sub trigger, run date and key).
//! - [`pubsub`]: Pub/Sub messages as Eventarc delivers them (reconciler, nightly ETL).
//! - [`caller_auth`]: who may call an authenticated function (ID-token verifier
//!   from the environment, the local signer).
//! - [`start`]: [`StartError`], why a function's `open` failed, step by step.

pub mod answer;
pub mod caller_auth;
pub mod env;
pub mod pubsub;
pub mod scheduled;
pub mod server;
pub mod settings;
pub mod start;
pub mod telemetry;

pub use server::{bind_retrying, health_routes, listen, serve, shutdown_signal, LISTEN_BACKLOG};
pub use settings::{Backend, CloudSettings, Settings, SettingsError};
pub use answer::{status_for, Answer};
pub use start::StartError;
