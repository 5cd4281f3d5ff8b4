//! The shipped pack: size, unique ids, every detector compiles for both dialects, runs on
//! DuckDB, and parses as BigQuery SQL offline; golden BigQuery queries.

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;

use common::{date, MetricsDb};
use converge_core::{FindingsParamValue, QueryDialect};
use converge_detect::{compile, CompiledDetector, EntityType, Pack, SHIPPED_PACK_TOML};
use sqlparser::dialect::{BigQueryDialect, DuckDbDialect};
use sqlparser::parser::Parser;

fn as_of() -> chrono::NaiveDate {
    date("2025-03-31")
}

#[test]
fn the_shipped_pack_has_at_least_25_detectors_with_unique_ids_across_the_entity_types() {
    let pack = Pack::shipped().unwrap_or_else(|e| panic!("{e}"));
    assert!(pack.len() >= 25, "{} detectors", pack.len());
    let ids: BTreeSet<&str> = pack.detectors().iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids.len(), pack.len(), "ids are unique");
    let covered: BTreeSet<EntityType> = pack.detectors().iter().map(|s| s.entity_type).collect();
    for entity_type in [
        EntityType::Page,
        EntityType::Campaign,
        EntityType::Email,
        EntityType::FunnelStep,
        EntityType::Device,
        EntityType::TrafficSource,
    ] {
        assert!(covered.contains(&entity_type), "no detector for {entity_type}");
    }
    let raw_in_both: Vec<&str> = pack
        .detectors()
        .iter()
        .filter(|s| s.raw_sql.as_ref().is_some_and(|raw| raw.duckdb.is_some() && raw.bigquery.is_some()))
        .map(|s| s.id.as_str())
        .collect();
    assert!(raw_in_both.len() >= 2, "raw-SQL detectors with both dialects: {raw_in_both:?}");
}

fn compile_all(dialect: QueryDialect, tenant: Option<&str>) -> Vec<CompiledDetector> {
    let pack = Pack::shipped().unwrap();
    pack.detectors()
        .iter()
        .map(|spec| compile(spec, dialect, as_of(), tenant, &converge_core::KnownEvents::default()).unwrap_or_else(|e| panic!("{}: {e}", spec.id)))
        .collect()
}

#[test]
fn every_detector_runs_on_an_empty_duckdb_table_and_returns_nothing() {
    let db = MetricsDb::new();
    for compiled in compile_all(QueryDialect::DuckDb, Some("acme")) {
        let rows = db.run(&compiled).unwrap_or_else(|e| panic!("{}: {e}\n{}", compiled.detector_id, compiled.sql));
        assert!(rows.is_empty(), "{}", compiled.detector_id);
    }
}

#[test]
fn duckdb_queries_parse_and_use_positional_parameters_only() {
    for compiled in compile_all(QueryDialect::DuckDb, None) {
        let id = &compiled.detector_id;
        Parser::parse_sql(&DuckDbDialect {}, &compiled.sql).unwrap_or_else(|e| panic!("{id}: {e}\n{}", compiled.sql));
        assert!(!compiled.sql.contains('@'), "{id}: named parameter in DuckDB SQL");
        for (index, _) in compiled.params.iter().enumerate() {
            assert!(compiled.sql.contains(&format!("${}", index + 1)), "{id}: ${} unused", index + 1);
        }
        assert!(!compiled.sql.contains(&format!("${}", compiled.params.len() + 1)), "{id}: unbound parameter");
    }
}

/// What can be checked of BigQuery SQL without BigQuery: it parses in the BigQuery
/// dialect, every `@name` it reads is a bound parameter and every parameter is read,
/// and no DuckDB-only syntax slipped in.
#[test]
fn bigquery_queries_parse_and_bind_exactly_the_named_parameters_they_use() {
    for compiled in compile_all(QueryDialect::BigQuery, Some("acme")) {
        let id = &compiled.detector_id;
        let statements = Parser::parse_sql(&BigQueryDialect {}, &compiled.sql)
            .unwrap_or_else(|e| panic!("{id}: {e}\n{}", compiled.sql));
        assert_eq!(statements.len(), 1, "{id}: one statement");
        let used = named_parameters(&compiled.sql);
        let bound: BTreeSet<String> = compiled.params.iter().map(|p| p.name.to_string()).collect();
        assert_eq!(used, bound, "{id}: parameters used vs bound");
        for duckdb_only in ["$1", "$2", "quantile_cont", "VARCHAR", "DOUBLE", "::"] {
            assert!(!compiled.sql.contains(duckdb_only), "{id}: {duckdb_only:?} in BigQuery SQL");
        }
        // The BigQuery parameter type each value binds as (converge-bigquery's findings).
        let bigquery_type = |value: &FindingsParamValue| match value {
            FindingsParamValue::Date(_) => "DATE",
            FindingsParamValue::String(_) => "STRING",
        };
        let types: Vec<(&str, &str)> = compiled.params.iter().map(|p| (p.name.as_str(), bigquery_type(&p.value))).collect();
        assert_eq!(&types[..2], [("as_of", "DATE"), ("tenant", "STRING")], "{id}");
    }
}

