//! Planted patterns in the raw operational data, and the pass that must find them.
//!
//! [`PlantedPatterns`] is a [`Planter`] for [`crate::raw_exports`]: for one tenant it
//! changes the raw export rows of a few named entities so that, once the nightly ETL has
//! rolled them up, every detector of the shipped pack has something real to find (a
//! page that stops converting, a campaign that stops delivering, an email whose
//! unsubscribes triple, …). [`expected_findings`] lists exactly what the pack must
//! report for them, including the detectors a pattern rightly trips together (a page
//! that stops converting also loses revenue per session). Everything else in the
//! dataset is healthy and must stay quiet — the planted tenant's declared holiday
//! ([`HOLIDAY_DAYS_BEFORE_END`], a fifth of the usual traffic) included.
//!
//! [`run`] is the part of `converge demo` that uses them: seed every tenant's raw
//! collections, run the ETL over every day, run the pack as of the last day, and
//! compare the findings with the expected list. Tests call it at a reduced scale.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::NaiveDate;
use converge_backends::EmbeddedBackends;
use converge_core::{Clock, DocWrite, KnownEvent, Opportunity, RunOutcome, SourceStore};
use converge_detect::Pack;
use converge_detector_runner::{DetectRequest, DetectRun, DetectorRunner, RunnerOptions};
use converge_etl::{EtlProgress, EtlRequest, EtlRun};
use indicatif::ProgressBar;
use serde::Serialize;

use crate::raw_exports::{self, OpsOptions, Planter, RawRow};

/// Planted patterns for one tenant; every other tenant's rows pass unchanged.
pub struct PlantedPatterns {
    pub tenant: String,
    /// The dataset's last day: the run date of the detectors.
    pub last_day: NaiveDate,
}

/// Multiplies these measures of a row.
fn times(row: &mut RawRow<'_>, factor: f64, fields: &[&'static str]) {
    for field in fields {
        if let Some(value) = row.measures.get_mut(field) {
            *value *= factor;
        }
    }
}

/// Multiplies every measure of a row: more (or less) traffic at the same rates.
fn volume(row: &mut RawRow<'_>, factor: f64) {
    for value in row.measures.values_mut() {
        *value *= factor;
    }
}

/// The planted tenant's holiday: this many days before the last, its site traffic is a
/// fifth of a usual day's, and the tenant declares it as a known event (`seed`), so
/// the detectors leave it out of their windows.
pub const HOLIDAY_DAYS_BEFORE_END: i64 = 9;

/// The holiday's known event, as the planted tenant declares it.
pub fn holiday(tenant: &str, last_day: NaiveDate) -> KnownEvent {
    let day = last_day - chrono::Days::new(HOLIDAY_DAYS_BEFORE_END as u64);
    KnownEvent { tenant: tenant.into(), id: "holiday".into(), from: day, until: day, reason: "public holiday: a fifth of the usual traffic".into() }
}

const PAGE_VOLUME: &[&str] = &[
    "sessions", "screen_page_views", "engaged_sessions", "bounces", "conversions", "purchase_revenue", "entrances", "exits", "page_load_samples",
    "page_load_time_ms_sum",
];

