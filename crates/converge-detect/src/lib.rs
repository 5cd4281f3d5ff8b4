//! Detectors as data: declarative specs (or raw SQL per dialect) compiled to one query
//! each over `daily_entity_metrics`, for DuckDB and for BigQuery, and the shipped pack.
//!
//! # Layout
//!
//! - [`vocabulary`]: the entity types and the metric vocabulary per type — the contract
//!   with the nightly ETL that fills `daily_entity_metrics`.
//! - [`spec`]: [`DetectorSpec`] (serde, TOML or JSON) and its validation.
//! - `dialect`: what the compiler and the validation need to know of a dialect beyond
//!   core's [`QueryDialect`](converge_core::QueryDialect) (crate-private).
//! - [`compile`]: [`compile()`] → [`CompiledDetector`] (SQL and bound parameters) per
//!   dialect.
//! - `tested`: the tested form of a declarative detector — weekday-adjusted windows
//!   less known events, a test per measure, Benjamini–Hochberg across entities (its
//!   module documentation is the statistics' reference).
//! - [`message_template`]: the message template — its placeholders, their check, its
//!   rendering and how numbers are written.
//! - [`finding_message`]: [`render_message`], a finding's words: the spec's message
//!   template filled from its result row.
//! - [`pack`]: [`Pack`], and the shipped pack embedded from `pack/detectors.toml`.
//! - [`error`]: what can go wrong parsing, validating, compiling and loading.
//!
//! The dialect, the query parameters, the result row and its columns are core's
//! (`converge_core::findings`: [`QueryDialect`](converge_core::QueryDialect),
//! [`FindingsParam`](converge_core::FindingsParam), [`FindingRow`](converge_core::FindingRow),
//! [`FINDING_COLUMNS`](converge_core::FINDING_COLUMNS)), so a compiled query goes to the
//! warehouse and its rows come back to [`render_message`] as they are.
//!
//! Running the queries and writing opportunities belongs to the detector runner; this
//! crate has no database dependency (core does no I/O).

pub mod compile;
mod dialect;
pub mod error;
pub mod finding_message;
pub mod message_template;
pub mod pack;
pub mod spec;
mod tested;
pub mod vocabulary;

pub use compile::{compile, CompiledDetector};
pub use tested::{decision, test_description, EFFECT_Z};
pub use error::{CompileError, PackError, ParseError, SpecError, SpecProblem};
pub use finding_message::render_message;
pub use pack::{Pack, SHIPPED_PACK_TOML};
pub use spec::{Comparison, DetectorSpec, EntityFilter, Measure, MinVolume, RawSql, Severity, Significance, Windows, DEFAULT_FDR};
pub use vocabulary::{EntityType, MetricDef, VOCABULARY};
