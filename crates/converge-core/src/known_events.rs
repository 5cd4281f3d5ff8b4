//! Known events: days a tenant declares unlike the others (a holiday, an outage, a
//! tracking gap), so the ETL's volume check and the detectors leave them out instead of
//! reading them as a change.
//!
//! A tenant declares one in the source store, next to its data, as the app writes
//! everything else: `orgs/{tenant}/known_events/{id}` with
//!
//! | field | type | meaning |
//! |---|---|---|
//! | `date` | string `YYYY-MM-DD` | the first day |
//! | `until` | string `YYYY-MM-DD`, optional | the last day, inclusive (default: `date`) |
//! | `reason` | string, optional | shown in run records and findings' evidence |
//!
//! Readers load every known event of the tenants they work on at the start of a run
//! ([`load_known_events`]): a handful of documents per tenant, one read each. A
//! document that breaks this contract is not guessed at: it is left out and named in
//! [`KnownEvents::problems`], which the run reports.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use futures::StreamExt;

use crate::config::SourceScope;
use crate::error::StoreError;
use crate::store::{DocWrite, SourceStore};
use crate::value::{Fields, Value};

/// The collection under each tenant (`orgs/{tenant}/known_events`).
pub const KNOWN_EVENTS_COLLECTION: &str = "known_events";
/// Where tenants live.
const TENANT_ROOT: &str = "orgs";
/// The longest span one declaration may cover: longer is a mistake (a year typed
/// wrong), not an event.
pub const MAX_EVENT_DAYS: i64 = 92;

/// One declared event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownEvent {
    pub tenant: String,
    pub id: String,
    pub from: NaiveDate,
    /// Inclusive.
    pub until: NaiveDate,
    pub reason: String,
}

impl KnownEvent {
    /// The document path it lives at.
    pub fn path(&self) -> String {
        format!("{TENANT_ROOT}/{}/{KNOWN_EVENTS_COLLECTION}/{}", self.tenant, self.id)
    }

    /// The write that declares it (for the demo, the benchmarks and tests; apps write
    /// the same fields).
    pub fn to_write(&self) -> DocWrite {
        let mut fields = Fields::new();
        fields.insert("date".into(), Value::String(self.from.to_string()));
        if self.until != self.from {
            fields.insert("until".into(), Value::String(self.until.to_string()));
        }
        if !self.reason.is_empty() {
            fields.insert("reason".into(), Value::String(self.reason.clone()));
        }
        DocWrite::Set { path: self.path(), fields }
    }

    /// Every day it covers.
    pub fn days(&self) -> impl Iterator<Item = NaiveDate> + '_ {
        self.from.iter_days().take_while(move |day| *day <= self.until)
    }

    /// Reads one document's fields; the error says what was expected.
    pub fn from_fields(tenant: &str, id: &str, fields: &Fields) -> Result<KnownEvent, String> {
        let date = |name: &str| -> Result<Option<NaiveDate>, String> {
            match fields.get(name) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(text)) => NaiveDate::parse_from_str(text, "%Y-%m-%d")
                    .map(Some)
                    .map_err(|_| format!("`{name}` must be a YYYY-MM-DD string, got {text:?}")),
                Some(other) => Err(format!("`{name}` must be a YYYY-MM-DD string, got {other:?}")),
            }
        };
        let from = date("date")?.ok_or_else(|| "`date` (YYYY-MM-DD, the first day) is missing".to_string())?;
        let until = date("until")?.unwrap_or(from);
        if until < from {
            return Err(format!("`until` ({until}) is before `date` ({from})"));
        }
        if (until - from).num_days() >= MAX_EVENT_DAYS {
            return Err(format!("spans {} days, more than the {MAX_EVENT_DAYS} one declaration may cover", (until - from).num_days() + 1));
        }
        let reason = match fields.get("reason") {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(text)) => text.clone(),
            Some(other) => return Err(format!("`reason` must be a string, got {other:?}")),
        };
        Ok(KnownEvent { tenant: tenant.into(), id: id.into(), from, until, reason })
    }
}

/// The known events of some tenants, by tenant and day.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KnownEvents {
    days: BTreeMap<String, BTreeMap<NaiveDate, String>>,
    /// Documents left out, each with the path and what was wrong.
    pub problems: Vec<String>,
    /// Reads billed by [`load_known_events`]: the documents returned, and at least one
    /// per tenant's query (Firestore bills an empty query one read).
    pub documents_billed: u64,
}

impl KnownEvents {
    pub fn new(events: impl IntoIterator<Item = KnownEvent>) -> KnownEvents {
        let mut known = KnownEvents::default();
        for event in events {
            known.add(&event);
        }
        known
    }

