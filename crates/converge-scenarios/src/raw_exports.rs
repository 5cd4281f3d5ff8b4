//! Raw operational data for the demo and the ETL benchmark: what an app lands in
//! Firestore from its GA4, ads and email exports, at the scale of a real account.
//!
//! Per tenant and day at `scale = 1.0` (a 30-day month in brackets): 3,933 keyword
//! rows (~118k), 1,536 page rows (~46k), 434 campaign rows (~13k), 90 traffic source
//! rows, 36 device rows, 30 funnel rows and ~30 email sends — about 6,090 rows a day,
//! 176,000 a month. Raw ids look like exports: full URLs with query strings (six
//! variants per page), `Source`/`Medium` pairs, keywords in mixed case with stray
//! spaces, campaign names as typed in the ad platform.
//!
//! Deterministic: every value is a function of (seed, tenant, day, collection, row),
//! so any day can be regenerated alone, in any order. Weekends run at 75%, each
//! entity keeps its own rates, and day-to-day noise is ±10%.
//!
//! Hooks for planted patterns: a [`Planter`] sees every row before it is written
//! (tenant, date, day index, collection, canonical entity id, measures by field) and
//! may change its measures — e.g. halve `/pricing`'s conversions for the last 28 days.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use chrono::{Datelike, Days, NaiveDate, Weekday};
use converge_core::{DocWrite, Fields, SourceStore, StoreError, Value};
use converge_etl::collections::{
    MeasureKind, RawCollection, AD_CAMPAIGNS, AD_KEYWORDS, EMAIL_CAMPAIGNS, FUNNEL_EVENTS, GA4_DEVICES, GA4_PAGES, GA4_TRAFFIC_SOURCES,
};

/// One raw row before it becomes a document: what a [`Planter`] may adjust.
#[derive(Debug, Clone)]
pub struct RawRow<'a> {
    pub tenant: &'a str,
    pub date: NaiveDate,
    /// Days since the dataset's first day.
    pub day_index: u32,
    pub collection: &'static RawCollection,
    /// The canonical entity id this row counts for (`/pricing`, `spring_sale`, …).
    pub entity_id: &'a str,
    /// Measures by field name, before rounding (counts are rounded when written).
    pub measures: BTreeMap<&'static str, f64>,
}

/// Changes rows as they are generated (planted patterns for the detectors).
pub trait Planter: Send + Sync {
    fn adjust(&self, row: &mut RawRow<'_>);
}

#[derive(Clone)]
pub struct OpsOptions {
    pub tenants: Vec<String>,
    pub first_day: NaiveDate,
    pub days: u32,
    pub seed: u64,
    /// 1.0: a real account's row counts; smaller for tests (at least one row of each
    /// kind, and always the named pages, campaigns, emails and the head sources).
    pub scale: f64,
    /// Writes per `SourceStore::apply` (Firestore accepts at most 500).
    pub batch: usize,
    pub planters: Vec<Arc<dyn Planter>>,
}

impl OpsOptions {
    pub fn new(tenants: Vec<String>, first_day: NaiveDate, days: u32) -> Self {
        Self { tenants, first_day, days, seed: 42, scale: 1.0, batch: 500, planters: Vec::new() }
    }