impl Planter for PlantedPatterns {
    fn adjust(&self, row: &mut RawRow<'_>) {
        if row.tenant != self.tenant {
            return;
        }
        // Whether the row's day is one of the dataset's last `n`.
        let days_before_end = (self.last_day - row.date).num_days();
        let last = |n: i64| days_before_end < n;
        if days_before_end == HOLIDAY_DAYS_BEFORE_END && matches!(row.collection.name, "ga4_pages" | "ga4_devices" | "ga4_traffic_sources") {
            volume(row, 0.2);
        }
        match (row.collection.name, row.entity_id) {
            ("ga4_pages", page) => {
                let planted_pages = ["/pricing", "/signup", "/blog/launch", "/checkout", "/features", "/about", "/contact", "/blog/guide", "/docs"];
                if !planted_pages.contains(&page) {
                    return;
                }
                // Planted pages are popular ones: four times the traffic of their rank
                // clears every detector's minimum volume at any tenant level.
                times(row, 4.0, PAGE_VOLUME);
                match page {
                    // Converts at half its rate for 28 days; revenue follows conversions.
                    "/pricing" if last(28) => times(row, 0.5, &["conversions", "purchase_revenue"]),
                    // A well-converting signup page (3x the site's rate) that stopped
                    // converting 14 days ago: half of the 28-day window.
                    "/signup" if last(14) => times(row, 0.0, &["conversions", "purchase_revenue"]),
                    "/signup" => times(row, 3.0, &["conversions", "purchase_revenue"]),
                    "/blog/launch" if last(7) => times(row, 1.75, &["bounces"]),
                    // Always slow: over twice the typical page's load time.
                    "/checkout" => times(row, 3.5, &["page_load_time_ms_sum"]),
                    "/features" if last(7) => times(row, 1.6, &["page_load_time_ms_sum"]),
                    "/about" if last(14) => times(row, 0.5, &["engaged_sessions"]),
                    "/contact" if last(14) => times(row, 2.0, &["exits"]),
                    // Always a tenth of the site's conversion rate: a laggard, no drop.
                    "/blog/guide" => times(row, 0.1, &["conversions", "purchase_revenue"]),
                    "/docs" if last(7) => times(row, 0.3, &["entrances"]),
                    _ => {}
                }
            }
            ("ad_campaigns", campaign) => match campaign {
                // Half the clicks on the same impressions (cost and conversions follow).
                "spring_sale" if last(7) => times(row, 0.5, &["clicks", "cost_micros", "conversions", "conversion_value", "sessions"]),
                "brand_search" if last(7) => times(row, 1.8, &["cost_micros"]),
                // Stopped converting 7 days ago: half of the 14-day windows.
                "retargeting" if last(7) => times(row, 0.0, &["conversions", "conversion_value"]),
                "low_roas" => times(row, 0.3, &["conversion_value"]),
                "display_awareness" if last(3) => volume(row, 0.0),
                _ => {}
            },
            ("email_campaigns", email) => match email {
                "newsletter_weekly" if last(7) => times(row, 0.5, &["unique_opens", "opens"]),
                "welcome_series" if last(7) => times(row, 0.4, &["unique_clicks", "conversions", "revenue"]),
                "promo_blast" if last(7) => times(row, 3.0, &["unsubscribes"]),
                // 0.3% of recipients report spam, every day (the limit is 0.1%).
                "winback" => {
                    let delivered = row.measures.get("delivered").copied().unwrap_or(0.0);
                    row.measures.insert("spam_reports", delivered * 0.003);
                }
                // 90% delivered: the other 10% bounce softly.
                "digest" => {
                    let sent = row.measures.get("sent").copied().unwrap_or(0.0);
                    let hard = row.measures.get("hard_bounces").copied().unwrap_or(0.0);
                    let delivered_before = row.measures.get("delivered").copied().unwrap_or(0.0).max(1.0);
                    let delivered = sent * 0.90;
                    row.measures.insert("delivered", delivered);
                    row.measures.insert("soft_bounces", (sent - delivered - hard).max(0.0));
                    // Opens, clicks and the rest are counted among delivered emails.
                    times(row, delivered / delivered_before, &["opens", "unique_opens", "unique_clicks", "unsubscribes", "spam_reports", "conversions", "revenue"]);
                }
                _ => {}
            },
            ("funnel_events", step) => {
                let entered = row.measures.get("users_entered").copied().unwrap_or(0.0);
                let completed = row.measures.get("users_completed").copied().unwrap_or(0.0);
                let completed = match step {
                    "checkout:payment" if last(7) => (completed * 0.5).round(),
                    // Nobody gets past the form for the last 3 days.
                    "signup:form" if last(3) => 0.0,
                    _ => return,
                };
                row.measures.insert("users_completed", completed);
                row.measures.insert("users_exited", entered - completed);
            }
            ("ga4_devices", device) => match device {
                "mobile" => times(row, 0.4, &["conversions", "purchase_revenue"]),
                "tablet" if last(7) => times(row, 1.6, &["bounces"]),
                "desktop" if last(14) => times(row, 0.5, &["purchase_revenue"]),
                _ => {}
            },
            ("ga4_traffic_sources", source) => match source {
                "facebook/referral" if last(3) => volume(row, 0.0),
                "bing/cpc" if last(7) => volume(row, 0.3),
                "facebook/paid_social" if last(14) => times(row, 0.5, &["conversions", "purchase_revenue"]),
                // New this week, and big: no sessions before, four times its rank after.
                "instagram/paid_social" if last(7) => volume(row, 4.0),
                "instagram/paid_social" => volume(row, 0.0),
                _ => {}
            },
            ("ad_keywords", keyword) => match keyword {
                "running sneakers" if last(7) => times(row, 2.0, &["cost_micros"]),
                "trail sneakers lightweight" => times(row, 0.0, &["conversions"]),
                _ => {}
            },
            _ => {}
        }
    }
}