    pub fn add(&mut self, event: &KnownEvent) {
        let days = self.days.entry(event.tenant.clone()).or_default();
        for day in event.days() {
            days.entry(day).or_insert_with(|| event.reason.clone());
        }
    }

    pub fn is_empty(&self) -> bool {
        self.days.values().all(BTreeMap::is_empty)
    }

    /// The reason `day` is declared for `tenant`, if it is.
    pub fn reason(&self, tenant: &str, day: NaiveDate) -> Option<&str> {
        self.days.get(tenant)?.get(&day).map(String::as_str)
    }

    pub fn contains(&self, tenant: &str, day: NaiveDate) -> bool {
        self.reason(tenant, day).is_some()
    }

    /// Each tenant with declared days, and those days in order.
    pub fn by_tenant(&self) -> impl Iterator<Item = (&str, Vec<NaiveDate>)> {
        self.days.iter().filter(|(_, days)| !days.is_empty()).map(|(tenant, days)| (tenant.as_str(), days.keys().copied().collect()))
    }

    /// Only `tenant`'s days (`None`: all of them).
    pub fn for_tenant(&self, tenant: Option<&str>) -> KnownEvents {
        match tenant {
            None => self.clone(),
            Some(tenant) => KnownEvents {
                days: self.days.get(tenant).map(|days| BTreeMap::from([(tenant.to_string(), days.clone())])).unwrap_or_default(),
                problems: Vec::new(),
                documents_billed: 0,
            },
        }
    }
}

/// Loads the known events of `tenants` (`None`: every tenant under `orgs`).
pub async fn load_known_events(source: &dyn SourceStore, tenants: Option<&[String]>) -> Result<KnownEvents, StoreError> {
    let listed;
    let tenants = match tenants {
        Some(tenants) => tenants,
        None => {
            listed = source.list_document_ids(TENANT_ROOT).await?;
            &listed[..]
        }
    };
    let mut known = KnownEvents::default();
    for tenant in tenants {
        let collection = format!("{TENANT_ROOT}/{tenant}/{KNOWN_EVENTS_COLLECTION}");
        let scope = SourceScope::collection(&collection)
            .map_err(|e| StoreError::permanent("known events", format!("tenant {tenant:?} gives no collection path: {e}")))?;
        let mut scan = source.scan_documents(&scope).await?.items;
        let mut returned = 0;
        while let Some(doc) = scan.next().await {
            let doc = doc?;
            returned += 1;
            let id = doc.path.rsplit('/').next().unwrap_or_default().to_string();
            match KnownEvent::from_fields(tenant, &id, &doc.fields) {
                Ok(event) => known.add(&event),
                Err(problem) => known.problems.push(format!("{}: {problem}", doc.path)),
            }
        }
        known.documents_billed += returned.max(1);
    }
    Ok(known)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, d).unwrap()
    }

    #[test]
    fn an_event_covers_its_days_inclusive() {
        let event = KnownEvent { tenant: "acme".into(), id: "thanksgiving".into(), from: day(26), until: day(27), reason: "holiday".into() };
        assert_eq!(event.days().collect::<Vec<_>>(), vec![day(26), day(27)]);
        let known = KnownEvents::new([event.clone()]);
        assert!(known.contains("acme", day(27)));
        assert!(!known.contains("acme", day(28)));
        assert!(!known.contains("other", day(26)));
        assert_eq!(known.reason("acme", day(26)), Some("holiday"));
        let DocWrite::Set { path, fields } = event.to_write() else { panic!("a set") };
        assert_eq!(path, "orgs/acme/known_events/thanksgiving");
        assert_eq!(KnownEvent::from_fields("acme", "thanksgiving", &fields).unwrap(), event);
    }

    #[test]
    fn malformed_documents_say_what_was_expected() {
        let fields = |pairs: &[(&str, Value)]| pairs.iter().cloned().map(|(k, v)| (k.to_string(), v)).collect::<Fields>();
        let missing = KnownEvent::from_fields("a", "x", &fields(&[])).unwrap_err();
        assert!(missing.contains("`date`"), "{missing}");
        let wrong = KnownEvent::from_fields("a", "x", &fields(&[("date", Value::String("26/11/2026".into()))])).unwrap_err();
        assert!(wrong.contains("YYYY-MM-DD"), "{wrong}");
        let backwards = KnownEvent::from_fields(
            "a",
            "x",
            &fields(&[("date", Value::String("2026-11-26".into())), ("until", Value::String("2026-11-20".into()))]),
        )
        .unwrap_err();
        assert!(backwards.contains("before"), "{backwards}");
        let long = KnownEvent::from_fields(
            "a",
            "x",
            &fields(&[("date", Value::String("2026-01-01".into())), ("until", Value::String("2026-12-31".into()))]),
        )
        .unwrap_err();
        assert!(long.contains("more than"), "{long}");
    }
}
