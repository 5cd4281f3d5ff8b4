//! The tested form of the declarative detectors (src/tested.rs) on hand-built tables in
//! a real (in-memory) DuckDB: an effect at the threshold fires when it is unlikely to
//! be noise and a significant but small one does not; noise at low volume fires
//! nothing where the threshold alone fires; a window holding more weekend than its
//! baseline expects less; declared known events are left out of both windows.

mod common;

use chrono::{Datelike, Days, NaiveDate, Weekday};
use common::{date, spec, MetricsDb};
use converge_core::{KnownEvent, KnownEvents};
use converge_detect::{render_message, DetectorSpec};

const AS_OF: &str = "2025-03-30"; // a Sunday

fn as_of() -> NaiveDate {
    date(AS_OF)
}

/// The same spec with its test switched off: the threshold alone decides.
fn rule(spec: &DetectorSpec) -> DetectorSpec {
    DetectorSpec { significance: Some(converge_detect::Significance { off: true, ..Default::default() }), ..spec.clone() }
}

const CONVERSION_RATE_DROP: &str = r#"
id = "cvr_drop"
title = "Conversion rate dropped"
entity_type = "page"
severity = "warning"
message = "{entity_id}: {recent}% from {baseline}%"
measure = { kind = "ratio", numerator = "conversions", denominator = "sessions", scale = 100.0 }
windows = { recent_days = 7, baseline_days = 7 }
comparison = { kind = "below_fraction_of_baseline", fraction = 0.7 }
"#;

#[test]
fn an_effect_at_the_threshold_fires_and_a_significant_small_one_does_not() {
    let db = MetricsDb::new();
    // 1,000 sessions a day at 10%, then: half, exactly the threshold (70%), and 90%:
    // the last is significant (z ≈ −2) but far from a 30% drop.
    for (page, recent) in [("/halved", 50.0), ("/at_limit", 70.0), ("/dipped", 90.0), ("/steady", 100.0)] {
        db.add_days("t", "page", page, "sessions", as_of(), &[1000.0; 14]);
        let mut conversions = vec![100.0; 7];
        conversions.extend([recent; 7]);
        db.add_days("t", "page", page, "conversions", as_of(), &conversions);
    }
    let detector = spec(CONVERSION_RATE_DROP);
    let rows = db.fire(&detector, as_of(), None);
    assert_eq!(rows.iter().map(|r| r.entity_id.as_str()).collect::<Vec<_>>(), ["/at_limit", "/halved"]);
    for row in &rows {
        assert!(row.statistic.unwrap() < -5.0 && row.q_value.unwrap() < 1e-6, "{row:?}");
        let message = render_message(&detector, row);
        assert!(message.contains("Evidence: observed") && message.contains("z = ") && message.contains("q = "), "{message}");
    }
    // The rule fires on /halved only: exactly at the threshold is not below it.
    assert_eq!(db.fired_ids(&rule(&detector), as_of(), None), ["/halved"]);
}

/// SplitMix64: a seeded, reproducible source of noise.
struct Noise(u64);

impl Noise {
    fn uniform(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }

    fn binomial(&mut self, trials: u32, p: f64) -> f64 {
        (0..trials).filter(|_| self.uniform() < p).count() as f64
    }
}

#[test]
fn noise_at_low_volume_fires_nothing_where_the_threshold_alone_does() {
    let db = MetricsDb::new();
    let mut noise = Noise(20);
    // 120 healthy pages of 25 sessions a day converting at 4%, no change at all.
    for page in 0..120 {
        let page = format!("/p{page:03}");
        db.add_days("t", "page", &page, "sessions", as_of(), &[25.0; 56]);
        let conversions: Vec<f64> = (0..56).map(|_| noise.binomial(25, 0.04)).collect();
        db.add_days("t", "page", &page, "conversions", as_of(), &conversions);
    }
    let monthly = spec(&CONVERSION_RATE_DROP.replace("recent_days = 7, baseline_days = 7", "recent_days = 28, baseline_days = 28"));
    let by_threshold = db.fired_ids(&rule(&monthly), as_of(), None);
    assert!(by_threshold.len() >= 3, "the threshold alone fires on noise: {by_threshold:?}");
    assert_eq!(db.fired_ids(&monthly, as_of(), None), Vec::<String>::new(), "tested, noise is noise");
}

const SESSIONS_DROP: &str = r#"
id = "sessions_drop"
title = "Sessions halved"
entity_type = "traffic_source"
severity = "warning"
message = "{entity_id}: {recent} against {baseline}"
measure = { kind = "sum", metric = "sessions" }
windows = { recent_days = 2, baseline_days = 28 }
comparison = { kind = "below_fraction_of_baseline", fraction = 0.5 }
"#;

