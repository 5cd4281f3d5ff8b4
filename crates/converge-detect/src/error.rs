//! Errors of parsing, validating and compiling detectors. Each says what was expected
//! and what arrived.

use converge_core::QueryDialect;
use crate::vocabulary::EntityType;

/// A spec that parsed but cannot be compiled safely.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("detector {detector:?}: {problem}")]
pub struct SpecError {
    pub detector: String,
    pub problem: SpecProblem,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SpecProblem {
    #[error("id: expected 1 to 64 characters of [a-z0-9_], got {got:?}")]
    InvalidId { got: String },
    #[error("{field}: expected text, got an empty value")]
    Empty { field: &'static str },
    #[error("{field}: metric {got:?} is not in the {entity_type} vocabulary; expected one of: {expected}")]
    UnknownMetric { field: &'static str, entity_type: EntityType, got: String, expected: String },
    #[error("{field}: expected {expected}, got {got}")]
    BadWindow { field: &'static str, expected: &'static str, got: u32 },
    #[error("{field}: expected a number {expected}, got {got}")]
    BadNumber { field: &'static str, expected: &'static str, got: f64 },
    #[error("{field}: expected a value, because {because}")]
    MissingField { field: &'static str, because: &'static str },
    #[error("expected either raw_sql or the declarative fields, got raw_sql together with {declarative_fields}")]
    MixedForms { declarative_fields: String },
    #[error("{field}: expected a LIKE pattern of 1 to 200 characters without control characters, got {got:?}")]
    BadPattern { field: &'static str, got: String },
    #[error("message: expected {expected}, got {got:?}")]
    Template { expected: String, got: String },
    #[error("raw_sql.{dialect}: expected the query to use the parameter {placeholder}, it does not")]
    RawSqlParameter { dialect: QueryDialect, placeholder: &'static str },
}

/// A single spec read from TOML or JSON.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    #[error("detector TOML: {0}")]
    Toml(#[from] toml::de::Error),
    #[error("detector JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error(transparent)]
    Invalid(#[from] SpecError),
}

#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    #[error(transparent)]
    Invalid(#[from] SpecError),
    /// A raw-SQL detector without SQL for the backend: reported, never silently skipped.
    #[error("detector {detector:?} is not runnable on {dialect}: expected raw_sql.{dialect}, the spec has none")]
    NotRunnable { detector: String, dialect: QueryDialect },
}

/// A pack of detectors read from TOML (`[[detector]]` tables) or JSON (an array).
#[derive(Debug, thiserror::Error)]
pub enum PackError {
    #[error("detector pack {source_name}: {error}")]
    Toml { source_name: String, error: toml::de::Error },
    #[error("detector pack {source_name}: {error}")]
    Json { source_name: String, error: serde_json::Error },
    #[error("detector pack {source_name}: expected at least one detector, got none")]
    Empty { source_name: String },
    #[error("detector pack {source_name}: {} invalid detector(s): {}", .errors.len(), join(.errors))]
    Invalid { source_name: String, errors: Vec<SpecError> },
    #[error("detector pack {source_name}: expected unique ids, got {id:?} {count} times")]
    DuplicateId { source_name: String, id: String, count: usize },
}

fn join(errors: &[SpecError]) -> String {
    errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}
