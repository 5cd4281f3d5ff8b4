//! A synthetic 90-day `daily_entity_metrics` for two tenants, the one dataset the
//! detector compiler's tests, the runner's tests and the cross-backend comparisons
//! all use, so each is held to the same findings.
//!
//! `quiet` is healthy: every entity of every type keeps its rates, with seeded
//! day-to-day noise and a weekly rhythm (weekends at 75%). `acme` has the same kind of
//! healthy entities plus the PLANTED patterns listed in [`expected_acme_findings`]; some
//! patterns rightly trip more than one detector (a page that stops converting also
//! loses revenue per session), and those are listed too.

use chrono::{Datelike, Days, NaiveDate, Weekday};
use converge_core::MetricRow;

pub const DAYS: u32 = 90;
pub const PLANTED_TENANT: &str = "acme";
pub const QUIET_TENANT: &str = "quiet";

pub fn first_day() -> NaiveDate {
    NaiveDate::from_ymd_opt(2025, 1, 1).unwrap()
}

/// The run date: the dataset's last day.
pub fn as_of() -> NaiveDate {
    first_day() + Days::new(u64::from(DAYS - 1))
}

/// (detector id, entity ids that must fire for `acme`); every other detector/entity
/// pair must stay quiet, and `quiet` must fire nothing.
pub fn expected_acme_findings() -> Vec<(&'static str, Vec<&'static str>)> {
    vec![
        // /pricing converts at half its rate for 28 days; revenue follows conversions.
        // /signup stopped converting 14 days ago: half of the 28-day window.
        ("page_conversion_rate_drop", vec!["/pricing", "/signup"]),
        ("page_revenue_per_session_drop", vec!["/pricing", "/signup"]),
        ("page_bounce_rate_spike", vec!["/blog/launch"]),
        ("page_slow_load", vec!["/checkout"]),
        ("page_load_time_regression", vec!["/features"]),
        ("page_engagement_rate_drop", vec!["/about"]),
        ("page_exit_rate_spike", vec!["/contact"]),
        ("page_conversions_stopped", vec!["/signup"]),
        ("page_conversion_rate_laggard", vec!["/blog/guide"]),
        // /blog/guide loses entrances too, but blog pages are filtered out.
        ("landing_page_entries_drop", vec!["/docs"]),
        ("campaign_ctr_drop", vec!["spring_sale"]),
        ("campaign_cpc_spike", vec!["brand_search"]),
        // retargeting stopped converting 7 days ago: half of the 14-day windows.
        ("campaign_spend_without_conversions", vec!["retargeting"]),
        ("campaign_conversion_rate_drop", vec!["retargeting"]),
        ("campaign_cpa_spike", vec!["retargeting"]),
        ("campaign_roas_below_one", vec!["low_roas"]),
        ("campaign_delivery_stopped", vec!["display_awareness"]),
        ("email_open_rate_drop", vec!["newsletter_weekly"]),
        ("email_click_rate_drop", vec!["welcome_series"]),
        ("email_unsubscribe_spike", vec!["promo_blast"]),
        // vip_note's complaint rate is higher still, on too few emails to count.
        ("email_spam_complaints_high", vec!["winback"]),
        ("email_delivery_rate_low", vec!["digest"]),
        // exits = entries - completions, so a completion drop is an abandonment spike.
        ("funnel_step_completion_drop", vec!["checkout:payment", "signup:form"]),
        ("funnel_step_abandonment_spike", vec!["checkout:payment", "signup:form"]),
        ("funnel_step_stalled", vec!["signup:form"]),
        ("device_mobile_conversion_gap", vec!["mobile"]),
        ("device_bounce_rate_spike", vec!["tablet"]),
        ("device_revenue_per_session_drop", vec!["desktop"]),
        ("traffic_source_dried_up", vec!["partner_blog/referral"]),
        ("traffic_source_sessions_drop", vec!["bing/cpc"]),
        ("traffic_source_conversion_rate_drop", vec!["facebook/paid"]),
        ("traffic_source_new_high_traffic", vec!["tiktok/paid"]),
        ("keyword_cpc_spike", vec!["running shoes"]),
        ("keyword_spend_without_conversions", vec!["free shoes"]),
    ]
}

