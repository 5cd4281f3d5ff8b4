//! `converge bench detect`, second part: the measured precision and recall of the
//! shipped pack's declarative detectors, on a synthetic `daily_entity_metrics` with
//! planted effects, for the pack as shipped (significance tests, FDR, weekday
//! adjustment, known events) and for the same thresholds deciding alone
//! ([`Pack::without_tests`], the pack as it was before).
//!
//! # The generator
//!
//! Its own model of a site, written from the vocabulary and not from the pack's
//! queries (only each detector's measure, windows and threshold are read, to know
//! what to plant where):
//!
//! - Three volume tiers (`tens`, `hundreds`, `thousands`: 30, 300 and 3,000 of an
//!   entity type's base count per entity per day — sessions for pages and traffic
//!   sources, impressions for campaigns and keywords, emails sent, funnel entries), each
//!   with [`REPLICATES`] replicate tenants (`t1_r00` …). A tenant is a site: clean
//!   entities of every covered type plus a few planted ones (at most a fifth of a
//!   type), enough tenants that every (detector, tier, effect level) has at least
//!   [`MIN_PER_CELL`] planted entities.
//! - An entity's base count on a day is its level (the tier's × log-uniform 0.5–2) ×
//!   the tenant's weekday profile × gamma-Poisson noise (shape `k` 10–20 per tenant, so
//!   the variance is μ + μ²/k). Derived counts are binomial draws from their parent at
//!   the entity's own rates, each rate jittered day to day (× lognormal, CV 10%);
//!   amounts are gamma sums (revenue over conversions around the entity's order
//!   value, load time over samples around its mean load time) or products with a
//!   jittered unit price (cost = clicks × CPC). Relations hold every day: bounces +
//!   engaged ≤ sessions ≤ pageviews, exits ≤ pageviews, completions + exits = entries,
//!   bounces + delivered = sent, clicks ≤ unique opens ≤ delivered.
//! - Planted effects per detector at two levels, from the recent window's first day to
//!   `as_of`: `at` the threshold and `beyond` it (1.5× as far from no change). A
//!   ratio's numerator rate changes (its denominator's volume stays); a sum's metric
//!   changes level.
//! - A one-day holiday: every entity of a tenant at ×0.15 on `as_of − 2`, declared as a
//!   known event in half the tenants.
//!
//! Rows are built per (entity type, tier), sorted by (metric, date) and appended; the
//! table ends up ordered by entity type, so zone maps prune as in production.
//!
//! # Analytic power
//!
//! Per planted entity, from the generator's truth: the one-sided power of a z-test at
//! α = q / m (q the pack's false-discovery rate, `converge_detect::DEFAULT_FDR`; m the detector's expected tested entities of the tenant, Bonferroni:
//! conservative for Benjamini–Hochberg), times the probability that the volume gate
//! admits the entity. Detectors that stay rules (a sum against an absolute threshold)
//! get the probability that the rule fires instead.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use chrono::{Datelike, Days, NaiveDate};
use converge_core::{KnownEvent, MetricsWarehouse, MirrorConfig, Opportunity, SourceStore, SystemClock, Warehouse};
use converge_detect::{Comparison, DetectorSpec, EntityType, Measure, Pack};
use converge_detector_runner::{DetectRequest, DetectorRunner, RunnerOptions};
use duckdb::types::Value as DuckValue;
use serde::Serialize;

/// The generator's seed: the dataset, the plants and so the measures are reproducible.
pub const SEED: u64 = 0x00C0_4E26_E5EE_D001;
/// Days of data, ending on `as_of` (the longest detector reads 14 + 56 days).
pub const DAYS: u32 = 70;
/// Replicate tenants per tier (half of them declare the holiday).
pub const REPLICATES: usize = 40;
/// Planted entities per (detector, tier, effect level), at least.
pub const MIN_PER_CELL: usize = 30;
/// At most this share of a tenant's entities of one type is planted.
const MAX_PLANTED_SHARE: f64 = 0.2;
/// Day-to-day jitter of every rate and unit price (multiplicative, coefficient of variation).
const RATE_CV: f64 = 0.10;
/// Gamma shape of one order's value (CV 1/√2) and of one load-time sample.
const ORDER_SHAPE: f64 = 2.0;
const SAMPLE_SHAPE: f64 = 2.0;
/// The holiday: this many days before `as_of`, every entity's volume × `HOLIDAY_FACTOR`.
const HOLIDAY_OFFSET: u32 = 2;
const HOLIDAY_FACTOR: f64 = 0.15;
/// The site's weekday profile, Monday first (each tenant's varies ±5% around it; mean 1).
const WEEKDAYS: [f64; 7] = [1.10, 1.12, 1.08, 1.05, 0.95, 0.65, 0.60];
/// A planted entity counts as detectable at this analytic power.
const DETECTABLE_POWER: f64 = 0.8;
/// The tests' nominal level (the pack's default false-discovery rate).
const ALPHA: f64 = converge_detect::DEFAULT_FDR;

/// (name, tenant prefix, base count per entity per day).
const TIERS: [(&str, &str, f64); 3] = [("tens", "t1", 30.0), ("hundreds", "t2", 300.0), ("thousands", "t3", 3000.0)];

/// The entity types covered, with the clean entities a tenant has at least.
const TYPES: [(EntityType, usize); 6] = [
    (EntityType::Page, 60),
    (EntityType::Campaign, 20),
    (EntityType::Email, 15),
    (EntityType::FunnelStep, 12),
    (EntityType::TrafficSource, 12),
    (EntityType::Keyword, 30),
];

pub fn as_of() -> NaiveDate {
    NaiveDate::from_ymd_opt(2025, 3, 31).expect("a date")
}

fn first_day() -> NaiveDate {
    as_of() - Days::new(u64::from(DAYS - 1))
}

// ------------------------------------------------------------------ random numbers

/// SplitMix64 and the samplers the generator needs (exact: Marsaglia–Tsang gamma,
/// Hörmann's PTRS Poisson and BTRS binomial, inversion for small means).
#[derive(Debug, Clone)]
pub(crate) struct Rng {
    state: u64,
    spare: Option<f64>,
}

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng { state: seed, spare: None }
    }

    /// An independent stream for `parts` (a tier, a tenant, an entity …) under `seed`.
    pub(crate) fn derive(seed: u64, parts: &[u64]) -> Rng {
        let mut rng = Rng::new(seed);
        for part in parts {
            rng.state ^= part.wrapping_mul(0xD6E8_FEB8_6659_FD93);
            rng.next_u64();
        }
        Rng::new(rng.next_u64())
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1), never 0 or 1.
    pub(crate) fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    fn range(&mut self, low: f64, high: f64) -> f64 {
        low + (high - low) * self.uniform()
    }

    /// Log-uniform in [low, high].
    fn log_range(&mut self, low: f64, high: f64) -> f64 {
        self.range(low.ln(), high.ln()).exp()
    }

    pub(crate) fn normal(&mut self) -> f64 {
        if let Some(spare) = self.spare.take() {
            return spare;
        }
        let (u, v) = (self.uniform(), self.uniform());
        let radius = (-2.0 * u.ln()).sqrt();
        let angle = 2.0 * std::f64::consts::PI * v;
        self.spare = Some(radius * angle.sin());
        radius * angle.cos()
    }

    /// Mean 1, coefficient of variation `cv`.
    fn jitter(&mut self, cv: f64) -> f64 {
        let s2 = (1.0 + cv * cv).ln();
        (s2.sqrt() * self.normal() - s2 / 2.0).exp()
    }

    pub(crate) fn gamma(&mut self, shape: f64, scale: f64) -> f64 {
        if shape <= 0.0 || scale <= 0.0 {
            return 0.0;
        }
        if shape < 1.0 {
            let u = self.uniform();
            return self.gamma(shape + 1.0, scale) * u.powf(1.0 / shape);
        }
        let d = shape - 1.0 / 3.0;
        let c = 1.0 / (9.0 * d).sqrt();
        loop {
            let x = self.normal();
            let v = 1.0 + c * x;
            if v <= 0.0 {
                continue;
            }
            let v = v * v * v;
            let u = self.uniform();
            if u < 1.0 - 0.0331 * x * x * x * x || u.ln() < 0.5 * x * x + d * (1.0 - v + v.ln()) {
                return d * v * scale;
            }
        }
    }

    pub(crate) fn poisson(&mut self, lambda: f64) -> u64 {
        if lambda.is_nan() || lambda <= 0.0 {
            return 0;
        }
        if lambda < 10.0 {
            let limit = (-lambda).exp();
            let (mut k, mut product) = (0u64, self.uniform());
            while product > limit {
                k += 1;
                product *= self.uniform();
            }
            return k;
        }
        // PTRS (Hörmann 1993), as numpy has it.
        let slam = lambda.sqrt();
        let loglam = lambda.ln();
        let b = 0.931 + 2.53 * slam;
        let a = -0.059 + 0.02483 * b;
        let invalpha = 1.1239 + 1.1328 / (b - 3.4);
        let vr = 0.9277 - 3.6224 / (b - 2.0);
        loop {
            let u = self.uniform() - 0.5;
            let v = self.uniform();
            let us = 0.5 - u.abs();
            let k = ((2.0 * a / us + b) * u + lambda + 0.43).floor();
            if us >= 0.07 && v <= vr {
                return k as u64;
            }
            if k < 0.0 || (us < 0.013 && v > us) {
                continue;
            }
            if v.ln() + invalpha.ln() - (a / (us * us) + b).ln() <= -lambda + k * loglam - ln_gamma(k + 1.0) {
                return k as u64;
            }
        }
    }

    /// Gamma-Poisson (negative binomial): mean `mean`, variance mean + mean²/k.
    fn neg_binomial(&mut self, mean: f64, k: f64) -> u64 {
        if mean.is_nan() || mean <= 0.0 {
            return 0;
        }
        let lambda = self.gamma(k, mean / k);
        self.poisson(lambda)
    }

    pub(crate) fn binomial(&mut self, n: u64, p: f64) -> u64 {
        if n == 0 || p.is_nan() || p <= 0.0 {
            return 0;
        }
        if p >= 1.0 {
            return n;
        }
        if p > 0.5 {
            return n - self.binomial(n, 1.0 - p);
        }
        let nf = n as f64;
        if nf * p < 10.0 {
            // Inversion from 0.
            let q = 1.0 - p;
            let s = p / q;
            let a = (nf + 1.0) * s;
            loop {
                let mut r = q.powf(nf);
                let mut u = self.uniform();
                let mut x = 0u64;
                loop {
                    if u <= r {
                        return x;
                    }
                    u -= r;
                    x += 1;
                    if x > n {
                        break;
                    }
                    r *= a / x as f64 - s;
                }
            }
        }
        // BTRS (Hörmann 1993).
        let q = 1.0 - p;
        let spq = (nf * p * q).sqrt();
        let b = 1.15 + 2.53 * spq;
        let a = -0.0873 + 0.0248 * b + 0.01 * p;
        let c = nf * p + 0.5;
        let vr = 0.92 - 4.2 / b;
        let alpha = (2.83 + 5.1 / b) * spq;
        let lpq = (p / q).ln();
        let m = ((nf + 1.0) * p).floor();
        let h = ln_gamma(m + 1.0) + ln_gamma(nf - m + 1.0);
        loop {
            let u = self.uniform() - 0.5;
            let v = self.uniform();
            let us = 0.5 - u.abs();
            let k = ((2.0 * a / us + b) * u + c).floor();
            if k < 0.0 || k > nf {
                continue;
            }
            if us >= 0.07 && v <= vr {
                return k as u64;
            }
            let v = (v * alpha / (a / (us * us) + b)).ln();
            if v <= h - ln_gamma(k + 1.0) - ln_gamma(nf - k + 1.0) + (k - m) * lpq {
                return k as u64;
            }
        }
    }
}