#[test]
fn the_offline_parse_check_rejects_a_broken_query() {
    // The parse checks above have teeth: the same query with one parenthesis lost fails.
    let pack = Pack::shipped().unwrap();
    let compiled = compile(pack.get("page_slow_load").unwrap(), QueryDialect::BigQuery, as_of(), None, &converge_core::KnownEvents::default()).unwrap();
    let broken = compiled.sql.replacen("),\nsums AS", ",\nsums AS", 1);
    assert_ne!(broken, compiled.sql);
    assert!(Parser::parse_sql(&BigQueryDialect {}, &broken).is_err());
}

fn named_parameters(sql: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = sql;
    while let Some(at) = rest.find('@') {
        let name: String = rest[at + 1..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        names.insert(name);
        rest = &rest[at + 1..];
    }
    names
}

#[test]
fn parameters_carry_the_run_date_and_tenant() {
    let pack = Pack::shipped().unwrap();
    let spec = pack.get("landing_page_entries_drop").unwrap();
    let compiled = compile(spec, QueryDialect::DuckDb, as_of(), Some("acme"), &converge_core::KnownEvents::default()).unwrap();
    let values: Vec<(&str, FindingsParamValue)> = compiled.params.iter().map(|p| (p.name.as_str(), p.value.clone())).collect();
    assert_eq!(
        values,
        [
            ("as_of", FindingsParamValue::Date(as_of())),
            ("tenant", FindingsParamValue::String(Some("acme".into()))),
            ("entity_not_like", FindingsParamValue::String(Some("/blog/%".into()))),
        ]
    );
    let all_tenants = compile(spec, QueryDialect::BigQuery, as_of(), None, &converge_core::KnownEvents::default()).unwrap();
    assert_eq!(all_tenants.params[1].value, FindingsParamValue::String(None));
}

#[test]
fn the_sql_does_not_depend_on_the_run_date_or_tenant() {
    // Both are parameters, so a runner may prepare each query once.
    let pack = Pack::shipped().unwrap();
    for spec in pack.detectors() {
        for dialect in [QueryDialect::DuckDb, QueryDialect::BigQuery] {
            let one = compile(spec, dialect, as_of(), Some("acme"), &converge_core::KnownEvents::default()).unwrap();
            let other = compile(spec, dialect, date("2024-02-29"), None, &converge_core::KnownEvents::default()).unwrap();
            assert_eq!(one.sql, other.sql, "{} on {dialect}", spec.id);
        }
    }
}

/// Golden BigQuery SQL for one detector of each shape; `UPDATE_GOLDEN=1` rewrites them
/// after a deliberate change (review the diff).
#[test]
fn golden_bigquery_queries() {
    let pack = Pack::shipped().unwrap();
    let golden_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut stale = Vec::new();
    for id in [
        "page_conversion_rate_drop",          // ratio, scaled, baseline fraction, recent gate
        "page_slow_load",                     // percentile over the tenant's pages
        "landing_page_entries_drop",          // sum rescaled to the recent window, filter, baseline gate
        "campaign_delivery_stopped",          // drop to zero
        "campaign_spend_without_conversions", // absolute threshold, gate on another metric
        "device_mobile_conversion_gap",       // raw SQL
    ] {
        let spec = pack.get(id).unwrap_or_else(|| panic!("{id} not in the pack"));
        let sql = compile(spec, QueryDialect::BigQuery, as_of(), None, &converge_core::KnownEvents::default()).unwrap().sql + "\n";
        let path = golden_dir.join(format!("{id}.bigquery.sql"));
        if update {
            std::fs::write(&path, &sql).unwrap();
            continue;
        }
        let golden = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (run with UPDATE_GOLDEN=1 to create it)", path.display()));
        if golden != sql {
            stale.push(format!("{id}: expected {}, compiled:\n{sql}", path.display()));
        }
    }
    assert!(stale.is_empty(), "{}", stale.join("\n\n"));
}

#[test]
fn the_pack_file_is_what_the_binary_embeds() {
    let on_disk =
        std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("pack/detectors.toml")).unwrap();
    assert_eq!(on_disk, SHIPPED_PACK_TOML);
}
