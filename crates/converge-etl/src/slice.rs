//! One (tenant, date) slice being built: metric sums per entity, the entity map, the
//! natural keys seen (for the duplicate check) and the ids that came out empty.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::NaiveDate;
use converge_core::{EntityMapRow, MetricRow};
use converge_detect::EntityType;

use crate::collections::RawCollection;
use crate::validate::ValidRecord;

/// How many example paths a failed check names.
pub const EXAMPLES: usize = 5;

/// The aggregated slice, in memory (bounded by the day's entities, not its records).
#[derive(Debug, Default)]
pub struct SliceBuilder {
    /// Daily sums per (entity type, canonical id), one per metric of the type.
    sums: BTreeMap<(EntityType, String), Vec<f64>>,
    /// (entity type, raw id) → (canonical id, raw records).
    entities: BTreeMap<(EntityType, String), (String, u64)>,
    /// Natural keys seen per collection, with the first path that carried each.
    keys: HashMap<&'static str, HashSet<Vec<String>>>,
    pub duplicate_keys: u64,
    pub duplicate_examples: Vec<String>,
    pub empty_ids: u64,
    pub empty_id_examples: Vec<String>,
    pub rows_in: u64,
}

impl SliceBuilder {
    /// Adds one valid record of `collection`, read at `path`.
    pub fn add(&mut self, collection: &'static RawCollection, path: &str, record: ValidRecord) {
        self.rows_in += 1;
        if !self.keys.entry(collection.name).or_default().insert(record.natural_key) {
            self.duplicate_keys += 1;
            if self.duplicate_examples.len() < EXAMPLES {
                self.duplicate_examples.push(path.to_owned());
            }
        }
        if record.entity_id.is_empty() {
            self.empty_ids += 1;
            if self.empty_id_examples.len() < EXAMPLES {
                self.empty_id_examples.push(path.to_owned());
            }
            return;
        }
        let entity_type = collection.entity_type;
        let entry = self.entities.entry((entity_type, record.raw_id)).or_insert_with(|| (record.entity_id.clone(), 0));
        entry.1 += 1;
        let sums = self.sums.entry((entity_type, record.entity_id)).or_insert_with(|| vec![0.0; entity_type.metrics().len()]);
        for (index, value) in record.values {
            sums[index] += value;
        }
    }

    /// The slice's rows: every metric of the type for every entity seen (zeros
    /// included: a day with no conversions is data), and the entity map.
    pub fn into_rows(self, tenant: &str, date: NaiveDate) -> (Vec<MetricRow>, Vec<EntityMapRow>) {
        let mut metrics = Vec::with_capacity(self.sums.len() * 6);
        for ((entity_type, entity_id), sums) in self.sums {
            for (def, value) in entity_type.metrics().iter().zip(sums) {
                metrics.push(MetricRow {
                    date,
                    tenant: tenant.to_owned(),
                    entity_type: entity_type.as_str().to_owned(),
                    entity_id: entity_id.clone(),
                    metric: def.name.to_owned(),
                    value,
                });
            }
        }
        let entities = self
            .entities
            .into_iter()
            .map(|((entity_type, raw_id), (entity_id, raw_records))| EntityMapRow {
                date,
                tenant: tenant.to_owned(),
                entity_type: entity_type.as_str().to_owned(),
                raw_id,
                entity_id,
                raw_records,
            })
            .collect();
        (metrics, entities)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collections::GA4_PAGES;

    fn record(url: &str, id: &str, sessions: f64) -> ValidRecord {
        ValidRecord { natural_key: vec![url.into()], raw_id: url.into(), entity_id: id.into(), values: vec![(0, sessions)] }
    }

    #[test]
    fn raw_ids_sum_into_their_canonical_entity() {
        let mut slice = SliceBuilder::default();
        slice.add(&GA4_PAGES, "a", record("https://x/p?a=1", "/p", 2.0));
        slice.add(&GA4_PAGES, "b", record("https://x/p?a=2", "/p", 3.0));
        slice.add(&GA4_PAGES, "c", record("https://x/q", "/q", 1.0));
        let day = NaiveDate::from_ymd_opt(2025, 1, 1).unwrap();
        let (metrics, entities) = slice.into_rows("acme", day);
        assert_eq!(metrics.len(), 2 * GA4_PAGES.entity_type.metrics().len(), "every metric of both pages");
        let sessions: Vec<(&str, f64)> = metrics.iter().filter(|m| m.metric == "sessions").map(|m| (m.entity_id.as_str(), m.value)).collect();
        assert_eq!(sessions, [("/p", 5.0), ("/q", 1.0)]);
        assert_eq!(entities.len(), 3);
        assert!(entities.iter().all(|e| e.raw_records == 1));
    }

    #[test]
    fn duplicates_and_empty_ids_are_counted_with_examples() {
        let mut slice = SliceBuilder::default();
        slice.add(&GA4_PAGES, "orgs/a/ga4_pages/1", record("https://x/p", "/p", 1.0));
        slice.add(&GA4_PAGES, "orgs/a/ga4_pages/2", record("https://x/p", "/p", 1.0));
        slice.add(&GA4_PAGES, "orgs/a/ga4_pages/3", record(" ", "", 1.0));
        assert_eq!((slice.duplicate_keys, slice.duplicate_examples.clone()), (1, vec!["orgs/a/ga4_pages/2".to_string()]));
        assert_eq!((slice.empty_ids, slice.empty_id_examples.clone()), (1, vec!["orgs/a/ga4_pages/3".to_string()]));
        assert_eq!(slice.rows_in, 3);
    }
}
