//! Detectors as data: declarative specs (or raw SQL per dialect) compiled to one query
//! each over `daily_entity_metrics`, for DuckDB and for BigQuery, and the shipped pack.
//!
//! # Layout
//!
//! - [`vocabulary`]: the entity types and the metric vocabulary per type — the contract
//!   with the nightly ETL that fills `daily_entity_metrics`.
//! - [`spec`]: [`DetectorSpec`] (serde, TOML or JSON) and its validation.
//! - [`compile`]: [`compile()`] → [`CompiledDetector`] (SQL and bound parameters) per
//!   [`Dialect`]; the result columns every detector returns ([`RESULT_COLUMNS`]).
//! - [`message`]: [`DetectorRow`] (one firing entity) and [`render_message`].
//! - [`pack`]: [`Pack`], and the shipped pack embedded from `pack/detectors.toml`.
//! - [`error`]: what can go wrong parsing, validating, compiling and loading.
//!
//! Running the queries and writing opportunities belongs to the detector runner; this
//! crate has no database dependency.

pub mod compile;
pub mod error;
pub mod message;
pub mod pack;
pub mod spec;
pub mod vocabulary;

pub use compile::{compile, CompiledDetector, Dialect, ParamValue, QueryParam, METRICS_TABLE, RESULT_COLUMNS};
pub use error::{CompileError, PackError, ParseError, SpecError, SpecProblem};
pub use message::{render_message, DetectorRow};
pub use pack::{Pack, SHIPPED_PACK_TOML};
pub use spec::{Comparison, DetectorSpec, EntityFilter, Measure, MinVolume, RawSql, Severity, Windows};
pub use vocabulary::{EntityType, MetricDef, VOCABULARY};