#[test]
fn a_window_of_weekend_days_is_compared_with_weekend_days() {
    assert_eq!(as_of().weekday(), Weekday::Sun);
    let db = MetricsDb::new();
    // Every source: 1,000 sessions a weekday, 100 on Saturdays and Sundays. The recent
    // window is Saturday and Sunday: 200 against a plain average of 2 × 743.
    let day_of = |days_back: usize| as_of() - Days::new(days_back as u64);
    let week = |days_back: usize, weekend: f64, weekday: f64| match day_of(days_back).weekday() {
        Weekday::Sat | Weekday::Sun => weekend,
        _ => weekday,
    };
    for source in 0..8 {
        let values: Vec<f64> = (0..30).rev().map(|back| week(back, 100.0, 1000.0)).collect();
        db.add_days("t", "traffic_source", &format!("s{source}"), "sessions", as_of(), &values);
    }
    // One source really did lose most of its weekend traffic.
    let lost: Vec<f64> = (0..30).rev().map(|back| if back < 2 { 20.0 } else { week(back, 100.0, 1000.0) }).collect();
    db.add_days("t", "traffic_source", "lost", "sessions", as_of(), &lost);

    let detector = spec(SESSIONS_DROP);
    let by_threshold = db.fired_ids(&rule(&detector), as_of(), None);
    assert_eq!(by_threshold.len(), 9, "without the weekday profile every source looks halved: {by_threshold:?}");
    let rows = db.fire(&detector, as_of(), None);
    assert_eq!(rows.iter().map(|r| r.entity_id.as_str()).collect::<Vec<_>>(), ["lost"]);
    // Expected: the baseline's weekend days, 2 × ~100.
    let expected = rows[0].baseline_value.unwrap();
    assert!((expected - 200.0).abs() < 20.0, "expected {expected}");
}

const ENTRIES_DIP: &str = r#"
id = "entries_dip"
title = "Entrances dipped"
entity_type = "page"
severity = "warning"
message = "{entity_id}: {recent} against {baseline}"
measure = { kind = "sum", metric = "entries" }
windows = { recent_days = 7, baseline_days = 28 }
comparison = { kind = "below_fraction_of_baseline", fraction = 0.9 }
"#;

const STOPPED: &str = r#"
id = "stopped"
title = "Entrances stopped"
entity_type = "page"
severity = "critical"
message = "{entity_id} had none"
measure = { kind = "sum", metric = "entries" }
windows = { recent_days = 2, baseline_days = 28 }
comparison = { kind = "drop_to_zero" }
"#;

#[test]
fn declared_known_events_are_left_out_of_both_windows() {
    let db = MetricsDb::new();
    // 20 pages of 2,000 entrances a day; the site was down yesterday and the day
    // before (nothing), and a holiday a week ago brought a tenth of the traffic.
    let holiday = as_of() - Days::new(5);
    for page in 0..20 {
        let values: Vec<f64> = (0..35)
            .rev()
            .map(|back| {
                let day = as_of() - Days::new(back);
                if back < 2 {
                    0.0
                } else if day == holiday {
                    200.0
                } else {
                    2000.0
                }
            })
            .collect();
        db.add_days("t", "page", &format!("/p{page:02}"), "entries", as_of(), &values);
    }
    let stopped = spec(STOPPED);
    let dip = spec(ENTRIES_DIP);
    assert_eq!(db.fire(&stopped, as_of(), None).len(), 20, "an undeclared outage: every page stopped");
    assert_eq!(db.fire(&dip, as_of(), None).len(), 20, "an undeclared outage and holiday: every page dipped");

    let known = KnownEvents::new([
        KnownEvent { tenant: "t".into(), id: "outage".into(), from: as_of() - Days::new(1), until: as_of(), reason: "outage".into() },
        KnownEvent { tenant: "t".into(), id: "holiday".into(), from: holiday, until: holiday, reason: "holiday".into() },
    ]);
    assert!(db.fire_with(&stopped, as_of(), None, &known).is_empty(), "declared, the outage leaves nothing to judge");
    assert!(db.fire_with(&dip, as_of(), None, &known).is_empty(), "declared, the other five days are as usual");
    // Another tenant's events are not this tenant's.
    let elsewhere = KnownEvents::new([KnownEvent { tenant: "other".into(), id: "x".into(), from: holiday, until: as_of(), reason: String::new() }]);
    assert_eq!(db.fire_with(&dip, as_of(), None, &elsewhere).len(), 20);
}