/// SplitMix64: small, seeded, reproducible on every platform.
struct Noise(u64);

impl Noise {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A factor uniformly in [1 - spread, 1 + spread].
    fn factor(&mut self, spread: f64) -> f64 {
        let unit = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        1.0 + spread * (2.0 * unit - 1.0)
    }
}

struct Generator {
    tenant: &'static str,
    planted: bool,
    noise: Noise,
    rows: Vec<MetricRow>,
}

/// The last `n` days of the dataset.
fn last(day: u32, n: u32) -> bool {
    day >= DAYS - n
}

fn rhythm(day: u32) -> f64 {
    let date = first_day() + Days::new(u64::from(day));
    match date.weekday() {
        Weekday::Sat | Weekday::Sun => 0.75,
        _ => 1.0,
    }
}

impl Generator {
    fn push(&mut self, day: u32, entity_type: &str, entity_id: &str, metric: &str, value: f64) {
        self.rows.push(MetricRow {
            date: first_day() + Days::new(u64::from(day)),
            tenant: self.tenant.to_string(),
            entity_type: entity_type.to_string(),
            entity_id: entity_id.to_string(),
            metric: metric.to_string(),
            value,
        });
    }

    /// A daily volume: expected value with the weekly rhythm and ±15% noise.
    fn volume(&mut self, day: u32, per_day: f64) -> f64 {
        per_day * rhythm(day) * self.noise.factor(0.15)
    }

    /// A count drawn from a volume at a rate, with ±8% noise on the rate.
    fn count(&mut self, volume: f64, rate: f64) -> f64 {
        (volume * rate * self.noise.factor(0.08)).round()
    }

    fn pages(&mut self) {
        // (id, sessions/day, conversion rate, bounce rate, engaged rate, load ms)
        let pages: [(&str, f64, f64, f64, f64, f64); 11] = [
            ("/", 3000.0, 0.02, 0.45, 0.55, 1000.0),
            ("/pricing", 1200.0, 0.04, 0.35, 0.65, 1100.0),
            ("/features", 900.0, 0.025, 0.40, 0.60, 1050.0),
            ("/signup", 800.0, 0.05, 0.30, 0.70, 950.0),
            ("/checkout", 600.0, 0.06, 0.25, 0.75, 1200.0),
            ("/blog/launch", 700.0, 0.015, 0.40, 0.55, 1000.0),
            ("/blog/guide", 500.0, 0.015, 0.45, 0.50, 1100.0),
            ("/about", 300.0, 0.02, 0.50, 0.50, 900.0),
            ("/contact", 250.0, 0.03, 0.40, 0.60, 950.0),
            ("/docs", 1500.0, 0.02, 0.35, 0.65, 1150.0),
            // Too small to judge: its conversion rate collapses, on too few sessions.
            ("/tiny", 3.0, 0.5, 0.40, 0.60, 1000.0),
        ];
        for (id, sessions_per_day, mut cvr, bounce, engaged, mut load_ms) in pages {
            let planted = self.planted;
            if planted && id == "/checkout" {
                load_ms *= 3.0;
            }
            if planted && id == "/blog/guide" {
                cvr = 0.002;
            }
            for day in 0..DAYS {
                let (mut day_cvr, mut day_bounce, mut day_engaged, mut day_load_ms) = (cvr, bounce, engaged, load_ms);
                let (mut entry_share, mut exit_rate) = (0.6, 0.35);
                if planted {
                    match id {
                        "/pricing" if last(day, 28) => day_cvr *= 0.5,
                        "/signup" if last(day, 14) => day_cvr = 0.0,
                        "/tiny" if last(day, 28) => day_cvr = 0.2,
                        "/blog/launch" if last(day, 7) => day_bounce *= 1.75,
                        "/features" if last(day, 7) => day_load_ms *= 1.8,
                        "/about" if last(day, 14) => day_engaged *= 0.5,
                        "/contact" if last(day, 14) => exit_rate *= 2.0,
                        "/docs" | "/blog/guide" if last(day, 7) => entry_share *= 0.3,
                        _ => {}
                    }
                }
                let expected_sessions = self.volume(day, sessions_per_day);
                let sessions = expected_sessions.round();
                let pageviews = self.count(expected_sessions, 1.6);
                let conversions = self.count(expected_sessions, day_cvr);
                let revenue = (conversions * 80.0 * self.noise.factor(0.1) * 100.0).round() / 100.0;
                let bounces = self.count(expected_sessions, day_bounce);
                let engaged_sessions = self.count(expected_sessions, day_engaged);
                let entries = self.count(expected_sessions, entry_share);
                let exits = self.count(pageviews, exit_rate);
                let samples = self.count(expected_sessions, 0.3);
                let load_sum = (samples * day_load_ms * self.noise.factor(0.1)).round();
                for (metric, value) in [
                    ("sessions", sessions),
                    ("pageviews", pageviews),
                    ("conversions", conversions),
                    ("revenue", revenue),
                    ("bounces", bounces),
                    ("engaged_sessions", engaged_sessions),
                    ("entries", entries),
                    ("exits", exits),
                    ("load_time_samples", samples),
                    ("load_time_ms_sum", load_sum),
                ] {
                    self.push(day, "page", id, metric, value);
                }
            }
        }
    }