/// ln Γ(x) for x > 0 (Lanczos, g = 7).
fn ln_gamma(x: f64) -> f64 {
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        return (std::f64::consts::PI / (std::f64::consts::PI * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut a = C[0];
    let t = x + 7.5;
    for (i, c) in C.iter().enumerate().skip(1) {
        a += c / (x + i as f64);
    }
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

/// Φ, the standard normal CDF (Abramowitz & Stegun 26.2.17, |error| < 7.5e-8).
pub fn phi(x: f64) -> f64 {
    if x.is_nan() {
        return f64::NAN;
    }
    let t = 1.0 / (1.0 + 0.231_641_9 * x.abs());
    let density = 0.398_942_280_401_432_7 * (-x * x / 2.0).exp();
    let upper = density * t * (0.319_381_530 + t * (-0.356_563_782 + t * (1.781_477_937 + t * (-1.821_255_978 + t * 1.330_274_429))));
    if x >= 0.0 { 1.0 - upper } else { upper }
}

/// Φ⁻¹ (Acklam's rational approximation, relative error < 1.2e-9).
pub fn phi_inv(p: f64) -> f64 {
    const A: [f64; 6] = [-3.969_683_028_665_376e1, 2.209_460_984_245_205e2, -2.759_285_104_469_687e2, 1.383_577_518_672_69e2, -3.066_479_806_614_716e1, 2.506_628_277_459_239];
    const B: [f64; 5] = [-5.447_609_879_822_406e1, 1.615_858_368_580_409e2, -1.556_989_798_598_866e2, 6.680_131_188_771_972e1, -1.328_068_155_288_572e1];
    const C: [f64; 6] = [-7.784_894_002_430_293e-3, -3.223_964_580_411_365e-1, -2.400_758_277_161_838, -2.549_732_539_343_734, 4.374_664_141_464_968, 2.938_163_982_698_783];
    const D: [f64; 4] = [7.784_695_709_041_462e-3, 3.224_671_290_700_398e-1, 2.445_134_137_142_996, 3.754_408_661_907_416];
    if !(p > 0.0 && p < 1.0) {
        return if p == 0.0 { f64::NEG_INFINITY } else if p == 1.0 { f64::INFINITY } else { f64::NAN };
    }
    let low = 0.024_25;
    if p < low {
        let q = (-2.0 * p.ln()).sqrt();
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5]) / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    } else if p <= 1.0 - low {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    } else {
        -phi_inv(1.0 - p)
    }
}

// --------------------------------------------------------------------- the model

/// An entity's truth: its rates and unit values (one struct for every type; a type
/// uses its own fields).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Rates {
    /// Multiplier on the base count (1; 0 when stopped).
    volume: f64,
    /// Pageviews per session (≥ 1).
    pageviews_per: f64,
    engaged: f64,
    bounce: f64,
    /// Conversions per session (pages, traffic sources) or per click (campaigns,
    /// keywords, emails).
    conversion: f64,
    order_value: f64,
    entry_share: f64,
    /// Exits per pageview (pages), per entry (funnel steps).
    exit: f64,
    sample_share: f64,
    load_ms: f64,
    ctr: f64,
    cpc: f64,
    session_share: f64,
    /// Bounced emails per sent.
    fail: f64,
    open: f64,
    /// Opens per unique open.
    reopen: f64,
    /// Recipients clicking per delivered.
    click: f64,
    unsubscribe: f64,
    spam: f64,
    position: f64,
}

/// A field of [`Rates`] a plant turns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Knob {
    Volume,
    PageviewsPer,
    Engaged,
    Bounce,
    Conversion,
    OrderValue,
    EntryShare,
    Exit,
    SampleShare,
    LoadMs,
    Ctr,
    Cpc,
    SessionShare,
    Fail,
    Open,
    Reopen,
    Click,
    Unsubscribe,
    Spam,
    Position,
}

impl Knob {
    /// A probability (kept in [0, 1]) rather than an amount.
    fn is_probability(self) -> bool {
        !matches!(self, Knob::Volume | Knob::PageviewsPer | Knob::OrderValue | Knob::LoadMs | Knob::Cpc | Knob::Reopen | Knob::Position)
    }
}

impl Rates {
    fn field(&mut self, knob: Knob) -> &mut f64 {
        match knob {
            Knob::Volume => &mut self.volume,
            Knob::PageviewsPer => &mut self.pageviews_per,
            Knob::Engaged => &mut self.engaged,
            Knob::Bounce => &mut self.bounce,
            Knob::Conversion => &mut self.conversion,
            Knob::OrderValue => &mut self.order_value,
            Knob::EntryShare => &mut self.entry_share,
            Knob::Exit => &mut self.exit,
            Knob::SampleShare => &mut self.sample_share,
            Knob::LoadMs => &mut self.load_ms,
            Knob::Ctr => &mut self.ctr,
            Knob::Cpc => &mut self.cpc,
            Knob::SessionShare => &mut self.session_share,
            Knob::Fail => &mut self.fail,
            Knob::Open => &mut self.open,
            Knob::Reopen => &mut self.reopen,
            Knob::Click => &mut self.click,
            Knob::Unsubscribe => &mut self.unsubscribe,
            Knob::Spam => &mut self.spam,
            Knob::Position => &mut self.position,
        }
    }

    fn with(mut self, knob: Knob, value: f64) -> Rates {
        *self.field(knob) = value;
        self
    }

    /// A clean entity of `entity_type`, drawn.
    fn draw(entity_type: EntityType, rng: &mut Rng) -> Rates {
        let mut r = Rates { volume: 1.0, ..Rates::default() };
        match entity_type {
            EntityType::Page | EntityType::TrafficSource => {
                r.pageviews_per = if entity_type == EntityType::Page { rng.range(1.05, 1.5) } else { rng.range(1.5, 3.0) };
                r.engaged = rng.range(0.40, 0.52);
                r.bounce = rng.range(0.20, 0.32);
                r.conversion = rng.range(0.01, 0.05);
                r.order_value = rng.log_range(30.0, 150.0);
                r.entry_share = rng.range(0.2, 0.8);
                r.exit = rng.range(0.2, 0.4);
                r.sample_share = rng.range(0.5, 0.9);
                r.load_ms = rng.log_range(700.0, 2000.0);
            }
            EntityType::Campaign | EntityType::Keyword => {
                r.ctr = if entity_type == EntityType::Campaign { rng.range(0.01, 0.04) } else { rng.range(0.02, 0.08) };
                r.cpc = rng.log_range(0.3, 3.0);
                r.conversion = if entity_type == EntityType::Campaign { rng.range(0.03, 0.10) } else { rng.range(0.02, 0.08) };
                // The order value from a return on ad spend of 1.5–5.
                r.order_value = rng.log_range(1.5, 5.0) * r.cpc / r.conversion;
                r.session_share = rng.range(0.85, 0.95);
                r.position = rng.range(1.2, 8.0);
            }
            EntityType::Email => {
                r.fail = rng.range(0.005, 0.03);
                r.open = rng.range(0.20, 0.40);
                r.reopen = rng.range(1.3, 1.8);
                r.click = rng.range(0.02, 0.06);
                r.unsubscribe = rng.range(0.001, 0.004);
                r.spam = rng.range(0.0001, 0.0004);
                r.conversion = rng.range(0.03, 0.10);
                r.order_value = rng.log_range(30.0, 150.0);
            }
            EntityType::FunnelStep => {
                r.exit = rng.range(0.2, 0.5);
            }
            EntityType::Device => {}
        }
        r
    }
}

/// The knob that moves `metric` of `entity_type` (a ratio's numerator, a sum's metric).
fn knob_of(entity_type: EntityType, metric: &str) -> Option<Knob> {
    use EntityType::*;
    Some(match (entity_type, metric) {
        (Page | TrafficSource, "sessions") | (Campaign | Keyword, "impressions") | (Email, "sent") | (FunnelStep, "entries") => Knob::Volume,
        (Page | TrafficSource, "pageviews") => Knob::PageviewsPer,
        (Page | TrafficSource, "engaged_sessions") => Knob::Engaged,
        (Page | TrafficSource, "bounces") => Knob::Bounce,
        (_, "conversions") => Knob::Conversion,
        (Page | TrafficSource | Campaign | Email, "revenue") => Knob::OrderValue,
        (Page, "entries") => Knob::EntryShare,
        (Page | FunnelStep, "exits") | (FunnelStep, "step_completions") => Knob::Exit,
        (Page, "load_time_samples") => Knob::SampleShare,
        (Page, "load_time_ms_sum") => Knob::LoadMs,
        (Campaign | Keyword, "clicks") => Knob::Ctr,
        (Campaign | Keyword, "cost") => Knob::Cpc,
        (Campaign, "sessions") => Knob::SessionShare,
        (Email, "delivered" | "bounces") => Knob::Fail,
        (Email, "unique_opens") => Knob::Open,
        (Email, "opens") => Knob::Reopen,
        (Email, "email_clicks") => Knob::Click,
        (Email, "unsubscribes") => Knob::Unsubscribe,
        (Email, "spam_reports") => Knob::Spam,
        (Keyword, "position_sum") => Knob::Position,
        _ => return None,
    })
}

/// Expected value of `metric` on a day whose base count (before the entity's volume
/// multiplier) is `base`.
fn expected(entity_type: EntityType, metric: &str, r: &Rates, base: f64) -> f64 {
    use EntityType::*;
    let b = base * r.volume;
    match (entity_type, metric) {
        (Page | TrafficSource, "sessions") => b,
        (Page | TrafficSource, "pageviews") => b * r.pageviews_per,
        (Page | TrafficSource, "engaged_sessions") => b * r.engaged,
        (Page | TrafficSource, "bounces") => b * r.bounce,
        (Page | TrafficSource, "conversions") => b * r.conversion,
        (Page | TrafficSource, "revenue") => b * r.conversion * r.order_value,
        (Page, "entries") => b * r.entry_share,
        (Page, "exits") => b * r.pageviews_per * r.exit,
        (Page, "load_time_samples") => b * r.sample_share,
        (Page, "load_time_ms_sum") => b * r.sample_share * r.load_ms,
        (Campaign | Keyword, "impressions") => b,
        (Campaign | Keyword, "clicks") => b * r.ctr,
        (Campaign | Keyword, "cost") => b * r.ctr * r.cpc,
        (Campaign | Keyword, "conversions") => b * r.ctr * r.conversion,
        (Campaign, "revenue") => b * r.ctr * r.conversion * r.order_value,
        (Campaign, "sessions") => b * r.ctr * r.session_share,
        (Keyword, "position_sum") => b * r.position,
        (Email, "sent") => b,
        (Email, "delivered") => b * (1.0 - r.fail),
        (Email, "bounces") => b * r.fail,
        (Email, "unique_opens") => b * (1.0 - r.fail) * r.open,
        (Email, "opens") => b * (1.0 - r.fail) * r.open * r.reopen,
        (Email, "email_clicks") => b * (1.0 - r.fail) * r.click,
        (Email, "unsubscribes") => b * (1.0 - r.fail) * r.unsubscribe,
        (Email, "spam_reports") => b * (1.0 - r.fail) * r.spam,
        (Email, "conversions") => b * (1.0 - r.fail) * r.click * r.conversion,
        (Email, "revenue") => b * (1.0 - r.fail) * r.click * r.conversion * r.order_value,
        (FunnelStep, "entries") => b,
        (FunnelStep, "step_completions") => b * (1.0 - r.exit),
        (FunnelStep, "exits") => b * r.exit,
        _ => 0.0,
    }
}

