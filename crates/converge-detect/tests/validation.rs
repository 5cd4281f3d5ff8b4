//! Spec and pack validation: every error says what was expected and what arrived.

use converge_core::QueryDialect;
use converge_detect::{compile, DetectorSpec, Pack, PackError, ParseError, SpecProblem};

const VALID: &str = r#"
id = "cvr_drop"
title = "Conversion rate dropped"
entity_type = "page"
severity = "warning"
message = "{entity_id}: {recent}% from {baseline}%"
measure = { kind = "ratio", numerator = "conversions", denominator = "sessions", scale = 100.0 }
windows = { recent_days = 7, baseline_days = 28 }
comparison = { kind = "below_fraction_of_baseline", fraction = 0.7 }
min_volume = { metric = "sessions", recent = 100 }
"#;

fn invalid(toml_text: &str) -> (SpecProblem, String) {
    match DetectorSpec::from_toml(toml_text) {
        Err(ParseError::Invalid(error)) => {
            let text = error.to_string();
            (error.problem, text)
        }
        other => panic!("expected a validation error, got {other:?}"),
    }
}

fn parse_error(toml_text: &str) -> String {
    match DetectorSpec::from_toml(toml_text) {
        Err(ParseError::Toml(error)) => error.to_string(),
        other => panic!("expected a TOML error, got {other:?}"),
    }
}

#[test]
fn the_valid_spec_is_valid_in_toml_and_json() {
    let from_toml = DetectorSpec::from_toml(VALID).unwrap();
    let json = serde_json::to_string(&from_toml).unwrap();
    let from_json = DetectorSpec::from_json(&json).unwrap();
    assert_eq!(from_toml, from_json);
}