/// One finding the pack must report, or did report.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct FindingKey {
    pub detector: String,
    pub tenant: String,
    pub entity_id: String,
}

/// Exactly what the shipped pack must find in a dataset planted by
/// [`PlantedPatterns`] for `tenant` (and nothing for any other tenant).
pub fn expected_findings(tenant: &str) -> Vec<FindingKey> {
    let expected: &[(&str, &[&str])] = &[
        // /signup's stop is also half of the 28-day windows.
        ("page_conversion_rate_drop", &["/pricing", "/signup"]),
        ("page_revenue_per_session_drop", &["/pricing", "/signup"]),
        ("page_bounce_rate_spike", &["/blog/launch"]),
        ("page_slow_load", &["/checkout"]),
        ("page_load_time_regression", &["/features"]),
        ("page_engagement_rate_drop", &["/about"]),
        ("page_exit_rate_spike", &["/contact"]),
        ("page_conversions_stopped", &["/signup"]),
        ("page_conversion_rate_laggard", &["/blog/guide"]),
        ("landing_page_entries_drop", &["/docs"]),
        ("campaign_ctr_drop", &["spring_sale"]),
        ("campaign_cpc_spike", &["brand_search"]),
        ("campaign_spend_without_conversions", &["retargeting"]),
        ("campaign_conversion_rate_drop", &["retargeting"]),
        ("campaign_cpa_spike", &["retargeting"]),
        ("campaign_roas_below_one", &["low_roas"]),
        ("campaign_delivery_stopped", &["display_awareness"]),
        ("email_open_rate_drop", &["newsletter_weekly"]),
        ("email_click_rate_drop", &["welcome_series"]),
        ("email_unsubscribe_spike", &["promo_blast"]),
        ("email_spam_complaints_high", &["winback"]),
        ("email_delivery_rate_low", &["digest"]),
        // exits = entered - completed: a completion drop is an abandonment spike.
        ("funnel_step_completion_drop", &["checkout:payment", "signup:form"]),
        ("funnel_step_abandonment_spike", &["checkout:payment", "signup:form"]),
        ("funnel_step_stalled", &["signup:form"]),
        ("device_mobile_conversion_gap", &["mobile"]),
        ("device_bounce_rate_spike", &["tablet"]),
        ("device_revenue_per_session_drop", &["desktop"]),
        ("traffic_source_dried_up", &["facebook/referral"]),
        ("traffic_source_sessions_drop", &["bing/cpc"]),
        ("traffic_source_conversion_rate_drop", &["facebook/paid_social"]),
        ("traffic_source_new_high_traffic", &["instagram/paid_social"]),
        ("keyword_cpc_spike", &["running sneakers"]),
        ("keyword_spend_without_conversions", &["trail sneakers lightweight"]),
    ];
    expected
        .iter()
        .flat_map(|(detector, entities)| {
            entities.iter().map(|entity| FindingKey { detector: (*detector).into(), tenant: tenant.into(), entity_id: (*entity).into() })
        })
        .collect()
}