/// Jittered rates between a daily count and its parent, for a sum's dispersion: the
/// daily mean's squared coefficient of variation beyond the base count's gamma.
fn jitter_depth(entity_type: EntityType, metric: &str) -> f64 {
    use EntityType::*;
    match (entity_type, metric) {
        (Page | TrafficSource, "sessions") | (Campaign | Keyword, "impressions") | (Email, "sent" | "delivered") | (FunnelStep, "entries") => 0.0,
        (Campaign | Keyword, "cost" | "conversions" | "revenue") | (Email, "conversions" | "revenue") | (Page | TrafficSource, "revenue") => 2.0,
        _ => 1.0,
    }
}

fn clamp01(p: f64) -> f64 {
    p.clamp(0.0, 1.0)
}

fn cents(amount: f64) -> f64 {
    (amount * 100.0).round() / 100.0
}

/// One day of one entity: every metric of its type in the vocabulary's order.
fn draw_day(entity_type: EntityType, rng: &mut Rng, r: &Rates, mean: f64, k: f64, out: &mut Vec<f64>) {
    out.clear();
    // A rate at 0 or 1 (a planted stop) stays exact.
    let jitter = |rng: &mut Rng, rate: f64| if rate > 0.0 && rate < 1.0 { clamp01(rate * rng.jitter(RATE_CV)) } else { clamp01(rate) };
    let revenue = |rng: &mut Rng, orders: u64, value: f64| if orders == 0 { 0.0 } else { cents(rng.gamma(orders as f64 * ORDER_SHAPE, value / ORDER_SHAPE)) };
    match entity_type {
        EntityType::Page | EntityType::TrafficSource => {
            let sessions = rng.neg_binomial(mean * r.volume, k);
            let extra = (r.pageviews_per - 1.0).max(0.0) * rng.jitter(RATE_CV);
            let pageviews = sessions + rng.poisson(sessions as f64 * extra);
            let bounce = jitter(rng, r.bounce);
            let engaged_rate = jitter(rng, r.engaged);
            let bounces = rng.binomial(sessions, bounce);
            let engaged = rng.binomial(sessions - bounces, if bounce < 1.0 { clamp01(engaged_rate / (1.0 - bounce)) } else { 0.0 });
            let conversion = jitter(rng, r.conversion);
            let conversions = rng.binomial(sessions, conversion);
            let revenue = revenue(rng, conversions, r.order_value);
            out.extend([sessions as f64, pageviews as f64, engaged as f64, bounces as f64, conversions as f64, revenue]);
            if entity_type == EntityType::Page {
                let entry_share = jitter(rng, r.entry_share);
                let entries = rng.binomial(sessions, entry_share);
                let exit = jitter(rng, r.exit);
                let exits = rng.binomial(pageviews, exit);
                let sample_share = jitter(rng, r.sample_share);
                let samples = rng.binomial(sessions, sample_share);
                let load_ms = r.load_ms * rng.jitter(RATE_CV);
                let load = if samples == 0 { 0.0 } else { rng.gamma(samples as f64 * SAMPLE_SHAPE, load_ms / SAMPLE_SHAPE).round() };
                out.extend([entries as f64, exits as f64, load, samples as f64]);
            }
        }
        EntityType::Campaign | EntityType::Keyword => {
            let impressions = rng.neg_binomial(mean * r.volume, k);
            let ctr = jitter(rng, r.ctr);
            let clicks = rng.binomial(impressions, ctr);
            let cost = cents(clicks as f64 * r.cpc * rng.jitter(RATE_CV));
            let conversion = jitter(rng, r.conversion);
            let conversions = rng.binomial(clicks, conversion);
            if entity_type == EntityType::Campaign {
                let revenue = revenue(rng, conversions, r.order_value);
                let session_share = jitter(rng, r.session_share);
                let sessions = rng.binomial(clicks, session_share);
                out.extend([impressions as f64, clicks as f64, cost, conversions as f64, revenue, sessions as f64]);
            } else {
                let position = (impressions as f64 * r.position * rng.jitter(0.05) * 10.0).round() / 10.0;
                out.extend([impressions as f64, clicks as f64, cost, conversions as f64, position]);
            }
        }
        EntityType::Email => {
            let sent = rng.neg_binomial(mean * r.volume, k);
            let fail = jitter(rng, r.fail);
            let bounces = rng.binomial(sent, fail);
            let delivered = sent - bounces;
            let open = jitter(rng, r.open);
            let unique_opens = rng.binomial(delivered, open);
            let reopens = unique_opens as f64 * (r.reopen - 1.0).max(0.0) * rng.jitter(RATE_CV);
            let opens = unique_opens + rng.poisson(reopens);
            // Clickers are among openers: thinning the opens at click/open keeps the
            // click rate per delivered at `click`, whatever the open rate does.
            let click = jitter(rng, r.click);
            let clicks = rng.binomial(unique_opens, if open > 0.0 { clamp01(click / open) } else { 0.0 });
            let unsubscribe = jitter(rng, r.unsubscribe);
            let unsubscribes = rng.binomial(delivered, unsubscribe);
            let spam = jitter(rng, r.spam);
            let spam_reports = rng.binomial(delivered, spam);
            let conversion = jitter(rng, r.conversion);
            let conversions = rng.binomial(clicks, conversion);
            let revenue = revenue(rng, conversions, r.order_value);
            out.extend([
                sent as f64,
                delivered as f64,
                bounces as f64,
                opens as f64,
                unique_opens as f64,
                clicks as f64,
                unsubscribes as f64,
                spam_reports as f64,
                conversions as f64,
                revenue,
            ]);
        }
        EntityType::FunnelStep => {
            let entries = rng.neg_binomial(mean * r.volume, k);
            let exit = jitter(rng, r.exit);
            let exits = rng.binomial(entries, exit);
            out.extend([entries as f64, (entries - exits) as f64, exits as f64]);
        }
        EntityType::Device => {}
    }
}

/// The metrics [`draw_day`] writes, in its order (the vocabulary's).
fn drawn_metrics(entity_type: EntityType) -> &'static [&'static str] {
    match entity_type {
        EntityType::Page => &[
            "sessions",
            "pageviews",
            "engaged_sessions",
            "bounces",
            "conversions",
            "revenue",
            "entries",
            "exits",
            "load_time_ms_sum",
            "load_time_samples",
        ],
        EntityType::TrafficSource => &["sessions", "pageviews", "engaged_sessions", "bounces", "conversions", "revenue"],
        EntityType::Campaign => &["impressions", "clicks", "cost", "conversions", "revenue", "sessions"],
        EntityType::Keyword => &["impressions", "clicks", "cost", "conversions", "position_sum"],
        EntityType::Email => &[
            "sent",
            "delivered",
            "bounces",
            "opens",
            "unique_opens",
            "email_clicks",
            "unsubscribes",
            "spam_reports",
            "conversions",
            "revenue",
        ],
        EntityType::FunnelStep => &["entries", "step_completions", "exits"],
        EntityType::Device => &[],
    }
}

/// A tenant: one site of one tier.
#[derive(Debug, Clone)]
struct Tenant {
    name: String,
    tier: usize,
    declared_holiday: bool,
    /// Monday first, mean 1.
    weekdays: [f64; 7],
    /// Gamma shape of the base counts' day-to-day noise.
    k: f64,
}

impl Tenant {
    fn new(tier: usize, replicate: usize) -> Tenant {
        let mut rng = Rng::derive(SEED, &[1, tier as u64, replicate as u64]);
        let mut weekdays = WEEKDAYS.map(|w| w * rng.range(0.95, 1.05));
        let mean = weekdays.iter().sum::<f64>() / 7.0;
        weekdays.iter_mut().for_each(|w| *w /= mean);
        Tenant {
            name: format!("{}_r{replicate:02}", TIERS[tier].1),
            tier,
            declared_holiday: replicate.is_multiple_of(2),
            weekdays,
            k: rng.range(10.0, 20.0),
        }
    }

    /// The site-wide factor of day `day` (0 = the first day): weekday × holiday.
    fn day_factor(&self, day: u32) -> f64 {
        let date = first_day() + Days::new(u64::from(day));
        let holiday = if day == DAYS - 1 - HOLIDAY_OFFSET { HOLIDAY_FACTOR } else { 1.0 };
        self.weekdays[date.weekday().num_days_from_monday() as usize] * holiday
    }
}

// -------------------------------------------------------------------- detectors

/// The two effect sizes planted per detector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EffectLevel {
    At,
    Beyond,
}

/// A detector the generator plants for, with what it reads.
#[derive(Debug, Clone)]
struct Covered {
    spec: DetectorSpec,
    entity_type: EntityType,
    measure: Measure,
    comparison: Comparison,
    recent_days: u32,
    baseline_days: u32,
    knob: Knob,
}

impl Covered {
    fn from_spec(spec: &DetectorSpec) -> Result<Covered, String> {
        if spec.raw_sql.is_some() {
            return Err("raw SQL".into());
        }
        let (Some(measure), Some(windows), Some(comparison)) = (&spec.measure, &spec.windows, &spec.comparison) else {
            return Err("not declarative".into());
        };
        if !TYPES.iter().any(|(t, _)| *t == spec.entity_type) {
            return Err(format!("entity type {} not generated", spec.entity_type));
        }
        if windows.scan_start_offset() + 1 > DAYS || windows.gap_days != 0 {
            return Err("windows beyond the generated days".into());
        }
        if let Some(filter) = &spec.entity_filter {
            let id = entity_id(spec.entity_type, 0);
            let keeps = filter.like.as_deref().is_none_or(|p| like(&id, p)) && !filter.not_like.as_deref().is_some_and(|p| like(&id, p));
            if !keeps {
                return Err("its entity filter leaves out the generated ids".into());
            }
        }
        let metric = measure.metrics()[0].to_string();
        let knob = knob_of(spec.entity_type, &metric).ok_or_else(|| format!("no generator knob for {metric}"))?;
        let covered = Covered {
            spec: spec.clone(),
            entity_type: spec.entity_type,
            measure: measure.clone(),
            comparison: comparison.clone(),
            recent_days: windows.recent_days,
            baseline_days: windows.baseline_days.unwrap_or(0),
            knob,
        };
        // The measure must move with the knob (a ratio whose both sides scale with it does not).
        let r = Rates::draw(spec.entity_type, &mut Rng::new(1));
        let tenant = Tenant::new(0, 0);
        let (m0, m1) = (covered.measure_value(&r.with(knob, 0.0), &tenant, 1.0), covered.measure_value(&r.with(knob, 1.0), &tenant, 1.0));
        if (m1 - m0).is_nan() || (m1 - m0).abs() <= 1e-12 {
            return Err(format!("{metric} does not move the measure"));
        }
        Ok(covered)
    }

    fn recent_start(&self) -> u32 {
        DAYS - self.recent_days
    }