    pub fn last_day(&self) -> NaiveDate {
        self.first_day + Days::new(u64::from(self.days.saturating_sub(1)))
    }
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct OpsSummary {
    pub rows: u64,
    pub per_collection: BTreeMap<String, u64>,
    pub millis: u64,
}

/// splitmix64: a tiny, good-enough generator whose every output is a function of its
/// input, so values do not depend on generation order.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn hash_str(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// A uniform number in [0, 1) for these keys.
fn unit(keys: &[u64]) -> f64 {
    let h = keys.iter().fold(0u64, |h, k| mix(h ^ k));
    (h >> 11) as f64 / (1u64 << 53) as f64
}

const PAGE_SECTIONS: &[&str] = &["products", "blog", "docs", "help", "collections", "guides"];
const NAMED_PAGES: &[&str] =
    &["/", "/pricing", "/features", "/about", "/contact", "/signup", "/checkout", "/docs", "/blog/launch", "/blog/guide", "/cart", "/login"];
const QUERY_VARIANTS: &[&str] = &["", "?utm_source=newsletter&utm_medium=email", "?gclid=Cj0KCQ", "?utm_source=facebook&utm_medium=paid_social", "?ref=nav", "/?fbclid=IwAR"];
const NAMED_CAMPAIGNS: &[&str] = &["Spring Sale", "Brand Search", "Retargeting", "Low ROAS", "Display Awareness"];
const NAMED_EMAILS: &[&str] = &["Newsletter Weekly", "Welcome Series", "Promo Blast", "Winback", "VIP Note", "Digest"];
const SOURCES: &[(&str, &str)] = &[
    ("google", "organic"), ("google", "cpc"), ("(direct)", "(none)"), ("bing", "organic"), ("bing", "cpc"), ("facebook", "paid_social"),
    ("facebook", "referral"), ("instagram", "paid_social"), ("newsletter", "email"), ("linkedin", "paid_social"), ("t.co", "referral"),
    ("duckduckgo", "organic"), ("yahoo", "organic"), ("reddit", "referral"), ("youtube", "video"), ("tiktok", "paid_social"),
    ("partner", "affiliate"), ("chatgpt.com", "referral"), ("ecosia", "organic"), ("pinterest", "social"), ("github.com", "referral"),
    ("news.ycombinator.com", "referral"), ("capterra", "referral"), ("g2", "referral"), ("producthunt", "referral"), ("medium", "referral"),
    ("baidu", "organic"), ("yandex", "organic"), ("quora", "referral"), ("x", "social"),
];
/// The sources every account has (search, direct, the big social networks): kept at
/// every scale, like the named pages, campaigns and emails, so a reduced-scale dataset
/// still holds the entities planted patterns use.
const HEAD_SOURCES: usize = 8;
const FUNNELS: &[(&str, &[&str])] = &[("Checkout", &["Cart", "Shipping", "Payment", "Review", "Confirm"]), ("Signup", &["Landing", "Form", "Verify", "Profile", "Done"])];
const KEYWORD_WORDS: &[&str] = &[
    "running", "trail", "shoes", "sneakers", "women's", "men's", "waterproof", "lightweight", "cheap", "best", "buy", "sale", "jacket",
    "socks", "marathon", "hiking", "boots", "kids", "size 10", "wide", "review", "near me", "online", "discount", "new",
];

/// Keyword `i` as an export spells it: some in title case, some padded.
fn keyword_text(i: usize) -> String {
    let n = KEYWORD_WORDS.len();
    let words = [KEYWORD_WORDS[i % n], KEYWORD_WORDS[(i / n + 3) % n], KEYWORD_WORDS[(i / (n * n) + 7) % n]];
    let phrase = if i % 2 == 0 { format!("{} {}", words[0], words[1]) } else { words.join(" ") };
    match i % 5 {
        0 => phrase.split(' ').map(|w| w[..1].to_uppercase() + &w[1..]).collect::<Vec<_>>().join(" "),
        1 => format!(" {phrase}  "),
        _ => phrase,
    }
}

/// One row of a collection's day: its raw id (one part per id field), its other
/// natural-key fields, and its volume relative to the collection's others.
#[derive(Debug, Clone)]
pub struct Entity {
    pub id_parts: Vec<String>,
    pub extra_keys: Vec<(&'static str, String)>,
    pub weight: f64,
}

fn entities(collection: &RawCollection, scale: f64) -> Vec<Entity> {
    let count = |n: usize| ((n as f64 * scale).round() as usize).max(1);
    let mut out = Vec::new();
    match collection.name {
        "ga4_pages" => {
            let paths = count(256).max(NAMED_PAGES.len());
            for p in 0..paths {
                let path = match NAMED_PAGES.get(p) {
                    Some(path) => (*path).to_owned(),
                    None => format!("/{}/{}-{p}", PAGE_SECTIONS[p % PAGE_SECTIONS.len()], ["alpha", "beta", "gamma", "delta"][p % 4]),
                };
                for (v, query) in QUERY_VARIANTS.iter().enumerate() {
                    let url = format!("https://www.example-shop.com{path}{query}");
                    out.push(Entity { id_parts: vec![url], extra_keys: vec![], weight: 1.0 / (1.0 + p as f64 * PAGE_DECAY) / (1.0 + v as f64) });
                }
            }
        }
        "ga4_devices" => {
            for (d, device) in ["Desktop", "mobile", "Tablet"].iter().enumerate() {
                for os in ["Windows", "Macintosh", "iOS", "Android"] {
                    for browser in ["Chrome", "Safari", "Firefox"] {
                        out.push(Entity {
                            id_parts: vec![(*device).into()],
                            extra_keys: vec![("operating_system", os.into()), ("browser", browser.into())],
                            weight: [1.0, 1.3, 0.2][d],
                        });
                    }
                }
            }
        }
        "ga4_traffic_sources" => {
            for (s, (source, medium)) in SOURCES.iter().enumerate().take(count(30).max(HEAD_SOURCES)) {
                for campaign in ["(not set)", "spring_sale", "brand"] {
                    let source = if s % 4 == 0 { source.to_uppercase() } else { (*source).to_owned() };
                    out.push(Entity { id_parts: vec![source, (*medium).into()], extra_keys: vec![("session_campaign_name", campaign.into())], weight: 1.0 / (1.0 + s as f64 * 0.2) });
                }
            }
        }
        "email_campaigns" => {
            for e in 0..count(20).max(NAMED_EMAILS.len()) {
                let name = NAMED_EMAILS.get(e).map(|n| (*n).to_owned()).unwrap_or_else(|| format!("Campaign Mail {e:02}"));
                for send in 0..(1 + e % 2) {
                    out.push(Entity { id_parts: vec![name.clone()], extra_keys: vec![("send_id", format!("s{send}"))], weight: 1.0 / (1.0 + e as f64 * 0.1) });
                }
            }
        }
        "funnel_events" => {
            for (funnel, steps) in FUNNELS {
                for (s, step) in steps.iter().enumerate() {
                    for platform in ["web", "ios", "android"] {
                        out.push(Entity { id_parts: vec![(*funnel).into(), (*step).into()], extra_keys: vec![("platform", platform.into())], weight: 0.8f64.powi(s as i32) });
                    }
                }
            }
        }
        "ad_campaigns" => {
            for c in 0..count(62).max(NAMED_CAMPAIGNS.len()) {
                let name = NAMED_CAMPAIGNS.get(c).map(|n| (*n).to_owned()).unwrap_or_else(|| format!("Campaign {c:02} - Search"));
                for g in 0..7 {
                    out.push(Entity {
                        id_parts: vec![name.clone()],
                        extra_keys: vec![("platform", if c % 3 == 0 { "meta" } else { "google_ads" }.into()), ("ad_group_name", format!("Ad group {g}"))],
                        weight: 1.0 / (1.0 + c as f64 * 0.05),
                    });
                }
            }
        }
        "ad_keywords" => {
            for k in 0..count(1311) {
                for match_type in ["EXACT", "PHRASE", "BROAD"] {
                    out.push(Entity {
                        id_parts: vec![keyword_text(k)],
                        extra_keys: vec![("campaign_name", format!("Campaign {:02} - Search", k % 40)), ("ad_group_name", format!("Ad group {}", k % 7)), ("match_type", match_type.into())],
                        weight: 1.0 / (1.0 + k as f64 * 0.01),
                    });
                }
            }
        }
        other => unreachable!("no generator for raw collection {other}"),
    }
    out
}

/// How fast page traffic falls from the head page to the tail, and pages' conversion
/// rate. Chosen so that even the tail page expects over 20 conversions in 28 days: the
/// conversion-rate detectors compare 28-day windows, and a page with 5 expected
/// conversions moves by 30% between two windows from rounding alone, which is noise the
/// detectors would rightly report in real data too, so the demo's healthy pages must
/// not have it (with a 1/(1 + 0.05 p) fall and 2%, 34 tail pages fired
/// `page_conversion_rate_drop` at full scale).
const PAGE_DECAY: f64 = 0.01;
const PAGE_CONVERSION_RATE: f64 = 0.03;

/// A row's measures by field, from its volume `v` (already noised and weekly).
fn measures(collection: &RawCollection, v: f64, r: f64) -> BTreeMap<&'static str, f64> {
    let mut m = BTreeMap::new();
    match collection.name {
        "ga4_pages" => {
            let sessions = (v * 40.0).max(1.0);
            let samples = (sessions * 0.1).max(1.0).round();
            m.extend([
                ("sessions", sessions), ("screen_page_views", sessions * 1.4), ("engaged_sessions", sessions * 0.6), ("bounces", sessions * 0.3),
                ("conversions", sessions * PAGE_CONVERSION_RATE), ("purchase_revenue", sessions * PAGE_CONVERSION_RATE * (50.0 + 20.0 * r)), ("entrances", sessions * 0.5),
                ("exits", sessions * 0.45), ("page_load_samples", samples), ("page_load_time_ms_sum", samples * (900.0 + 600.0 * r)),
            ]);
        }
        "ga4_devices" | "ga4_traffic_sources" => {
            let sessions = (v * 300.0).max(1.0);
            m.extend([
                ("sessions", sessions), ("screen_page_views", sessions * 2.1), ("engaged_sessions", sessions * 0.6), ("bounces", sessions * 0.35),
                ("conversions", sessions * 0.02), ("purchase_revenue", sessions * 0.02 * 55.0),
            ]);
        }
        "email_campaigns" => {
            let sent = (v * 2000.0).max(1.0);
            let delivered = sent * 0.97;
            m.extend([
                ("sent", sent), ("delivered", delivered), ("hard_bounces", sent * 0.01), ("soft_bounces", sent * 0.02), ("opens", delivered * 0.35),
                ("unique_opens", delivered * 0.25), ("unique_clicks", delivered * 0.03), ("unsubscribes", delivered * 0.002), ("spam_reports", delivered * 0.0002),
                ("conversions", delivered * 0.003), ("revenue", delivered * 0.003 * 40.0),
            ]);
        }
        "funnel_events" => {
            let entered = (v * 500.0).max(1.0).round();
            let completed = (entered * (0.6 + 0.1 * r)).round();
            m.extend([("users_entered", entered), ("users_completed", completed), ("users_exited", entered - completed)]);
        }
        "ad_campaigns" => {
            let impressions = (v * 3000.0).max(1.0);
            let clicks = impressions * 0.03;
            m.extend([
                ("impressions", impressions), ("clicks", clicks), ("cost_micros", clicks * 1.2 * 1e6), ("conversions", clicks * 0.04),
                ("conversion_value", clicks * 0.04 * 70.0), ("sessions", clicks * 0.9),
            ]);
        }
        "ad_keywords" => {
            let impressions = (v * 200.0).max(1.0);
            let clicks = impressions * 0.04;
            m.extend([("impressions", impressions), ("clicks", clicks), ("cost_micros", clicks * 0.9 * 1e6), ("conversions", clicks * 0.05), ("avg_position", 1.0 + 3.0 * r)]);
        }
        _ => {}
    }
    m
}

/// The document of a row: measures rounded as their kind requires. Counts are rounded
/// as `floor(x + u)` with `u` stepping by the golden ratio from day to day (from a
/// starting point per row and field): unbiased, and low-discrepancy, so a row's counts
/// over any window of days are its expected total within about one. Plain rounding
/// turns 0.4 expected conversions into 0 on every day of a small row (an entity's rates
/// then depend on how its volume splits into rows: small pages convert at 0%, far below
/// the site's median); an independent dither per day adds Poisson-like noise that
/// halves a small page's conversion rate from one month to the next.
fn fields(collection: &RawCollection, date: &str, entity: &Entity, measures: &BTreeMap<&'static str, f64>, row_key: [u64; 4], day_index: u32) -> Fields {
    const GOLDEN: f64 = 0.618_033_988_749_894_9;
    let mut fields = Fields::new();
    fields.insert("date".into(), Value::String(date.to_owned()));
    for (field, part) in collection.id_fields.iter().zip(&entity.id_parts) {
        fields.insert((*field).into(), Value::String(part.clone()));
    }
    for (field, value) in &entity.extra_keys {
        fields.insert((*field).into(), Value::String(value.clone()));
    }
    for measure in collection.measures {
        let value = measures.get(measure.field).copied().unwrap_or(0.0).max(0.0);
        fields.insert(
            measure.field.into(),
            match measure.kind {
                MeasureKind::Count => {
                    let [a, b, c, d] = row_key;
                    let dither = (unit(&[a, b, c, d, hash_str(measure.field)]) + f64::from(day_index) * GOLDEN).fract();
                    Value::Integer((value + dither).floor() as i64)
                }
                MeasureKind::Micros => Value::Integer(value.round() as i64),
                MeasureKind::Amount => Value::Double((value * 100.0).round() / 100.0),
            },
        );
    }
    fields.insert("exported_at".into(), Value::String(format!("{date}T23:59:00Z")));
    fields
}

/// Every write of one (tenant, day), in collection order.
pub fn day_writes(options: &OpsOptions, tenant: &str, day_index: u32, universe: &[(&'static RawCollection, Vec<Entity>)]) -> Vec<DocWrite> {
    let date = options.first_day + Days::new(u64::from(day_index));
    let date_text = date.to_string();
    let weekly = if matches!(date.weekday(), Weekday::Sat | Weekday::Sun) { 0.75 } else { 1.0 };
    let tenant_key = hash_str(tenant);
    let mut writes = Vec::with_capacity(universe.iter().map(|(_, e)| e.len()).sum());
    for (collection, entities) in universe {
        let collection_key = hash_str(collection.name);
        for (i, entity) in entities.iter().enumerate() {
            let keys = [options.seed, tenant_key, collection_key, i as u64];
            // Each entity keeps its own level (0.5–1.5 of its weight); days vary ±10%.
            let level = 0.5 + unit(&keys);
            let noise = 0.9 + 0.2 * unit(&[options.seed, tenant_key, collection_key, i as u64, u64::from(day_index) + 1]);
            let r = unit(&[options.seed ^ 0xA5A5, tenant_key, collection_key, i as u64]);
            let volume = entity.weight * level * noise * weekly;
            let mut measures = measures(collection, volume, r);
            if !options.planters.is_empty() {
                let parts: Vec<&str> = entity.id_parts.iter().map(String::as_str).collect();
                let entity_id = converge_etl::canonical::canonical_id(collection.entity_type, &parts).unwrap_or_default();
                let mut row = RawRow { tenant, date, day_index, collection, entity_id: &entity_id, measures };
                for planter in &options.planters {
                    planter.adjust(&mut row);
                }
                measures = row.measures;
            }
            writes.push(DocWrite::Set {
                path: format!("orgs/{tenant}/{}/{date_text}-{i:05}", collection.name),
                fields: fields(collection, &date_text, entity, &measures, [options.seed, tenant_key, collection_key, i as u64], day_index),
            });
        }
    }
    writes
}

/// The entity universe every tenant shares (ids and weights; values differ per tenant).
pub fn universe(scale: f64) -> Vec<(&'static RawCollection, Vec<Entity>)> {
    [&GA4_PAGES, &GA4_DEVICES, &GA4_TRAFFIC_SOURCES, &EMAIL_CAMPAIGNS, &FUNNEL_EVENTS, &AD_CAMPAIGNS, &AD_KEYWORDS]
        .into_iter()
        .map(|collection| (collection, entities(collection, scale)))
        .collect()
}

/// Writes the dataset through `source`, one (tenant, day) at a time, in batches.
pub async fn seed(source: &dyn SourceStore, options: &OpsOptions) -> Result<OpsSummary, StoreError> {
    let started = Instant::now();
    let universe = universe(options.scale);
    let mut summary = OpsSummary::default();
    for tenant in &options.tenants {
        for day in 0..options.days {
            let writes = day_writes(options, tenant, day, &universe);
            for write in &writes {
                if let DocWrite::Set { path, .. } = write {
                    let collection = path.split('/').nth(2).unwrap_or_default();
                    *summary.per_collection.entry(collection.to_owned()).or_default() += 1;
                }
            }
            summary.rows += writes.len() as u64;
            let mut writes = writes.into_iter().peekable();
            while writes.peek().is_some() {
                let batch: Vec<DocWrite> = writes.by_ref().take(options.batch.max(1)).collect();
                source.apply(batch).await?;
            }
        }
    }
    summary.millis = started.elapsed().as_millis() as u64;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use converge_etl::validate::validate;

    use super::*;

    fn options() -> OpsOptions {
        OpsOptions::new(vec!["acme".into()], NaiveDate::from_ymd_opt(2025, 1, 1).unwrap(), 2)
    }

    #[test]
    fn a_day_is_a_real_accounts_day_and_every_row_meets_the_contract() {
        let options = options();
        let universe = universe(1.0);
        let writes = day_writes(&options, "acme", 0, &universe);
        let count = |name: &str| writes.iter().filter(|w| matches!(w, DocWrite::Set { path, .. } if path.contains(&format!("/{name}/")))).count();
        assert_eq!((count("ad_keywords"), count("ga4_pages"), count("ad_campaigns")), (3933, 1536, 434));
        assert!((6000..6200).contains(&writes.len()), "{} rows a day", writes.len());
        let mut keys = std::collections::HashSet::new();
        for write in &writes {
            let DocWrite::Set { path, fields } = write else { unreachable!() };
            let name = path.split('/').nth(2).unwrap();
            let collection = RawCollection::by_name(name).unwrap();
            let record = validate(collection, options.first_day, fields).unwrap_or_else(|p| panic!("{path}: {p:?}"));
            assert!(!record.entity_id.is_empty(), "{path}");
            assert!(keys.insert((name, record.natural_key)), "{path}: natural key repeated");
        }
    }

    #[test]
    fn deterministic_and_planters_see_canonical_ids() {
        struct HalvePricing;
        impl Planter for HalvePricing {
            fn adjust(&self, row: &mut RawRow<'_>) {
                if row.entity_id == "/pricing" {
                    row.measures.insert("conversions", 0.0);
                }
            }
        }
        let universe = universe(0.05);
        let plain = day_writes(&options(), "acme", 1, &universe);
        assert_eq!(plain, day_writes(&options(), "acme", 1, &universe), "the same seed, the same rows");
        assert_ne!(plain, day_writes(&options(), "beta", 1, &universe), "tenants differ");
        let planted = OpsOptions { planters: vec![Arc::new(HalvePricing)], ..options() };
        let rows = day_writes(&planted, "acme", 1, &universe);
        let pricing: Vec<&Fields> = rows
            .iter()
            .filter_map(|w| match w {
                DocWrite::Set { path, fields } if path.contains("/ga4_pages/") && matches!(fields.get("page_location"), Some(Value::String(u)) if u.contains(".com/pricing")) => Some(fields),
                _ => None,
            })
            .collect();
        assert_eq!(pricing.len(), QUERY_VARIANTS.len());
        assert!(pricing.iter().all(|f| f.get("conversions") == Some(&Value::Integer(0))));
    }
}
