//! The whole shipped pack over 90 days of two tenants: exactly the planted entities
//! fire in `acme`, and nothing fires in the healthy, noisy `quiet` tenant.

mod common;

use std::collections::BTreeMap;

use common::planted::{self, PLANTED_TENANT, QUIET_TENANT};
use common::MetricsDb;
use converge_detect::{render_message, Pack};

fn loaded_db() -> MetricsDb {
    let db = MetricsDb::new();
    db.insert(&planted::dataset());
    db
}

#[test]
fn exactly_the_planted_patterns_fire_and_the_quiet_tenant_fires_nothing() {
    assert_exactly_planted_findings(&loaded_db());
}

#[test]
fn the_findings_hold_under_other_noise_seeds() {
    for (planted_seed, quiet_seed) in [(11, 12), (21, 22), (31, 32)] {
        let db = MetricsDb::new();
        db.insert(&planted::dataset_with_seeds(planted_seed, quiet_seed));
        assert_exactly_planted_findings(&db);
    }
}

fn assert_exactly_planted_findings(db: &MetricsDb) {
    let pack = Pack::shipped().expect("shipped pack");
    let expected: BTreeMap<&str, Vec<&str>> = planted::expected_acme_findings().into_iter().collect();
    for id in expected.keys() {
        assert!(pack.get(id).is_some(), "expected findings name {id:?}, which is not in the pack");
    }

    let mut mismatches = Vec::new();
    for spec in pack.detectors() {
        let rows = db.fire(spec, planted::as_of(), None);
        let mut fired: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for row in &rows {
            fired.entry(row.tenant.as_str()).or_default().push(row.entity_id.as_str());
            assert_eq!(row.entity_type, spec.entity_type.as_str(), "{}", spec.id);
        }
        let want_acme = expected.get(spec.id.as_str()).cloned().unwrap_or_default();
        let got_acme = fired.remove(PLANTED_TENANT).unwrap_or_default();
        if got_acme != want_acme {
            mismatches.push(format!("{}: acme expected {want_acme:?}, fired {got_acme:?}: {rows:?}", spec.id));
        }
        if let Some(quiet) = fired.remove(QUIET_TENANT) {
            mismatches.push(format!("{}: quiet tenant fired {quiet:?}: {rows:?}", spec.id));
        }
        assert!(fired.is_empty(), "{}: unknown tenants {fired:?}", spec.id);
    }
    assert!(mismatches.is_empty(), "{} mismatch(es):\n{}", mismatches.len(), mismatches.join("\n"));
}

#[test]
fn every_detector_in_the_pack_has_a_planted_pattern() {
    let pack = Pack::shipped().unwrap();
    let planted_ids: Vec<&str> = planted::expected_acme_findings().into_iter().map(|(id, _)| id).collect();
    let unplanted: Vec<&str> =
        pack.detectors().iter().map(|s| s.id.as_str()).filter(|id| !planted_ids.contains(id)).collect();
    assert!(unplanted.is_empty(), "detectors without a planted pattern: {unplanted:?}");
}

#[test]
fn scoping_to_one_tenant_gives_that_tenants_rows_of_the_all_tenant_run() {
    let db = loaded_db();
    let pack = Pack::shipped().unwrap();
    for spec in pack.detectors() {
        let all = db.fire(spec, planted::as_of(), None);
        for tenant in [PLANTED_TENANT, QUIET_TENANT] {
            let scoped = db.fire(spec, planted::as_of(), Some(tenant));
            let from_all: Vec<_> = all.iter().filter(|row| row.tenant == tenant).cloned().collect();
            // Numbers to 10 significant digits: the engine sums in parallel.
            let rounded = |rows: &[converge_core::FindingRow]| rows.iter().map(|r| r.with_numbers_rounded(10)).collect::<Vec<_>>();
            assert_eq!(rounded(&scoped), rounded(&from_all), "{} scoped to {tenant}", spec.id);
        }
    }
}

#[test]
fn an_earlier_run_date_does_not_see_patterns_planted_after_it() {
    // Thirty days before the end, none of the acme patterns that start in the last 28
    // days existed yet; what stays are the ones planted for the whole period.
    let db = loaded_db();
    let pack = Pack::shipped().unwrap();
    let early = planted::as_of() - chrono::Days::new(30);
    let mut fired = BTreeMap::new();
    for spec in pack.detectors() {
        let ids = db.fired_ids(spec, early, Some(PLANTED_TENANT));
        if !ids.is_empty() {
            fired.insert(spec.id.clone(), ids);
        }
    }
    let whole_period: BTreeMap<String, Vec<String>> = [
        ("page_slow_load", "/checkout"),
        ("page_conversion_rate_laggard", "/blog/guide"),
        ("campaign_roas_below_one", "low_roas"),
        ("email_spam_complaints_high", "winback"),
        ("email_delivery_rate_low", "digest"),
        ("device_mobile_conversion_gap", "mobile"),
        ("keyword_spend_without_conversions", "free shoes"),
    ]
    .into_iter()
    .map(|(id, entity)| (id.to_string(), vec![entity.to_string()]))
    .collect();
    assert_eq!(fired, whole_period);
}

#[test]
fn messages_render_from_the_planted_rows() {
    let db = loaded_db();
    let pack = Pack::shipped().unwrap();
    let spec = pack.get("page_conversion_rate_drop").unwrap();
    let rows = db.fire(spec, planted::as_of(), Some(PLANTED_TENANT));
    let pricing = rows.iter().find(|row| row.entity_id == "/pricing").expect("/pricing fires");
    let message = render_message(spec, pricing);
    // /pricing converts at 4%, halved for the last 28 days: about 2% against 4%, -50%.
    assert!(message.starts_with("Conversion rate on /pricing is "), "{message}");
    let change = pricing.change_pct().unwrap();
    assert!((-56.0..=-44.0).contains(&change), "change {change} in {message}");
    assert!(message.contains(&format!("({change:+.1}%)")), "{message}");
    assert!(!message.contains('{'), "{message}");

    for spec in pack.detectors() {
        for row in db.fire(spec, planted::as_of(), None) {
            let message = render_message(spec, &row);
            assert!(message.contains(&row.entity_id), "{}: {message}", spec.id);
            assert!(!message.contains('{') && !message.contains("n/a"), "{}: {message}", spec.id);
        }
    }
}