    fn baseline_range(&self) -> std::ops::Range<u32> {
        self.recent_start() - self.baseline_days..self.recent_start()
    }

    /// The measure's true value over the recent window, unscaled: a ratio's rate, a
    /// sum's expected total.
    fn measure_value(&self, r: &Rates, tenant: &Tenant, level: f64) -> f64 {
        match &self.measure {
            Measure::Ratio { numerator, denominator, .. } => {
                let den = expected(self.entity_type, denominator, r, 1.0);
                if den > 0.0 { expected(self.entity_type, numerator, r, 1.0) / den } else { 0.0 }
            }
            Measure::Sum { metric, .. } => {
                (self.recent_start()..DAYS).map(|d| expected(self.entity_type, metric, r, level * tenant.day_factor(d))).sum()
            }
        }
    }

    /// The planted multiplier of a relative comparison, or the factor on a threshold.
    fn effect(&self, level: EffectLevel) -> f64 {
        let far = |f: f64| match level {
            EffectLevel::At => f,
            EffectLevel::Beyond => 1.0 + (f - 1.0) * 1.5,
        };
        match self.comparison {
            Comparison::BelowFractionOfBaseline { fraction } | Comparison::AboveFractionOfBaseline { fraction } => far(fraction),
            Comparison::DropToZero => 0.0,
            Comparison::AbsoluteBelow { .. } => far(0.9),
            Comparison::AbsoluteAbove { .. } => far(1.1),
            Comparison::PercentileBelow { .. } => far(0.8),
            Comparison::PercentileAbove { .. } => far(1.2),
        }
    }

    /// The threshold in the measure's unscaled units, given the tenant's percentile.
    fn reference(&self, percentile: f64) -> Option<f64> {
        let scale = self.measure.scale();
        match self.comparison {
            Comparison::AbsoluteBelow { threshold } | Comparison::AbsoluteAbove { threshold } => Some(threshold / scale),
            Comparison::PercentileBelow { factor, .. } | Comparison::PercentileAbove { factor, .. } => Some(factor * percentile),
            _ => None,
        }
    }

    /// The rates of a planted entity: the knob solved so the measure reaches its target
    /// (the measure is affine in its knob).
    fn plant(&self, base: &Rates, tenant: &Tenant, level_count: f64, level: EffectLevel, percentile: f64) -> Rates {
        let target = match self.reference(percentile) {
            Some(reference) => reference * self.effect(level),
            None => self.effect(level) * self.measure_value(base, tenant, level_count),
        };
        let m0 = self.measure_value(&base.with(self.knob, 0.0), tenant, level_count);
        let m1 = self.measure_value(&base.with(self.knob, 1.0), tenant, level_count);
        let mut value = (target - m0) / (m1 - m0);
        value = if self.knob.is_probability() { clamp01(value) } else { value.max(0.0) };
        base.with(self.knob, value)
    }

    fn percentile(&self) -> Option<f64> {
        match self.comparison {
            Comparison::PercentileBelow { percentile, .. } | Comparison::PercentileAbove { percentile, .. } => Some(percentile),
            _ => None,
        }
    }

    /// Whether the test (or the rule) looks for a drop.
    fn drop(&self) -> bool {
        matches!(
            self.comparison,
            Comparison::BelowFractionOfBaseline { .. } | Comparison::DropToZero | Comparison::AbsoluteBelow { .. } | Comparison::PercentileBelow { .. }
        )
    }
}

/// SQL `LIKE` (`%`, `_`), for entity filters.
fn like(text: &str, pattern: &str) -> bool {
    fn matches(t: &[char], p: &[char]) -> bool {
        match p.split_first() {
            None => t.is_empty(),
            Some(('%', rest)) => (0..=t.len()).any(|i| matches(&t[i..], rest)),
            Some(('_', rest)) => !t.is_empty() && matches(&t[1..], rest),
            Some((c, rest)) => t.first() == Some(c) && matches(&t[1..], rest),
        }
    }
    matches(&text.chars().collect::<Vec<_>>(), &pattern.chars().collect::<Vec<_>>())
}

fn entity_id(entity_type: EntityType, index: usize) -> String {
    match entity_type {
        EntityType::Page => format!("/page-{index:03}"),
        EntityType::Campaign => format!("campaign_{index:03}"),
        EntityType::Email => format!("email_{index:03}"),
        EntityType::FunnelStep => format!("funnel:step_{index:03}"),
        EntityType::TrafficSource => format!("source_{index:03}/medium"),
        EntityType::Keyword => format!("keyword {index:03}"),
        EntityType::Device => format!("device_{index}"),
    }
}

// ------------------------------------------------------------------------ power

/// Day-level moments of a ratio over a window: (rate, mean daily denominator, daily
/// variance of numerator − rate × denominator).
fn ratio_moments(entity_type: EntityType, numerator: &str, denominator: &str, knob: Knob, r: &Rates, n: f64) -> Option<(f64, f64)> {
    let den1 = expected(entity_type, denominator, r, 1.0);
    if den1.is_nan() || den1 <= 0.0 {
        return None;
    }
    let p = expected(entity_type, numerator, r, 1.0) / den1;
    let cv2 = RATE_CV * RATE_CV;
    let variance = match (numerator, denominator) {
        ("revenue", "sessions") => {
            let (c, v) = (r.conversion, r.order_value);
            v * v * (n * c / ORDER_SHAPE + n * c * (1.0 - c) + n * n * c * c * cv2)
        }
        ("load_time_ms_sum", "load_time_samples") => r.load_ms * r.load_ms * (n * (1.0 + cv2) / SAMPLE_SHAPE + n * n * cv2),
        ("cost", "clicks") => r.cpc * r.cpc * n * n * cv2,
        ("revenue", "cost") => {
            let clicks = n / r.cpc;
            let (c, v) = (r.conversion, r.order_value);
            v * v * (clicks * c * (1.0 - c) + clicks * clicks * c * c * 2.0 * cv2 + clicks * c / ORDER_SHAPE)
        }
        ("cost", "conversions") => {
            let clicks = n / r.conversion;
            let c = r.conversion;
            clicks * clicks * r.cpc * r.cpc * 2.0 * cv2 + (r.cpc / c) * (r.cpc / c) * clicks * c * (1.0 - c)
        }
        _ if !converge_detect::vocabulary::is_amount(numerator) && !converge_detect::vocabulary::is_amount(denominator) => {
            // A count thinned from its denominator at a jittered rate: the rate's spread
            // is the jittered knob's (a complement such as 1 − exit moves as the exit).
            let at_zero = expected(entity_type, numerator, &r.with(knob, 0.0), 1.0) / den1;
            let sd = RATE_CV * (p - at_zero).abs();
            n * p * (1.0 - p).max(0.0) + n * n * sd * sd
        }
        _ => return None,
    };
    Some((p, variance))
}

/// What the power of one planted entity was computed from.
#[derive(Debug, Clone, Serialize)]
pub struct PowerInputs {
    /// The measure's true value before and with the plant (unscaled: a rate or a sum).
    pub baseline_value: f64,
    pub planted_value: f64,
    /// The threshold's true value, for absolute and percentile comparisons.
    pub reference: Option<f64>,
    /// Mean daily denominator (ratios) or metric (sums) over the recent window.
    pub recent_daily: f64,
    pub delta: f64,
    pub se: f64,
    /// Expected tested entities of the tenant (the Bonferroni m) and the z it implies.
    pub tested: f64,
    pub z_crit: f64,
    /// Probability that the volume gate admits the entity.
    pub gate: f64,
    /// Whether the detector stays a rule (no test): power is then P(rule fires).
    pub rule: bool,
    pub power: f64,
}

/// The squared coefficient of variation of a metric's daily mean beyond Poisson: the
/// base count's gamma and the jitter of every rate between it and the metric.
fn sum_theta(covered: &Covered, metric: &str, tenant: &Tenant) -> f64 {
    1.0 / tenant.k + jitter_depth(covered.entity_type, metric) * RATE_CV * RATE_CV
}

/// An amount's value per unit of the count it is summed over (cost per click …); 1 for counts.
fn unit_value(metric: &str, r: &Rates) -> f64 {
    let unit = match metric {
        "cost" => r.cpc,
        "revenue" => r.order_value,
        "load_time_ms_sum" => r.load_ms,
        "position_sum" => r.position,
        _ => 1.0,
    };
    if unit > 0.0 { unit } else { 1.0 }
}

/// A window's expected total of `metric` and the variance of that total (an amount
/// spreads as its parent count, times the unit value).
fn window_sum(covered: &Covered, metric: &str, r: &Rates, tenant: &Tenant, level: f64, days: std::ops::Range<u32>) -> (f64, f64) {
    let theta = sum_theta(covered, metric, tenant);
    let unit = unit_value(metric, r);
    days.map(|d| expected(covered.entity_type, metric, r, level * tenant.day_factor(d)))
        .fold((0.0, 0.0), |(total, variance), mu| {
            let parent = mu / unit;
            (total + mu, variance + unit * unit * parent * (1.0 + parent * theta))
        })
}

/// Probability that the volume gate admits an entity with `recent` and `base` rates.
fn gate_probability(covered: &Covered, recent: &Rates, base: &Rates, tenant: &Tenant, level: f64) -> f64 {
    let Some(gate) = &covered.spec.min_volume else { return 1.0 };
    let one = |minimum: Option<f64>, rates: &Rates, days: std::ops::Range<u32>| match minimum {
        None => 1.0,
        Some(minimum) => {
            let (total, variance) = window_sum(covered, &gate.metric, rates, tenant, level, days);
            phi_cdf_safe((total - minimum) / variance.sqrt().max(1e-9))
        }
    };
    let baseline = if covered.baseline_days > 0 { one(gate.baseline, base, covered.baseline_range()) } else { 1.0 };
    one(gate.recent, recent, covered.recent_start()..DAYS) * baseline
}

fn phi_cdf_safe(x: f64) -> f64 {
    if x.is_nan() { 0.0 } else { phi(x) }
}