    fn campaigns(&mut self) {
        // (id, impressions/day, CTR, CPC, conversions per click, order value)
        let low_roas_order_value = if self.planted { 20.0 } else { 60.0 };
        let campaigns = [
            ("spring_sale", 20000.0, 0.03, 0.8, 0.05, 50.0),
            ("brand_search", 8000.0, 0.08, 0.5, 0.08, 40.0),
            ("retargeting", 15000.0, 0.01, 1.2, 0.06, 60.0),
            ("display_awareness", 50000.0, 0.002, 0.3, 0.02, 50.0),
            ("low_roas", 10000.0, 0.02, 1.0, 0.03, low_roas_order_value),
        ];
        for (id, impressions_per_day, ctr, cpc, cvr, order_value) in campaigns {
            for day in 0..DAYS {
                let (mut day_ctr, mut day_cpc, mut day_cvr, mut delivering) = (ctr, cpc, cvr, true);
                if self.planted {
                    match id {
                        "spring_sale" if last(day, 7) => day_ctr *= 0.5,
                        "brand_search" if last(day, 7) => day_cpc *= 1.8,
                        "retargeting" if last(day, 7) => day_cvr = 0.0,
                        "display_awareness" if last(day, 3) => delivering = false,
                        _ => {}
                    }
                }
                let expected_impressions = if delivering { self.volume(day, impressions_per_day) } else { 0.0 };
                let impressions = expected_impressions.round();
                let expected_clicks = expected_impressions * day_ctr * self.noise.factor(0.08);
                let clicks = expected_clicks.round();
                let cost = (clicks * day_cpc * self.noise.factor(0.05) * 100.0).round() / 100.0;
                let conversions = self.count(expected_clicks, day_cvr);
                let revenue = (conversions * order_value * self.noise.factor(0.1) * 100.0).round() / 100.0;
                let sessions = self.count(expected_clicks, 0.9);
                // A stopped campaign still reports its zeros: rows with value 0.
                for (metric, value) in [
                    ("impressions", impressions),
                    ("clicks", clicks),
                    ("cost", cost),
                    ("conversions", conversions),
                    ("revenue", revenue),
                    ("sessions", sessions),
                ] {
                    self.push(day, "campaign", id, metric, value);
                }
            }
        }
    }