#[test]
fn an_unknown_metric_names_the_vocabulary() {
    let (problem, text) = invalid(&VALID.replace(r#"numerator = "conversions""#, r#"numerator = "conversion""#));
    assert!(matches!(problem, SpecProblem::UnknownMetric { field: "measure.numerator", .. }));
    assert!(text.starts_with("detector \"cvr_drop\": measure.numerator: metric \"conversion\" is not in the page vocabulary; expected one of: sessions, pageviews"), "{text}");
    // A metric of another entity type is unknown too.
    let (_, text) = invalid(&VALID.replace(r#"metric = "sessions""#, r#"metric = "impressions""#));
    assert!(text.contains("min_volume.metric: metric \"impressions\" is not in the page vocabulary"), "{text}");
}

#[test]
fn ids_must_be_safe_identifiers() {
    let (problem, text) = invalid(&VALID.replace(r#"id = "cvr_drop""#, r#"id = "CVR-drop""#));
    assert_eq!(problem, SpecProblem::InvalidId { got: "CVR-drop".into() });
    assert!(text.contains("expected 1 to 64 characters of [a-z0-9_], got \"CVR-drop\""), "{text}");
}

#[test]
fn windows_must_be_positive() {
    let (_, text) = invalid(&VALID.replace("recent_days = 7", "recent_days = 0"));
    assert!(text.contains("windows.recent_days: expected at least 1 day, got 0"), "{text}");
    let (_, text) = invalid(&VALID.replace("baseline_days = 28", "baseline_days = 0"));
    assert!(text.contains("windows.baseline_days: expected at least 1 day, got 0"), "{text}");
    let negative = parse_error(&VALID.replace("recent_days = 7", "recent_days = -7"));
    assert!(negative.contains("recent_days"), "{negative}");
    let (_, text) = invalid(&VALID.replace("baseline_days = 28", "baseline_days = 800"));
    assert!(text.contains("expected at most 730 days in all, got 807"), "{text}");
}

#[test]
fn thresholds_must_be_finite_and_in_range() {
    for (from, to, expected) in [
        ("fraction = 0.7", "fraction = nan", "comparison.fraction: expected a number finite, between 0 and 1"),
        ("fraction = 0.7", "fraction = 1.3", "got 1.3"),
        ("scale = 100.0", "scale = inf", "measure.scale: expected a number finite and greater than 0, got inf"),
        ("recent = 100", "recent = -1", "min_volume.recent: expected a number finite and at least 0, got -1"),
    ] {
        let (problem, text) = invalid(&VALID.replace(from, to));
        assert!(matches!(problem, SpecProblem::BadNumber { .. }), "{to}: {problem:?}");
        assert!(text.contains(expected), "{to}: {text}");
    }
    let above = VALID.replace("below_fraction_of_baseline", "above_fraction_of_baseline");
    let (_, text) = invalid(&above);
    assert!(
        text.contains("expected a number finite and greater than 1 (1.5 = above 150% of the baseline), got 0.7"),
        "{text}"
    );
    let percentile = VALID.replace(
        r#"{ kind = "below_fraction_of_baseline", fraction = 0.7 }"#,
        r#"{ kind = "percentile_above", percentile = 90.0 }"#,
    );
    let (_, text) = invalid(&percentile);
    assert!(text.contains("comparison.percentile: expected a number finite, between 0 and 1 exclusive (0.9 = the 90th percentile), got 90"), "{text}");
    let threshold = VALID.replace(
        r#"{ kind = "below_fraction_of_baseline", fraction = 0.7 }"#,
        r#"{ kind = "absolute_above", threshold = -inf }"#,
    );
    let (_, text) = invalid(&threshold);
    assert!(text.contains("comparison.threshold: expected a number finite, got -inf"), "{text}");
}

#[test]
fn baseline_comparisons_need_a_baseline_window() {
    let (problem, text) =
        invalid(&VALID.replace("windows = { recent_days = 7, baseline_days = 28 }", "windows = { recent_days = 7 }"));
    assert!(matches!(problem, SpecProblem::MissingField { field: "windows.baseline_days", .. }));
    assert!(text.contains("windows.baseline_days: expected a value, because below_fraction_of_baseline compares with the baseline window"), "{text}");
}

#[test]
fn a_declarative_spec_needs_its_parts_and_raw_sql_stands_alone() {
    let (_, text) =
        invalid(&VALID.replace(r#"comparison = { kind = "below_fraction_of_baseline", fraction = 0.7 }"#, ""));
    assert!(
        text.contains(
            "comparison: expected a value, because a declarative detector needs measure, windows and comparison"
        ),
        "{text}"
    );
    let mixed = format!("{VALID}\n[raw_sql]\nduckdb = \"SELECT $1, $2\"\n");
    let (_, text) = invalid(&mixed);
    assert!(text.contains("expected either raw_sql or the declarative fields, got raw_sql together with measure, comparison, min_volume"), "{text}");
}

#[test]
fn raw_sql_must_take_the_run_date_and_tenant() {
    let raw = |duckdb: &str| {
        format!(
            "id = \"raw\"\ntitle = \"Raw\"\nentity_type = \"page\"\nseverity = \"info\"\nmessage = \"{{entity_id}}\"\n[raw_sql]\nduckdb = \"{duckdb}\"\n"
        )
    };
    let (_, text) = invalid(&raw("SELECT * FROM daily_entity_metrics WHERE date = $1"));
    assert!(text.contains("raw_sql.duckdb: expected the query to use the parameter $2, it does not"), "{text}");
    assert!(DetectorSpec::from_toml(&raw("SELECT $1, $2")).is_ok());
    let (_, text) = invalid(
        "id = \"raw\"\ntitle = \"Raw\"\nentity_type = \"page\"\nseverity = \"info\"\nmessage = \"m\"\n[raw_sql]\n",
    );
    assert!(text.contains("raw_sql.duckdb or raw_sql.bigquery: expected a value"), "{text}");
}

#[test]
fn unknown_fields_and_kinds_are_parse_errors_naming_the_alternatives() {
    let typo = parse_error(&VALID.replace("min_volume =", "minimum_volume ="));
    assert!(typo.contains("unknown field `minimum_volume`"), "{typo}");
    assert!(typo.contains("expected one of"), "{typo}");
    let kind = parse_error(&VALID.replace("below_fraction_of_baseline", "below_baseline"));
    assert!(kind.contains("unknown variant `below_baseline`"), "{kind}");
    assert!(kind.contains("below_fraction_of_baseline"), "{kind}");
    let severity = parse_error(&VALID.replace(r#"severity = "warning""#, r#"severity = "high""#));
    assert!(severity.contains("unknown variant `high`, expected one of `info`, `warning`, `critical`"), "{severity}");
    let entity = parse_error(&VALID.replace(r#"entity_type = "page""#, r#"entity_type = "pages""#));
    assert!(entity.contains("unknown variant `pages`"), "{entity}");
}

#[test]
fn message_templates_are_checked_when_the_spec_is_loaded() {
    let (problem, text) = invalid(&VALID.replace("{recent}%", "{recent_value}%"));
    assert!(matches!(problem, SpecProblem::Template { .. }));
    assert!(text.contains("message: expected placeholders among {tenant}"), "{text}");
    assert!(text.contains("got \"{recent_value}\""), "{text}");
}

#[test]
fn compile_refuses_an_invalid_spec() {
    let mut spec = DetectorSpec::from_toml(VALID).unwrap();
    spec.id = "x'; DROP TABLE daily_entity_metrics; --".into();
    let error =
        compile(&spec, QueryDialect::DuckDb, chrono::NaiveDate::from_ymd_opt(2025, 1, 1).unwrap(), None, &converge_core::KnownEvents::default()).unwrap_err();
    assert!(error.to_string().contains("id: expected 1 to 64 characters of [a-z0-9_]"), "{error}");
}

#[test]
fn packs_report_every_invalid_detector_and_duplicate_ids() {
    let detector = |id: &str, metric: &str| {
        VALID
            .replace(r#"id = "cvr_drop""#, &format!(r#"id = "{id}""#))
            .replace(r#"numerator = "conversions""#, &format!(r#"numerator = "{metric}""#))
    };
    let as_pack = |specs: &[String]| specs.iter().map(|s| format!("[[detector]]\n{s}")).collect::<Vec<_>>().join("\n");

    let two_bad = as_pack(&[detector("a", "nope"), detector("b", "conversions"), detector("c", "nada")]);
    match Pack::from_toml("test.toml", &two_bad) {
        Err(PackError::Invalid { errors, .. }) => {
            let detectors: Vec<&str> = errors.iter().map(|e| e.detector.as_str()).collect();
            assert_eq!(detectors, ["a", "c"]);
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
    let duplicated = as_pack(&[detector("a", "conversions"), detector("a", "revenue")]);
    let error = Pack::from_toml("test.toml", &duplicated).unwrap_err();
    assert_eq!(error.to_string(), "detector pack test.toml: expected unique ids, got \"a\" 2 times");
    let empty = Pack::from_toml("empty.toml", "").unwrap_err();
    assert_eq!(empty.to_string(), "detector pack empty.toml: expected at least one detector, got none");

    let json = serde_json::to_string(&vec![DetectorSpec::from_toml(VALID).unwrap()]).unwrap();
    assert_eq!(Pack::from_json("pack.json", &json).unwrap().len(), 1);
}