/// The analytic power of one planted entity.
fn power(covered: &Covered, base: &Rates, planted: &Rates, tenant: &Tenant, level: f64, reference: Option<f64>, tested: f64) -> PowerInputs {
    let z_crit = phi_inv(1.0 - ALPHA / tested.max(1.0));
    let gate = gate_probability(covered, planted, base, tenant, level);
    let recent = covered.recent_start()..DAYS;
    let recent_days = f64::from(covered.recent_days);
    let mut inputs = PowerInputs {
        baseline_value: covered.measure_value(base, tenant, level),
        planted_value: covered.measure_value(planted, tenant, level),
        reference,
        recent_daily: 0.0,
        delta: f64::NAN,
        se: f64::NAN,
        tested,
        z_crit,
        gate,
        rule: false,
        power: f64::NAN,
    };
    match &covered.measure {
        Measure::Ratio { numerator, denominator, .. } => {
            let daily = |r: &Rates, days: std::ops::Range<u32>| {
                let count = days.len().max(1) as f64;
                days.map(|d| expected(covered.entity_type, denominator, r, level * tenant.day_factor(d))).sum::<f64>() / count
            };
            let n_recent = daily(planted, recent);
            inputs.recent_daily = n_recent;
            let Some((p_recent, v_recent)) = ratio_moments(covered.entity_type, numerator, denominator, covered.knob, planted, n_recent) else {
                return inputs;
            };
            let se_recent2 = v_recent / (n_recent * n_recent * recent_days);
            match reference {
                Some(reference) => {
                    inputs.delta = (p_recent - reference).abs();
                    inputs.se = se_recent2.sqrt();
                }
                None => {
                    let n_base = daily(base, covered.baseline_range());
                    let Some((p_base, v_base)) = ratio_moments(covered.entity_type, numerator, denominator, covered.knob, base, n_base) else {
                        return inputs;
                    };
                    inputs.delta = (p_recent - p_base).abs();
                    inputs.se = (se_recent2 + v_base / (n_base * n_base * f64::from(covered.baseline_days))).sqrt();
                }
            }
        }
        Measure::Sum { metric, .. } => {
            let (expected_recent, variance_recent) = window_sum(covered, metric, base, tenant, level, recent.clone());
            let (planted_recent, planted_variance) = window_sum(covered, metric, planted, tenant, level, recent.clone());
            inputs.recent_daily = expected_recent / recent_days;
            match reference {
                // A rule: the probability that it fires.
                Some(reference) => {
                    inputs.rule = true;
                    inputs.delta = (planted_recent - reference).abs();
                    inputs.se = planted_variance.sqrt();
                    let fires = if covered.drop() && reference <= 1.0 {
                        // P(sum = 0): every day's gamma-Poisson count is 0.
                        let theta = sum_theta(covered, metric, tenant);
                        recent
                            .map(|d| {
                                let mu = expected(covered.entity_type, metric, planted, level * tenant.day_factor(d));
                                (1.0 + mu * theta).powf(-1.0 / theta)
                            })
                            .product()
                    } else if covered.drop() {
                        phi((reference - 0.5 - planted_recent) / inputs.se.max(1e-9))
                    } else {
                        phi((planted_recent - reference - 0.5) / inputs.se.max(1e-9))
                    };
                    inputs.power = gate * fires;
                    return inputs;
                }
                None => {
                    let (baseline_total, _) = window_sum(covered, metric, base, tenant, level, covered.baseline_range());
                    let phi_recent = if expected_recent > 0.0 { variance_recent / expected_recent } else { 1.0 };
                    inputs.delta = (expected_recent - planted_recent).abs();
                    inputs.se = (phi_recent * (expected_recent + expected_recent * expected_recent / baseline_total.max(1e-9))).sqrt();
                }
            }
        }
    }
    let test = if inputs.se > 0.0 { phi(inputs.delta / inputs.se - z_crit) } else if inputs.delta > 0.0 { 1.0 } else { 0.0 };
    inputs.power = gate * test;
    inputs
}

// ------------------------------------------------------------------- the dataset

/// One planted entity.
#[derive(Debug, Clone, Serialize)]
pub struct Plant {
    pub detector: String,
    pub tier: String,
    pub level: EffectLevel,
    pub tenant: String,
    pub entity_id: String,
    pub inputs: PowerInputs,
    /// Whether its own detector fired on it, in the new pack and in the fixed one.
    pub found_new: bool,
    pub found_fixed: bool,
}

/// What the analysis needs of every generated entity.
#[derive(Debug, Clone)]
struct EntityInfo {
    tier: usize,
    type_index: usize,
    declared: bool,
    /// Index into the plants.
    plant: Option<usize>,
}

/// Per covered type: clean and planted entities per tenant, and the (detector, level)
/// slots planted in turn.
#[derive(Debug, Clone)]
struct TypePlan {
    entity_type: EntityType,
    clean: usize,
    planted: usize,
    slots: Vec<(usize, EffectLevel)>,
}

fn plans(covered: &[Covered]) -> Vec<TypePlan> {
    TYPES
        .iter()
        .map(|(entity_type, clean)| {
            let slots: Vec<(usize, EffectLevel)> = covered
                .iter()
                .enumerate()
                .filter(|(_, c)| c.entity_type == *entity_type)
                .flat_map(|(i, _)| [(i, EffectLevel::At), (i, EffectLevel::Beyond)])
                .collect();
            let planted = (MIN_PER_CELL * slots.len()).div_ceil(REPLICATES);
            let needed_clean = ((planted as f64) * (1.0 - MAX_PLANTED_SHARE) / MAX_PLANTED_SHARE).ceil() as usize;
            TypePlan { entity_type: *entity_type, clean: (*clean).max(needed_clean), planted, slots }
        })
        .collect()
}

/// The generated dataset's bookkeeping.
struct Dataset {
    tenants: Vec<Tenant>,
    plans: Vec<TypePlan>,
    entities: HashMap<(String, String, String), usize>,
    infos: Vec<EntityInfo>,
    plants: Vec<Plant>,
    plant_detector: Vec<usize>,
    rows: u64,
}

/// One tenant's entities of one type: (id, level, base rates, planted (slot, rates)).
struct Site {
    ids: Vec<String>,
    levels: Vec<f64>,
    base: Vec<Rates>,
    planted: Vec<Option<(usize, Rates)>>,
    plants: Vec<Option<Plant>>,
}

/// A tenant's entities of one type, planted ones last.
fn site(tenant: &Tenant, replicate: usize, type_index: usize, plan: &TypePlan, covered: &[Covered]) -> Site {
    let entity_type = plan.entity_type;
    let total = plan.clean + plan.planted;
    let tier_level = TIERS[tenant.tier].2;
    let mut ids = Vec::with_capacity(total);
    let mut levels = Vec::with_capacity(total);
    let mut base = Vec::with_capacity(total);
    for index in 0..total {
        let mut rng = Rng::derive(SEED, &[2, tenant.tier as u64, replicate as u64, type_index as u64, index as u64]);
        ids.push(entity_id(entity_type, index));
        levels.push(tier_level * rng.log_range(0.5, 2.0));
        base.push(Rates::draw(entity_type, &mut rng));
    }
    let mut planted = vec![None; total];
    let mut plants: Vec<Option<Plant>> = (0..total).map(|_| None).collect();
    for j in 0..plan.planted {
        if plan.slots.is_empty() {
            break;
        }
        let index = plan.clean + j;
        let (detector, level) = plan.slots[(replicate * plan.planted + j) % plan.slots.len()];
        let c = &covered[detector];
        // The tenant's percentile of the measure over all its entities of the type.
        let percentile = c
            .percentile()
            .map(|p| {
                let mut values: Vec<f64> = (0..total).map(|i| c.measure_value(&base[i], tenant, levels[i])).collect();
                values.sort_by(f64::total_cmp);
                let position = p * (values.len() - 1) as f64;
                let (low, high) = (position.floor() as usize, position.ceil() as usize);
                values[low] + (values[high] - values[low]) * (position - low as f64)
            })
            .unwrap_or(0.0);
        let rates = c.plant(&base[index], tenant, levels[index], level, percentile);
        let reference = c.reference(percentile);
        // Bonferroni's m: the entities the gate is expected to admit.
        let tested: f64 = (0..total)
            .map(|i| {
                let recent = planted[i].map_or(base[i], |(_, r): (usize, Rates)| r);
                gate_probability(c, &recent, &base[i], tenant, levels[i])
            })
            .sum::<f64>()
            .round()
            .max(1.0);
        let inputs = power(c, &base[index], &rates, tenant, levels[index], reference, tested);
        planted[index] = Some((detector, rates));
        plants[index] = Some(Plant {
            detector: c.spec.id.clone(),
            tier: TIERS[tenant.tier].0.to_string(),
            level,
            tenant: tenant.name.clone(),
            entity_id: ids[index].clone(),
            inputs,
            found_new: false,
            found_fixed: false,
        });
    }
    Site { ids, levels, base, planted, plants }
}

/// Generates one (type, tier) chunk's rows: (metric, day, tenant, entity) packed in a
/// key that sorts as the table should, and the value.
fn chunk_rows(entity_type: EntityType, type_index: usize, tenants: &[(usize, &Tenant)], sites: &[Site], covered: &[Covered]) -> Vec<(u64, f64)> {
    let metrics = drawn_metrics(entity_type).len();
    let mut rows = Vec::new();
    let mut day_values = Vec::with_capacity(metrics);
    for (local, ((replicate, tenant), site)) in tenants.iter().zip(sites).enumerate() {
        for index in 0..site.ids.len() {
            let mut rng = Rng::derive(SEED, &[3, tenant.tier as u64, *replicate as u64, type_index as u64, index as u64]);
            let start = site.planted[index].map(|(detector, _)| covered[detector].recent_start());
            for day in 0..DAYS {
                let rates = match (site.planted[index], start) {
                    (Some((_, planted)), Some(start)) if day >= start => planted,
                    _ => site.base[index],
                };
                let mean = site.levels[index] * tenant.day_factor(day);
                draw_day(entity_type, &mut rng, &rates, mean, tenant.k, &mut day_values);
                for (metric, value) in day_values.iter().enumerate() {
                    let key = (metric as u64) << 56 | u64::from(day) << 48 | (local as u64) << 24 | index as u64;
                    rows.push((key, *value));
                }
            }
        }
    }
    rows.sort_unstable_by_key(|(key, _)| *key);
    rows
}

/// Generates every tier's tenants into `daily_entity_metrics` on `connection`.
fn generate(connection: &duckdb::Connection, covered: &[Covered]) -> anyhow::Result<Dataset> {
    let plans = plans(covered);
    let tenants: Vec<Tenant> = (0..TIERS.len()).flat_map(|tier| (0..REPLICATES).map(move |r| Tenant::new(tier, r))).collect();
    let mut dataset = Dataset { tenants: tenants.clone(), plans: plans.clone(), entities: HashMap::new(), infos: Vec::new(), plants: Vec::new(), plant_detector: Vec::new(), rows: 0 };
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).expect("the epoch");
    let first = (first_day() - epoch).num_days() as i32;
    // Entity type first, so each type's rows are contiguous (zone maps), then tiers.
    for (type_index, plan) in plans.iter().enumerate() {
        let entity_type = plan.entity_type;
        let metrics = drawn_metrics(entity_type);
        for tier in 0..TIERS.len() {
            let tier_tenants: Vec<(usize, &Tenant)> = tenants.iter().filter(|t| t.tier == tier).enumerate().collect();
            let mut sites: Vec<Site> = tier_tenants.iter().map(|(r, t)| site(t, *r, type_index, plan, covered)).collect();
            for ((_, tenant), site) in tier_tenants.iter().zip(sites.iter_mut()) {
                for (index, id) in site.ids.iter().enumerate() {
                    let plant = site.plants[index].take().map(|plant| {
                        dataset.plants.push(plant);
                        dataset.plant_detector.push(site.planted[index].expect("planted").0);
                        dataset.plants.len() - 1
                    });
                    dataset.entities.insert((tenant.name.clone(), entity_type.as_str().to_string(), id.clone()), dataset.infos.len());
                    dataset.infos.push(EntityInfo { tier, type_index, declared: tenant.declared_holiday, plant });
                }
            }
            let rows = chunk_rows(entity_type, type_index, &tier_tenants, &sites, covered);
            let mut appender = connection.appender("daily_entity_metrics").context("opening an appender on daily_entity_metrics")?;
            for (key, value) in &rows {
                let metric = (key >> 56) as usize;
                let day = ((key >> 48) & 0xFF) as i32;
                let local = ((key >> 24) & 0xFF_FFFF) as usize;
                let index = (key & 0xFF_FFFF) as usize;
                appender
                    .append_row(duckdb::params![
                        DuckValue::Date32(first + day),
                        tier_tenants[local].1.name.as_str(),
                        entity_type.as_str(),
                        sites[local].ids[index].as_str(),
                        metrics[metric],
                        *value
                    ])
                    .context("appending a metric row")?;
            }
            appender.flush().context("flushing the appender")?;
            dataset.rows += rows.len() as u64;
        }
    }
    connection.execute_batch("CHECKPOINT").context("checkpoint after generating")?;
    Ok(dataset)
}

