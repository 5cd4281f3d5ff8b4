//! The raw operational collections and their schema contract.
//!
//! An app lands its exports in Firestore as they arrive, one document per export row,
//! under `orgs/{tenant}/{collection}/{doc}`. Every collection has a `date` field
//! ("YYYY-MM-DD", the day the row counts for), the raw identifier of its entity as the
//! export spells it, the fields that make the row unique (its natural key), and raw
//! measures. Together they produce every metric of
//! [`converge_detect::vocabulary`] for all seven entity types:
//!
//! | collection | entity type | raw id fields | natural key (with `date`) | measures → metrics |
//! |---|---|---|---|---|
//! | `ga4_pages` | page | `page_location` (full URL, query string and all) | `page_location` | `sessions`, `screen_page_views`→pageviews, `engaged_sessions`, `bounces`, `conversions`, `purchase_revenue`→revenue, `entrances`→entries, `exits`, `page_load_time_ms_sum`→load_time_ms_sum, `page_load_samples`→load_time_samples |
//! | `ga4_devices` | device | `device_category` (`Desktop`, `mobile`…) | `device_category`, `operating_system`, `browser` | `sessions`, `screen_page_views`→pageviews, `engaged_sessions`, `bounces`, `conversions`, `purchase_revenue`→revenue |
//! | `ga4_traffic_sources` | traffic_source | `session_source`, `session_medium` | those and `session_campaign_name` | as devices |
//! | `email_campaigns` | email | `campaign_name` (`Newsletter Weekly`) | `campaign_name`, `send_id` | `sent`, `delivered`, `hard_bounces`+`soft_bounces`→bounces, `opens`, `unique_opens`, `unique_clicks`→email_clicks, `unsubscribes`, `spam_reports`, `conversions`, `revenue` |
//! | `funnel_events` | funnel_step | `funnel_name`, `step_name` | those and `platform` | `users_entered`→entries, `users_completed`→step_completions, `users_exited`→exits |
//! | `ad_campaigns` | campaign | `campaign_name` (`Spring Sale`) | `platform`, `campaign_name`, `ad_group_name` | `impressions`, `clicks`, `cost_micros`→cost (÷10⁶), `conversions`, `conversion_value`→revenue, `sessions` |
//! | `ad_keywords` | keyword | `keyword_text` (mixed case, stray spaces) | `campaign_name`, `ad_group_name`, `keyword_text`, `match_type` | `impressions`, `clicks`, `cost_micros`→cost (÷10⁶), `conversions`, `avg_position`×`impressions`→position_sum |
//!
//! The contract a record must meet (anything else is quarantined with the reason,
//! never fixed): `date` a "YYYY-MM-DD" string; every raw id and key field present and
//! a string; every measure present, a count (integer, ≥ 0) or an amount (integer or
//! double, finite, ≥ 0) as the table says; micros are integers. Other fields are
//! allowed (exports grow columns).

use converge_detect::EntityType;

/// Where raw collections live: `orgs/{tenant}/{collection}/{doc}`.
pub const TENANT_ROOT: &str = "orgs";
/// The date field of every raw collection.
pub const DATE_FIELD: &str = "date";

/// What a measure's field holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MeasureKind {
    /// An integer ≥ 0 (sessions, clicks, emails sent).
    Count,
    /// A number ≥ 0, integer or not (revenue, fractional ad conversions, milliseconds).
    Amount,
    /// An integer ≥ 0 in millionths of the account currency (Google Ads `cost_micros`).
    Micros,
}

/// How one raw field contributes to one metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Measure {
    pub field: &'static str,
    pub kind: MeasureKind,
    pub metric: &'static str,
    /// Multiply by this other measure's field of the same record before summing
    /// (`avg_position` × `impressions` = `position_sum`).
    pub times: Option<&'static str>,
}

const fn count(field: &'static str, metric: &'static str) -> Measure {
    Measure { field, kind: MeasureKind::Count, metric, times: None }
}

const fn amount(field: &'static str, metric: &'static str) -> Measure {
    Measure { field, kind: MeasureKind::Amount, metric, times: None }
}

const fn micros(field: &'static str, metric: &'static str) -> Measure {
    Measure { field, kind: MeasureKind::Micros, metric, times: None }
}

/// One raw collection: its entity, identifiers, natural key and measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawCollection {
    pub name: &'static str,
    pub entity_type: EntityType,
    /// The fields that together are the raw entity id, in order.
    pub id_fields: &'static [&'static str],
    /// How a multi-field raw id is joined (as seen and canonical alike).
    pub id_separator: &'static str,
    /// The fields (besides `date`) that make an export row unique.
    pub key_fields: &'static [&'static str],
    pub measures: &'static [Measure],
}

const GA4_SESSION_MEASURES: &[Measure] = &[
    count("sessions", "sessions"),
    count("screen_page_views", "pageviews"),
    count("engaged_sessions", "engaged_sessions"),
    count("bounces", "bounces"),
    count("conversions", "conversions"),
    amount("purchase_revenue", "revenue"),
];

pub const GA4_PAGES: RawCollection = RawCollection {
    name: "ga4_pages",
    entity_type: EntityType::Page,
    id_fields: &["page_location"],
    id_separator: "",
    key_fields: &["page_location"],
    measures: &[
        count("sessions", "sessions"),
        count("screen_page_views", "pageviews"),
        count("engaged_sessions", "engaged_sessions"),
        count("bounces", "bounces"),
        count("conversions", "conversions"),
        amount("purchase_revenue", "revenue"),
        count("entrances", "entries"),
        count("exits", "exits"),
        amount("page_load_time_ms_sum", "load_time_ms_sum"),
        count("page_load_samples", "load_time_samples"),
    ],
};