/// The raw data to seed: every tenant with its scale, and the one planted.
#[derive(Debug, Clone)]
pub struct OpsPlan {
    /// (tenant, scale): 1.0 is a real account's ~6,090 raw rows a day.
    pub tenants: Vec<(String, f64)>,
    pub planted_tenant: String,
    pub first_day: NaiveDate,
    pub days: u32,
}

impl OpsPlan {
    /// The demo's: 90 days ending yesterday, the large tenant at a real account's scale.
    pub fn demo(planted_tenant: &str, tenants: Vec<(String, f64)>, last_day: NaiveDate) -> Self {
        let days = 90;
        Self { tenants, planted_tenant: planted_tenant.into(), first_day: last_day - chrono::Days::new(u64::from(days) - 1), days }
    }

    pub fn last_day(&self) -> NaiveDate {
        self.first_day + chrono::Days::new(u64::from(self.days.saturating_sub(1)))
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct EtlSummary {
    pub rows_in: u64,
    pub rows_out: u64,
    pub millis: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct DetectorsSummary {
    pub run: u64,
    pub fired: u64,
    pub failed: u64,
    pub millis: u64,
    /// Planted (detector, tenant, entity) triples found.
    pub planted_found: u64,
    pub planted_total: u64,
    /// Findings not in the planted list.
    pub unexpected: u64,
    /// Days the tenants declared as known events, left out of the tested detectors'
    /// windows (the planted tenant's holiday).
    pub known_event_days: u64,
}

/// What the operational part of the demo did and found.
#[derive(Debug, Clone)]
pub struct OpsOutcome {
    pub raw_rows: u64,
    pub seed_millis: u64,
    pub etl: EtlSummary,
    pub etl_run: EtlRun,
    pub detectors: DetectorsSummary,
    pub detect_run: DetectRun,
    /// Planted triples the pack did not find.
    pub missed: Vec<FindingKey>,
    /// Findings outside the planted list.
    pub unexpected: Vec<FindingKey>,
}

/// Progress bars for the three steps (hidden ones when not drawn).
pub struct OpsBars {
    pub seeded: ProgressBar,
    pub etl: ProgressBar,
}

/// Seeds the plan's raw collections, runs the ETL over every day and the shipped pack
/// as of the last day, and compares the findings with [`expected_findings`].
/// `backends` must filter the outbox to mirrored paths (`EmbeddedBackends::open_for`):
/// raw collections are read by the ETL, not mirrored.
pub async fn run(backends: &EmbeddedBackends, clock: Arc<dyn Clock>, plan: &OpsPlan, bars: &OpsBars) -> anyhow::Result<OpsOutcome> {
    let seed_started = Instant::now();
    let raw_rows = seed(&backends.source, plan, &bars.seeded).await.context("seeding the raw operational collections")?;
    let seed_millis = seed_started.elapsed().as_millis() as u64;
    bars.seeded.finish();

    let runner = crate::embedded_etl::runner(backends, clock.clone());
    runner.ensure_tables().await.context("creating daily_entity_metrics, entity_map and etl_loads")?;
    let progress = Arc::new(EtlProgress::default());
    let ticker = tokio::spawn({
        let (progress, bar) = (progress.clone(), bars.etl.clone());
        async move {
            loop {
                bar.set_length(progress.slices_total.load(Ordering::Relaxed));
                bar.set_position(progress.slices_done.load(Ordering::Relaxed));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });
    // Every day once, without the late window: a backfill, as `converge etl --from --to`.
    let request = EtlRequest { from: Some(plan.first_day), late_days: Some(0), ..EtlRequest::for_date(plan.last_day()) };
    let etl_run = runner.run_with_progress(request, progress.clone()).await;
    ticker.abort();
    bars.etl.set_position(progress.slices_done.load(Ordering::Relaxed));
    bars.etl.finish();
    let etl_run = etl_run.context("the ETL over the seeded days")?;
    anyhow::ensure!(etl_run.outcome == RunOutcome::Ok, "the ETL did not load every slice: {} of {} failed", etl_run.failed_slices, etl_run.slices);

    let detect_run = detect(backends, clock, plan.last_day()).await?;
    let found: BTreeSet<FindingKey> = detect_run.findings.iter().map(key).collect();
    let expected: BTreeSet<FindingKey> = expected_findings(&plan.planted_tenant).into_iter().collect();
    let missed: Vec<FindingKey> = expected.difference(&found).cloned().collect();
    let unexpected: Vec<FindingKey> = found.difference(&expected).cloned().collect();
    Ok(OpsOutcome {
        raw_rows,
        seed_millis,
        etl: EtlSummary { rows_in: etl_run.rows_in, rows_out: etl_run.rows_out, millis: etl_run.millis },
        detectors: DetectorsSummary {
            run: detect_run.run,
            fired: detect_run.fired,
            failed: detect_run.failed,
            millis: detect_run.millis,
            planted_found: (expected.len() - missed.len()) as u64,
            planted_total: expected.len() as u64,
            unexpected: unexpected.len() as u64,
            known_event_days: detect_run.known_event_days,
        },
        etl_run,
        detect_run,
        missed,
        unexpected,
    })
}

/// One pass of the shipped pack, as `converge detect` runs it on a data directory.
pub async fn detect(backends: &EmbeddedBackends, clock: Arc<dyn Clock>, as_of: NaiveDate) -> anyhow::Result<DetectRun> {
    let runner = DetectorRunner::new(
        Pack::shipped()?,
        Arc::new(backends.warehouse.clone()),
        Arc::new(backends.warehouse.clone()),
        Arc::new(backends.source.clone()),
        clock,
        RunnerOptions::default(),
    )
    .with_known_events(Arc::new(backends.source.clone()));
    Ok(runner.run(DetectRequest { as_of, tenants: None, detectors: None }).await?)
}

pub fn key(finding: &Opportunity) -> FindingKey {
    FindingKey { detector: finding.detector.clone(), tenant: finding.tenant.clone(), entity_id: finding.entity_id.clone() }
}

/// Writes every tenant's days through the source store (as `raw_exports::seed`, one
/// scale per tenant), the bar counting raw rows.
async fn seed(source: &dyn SourceStore, plan: &OpsPlan, bar: &ProgressBar) -> anyhow::Result<u64> {
    let planter: Arc<dyn Planter> = Arc::new(PlantedPatterns { tenant: plan.planted_tenant.clone(), last_day: plan.last_day() });
    let universes: Vec<_> = plan.tenants.iter().map(|(_, scale)| raw_exports::universe(*scale)).collect();
    let rows_a_day: usize = universes.iter().flat_map(|u| u.iter().map(|(_, entities)| entities.len())).sum();
    bar.set_length(rows_a_day as u64 * u64::from(plan.days));
    let mut rows = 0;
    for ((tenant, scale), universe) in plan.tenants.iter().zip(&universes) {
        let options = OpsOptions { scale: *scale, batch: 5_000, planters: vec![planter.clone()], ..OpsOptions::new(vec![tenant.clone()], plan.first_day, plan.days) };
        for day in 0..plan.days {
            let writes: Vec<DocWrite> = raw_exports::day_writes(&options, tenant, day, universe);
            let writes_len = writes.len() as u64;
            rows += writes_len;
            let mut writes = writes.into_iter().peekable();
            while writes.peek().is_some() {
                source.apply(writes.by_ref().take(options.batch).collect()).await?;
            }
            bar.inc(writes_len);
        }
    }
    source.apply(vec![holiday(&plan.planted_tenant, plan.last_day()).to_write()]).await?;
    Ok(rows)
}