// ---------------------------------------------------------------------- results

/// One pack's counts for one detector in one tier.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PackCounts {
    pub found_at: usize,
    pub found_beyond: usize,
    pub recall_at: f64,
    pub recall_beyond: f64,
    /// Clean entities of the detector's type it fired on, of `clean_entities`.
    pub clean_fired: usize,
    pub clean_entities: usize,
    pub clean_fp_rate: f64,
    /// Its planted entities on which another detector fired (correlated detectors).
    pub other_detectors_on_its_plants: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct DetectorAccuracy {
    pub detector: String,
    pub entity_type: String,
    pub comparison: String,
    pub planted_at: usize,
    pub planted_beyond: usize,
    pub mean_power_at: f64,
    pub mean_power_beyond: f64,
    pub new: PackCounts,
    pub fixed: PackCounts,
}

/// One pack's summary over a tier.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PackTier {
    /// Clean entities (every type) on which any detector fired.
    pub clean_fired_any: usize,
    pub clean_fire_any_rate: f64,
    pub declared_clean_fired_any: usize,
    pub declared_fire_any_rate: f64,
    pub undeclared_clean_fired_any: usize,
    pub undeclared_fire_any_rate: f64,
    /// Detectable planted entities found by their own detector.
    pub detectable_found: usize,
    pub detectable_recall: f64,
    /// (planted entity, other detector) pairs.
    pub other_detectors_on_planted: usize,
    pub findings: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct TierAccuracy {
    pub tier: String,
    pub base_count: f64,
    pub tenants: usize,
    pub clean_entities: usize,
    pub declared_clean_entities: usize,
    pub undeclared_clean_entities: usize,
    pub planted_entities: usize,
    pub detectable_planted: usize,
    pub detectors: Vec<DetectorAccuracy>,
    pub new: PackTier,
    pub fixed: PackTier,
}

