//! HTTP plumbing shared by every Converge function.
//!
//! # Layout
//!
//! - [`env`]: every environment variable Converge reads, in one place.
//! - [`settings`]: [`Settings`] read from the environment, failing fast with the name
//!   of a missing or wrong setting.
//! - [`telemetry`]: tracing setup: human-readable locally, JSON in Cloud Logging's
//!   format on Cloud Run.
//! - [`status`]: the one mapping from error kinds to HTTP statuses.
//! - [`server`]: `listen(address)` (a listen queue sized for Cloud Run's 1,000 concurrent
//!   requests), the health route and `serve(listener, router, shutdown)`.
//! - [`pubsub`]: Pub/Sub messages as Eventarc delivers them (reconciler, nightly ETL).
//! - [`caller_auth`]: who may call an authenticated function (ID-token verifier
//!   configuration from the environment, the local signer).

pub mod caller_auth;
pub mod env;
pub mod pubsub;
pub mod server;
pub mod settings;
pub mod status;
pub mod telemetry;

pub use server::{bind_retrying, health_routes, listen, serve, shutdown_signal, LISTEN_BACKLOG};
pub use settings::{Backend, CloudSettings, Settings, SettingsError};
pub use status::status_for;