    fn emails(&mut self) {
        // (id, sent/day, delivery rate, unique open rate, click rate, unsubscribe rate, spam rate)
        let emails = [
            ("newsletter_weekly", 5000.0, 0.98, 0.25, 0.04, 0.002, 0.0002),
            ("promo_blast", 8000.0, 0.98, 0.18, 0.03, 0.002, 0.0003),
            ("winback", 3000.0, 0.97, 0.12, 0.02, 0.004, if self.planted { 0.003 } else { 0.0003 }),
            ("vip_note", 50.0, 0.99, 0.5, 0.1, 0.001, if self.planted { 0.04 } else { 0.0 }),
            ("digest", 4000.0, if self.planted { 0.90 } else { 0.985 }, 0.3, 0.05, 0.001, 0.0001),
            ("welcome_series", 2000.0, 0.99, 0.45, 0.08, 0.001, 0.0001),
        ];
        for (id, sent_per_day, delivery, open_rate, click_rate, unsubscribe_rate, spam_rate) in emails {
            for day in 0..DAYS {
                let (mut day_open, mut day_click, mut day_unsubscribe) = (open_rate, click_rate, unsubscribe_rate);
                if self.planted {
                    match id {
                        "newsletter_weekly" if last(day, 7) => day_open *= 0.5,
                        "promo_blast" if last(day, 7) => day_unsubscribe *= 3.0,
                        "welcome_series" if last(day, 7) => day_click *= 0.4,
                        _ => {}
                    }
                }
                let sent = self.volume(day, sent_per_day).round();
                // Delivery rates hover within a point of their level: ±8% noise would put
                // a healthy 97% under the 95% alarm.
                let delivered = (sent * delivery * self.noise.factor(0.01)).round().min(sent);
                let unique_opens = self.count(delivered, day_open);
                let opens = self.count(unique_opens, 1.6);
                let clicks = self.count(delivered, day_click);
                let unsubscribes = self.count(delivered, day_unsubscribe);
                let spam = self.count(delivered, spam_rate);
                let conversions = self.count(clicks, 0.1);
                let revenue = conversions * 45.0;
                for (metric, value) in [
                    ("sent", sent),
                    ("delivered", delivered),
                    ("bounces", sent - delivered),
                    ("opens", opens),
                    ("unique_opens", unique_opens),
                    ("email_clicks", clicks),
                    ("unsubscribes", unsubscribes),
                    ("spam_reports", spam),
                    ("conversions", conversions),
                    ("revenue", revenue),
                ] {
                    self.push(day, "email", id, metric, value);
                }
            }
        }
    }

    fn funnel_steps(&mut self) {
        // (id, entries/day, completion rate)
        let steps = [
            ("checkout:cart", 1000.0, 0.6),
            ("checkout:shipping", 600.0, 0.85),
            ("checkout:payment", 500.0, 0.8),
            ("signup:form", 400.0, 0.7),
            ("signup:verify", 280.0, 0.9),
        ];
        for (id, entries_per_day, completion) in steps {
            for day in 0..DAYS {
                let mut day_completion = completion;
                if self.planted {
                    match id {
                        "checkout:payment" if last(day, 7) => day_completion = 0.5,
                        "signup:form" if last(day, 2) => day_completion = 0.0,
                        _ => {}
                    }
                }
                let entries = self.volume(day, entries_per_day).round();
                let completions = self.count(entries, day_completion).min(entries);
                for (metric, value) in
                    [("entries", entries), ("step_completions", completions), ("exits", entries - completions)]
                {
                    self.push(day, "funnel_step", id, metric, value);
                }
            }
        }
    }

    fn devices(&mut self) {
        // (id, sessions/day, conversion rate, bounce rate, order value)
        let mobile_cvr = if self.planted { 0.012 } else { 0.022 };
        let devices = [
            ("desktop", 5000.0, 0.03, 0.35, 70.0),
            ("mobile", 7000.0, mobile_cvr, 0.45, 55.0),
            ("tablet", 800.0, 0.025, 0.4, 60.0),
        ];
        for (id, sessions_per_day, cvr, bounce, order_value) in devices {
            for day in 0..DAYS {
                let (mut day_bounce, mut day_order_value) = (bounce, order_value);
                if self.planted {
                    match id {
                        "tablet" if last(day, 7) => day_bounce *= 1.6,
                        "desktop" if last(day, 14) => day_order_value *= 0.5,
                        _ => {}
                    }
                }
                let expected = self.volume(day, sessions_per_day);
                let conversions = self.count(expected, cvr);
                let revenue = (conversions * day_order_value * self.noise.factor(0.1) * 100.0).round() / 100.0;
                for (metric, value) in [
                    ("sessions", expected.round()),
                    ("pageviews", self.count(expected, 2.1)),
                    ("engaged_sessions", self.count(expected, 0.6)),
                    ("bounces", self.count(expected, day_bounce)),
                    ("conversions", conversions),
                    ("revenue", revenue),
                ] {
                    self.push(day, "device", id, metric, value);
                }
            }
        }
    }