#[derive(Debug, Clone, Serialize)]
pub struct EntityCounts {
    pub entity_type: String,
    pub clean_per_tenant: usize,
    pub planted_per_tenant: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct SkippedDetector {
    pub id: String,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct DetectAccuracyResult {
    pub seed: u64,
    pub as_of: String,
    pub days: u32,
    pub tenants_per_tier: usize,
    pub entities: Vec<EntityCounts>,
    pub metric_rows: u64,
    pub generate_ms: u64,
    pub new_pack_ms: u64,
    pub fixed_pack_ms: u64,
    /// Detectors that still failed, per pack.
    pub new_failed: u64,
    pub fixed_failed: u64,
    /// Detectors that failed with four queries at once and ran again alone, per pack.
    pub new_retried: Vec<String>,
    pub fixed_retried: Vec<String>,
    pub covered: Vec<String>,
    pub skipped: Vec<SkippedDetector>,
    pub tiers: Vec<TierAccuracy>,
    pub plants: Vec<Plant>,
}

fn rate(numerator: usize, denominator: usize) -> f64 {
    if denominator == 0 { f64::NAN } else { numerator as f64 / denominator as f64 }
}

fn mean(values: impl Iterator<Item = f64>) -> f64 {
    let (sum, count) = values.fold((0.0, 0usize), |(s, c), v| (s + v, c + 1));
    if count == 0 { f64::NAN } else { sum / count as f64 }
}

/// Which detectors fired on which generated entity, for one pass.
fn fired_by_entity(dataset: &Dataset, findings: &[Opportunity]) -> HashMap<usize, Vec<String>> {
    let mut fired: HashMap<usize, Vec<String>> = HashMap::new();
    for finding in findings {
        let key = (finding.tenant.clone(), finding.entity_type.clone(), finding.entity_id.clone());
        if let Some(&entity) = dataset.entities.get(&key) {
            fired.entry(entity).or_default().push(finding.detector.clone());
        }
    }
    fired
}

/// One pack's counts per (tier, detector) and per tier.
fn count_pack(dataset: &Dataset, covered: &[Covered], fired: &HashMap<usize, Vec<String>>, findings: &[Opportunity]) -> (Vec<Vec<PackCounts>>, Vec<PackTier>) {
    let mut per = vec![vec![PackCounts::default(); covered.len()]; TIERS.len()];
    let mut tiers = vec![PackTier::default(); TIERS.len()];
    let index_of: HashMap<&str, usize> = covered.iter().enumerate().map(|(i, c)| (c.spec.id.as_str(), i)).collect();
    for finding in findings {
        if let Some(tier) = TIERS.iter().position(|(_, prefix, _)| finding.tenant.starts_with(&format!("{prefix}_"))) {
            tiers[tier].findings += 1;
        }
    }
    for (entity, info) in dataset.infos.iter().enumerate() {
        let detectors = fired.get(&entity).map(Vec::as_slice).unwrap_or(&[]);
        match info.plant {
            Some(plant) => {
                let own = dataset.plant_detector[plant];
                let counts = &mut per[info.tier][own];
                let found = detectors.iter().any(|d| *d == covered[own].spec.id);
                if found {
                    match dataset.plants[plant].level {
                        EffectLevel::At => counts.found_at += 1,
                        EffectLevel::Beyond => counts.found_beyond += 1,
                    }
                    if dataset.plants[plant].inputs.power >= DETECTABLE_POWER {
                        tiers[info.tier].detectable_found += 1;
                    }
                }
                let others = detectors.iter().filter(|d| **d != covered[own].spec.id).count();
                counts.other_detectors_on_its_plants += others;
                tiers[info.tier].other_detectors_on_planted += others;
            }
            None => {
                for detector in detectors {
                    if let Some(&d) = index_of.get(detector.as_str()) {
                        per[info.tier][d].clean_fired += 1;
                    }
                }
                if !detectors.is_empty() {
                    tiers[info.tier].clean_fired_any += 1;
                    if info.declared {
                        tiers[info.tier].declared_clean_fired_any += 1;
                    } else {
                        tiers[info.tier].undeclared_clean_fired_any += 1;
                    }
                }
            }
        }
    }
    (per, tiers)
}

fn analyse(dataset: &Dataset, covered: &[Covered], new: &[Opportunity], fixed: &[Opportunity]) -> Vec<TierAccuracy> {
    let (new_per, new_tiers) = count_pack(dataset, covered, &fired_by_entity(dataset, new), new);
    let (fixed_per, fixed_tiers) = count_pack(dataset, covered, &fired_by_entity(dataset, fixed), fixed);
    let mut out = Vec::new();
    for (tier, (name, _, base_count)) in TIERS.iter().enumerate() {
        let clean_of_type = |type_index: usize, declared: Option<bool>| {
            dataset.infos.iter().filter(|i| i.tier == tier && i.plant.is_none() && i.type_index == type_index && declared.is_none_or(|d| i.declared == d)).count()
        };
        let clean_all = |declared: Option<bool>| (0..dataset.plans.len()).map(|t| clean_of_type(t, declared)).sum::<usize>();
        let tier_plants: Vec<(usize, &Plant)> = dataset.plants.iter().enumerate().filter(|(_, p)| p.tier == *name).collect();
        let detectors = covered
            .iter()
            .enumerate()
            .map(|(d, c)| {
                let type_index = dataset.plans.iter().position(|p| p.entity_type == c.entity_type).expect("a covered type");
                let of = |level: EffectLevel| tier_plants.iter().filter(move |(i, p)| dataset.plant_detector[*i] == d && p.level == level);
                let (planted_at, planted_beyond) = (of(EffectLevel::At).count(), of(EffectLevel::Beyond).count());
                let clean = clean_of_type(type_index, None);
                let finish = |mut counts: PackCounts| {
                    counts.clean_entities = clean;
                    counts.recall_at = rate(counts.found_at, planted_at);
                    counts.recall_beyond = rate(counts.found_beyond, planted_beyond);
                    counts.clean_fp_rate = rate(counts.clean_fired, clean);
                    counts
                };
                DetectorAccuracy {
                    detector: c.spec.id.clone(),
                    entity_type: c.entity_type.as_str().to_string(),
                    comparison: c.comparison.kind().to_string(),
                    planted_at,
                    planted_beyond,
                    mean_power_at: mean(of(EffectLevel::At).map(|(_, p)| p.inputs.power)),
                    mean_power_beyond: mean(of(EffectLevel::Beyond).map(|(_, p)| p.inputs.power)),
                    new: finish(new_per[tier][d].clone()),
                    fixed: finish(fixed_per[tier][d].clone()),
                }
            })
            .collect();
        let detectable = tier_plants.iter().filter(|(_, p)| p.inputs.power >= DETECTABLE_POWER).count();
        let (clean, declared, undeclared) = (clean_all(None), clean_all(Some(true)), clean_all(Some(false)));
        let finish = |mut t: PackTier| {
            t.clean_fire_any_rate = rate(t.clean_fired_any, clean);
            t.declared_fire_any_rate = rate(t.declared_clean_fired_any, declared);
            t.undeclared_fire_any_rate = rate(t.undeclared_clean_fired_any, undeclared);
            t.detectable_recall = rate(t.detectable_found, detectable);
            t
        };
        out.push(TierAccuracy {
            tier: name.to_string(),
            base_count: *base_count,
            tenants: dataset.tenants.iter().filter(|t| t.tier == tier).count(),
            clean_entities: clean,
            declared_clean_entities: declared,
            undeclared_clean_entities: undeclared,
            planted_entities: tier_plants.len(),
            detectable_planted: detectable,
            detectors,
            new: finish(new_tiers[tier].clone()),
            fixed: finish(fixed_tiers[tier].clone()),
        });
    }
    out
}

// -------------------------------------------------------------------------- run

/// The pack's detectors the generator covers, and the rest with why.
fn coverage(pack: &Pack) -> (Vec<Covered>, Vec<SkippedDetector>) {
    let mut covered = Vec::new();
    let mut skipped = Vec::new();
    for spec in pack.detectors() {
        match Covered::from_spec(spec) {
            Ok(c) => covered.push(c),
            Err(reason) => skipped.push(SkippedDetector { id: spec.id.clone(), reason }),
        }
    }
    (covered, skipped)
}

/// Generates the dataset in `data_dir` (replaced) and runs the shipped pack and the
/// same pack without tests over it.
pub async fn run(data_dir: &Path) -> anyhow::Result<DetectAccuracyResult> {
    if data_dir.exists() {
        std::fs::remove_dir_all(data_dir).with_context(|| format!("clearing {}", data_dir.display()))?;
    }
    let clock = Arc::new(SystemClock);
    let backends = converge_backends::EmbeddedBackends::open(data_dir, clock.clone())?;
    let warehouse = backends.warehouse.clone();
    warehouse.ensure_tables(&MirrorConfig::default()).await?;
    warehouse.ensure_metrics_tables().await?;

    let shipped = Pack::shipped()?;
    let (covered, skipped) = coverage(&shipped);
    let started = Instant::now();
    let connection = warehouse.reader()?;
    let generated_covered = covered.clone();
    let dataset = tokio::task::spawn_blocking(move || generate(&connection, &generated_covered)).await??;
    // The holiday, declared by half the tenants where apps declare it.
    let holiday = as_of() - Days::new(u64::from(HOLIDAY_OFFSET));
    let declarations: Vec<_> = dataset
        .tenants
        .iter()
        .filter(|t| t.declared_holiday)
        .map(|t| KnownEvent { tenant: t.name.clone(), id: "holiday".into(), from: holiday, until: holiday, reason: "holiday".into() }.to_write())
        .collect();
    backends.source.apply(declarations).await?;
    let generate_ms = started.elapsed().as_millis() as u64;

    let mut passes = Vec::new();
    let mut retried = Vec::new();
    for pack in [shipped.clone(), shipped.without_tests()] {
        let runner = DetectorRunner::new(
            pack.clone(),
            Arc::new(warehouse.clone()),
            Arc::new(warehouse.clone()),
            Arc::new(backends.source.clone()),
            clock.clone(),
            RunnerOptions::default(),
        )
        .with_known_events(Arc::new(backends.source.clone()));
        // A detector that failed beside the others (DuckDB's memory cap is shared by the
        // 4 queries in flight) runs again alone in the runner; the report names it.
        let run = runner.run(DetectRequest::all(as_of())).await?;
        let failed = run.retried_alone.clone();
        retried.push(failed);
        passes.push(run);
    }
    let tiers = analyse(&dataset, &covered, &passes[0].findings, &passes[1].findings);
    let mut dataset = dataset;
    for (pass, new) in [(&passes[0], true), (&passes[1], false)] {
        for (entity, detectors) in fired_by_entity(&dataset, &pass.findings) {
            let Some(plant) = dataset.infos[entity].plant else { continue };
            if detectors.iter().any(|d| *d == dataset.plants[plant].detector) {
                if new {
                    dataset.plants[plant].found_new = true;
                } else {
                    dataset.plants[plant].found_fixed = true;
                }
            }
        }
    }
    Ok(DetectAccuracyResult {
        seed: SEED,
        as_of: as_of().to_string(),
        days: DAYS,
        tenants_per_tier: REPLICATES,
        entities: dataset
            .plans
            .iter()
            .map(|p| EntityCounts { entity_type: p.entity_type.as_str().to_string(), clean_per_tenant: p.clean, planted_per_tenant: p.planted })
            .collect(),
        metric_rows: dataset.rows,
        generate_ms,
        new_pack_ms: passes[0].millis,
        fixed_pack_ms: passes[1].millis,
        new_failed: passes[0].failed,
        fixed_failed: passes[1].failed,
        new_retried: retried[0].clone(),
        fixed_retried: retried[1].clone(),
        covered: covered.iter().map(|c| c.spec.id.clone()).collect(),
        skipped,
        tiers,
        plants: dataset.plants,
    })
}

fn pct(value: f64) -> String {
    if value.is_nan() { "–".into() } else { format!("{:.1}%", value * 100.0) }
}

/// One line per tier, for stderr.
pub fn summary_lines(result: &DetectAccuracyResult) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    for (pack, ids, failed) in [("new", &result.new_retried, result.new_failed), ("fixed", &result.fixed_retried, result.fixed_failed)] {
        if !ids.is_empty() || failed > 0 {
            lines.push(format!("detect accuracy: {pack} pack: {} detectors failed with 4 queries at once and ran again alone ({}); {failed} still failed", ids.len(), ids.join(", ")));
        }
    }
    lines.extend(result.tiers.iter().map(|t| {
        let recall = |new: bool, level: EffectLevel| {
            let (found, planted) = t.detectors.iter().fold((0, 0), |(f, p), d| {
                let counts = if new { &d.new } else { &d.fixed };
                match level {
                    EffectLevel::At => (f + counts.found_at, p + d.planted_at),
                    EffectLevel::Beyond => (f + counts.found_beyond, p + d.planted_beyond),
                }
            });
            pct(rate(found, planted))
        };
        format!(
            "detect accuracy, {} ({} tenants, {} clean entities): recall at/beyond new {}/{}, fixed {}/{}; clean entities firing any detector new {}, fixed {}; detectable planted {} found new {}, fixed {}",
            t.tier,
            t.tenants,
            t.clean_entities,
            recall(true, EffectLevel::At),
            recall(true, EffectLevel::Beyond),
            recall(false, EffectLevel::At),
            recall(false, EffectLevel::Beyond),
            pct(t.new.clean_fire_any_rate),
            pct(t.fixed.clean_fire_any_rate),
            t.detectable_planted,
            pct(t.new.detectable_recall),
            pct(t.fixed.detectable_recall),
        )
    }));
    lines
}

/// The results section (`<!-- bench:detect-accuracy:start -->` … `end`).
pub fn section(result: &DetectAccuracyResult) -> String {
    let command: Vec<String> = std::env::args().collect();
    let counts: Vec<String> = result.entities.iter().map(|e| format!("{} {} + {} planted", e.clean_per_tenant, e.entity_type, e.planted_per_tenant)).collect();
    let skipped: Vec<String> = result.skipped.iter().map(|s| format!("`{}` ({})", s.id, s.reason)).collect();
    let mut text = String::new();
    text.push_str("<!-- bench:detect-accuracy:start -->\n## Detector accuracy\n\n");
    text.push_str(&format!(
        "Precision and recall of the pack's declarative detectors on synthetic data with planted effects (seed {seed:#x}, generated by the bench's own model of a site, not by the pack's queries). \
Three volume tiers — tens, hundreds, thousands: 30, 300, 3,000 of an entity type's base count per entity per day (sessions for pages and traffic sources, impressions for campaigns and keywords, emails sent, funnel entries), each entity's level log-uniform ×0.5–2 around it — with {tenants} replicate tenants each; a tenant has {counts} (planted ≤ 20% of a type), every metric of the vocabulary every day for {days} days ending {as_of}: {rows} rows. \
A base count is level × the tenant's weekday profile (Mon 1.10, Tue 1.12, Wed 1.08, Thu 1.05, Fri 0.95, Sat 0.65, Sun 0.60, each ±5% per tenant) × gamma-Poisson noise (shape k 10–20 per tenant, variance μ + μ²/k). \
Derived counts are binomial draws at per-entity rates (page conversion 1–5% of sessions, bounce 20–32%, engaged 40–52%, exits 20–40% of pageviews; campaign CTR 1–4%, conversion 3–10% of clicks; email open 20–40%, click 2–6%, unsubscribe 0.1–0.4%, spam 0.01–0.04%, delivery 97–99.5%; funnel exit 20–50% …), each rate × a daily lognormal jitter (CV 10%); revenue is a gamma sum over conversions (shape 2 per order) around a per-entity order value, cost = clicks × CPC × daily jitter (CV 10%), load time a gamma sum over samples around a per-entity mean (700–2,000 ms) × daily jitter (CV 10%). \
Plants, from the recent window's first day to {as_of}, on entities planted for one detector: `at` the threshold (a fraction f of the baseline: the rate or level × f; `drop_to_zero`: 0; an absolute threshold: the true value at threshold × 0.9 / × 1.1; a percentile: factor × the site's median × 0.8 / × 1.2) and `beyond` (1.5× as far from no change: 0.7 → 0.55, 1.5 → 1.75; `drop_to_zero` plants 0 at both levels); a ratio's numerator rate changes, a sum's metric its level. \
A one-day holiday (every entity of a tenant × 0.15 on {holiday}) is declared as a known event by half the tenants. \
Both packs run on the same data: **new** = `Pack::shipped()` (tests, FDR, weekday adjustment, known events), **fixed** = `Pack::shipped().without_tests()` (the thresholds alone, the pack as before). \
A planted entity firing another detector than its own is neither a hit nor a clean false positive (counted apart). \
Power: per planted entity, a one-sided z-test at α = q/m (q = {fdr}, the pack's false-discovery rate; m: the detector's expected tested entities of the tenant) on the generator's truth (ratios: Δ = p_R − p_B, SE from the binomial and day-to-day variance of both windows; sums: SE = √(φ(E + E²/C_B)); absolute and percentile: Δ to the threshold, SE of the recent window), times the probability that the volume gate admits the entity; for a rule (a sum against an absolute threshold, untested in both packs) the probability that the rule fires. \
Skipped: {skipped}.\n\n",
        seed = result.seed,
        tenants = result.tenants_per_tier,
        counts = counts.join(", "),
        days = result.days,
        as_of = result.as_of,
        rows = result.metric_rows,
        holiday = as_of() - Days::new(u64::from(HOLIDAY_OFFSET)),
        skipped = skipped.join(", "),
        fdr = ALPHA,
    ));
    for tier in &result.tiers {
        text.push_str(&format!("### {} ({} base counts per entity per day)\n\n", tier.tier, tier.base_count));
        text.push_str("| detector | planted at (n) | recall at, new | recall at, fixed | mean power at | planted beyond (n) | recall beyond, new | recall beyond, fixed | clean FP, new | clean FP, fixed |\n");
        text.push_str("|---|---|---|---|---|---|---|---|---|---|\n");
        for d in &tier.detectors {
            text.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
                d.detector,
                d.planted_at,
                pct(d.new.recall_at),
                pct(d.fixed.recall_at),
                pct(d.mean_power_at),
                d.planted_beyond,
                pct(d.new.recall_beyond),
                pct(d.fixed.recall_beyond),
                pct(d.new.clean_fp_rate),
                pct(d.fixed.clean_fp_rate),
            ));
        }
        text.push('\n');
    }
    text.push_str("| tier | clean entities | fire any detector, new | fire any, fixed | declared holiday: fire any, new | undeclared holiday: fire any, new | detectable planted (power ≥ 0.8) | found, new | found, fixed |\n");
    text.push_str("|---|---|---|---|---|---|---|---|---|\n");
    for t in &result.tiers {
        text.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            t.tier,
            t.clean_entities,
            pct(t.new.clean_fire_any_rate),
            pct(t.fixed.clean_fire_any_rate),
            pct(t.new.declared_fire_any_rate),
            pct(t.new.undeclared_fire_any_rate),
            t.detectable_planted,
            pct(t.new.detectable_recall),
            pct(t.fixed.detectable_recall),
        ));
    }
    text.push_str("\nOther detectors on planted entities (correlated detectors: (entity, detector) pairs, neither hits nor clean false positives): ");
    let others: Vec<String> = result
        .tiers
        .iter()
        .map(|t| format!("{} new {} / fixed {}", t.tier, t.new.other_detectors_on_planted, t.fixed.other_detectors_on_planted))
        .collect();
    text.push_str(&others.join("; "));
    let retried = |ids: &[String]| if ids.is_empty() { "none".to_string() } else { ids.join(", ") };
    text.push_str(&format!(
        ".\n\nGenerated in {} ms; one pass of the new pack {} ms, of the fixed pack {} ms. Detectors that failed with 4 queries at once and ran again alone (the runner's log has each error): new {}; fixed {}. Failed after that: {} / {}.\n\nMeasured {} on {}.\nCommand: `{}`.\n<!-- bench:detect-accuracy:end -->",
        result.generate_ms,
        result.new_pack_ms,
        result.fixed_pack_ms,
        retried(&result.new_retried),
        retried(&result.fixed_retried),
        result.new_failed,
        result.fixed_failed,
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC"),
        super::measure::machine(),
        command.join(" "),
    ));
    text
}

/// Replaces the detect-accuracy section of the results file.
pub fn write_results(path: &Path, result: &DetectAccuracyResult) -> anyhow::Result<()> {
    super::measure::replace_section(path, "detect-accuracy", &section(result))
}