pub const GA4_DEVICES: RawCollection = RawCollection {
    name: "ga4_devices",
    entity_type: EntityType::Device,
    id_fields: &["device_category"],
    id_separator: "",
    key_fields: &["device_category", "operating_system", "browser"],
    measures: GA4_SESSION_MEASURES,
};

pub const GA4_TRAFFIC_SOURCES: RawCollection = RawCollection {
    name: "ga4_traffic_sources",
    entity_type: EntityType::TrafficSource,
    id_fields: &["session_source", "session_medium"],
    id_separator: "/",
    key_fields: &["session_source", "session_medium", "session_campaign_name"],
    measures: GA4_SESSION_MEASURES,
};

pub const EMAIL_CAMPAIGNS: RawCollection = RawCollection {
    name: "email_campaigns",
    entity_type: EntityType::Email,
    id_fields: &["campaign_name"],
    id_separator: "",
    key_fields: &["campaign_name", "send_id"],
    measures: &[
        count("sent", "sent"),
        count("delivered", "delivered"),
        count("hard_bounces", "bounces"),
        count("soft_bounces", "bounces"),
        count("opens", "opens"),
        count("unique_opens", "unique_opens"),
        count("unique_clicks", "email_clicks"),
        count("unsubscribes", "unsubscribes"),
        count("spam_reports", "spam_reports"),
        count("conversions", "conversions"),
        amount("revenue", "revenue"),
    ],
};

pub const FUNNEL_EVENTS: RawCollection = RawCollection {
    name: "funnel_events",
    entity_type: EntityType::FunnelStep,
    id_fields: &["funnel_name", "step_name"],
    id_separator: ":",
    key_fields: &["funnel_name", "step_name", "platform"],
    measures: &[count("users_entered", "entries"), count("users_completed", "step_completions"), count("users_exited", "exits")],
};

pub const AD_CAMPAIGNS: RawCollection = RawCollection {
    name: "ad_campaigns",
    entity_type: EntityType::Campaign,
    id_fields: &["campaign_name"],
    id_separator: "",
    key_fields: &["platform", "campaign_name", "ad_group_name"],
    measures: &[
        count("impressions", "impressions"),
        count("clicks", "clicks"),
        micros("cost_micros", "cost"),
        amount("conversions", "conversions"),
        amount("conversion_value", "revenue"),
        count("sessions", "sessions"),
    ],
};

pub const AD_KEYWORDS: RawCollection = RawCollection {
    name: "ad_keywords",
    entity_type: EntityType::Keyword,
    id_fields: &["keyword_text"],
    id_separator: "",
    key_fields: &["campaign_name", "ad_group_name", "keyword_text", "match_type"],
    measures: &[
        count("impressions", "impressions"),
        count("clicks", "clicks"),
        micros("cost_micros", "cost"),
        amount("conversions", "conversions"),
        Measure { field: "avg_position", kind: MeasureKind::Amount, metric: "position_sum", times: Some("impressions") },
    ],
};

/// Every raw collection the ETL reads, in the order it reads them.
pub const RAW_COLLECTIONS: &[RawCollection] =
    &[GA4_PAGES, GA4_DEVICES, GA4_TRAFFIC_SOURCES, EMAIL_CAMPAIGNS, FUNNEL_EVENTS, AD_CAMPAIGNS, AD_KEYWORDS];

impl RawCollection {
    /// `orgs/{tenant}/{name}`.
    pub fn path(&self, tenant: &str) -> String {
        format!("{TENANT_ROOT}/{tenant}/{}", self.name)
    }

    /// The index of `metric` in the entity type's vocabulary.
    pub fn metric_index(&self, metric: &str) -> Option<usize> {
        self.entity_type.metrics().iter().position(|m| m.name == metric)
    }

    pub fn by_name(name: &str) -> Option<&'static RawCollection> {
        RAW_COLLECTIONS.iter().find(|c| c.name == name)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn together_the_collections_produce_every_metric_of_the_vocabulary() {
        for entity_type in EntityType::ALL {
            let produced: BTreeSet<&str> = RAW_COLLECTIONS
                .iter()
                .filter(|c| c.entity_type == entity_type)
                .flat_map(|c| c.measures.iter().map(|m| m.metric))
                .collect();
            let expected: BTreeSet<&str> = entity_type.metric_names().into_iter().collect();
            assert_eq!(produced, expected, "{entity_type}");
        }
    }

    #[test]
    fn every_measure_names_a_metric_of_its_type_and_keys_include_the_raw_id() {
        for collection in RAW_COLLECTIONS {
            for measure in collection.measures {
                assert!(collection.metric_index(measure.metric).is_some(), "{}.{}", collection.name, measure.metric);
                if let Some(times) = measure.times {
                    assert!(collection.measures.iter().any(|m| m.field == times), "{}.{} times {times}", collection.name, measure.field);
                }
            }
            for field in collection.id_fields {
                assert!(collection.key_fields.contains(field), "{}: raw id field {field} not in the natural key", collection.name);
            }
            assert_eq!(collection.id_fields.len() > 1, !collection.id_separator.is_empty(), "{}", collection.name);
        }
    }
}