    fn traffic_sources(&mut self) {
        // (id, sessions/day, conversion rate)
        let mut sources = vec![
            ("google/organic", 6000.0, 0.025),
            ("newsletter/email", 1200.0, 0.04),
            ("facebook/paid", 1500.0, 0.02),
            ("bing/cpc", 900.0, 0.03),
            ("partner_blog/referral", 400.0, 0.03),
        ];
        if self.planted {
            sources.push(("tiktok/paid", 900.0, 0.01));
        }
        for (id, sessions_per_day, cvr) in sources {
            for day in 0..DAYS {
                let (mut day_sessions, mut day_cvr) = (sessions_per_day, cvr);
                if self.planted {
                    match id {
                        "facebook/paid" if last(day, 14) => day_cvr *= 0.5,
                        "bing/cpc" if last(day, 7) => day_sessions *= 0.3,
                        // No traffic, so no rows at all: absent days must count as 0.
                        "partner_blog/referral" if last(day, 3) => continue,
                        "tiktok/paid" if !last(day, 7) => continue,
                        _ => {}
                    }
                }
                let expected = self.volume(day, day_sessions);
                let conversions = self.count(expected, day_cvr);
                for (metric, value) in [
                    ("sessions", expected.round()),
                    ("pageviews", self.count(expected, 2.0)),
                    ("engaged_sessions", self.count(expected, 0.6)),
                    ("bounces", self.count(expected, 0.4)),
                    ("conversions", conversions),
                    ("revenue", conversions * 65.0),
                ] {
                    self.push(day, "traffic_source", id, metric, value);
                }
            }
        }
    }

    fn keywords(&mut self) {
        // (id, impressions/day, CTR, CPC, conversion rate); CPC 0 = organic
        let free_shoes_cvr = if self.planted { 0.0 } else { 0.02 };
        let keywords = [
            ("running shoes", 5000.0, 0.04, 1.0, 0.03),
            ("trail shoes", 3000.0, 0.05, 0.8, 0.04),
            ("free shoes", 2000.0, 0.03, 0.5, free_shoes_cvr),
            ("shoe sale", 4000.0, 0.04, 0.7, 0.05),
            ("best sneakers", 2500.0, 0.03, 1.1, 0.02),
            ("sneakers", 6000.0, 0.05, 0.0, 0.02),
            ("shoes near me", 800.0, 0.05, 0.6, 0.05),
        ];
        for (id, impressions_per_day, ctr, cpc, cvr) in keywords {
            for day in 0..DAYS {
                let mut day_cpc = cpc;
                if self.planted && id == "running shoes" && last(day, 7) {
                    day_cpc *= 2.0;
                }
                let expected = self.volume(day, impressions_per_day);
                let impressions = expected.round();
                let expected_clicks = expected * ctr * self.noise.factor(0.08);
                let clicks = expected_clicks.round();
                let cost = (clicks * day_cpc * self.noise.factor(0.05) * 100.0).round() / 100.0;
                for (metric, value) in [
                    ("impressions", impressions),
                    ("clicks", clicks),
                    ("cost", cost),
                    ("conversions", self.count(expected_clicks, cvr)),
                    ("position_sum", (impressions * 3.2 * self.noise.factor(0.1)).round()),
                ] {
                    self.push(day, "keyword", id, metric, value);
                }
            }
        }
    }
}

/// Every row of both tenants.
pub fn dataset() -> Vec<MetricRow> {
    dataset_with_seeds(1, 2)
}

/// The same dataset with other noise: the expectations must not hang on one draw.
pub fn dataset_with_seeds(planted_seed: u64, quiet_seed: u64) -> Vec<MetricRow> {
    let mut rows = Vec::new();
    for (tenant, planted, seed) in [(PLANTED_TENANT, true, planted_seed), (QUIET_TENANT, false, quiet_seed)] {
        let mut generator = Generator { tenant, planted, noise: Noise(seed), rows: Vec::new() };
        generator.pages();
        generator.campaigns();
        generator.emails();
        generator.funnel_steps();
        generator.devices();
        generator.traffic_sources();
        generator.keywords();
        rows.append(&mut generator.rows);
    }
    rows
}