/// The accuracy bench's data directory next to the timing bench's.
pub fn data_dir_beside(data_dir: &Path) -> PathBuf {
    let name = data_dir.file_name().map_or_else(|| "converge-bench-detect".into(), |n| n.to_string_lossy().into_owned());
    data_dir.with_file_name(format!("{name}-accuracy"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn covered() -> Vec<Covered> {
        coverage(&Pack::shipped().unwrap()).0
    }

    #[test]
    fn phi_and_its_inverse_match_known_values() {
        for (x, p) in [(0.0, 0.5), (1.0, 0.841_344_746), (-1.0, 0.158_655_254), (1.959_963_985, 0.975), (3.0, 0.998_650_102), (-3.090_232_306, 0.001)] {
            assert!((phi(x) - p).abs() < 1e-7, "Φ({x}) = {} ≠ {p}", phi(x));
            assert!((phi_inv(p) - x).abs() < 1e-6, "Φ⁻¹({p}) = {} ≠ {x}", phi_inv(p));
        }
        for p in [1e-6, 0.01, 0.3, 0.77, 0.999] {
            // Φ's absolute error is < 7.5e-8, Φ⁻¹'s relative error < 1.2e-9.
            assert!((phi(phi_inv(p)) - p).abs() < 1e-7, "Φ(Φ⁻¹({p})) = {}", phi(phi_inv(p)));
        }
    }

    #[test]
    fn samplers_have_their_moments() {
        let mut rng = Rng::new(7);
        let n = 40_000;
        let moments = |xs: Vec<f64>| {
            let m = xs.iter().sum::<f64>() / xs.len() as f64;
            (m, xs.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (xs.len() - 1) as f64)
        };
        for (trials, p) in [(20u64, 0.3), (3000, 0.02), (3000, 0.7), (100_000, 0.25)] {
            let (m, v) = moments((0..n).map(|_| rng.binomial(trials, p) as f64).collect());
            let (em, ev) = (trials as f64 * p, trials as f64 * p * (1.0 - p));
            assert!((m - em).abs() < 4.0 * (ev / n as f64).sqrt(), "Bin({trials}, {p}) mean {m} vs {em}");
            assert!((v / ev - 1.0).abs() < 0.05, "Bin({trials}, {p}) variance {v} vs {ev}");
        }
        for lambda in [3.0, 45.0, 5000.0] {
            let (m, v) = moments((0..n).map(|_| rng.poisson(lambda) as f64).collect());
            assert!((m - lambda).abs() < 4.0 * (lambda / n as f64).sqrt(), "Poisson({lambda}) mean {m}");
            assert!((v / lambda - 1.0).abs() < 0.05, "Poisson({lambda}) variance {v}");
        }
        let (m, v) = moments((0..n).map(|_| rng.neg_binomial(300.0, 12.0) as f64).collect());
        assert!((m / 300.0 - 1.0).abs() < 0.01, "NB mean {m}");
        assert!((v / (300.0 + 300.0 * 300.0 / 12.0) - 1.0).abs() < 0.06, "NB variance {v}");
        let (m, v) = moments((0..n).map(|_| rng.gamma(0.7, 2.0)).collect());
        assert!((m / 1.4 - 1.0).abs() < 0.03 && (v / 2.8 - 1.0).abs() < 0.08, "Gamma(0.7, 2) {m} {v}");
    }

    #[test]
    fn the_drawn_metrics_are_the_vocabulary() {
        for (entity_type, _) in TYPES {
            assert_eq!(drawn_metrics(entity_type), entity_type.metric_names().as_slice(), "{entity_type}");
            let mut out = Vec::new();
            draw_day(entity_type, &mut Rng::new(3), &Rates::draw(entity_type, &mut Rng::new(4)), 300.0, 12.0, &mut out);
            assert_eq!(out.len(), drawn_metrics(entity_type).len(), "{entity_type}");
        }
    }

    #[test]
    fn derived_counts_stay_within_their_parents() {
        for (entity_type, _) in TYPES {
            let names = drawn_metrics(entity_type);
            let at = |out: &[f64], name: &str| out[names.iter().position(|n| *n == name).unwrap()];
            let mut rng = Rng::new(11);
            let mut out = Vec::new();
            for entity in 0..50 {
                let mut r = Rates::draw(entity_type, &mut Rng::new(entity));
                // Push rates to their planted extremes now and then.
                if entity % 3 == 0 {
                    r.bounce *= 1.45;
                    r.exit = (r.exit * 1.75).min(1.0);
                }
                for mean in [3.0, 30.0, 3000.0] {
                    draw_day(entity_type, &mut rng, &r, mean, 12.0, &mut out);
                    assert!(out.iter().all(|v| *v >= 0.0 && v.is_finite()), "{entity_type}: {out:?}");
                    match entity_type {
                        EntityType::Page | EntityType::TrafficSource => {
                            assert!(at(&out, "bounces") + at(&out, "engaged_sessions") <= at(&out, "sessions"));
                            assert!(at(&out, "conversions") <= at(&out, "sessions") && at(&out, "sessions") <= at(&out, "pageviews"));
                            if entity_type == EntityType::Page {
                                assert!(at(&out, "exits") <= at(&out, "pageviews") && at(&out, "entries") <= at(&out, "sessions"));
                                assert!(at(&out, "load_time_samples") <= at(&out, "sessions"));
                            }
                        }
                        EntityType::Campaign | EntityType::Keyword => {
                            assert!(at(&out, "conversions") <= at(&out, "clicks") && at(&out, "clicks") <= at(&out, "impressions"));
                        }
                        EntityType::Email => {
                            assert_eq!(at(&out, "delivered") + at(&out, "bounces"), at(&out, "sent"));
                            assert!(at(&out, "email_clicks") <= at(&out, "unique_opens") && at(&out, "unique_opens") <= at(&out, "delivered"));
                            assert!(at(&out, "unique_opens") <= at(&out, "opens"));
                            assert!(at(&out, "unsubscribes") <= at(&out, "delivered") && at(&out, "spam_reports") <= at(&out, "delivered"));
                        }
                        EntityType::FunnelStep => assert_eq!(at(&out, "step_completions") + at(&out, "exits"), at(&out, "entries")),
                        EntityType::Device => {}
                    }
                }
            }
        }
    }

    /// Over many days, each covered detector's planted window shows its planted value.
    #[test]
    fn the_planted_window_has_the_planted_rate() {
        let tenant = Tenant::new(2, 1);
        for c in covered() {
            let base = Rates::draw(c.entity_type, &mut Rng::new(5));
            let level = 20_000.0;
            let percentile = c.percentile().map(|_| c.measure_value(&base, &tenant, level)).unwrap_or(0.0);
            let planted = c.plant(&base, &tenant, level, EffectLevel::Beyond, percentile);
            let want = c.measure_value(&planted, &tenant, level);
            match c.reference(percentile) {
                Some(reference) => assert!((want / (reference * c.effect(EffectLevel::Beyond)) - 1.0).abs() < 1e-9, "{}", c.spec.id),
                None => {
                    let before = c.measure_value(&base, &tenant, level);
                    assert!((want - before * c.effect(EffectLevel::Beyond)).abs() <= 1e-9 * before.abs().max(1.0), "{}", c.spec.id);
                }
            }
            // Draw 400 days of the planted truth at its level and measure as the detector does.
            let names = drawn_metrics(c.entity_type);
            let position = |m: &str| names.iter().position(|n| *n == m).unwrap();
            let mut rng = Rng::new(99);
            let mut out = Vec::new();
            let days = 400;
            let (mut numerator, mut denominator) = (0.0, 0.0);
            for _ in 0..days {
                draw_day(c.entity_type, &mut rng, &planted, level, tenant.k, &mut out);
                match &c.measure {
                    Measure::Ratio { numerator: n, denominator: d, .. } => {
                        numerator += out[position(n)];
                        denominator += out[position(d)];
                    }
                    Measure::Sum { metric, .. } => {
                        numerator += out[position(metric)];
                        denominator += 1.0;
                    }
                }
            }
            let measured = numerator / denominator;
            let truth = match &c.measure {
                Measure::Ratio { .. } => want,
                Measure::Sum { metric, .. } => expected(c.entity_type, metric, &planted, level),
            };
            // 5% of the truth, or four standard errors of a rare count's mean.
            let tolerance = (0.05 * truth.abs()).max(4.0 * (truth.abs() * 2.0 / f64::from(days)).sqrt()) + 1e-9;
            assert!((measured - truth).abs() <= tolerance, "{}: measured {measured}, planted {truth}", c.spec.id);
        }
    }

    #[test]
    fn the_data_are_reproducible_from_the_seed() {
        let cs = covered();
        let plans = plans(&cs);
        let tenant = Tenant::new(1, 3);
        assert_eq!(Tenant::new(1, 3).weekdays, tenant.weekdays);
        let draw = || {
            let sites: Vec<Site> = vec![site(&tenant, 3, 1, &plans[1], &cs)];
            chunk_rows(plans[1].entity_type, 1, &[(3, &tenant)], &sites, &cs)
        };
        let (a, b) = (draw(), draw());
        assert_eq!(a.len(), b.len());
        assert!(a.iter().zip(&b).all(|(x, y)| x.0 == y.0 && x.1.to_bits() == y.1.to_bits()));
        let other = {
            let t = Tenant::new(1, 4);
            let sites: Vec<Site> = vec![site(&t, 4, 1, &plans[1], &cs)];
            chunk_rows(plans[1].entity_type, 1, &[(4, &t)], &sites, &cs)
        };
        assert!(a.iter().zip(&other).any(|(x, y)| x.1 != y.1), "another tenant draws other data");
    }

    #[test]
    fn every_cell_gets_enough_plants_and_plants_stay_a_minority() {
        let cs = covered();
        assert!(cs.len() >= 25, "covered {}", cs.len());
        for plan in plans(&cs) {
            assert!(plan.planted as f64 <= MAX_PLANTED_SHARE * (plan.clean + plan.planted) as f64 + 1e-9, "{:?}", plan.entity_type);
            let mut per_slot = vec![0usize; plan.slots.len()];
            for replicate in 0..REPLICATES {
                for j in 0..plan.planted {
                    per_slot[(replicate * plan.planted + j) % plan.slots.len()] += 1;
                }
            }
            assert!(per_slot.iter().all(|n| *n >= MIN_PER_CELL), "{:?}: {per_slot:?}", plan.entity_type);
        }
    }

    #[test]
    fn power_grows_with_volume_and_effect() {
        let cs = covered();
        let c = cs.iter().find(|c| c.spec.id == "page_conversion_rate_drop").unwrap();
        let tenant = Tenant::new(0, 0);
        let base = Rates::draw(EntityType::Page, &mut Rng::new(8));
        let at = |level: f64, effect: EffectLevel| {
            let planted = c.plant(&base, &tenant, level, effect, 0.0);
            power(c, &base, &planted, &tenant, level, None, 75.0).power
        };
        assert!(at(30.0, EffectLevel::At) < at(300.0, EffectLevel::At));
        assert!(at(300.0, EffectLevel::At) < at(300.0, EffectLevel::Beyond));
        assert!(at(3000.0, EffectLevel::Beyond) > 0.99);
    }

    #[test]
    fn like_matches_as_sql_does() {
        assert!(like("/blog/a", "/blog/%"));
        assert!(!like("/page-001", "/blog/%"));
        assert!(like("abc", "a_c") && !like("abcd", "a_c"));
    }
}
