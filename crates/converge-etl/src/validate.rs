//! The schema contract at the boundary: one raw document → a [`ValidRecord`], or the
//! list of what is wrong with it (for the quarantine; nothing is ever fixed).

use chrono::NaiveDate;
use converge_core::{Fields, Value};

use crate::canonical::canonical_id;
use crate::collections::{MeasureKind, RawCollection, DATE_FIELD};

/// A record that meets its collection's contract, reduced to what the roll-up needs.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidRecord {
    /// The natural key's values (besides the date), in `key_fields` order.
    pub natural_key: Vec<String>,
    /// The raw id as the export spelled it (multi-field ids joined).
    pub raw_id: String,
    /// The canonical id; empty when the raw id canonicalises to nothing.
    pub entity_id: String,
    /// (index into the entity type's metrics, value) per measure.
    pub values: Vec<(usize, f64)>,
}

/// Checks `fields` against `collection`'s contract for the day `date`.
pub fn validate(collection: &RawCollection, date: NaiveDate, fields: &Fields) -> Result<ValidRecord, Vec<String>> {
    let mut problems = Vec::new();
    match fields.get(DATE_FIELD) {
        Some(Value::String(text)) => match converge_core::raw_source::parse_date(text) {
            Some(day) if day == date => {}
            Some(day) => problems.push(format!("field `date` is {day}: expected {date}, the day being loaded")),
            None => problems.push(format!("field `date` is {text:?}: expected a day as \"YYYY-MM-DD\"")),
        },
        other => problems.push(format!("field `date` is {}: expected a string \"YYYY-MM-DD\"", describe(other))),
    }
    let mut natural_key = Vec::with_capacity(collection.key_fields.len());
    for field in collection.key_fields {
        match fields.get(*field) {
            Some(Value::String(text)) => natural_key.push(text.clone()),
            other => problems.push(format!("field `{field}` is {}: expected a string (part of the row's key)", describe(other))),
        }
    }
    let mut values = Vec::with_capacity(collection.measures.len());
    for measure in collection.measures {
        let value = match (measure.kind, fields.get(measure.field)) {
            (MeasureKind::Count | MeasureKind::Micros, Some(Value::Integer(n))) if *n >= 0 => *n as f64,
            (MeasureKind::Amount, Some(Value::Integer(n))) if *n >= 0 => *n as f64,
            (MeasureKind::Amount, Some(Value::Double(x))) if x.is_finite() && *x >= 0.0 => *x,
            (kind, other) => {
                let expected = match kind {
                    MeasureKind::Count => "an integer >= 0",
                    MeasureKind::Micros => "an integer >= 0 (millionths of the account currency)",
                    MeasureKind::Amount => "a finite number >= 0",
                };
                problems.push(format!("field `{}` is {}: expected {expected}", measure.field, describe(other)));
                continue;
            }
        };
        let value = if measure.kind == MeasureKind::Micros { value / 1_000_000.0 } else { value };
        values.push((measure, value));
    }
    let mut resolved = Vec::with_capacity(values.len());
    for (measure, value) in &values {
        let factor = match measure.times {
            None => 1.0,
            Some(times) => match values.iter().find(|(m, _)| m.field == times) {
                Some((_, other)) => *other,
                None => continue, // the other field's problem is already listed
            },
        };
        let index = collection.metric_index(measure.metric).expect("collections name vocabulary metrics (tested)");
        resolved.push((index, value * factor));
    }
    let parts: Vec<&str> = collection.id_fields.iter().filter_map(|f| if let Some(Value::String(s)) = fields.get(*f) { Some(s.as_str()) } else { None }).collect();
    let mut entity_id = String::new();
    if parts.len() == collection.id_fields.len() {
        match canonical_id(collection.entity_type, &parts) {
            Ok(id) => entity_id = id,
            Err(problem) => problems.push(problem),
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(ValidRecord { natural_key, raw_id: parts.join(collection.id_separator), entity_id, values: resolved })
}

/// A field's value for an error message: its type, and the value when short.
fn describe(value: Option<&Value>) -> String {
    match value {
        None => "missing".into(),
        Some(Value::Null) => "null".into(),
        Some(Value::String(s)) if s.len() <= 40 => format!("the string {s:?}"),
        Some(Value::String(_)) => "a long string".into(),
        Some(Value::Integer(n)) => format!("the integer {n}"),
        Some(Value::Double(x)) => format!("the double {x}"),
        Some(Value::Boolean(b)) => format!("the boolean {b}"),
        Some(Value::Timestamp(_)) => "a timestamp".into(),
        Some(Value::Map(_)) => "a map".into(),
        Some(Value::Array(_)) => "an array".into(),
        Some(_) => "a value of another type".into(),
    }
}

#[cfg(test)]
mod tests {
    use converge_core::value::fields_from_json;
    use serde_json::json;

    use super::*;
    use crate::collections::{AD_KEYWORDS, EMAIL_CAMPAIGNS, GA4_DEVICES, GA4_PAGES};

    fn day() -> NaiveDate {
        NaiveDate::from_ymd_opt(2025, 6, 1).unwrap()
    }

    fn page(overrides: serde_json::Value) -> Fields {
        let mut base = json!({
            "date": "2025-06-01", "page_location": "https://shop.example/pricing?utm_source=news",
            "sessions": 10, "screen_page_views": 14, "engaged_sessions": 7, "bounces": 2, "conversions": 1,
            "purchase_revenue": 49.5, "entrances": 6, "exits": 4, "page_load_time_ms_sum": 12000, "page_load_samples": 9
        });
        for (k, v) in overrides.as_object().unwrap() {
            if v.is_null() {
                base.as_object_mut().unwrap().remove(k);
            } else {
                base[k] = v.clone();
            }
        }
        fields_from_json(&base).unwrap()
    }

    #[test]
    fn a_valid_page_row() {
        let record = validate(&GA4_PAGES, day(), &page(json!({}))).unwrap();
        assert_eq!(record.entity_id, "/pricing");
        assert_eq!(record.raw_id, "https://shop.example/pricing?utm_source=news");
        assert_eq!(record.natural_key, vec!["https://shop.example/pricing?utm_source=news".to_string()]);
        let revenue = GA4_PAGES.metric_index("revenue").unwrap();
        assert!(record.values.contains(&(revenue, 49.5)));
        assert_eq!(record.values.len(), 10);
    }

    #[test]
    fn each_broken_promise_is_named() {
        for (overrides, expected) in [
            (json!({"sessions": -1}), "field `sessions` is the integer -1: expected an integer >= 0"),
            (json!({"sessions": 1.5}), "field `sessions` is the double 1.5"),
            (json!({"purchase_revenue": "12"}), "field `purchase_revenue` is the string \"12\": expected a finite number >= 0"),
            (json!({"bounces": null}), "field `bounces` is missing"),
            (json!({"page_location": null}), "field `page_location` is missing: expected a string"),
            (json!({"page_location": 5}), "field `page_location` is the integer 5"),
            (json!({"date": "2025-6-1"}), "expected a day as \"YYYY-MM-DD\""),
            (json!({"date": "2025-06-02"}), "expected 2025-06-01, the day being loaded"),
        ] {
            let problems = validate(&GA4_PAGES, day(), &page(overrides.clone())).unwrap_err();
            assert!(problems.iter().any(|p| p.contains(expected)), "{overrides}: {problems:?}");
        }
        let problems = validate(&GA4_PAGES, day(), &page(json!({"sessions": -1, "exits": "x"}))).unwrap_err();
        assert_eq!(problems.len(), 2, "every problem at once: {problems:?}");
    }

    #[test]
    fn micros_products_and_sums_of_fields() {
        let fields = fields_from_json(&json!({
            "date": "2025-06-01", "campaign_name": "Brand", "ad_group_name": "g", "keyword_text": " Running SHOES ", "match_type": "EXACT",
            "impressions": 200, "clicks": 10, "cost_micros": 2_500_000, "conversions": 1.5, "avg_position": 1.25
        }))
        .unwrap();
        let record = validate(&AD_KEYWORDS, day(), &fields).unwrap();
        assert_eq!(record.entity_id, "running shoes");
        let value = |metric| record.values.iter().find(|(i, _)| *i == AD_KEYWORDS.metric_index(metric).unwrap()).unwrap().1;
        assert_eq!(value("cost"), 2.5);
        assert_eq!(value("position_sum"), 250.0);
        assert_eq!(value("conversions"), 1.5);
        let micros_as_double = fields_from_json(&json!({
            "date": "2025-06-01", "campaign_name": "Brand", "ad_group_name": "g", "keyword_text": "k", "match_type": "EXACT",
            "impressions": 200, "clicks": 10, "cost_micros": 2.5, "conversions": 1, "avg_position": 1
        }))
        .unwrap();
        assert!(validate(&AD_KEYWORDS, day(), &micros_as_double).unwrap_err()[0].contains("millionths"));
        let email = fields_from_json(&json!({
            "date": "2025-06-01", "campaign_name": "Weekly", "send_id": "s1", "sent": 100, "delivered": 95, "hard_bounces": 3,
            "soft_bounces": 2, "opens": 40, "unique_opens": 30, "unique_clicks": 5, "unsubscribes": 1, "spam_reports": 0,
            "conversions": 1, "revenue": 20
        }))
        .unwrap();
        let record = validate(&EMAIL_CAMPAIGNS, day(), &email).unwrap();
        let bounces = EMAIL_CAMPAIGNS.metric_index("bounces").unwrap();
        let total: f64 = record.values.iter().filter(|(i, _)| *i == bounces).map(|(_, v)| v).sum();
        assert_eq!(total, 5.0);
    }

    #[test]
    fn an_unknown_device_category_breaks_the_contract_and_a_blank_one_is_left_to_the_checks() {
        let device = |category: &str| {
            fields_from_json(&json!({
                "date": "2025-06-01", "device_category": category, "operating_system": "iOS", "browser": "Safari",
                "sessions": 1, "screen_page_views": 1, "engaged_sessions": 1, "bounces": 0, "conversions": 0, "purchase_revenue": 0
            }))
            .unwrap()
        };
        assert_eq!(validate(&GA4_DEVICES, day(), &device("Mobile")).unwrap().entity_id, "mobile");
        assert!(validate(&GA4_DEVICES, day(), &device("smart tv")).unwrap_err()[0].contains("device category"));
        assert_eq!(validate(&GA4_DEVICES, day(), &device(" ")).unwrap().entity_id, "");
    }
}
