//! The metric vocabulary of `daily_entity_metrics`: which metrics each entity type
//! carries and what one day's value means.
//!
//! This table is the contract between the nightly ETL (which writes the rows) and the
//! detectors (which read them). A detector may only name a metric listed here for its
//! entity type; the ETL should write every metric listed here it has data for. Every
//! value is a daily **sum**, so any window is aggregated with `SUM`; averages are
//! expressed as a ratio of two sums (e.g. `load_time_ms_sum / load_time_samples`).

use std::fmt;

use serde::{Deserialize, Serialize};

/// The `entity_type` column's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntityType {
    Page,
    Campaign,
    Email,
    FunnelStep,
    Device,
    TrafficSource,
    Keyword,
}

impl EntityType {
    pub const ALL: [EntityType; 7] = [
        EntityType::Page,
        EntityType::Campaign,
        EntityType::Email,
        EntityType::FunnelStep,
        EntityType::Device,
        EntityType::TrafficSource,
        EntityType::Keyword,
    ];

    /// The value stored in the `entity_type` column.
    pub fn as_str(self) -> &'static str {
        match self {
            EntityType::Page => "page",
            EntityType::Campaign => "campaign",
            EntityType::Email => "email",
            EntityType::FunnelStep => "funnel_step",
            EntityType::Device => "device",
            EntityType::TrafficSource => "traffic_source",
            EntityType::Keyword => "keyword",
        }
    }

    /// The metrics the ETL writes for this entity type.
    pub fn metrics(self) -> &'static [MetricDef] {
        VOCABULARY.iter().find(|(entity_type, _)| *entity_type == self).map(|(_, metrics)| *metrics).unwrap_or(&[])
    }

    pub fn has_metric(self, metric: &str) -> bool {
        self.metrics().iter().any(|m| m.name == metric)
    }

    pub fn metric_names(self) -> Vec<&'static str> {
        self.metrics().iter().map(|m| m.name).collect()
    }
}

impl fmt::Display for EntityType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether a metric is an amount (money, milliseconds, a position sum) rather than a
/// count of things: a ratio of two counts is a proportion, and its tests floor the
/// spread at the binomial's.
pub fn is_amount(metric: &str) -> bool {
    matches!(metric, "revenue" | "cost" | "load_time_ms_sum" | "position_sum")
}

/// One metric of the vocabulary: its `metric` column value and what a day's value is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricDef {
    pub name: &'static str,
    pub meaning: &'static str,
}

const fn m(name: &'static str, meaning: &'static str) -> MetricDef {
    MetricDef { name, meaning }
}

/// Canonical entity ids, per type (what the ETL's `entity_map` resolves to):
/// page = URL path without query string (`/pricing`); campaign = ad platform campaign
/// slug; email = email campaign slug; funnel_step = `funnel:step`; device = `desktop`,
/// `mobile`, `tablet`; traffic_source = `source/medium` (`google/organic`);
/// keyword = the lower-cased search term.
pub const VOCABULARY: &[(EntityType, &[MetricDef])] = &[
    (
        EntityType::Page,
        &[
            m("sessions", "sessions that landed on or viewed the page"),
            m("pageviews", "views of the page"),
            m("engaged_sessions", "GA4 engaged sessions on the page"),
            m("bounces", "single-page, non-engaged sessions that entered on the page"),
            m("conversions", "conversions attributed to sessions viewing the page"),
            m("revenue", "revenue attributed to sessions viewing the page, account currency"),
            m("entries", "sessions that started on the page"),
            m("exits", "sessions that ended on the page"),
            m("load_time_ms_sum", "sum of sampled page load times, milliseconds"),
            m("load_time_samples", "number of page load time samples"),
        ],
    ),
    (
        EntityType::Campaign,
        &[
            m("impressions", "ad impressions"),
            m("clicks", "ad clicks"),
            m("cost", "ad spend, account currency"),
            m("conversions", "conversions attributed to the campaign"),
            m("revenue", "revenue attributed to the campaign, account currency"),
            m("sessions", "site sessions from the campaign"),
        ],
    ),
    (
        EntityType::Email,
        &[
            m("sent", "emails sent"),
            m("delivered", "emails delivered"),
            m("bounces", "emails bounced (hard and soft)"),
            m("opens", "opens, including repeats"),
            m("unique_opens", "recipients who opened at least once"),
            m("email_clicks", "recipients who clicked at least once"),
            m("unsubscribes", "unsubscribes"),
            m("spam_reports", "spam complaints"),
            m("conversions", "conversions attributed to the email"),
            m("revenue", "revenue attributed to the email, account currency"),
        ],
    ),
    (
        EntityType::FunnelStep,
        &[
            m("entries", "users who reached the step"),
            m("step_completions", "users who completed the step (moved to the next)"),
            m("exits", "users who left the funnel at the step"),
        ],
    ),
    (
        EntityType::Device,
        &[
            m("sessions", "sessions on the device category"),
            m("pageviews", "pageviews on the device category"),
            m("engaged_sessions", "engaged sessions on the device category"),
            m("bounces", "bounced sessions on the device category"),
            m("conversions", "conversions on the device category"),
            m("revenue", "revenue on the device category, account currency"),
        ],
    ),
    (
        EntityType::TrafficSource,
        &[
            m("sessions", "sessions from the source/medium"),
            m("pageviews", "pageviews from the source/medium"),
            m("engaged_sessions", "engaged sessions from the source/medium"),
            m("bounces", "bounced sessions from the source/medium"),
            m("conversions", "conversions from the source/medium"),
            m("revenue", "revenue from the source/medium, account currency"),
        ],
    ),
    (
        EntityType::Keyword,
        &[
            m("impressions", "search impressions (paid or organic)"),
            m("clicks", "clicks"),
            m("cost", "paid spend, account currency (0 for organic)"),
            m("conversions", "conversions attributed to the keyword"),
            m("position_sum", "average position times impressions (divide by impressions)"),
        ],
    ),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_entity_type_has_metrics_with_safe_names() {
        for entity_type in EntityType::ALL {
            let metrics = entity_type.metrics();
            assert!(!metrics.is_empty(), "{entity_type} has no metrics");
            for metric in metrics {
                assert!(
                    metric.name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                    "{entity_type}.{} is not [a-z0-9_] (names are inlined into SQL)",
                    metric.name
                );
            }
        }
    }

    #[test]
    fn entity_type_strings_round_trip_through_serde() {
        for entity_type in EntityType::ALL {
            let json = serde_json::to_string(&entity_type).unwrap();
            assert_eq!(json, format!("\"{}\"", entity_type.as_str()));
        }
    }
}
