//! Reading raw operational records by date.
//!
//! The nightly ETL reads the raw collections an app lands (GA4, ads and email
//! exports, one document per export row, each with a `date` field "YYYY-MM-DD") one
//! day at a time. Firestore answers `where date >= from and date <= to` from its
//! automatic single-field index; the embedded store keeps an index of its own. Either
//! way the cost of a day's read grows with that day's documents, not the collection's.
//!
//! A separate trait from [`crate::SourceStore`]: only the ETL needs it, and a store
//! that cannot answer it by index should not pretend to by scanning everything.

use async_trait::async_trait;
use chrono::NaiveDate;

use crate::error::{ErrorKind, StoreError};
use crate::store::Scan;
use crate::value::Document;

/// The date format of raw records' date fields. Dates in this format sort as text in
/// calendar order, which is what lets both stores answer a range from an index on
/// the text.
pub const DATE_FORMAT: &str = "%Y-%m-%d";

/// Raw operational records, read by a date field.
#[async_trait]
pub trait RawSource: Send + Sync + 'static {
    /// Documents directly in `collection_path` whose string field `date_field` is a
    /// date in `from..=to` (compared as "YYYY-MM-DD" text), all as of one read time,
    /// ordered by (date, path), streamed in pages. Documents whose field is missing or
    /// not a string are not returned (Firestore's index leaves them out too).
    async fn scan_by_date(&self, collection_path: &str, date_field: &str, from: NaiveDate, to: NaiveDate) -> Result<Scan<Document>, StoreError>;
}

/// Checks a range before a store runs it: `from` after `to` is a caller's mistake.
pub fn check_date_range(backend: &'static str, from: NaiveDate, to: NaiveDate) -> Result<(), StoreError> {
    if from > to {
        return Err(StoreError::new(
            ErrorKind::InvalidInput,
            backend,
            format!("date range {from}..={to} is empty: expected from <= to"),
        ));
    }
    Ok(())
}

/// A date as raw records store it ("YYYY-MM-DD").
pub fn date_text(date: NaiveDate) -> String {
    date.format(DATE_FORMAT).to_string()
}

/// Parses a raw record's date: exactly "YYYY-MM-DD" (no time, no other form), so the
/// text order the indexes use is the calendar order.
pub fn parse_date(text: &str) -> Option<NaiveDate> {
    if text.len() != 10 {
        return None;
    }
    NaiveDate::parse_from_str(text, DATE_FORMAT).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_exactly_iso_days() {
        assert_eq!(parse_date("2025-03-09"), NaiveDate::from_ymd_opt(2025, 3, 9));
        for bad in ["2025-3-9", "2025-02-30", "2025-03-09T00:00:00Z", " 2025-03-09", "", "20250309"] {
            assert_eq!(parse_date(bad), None, "{bad:?}");
        }
        let day = NaiveDate::from_ymd_opt(2025, 12, 31).unwrap();
        assert_eq!(parse_date(&date_text(day)), Some(day));
    }

    #[test]
    fn an_inverted_range_is_refused() {
        let a = NaiveDate::from_ymd_opt(2025, 1, 2).unwrap();
        let b = NaiveDate::from_ymd_opt(2025, 1, 1).unwrap();
        let error = check_date_range("test", a, b).unwrap_err();
        assert_eq!(error.kind, ErrorKind::InvalidInput);
        assert!(check_date_range("test", b, a).is_ok());
        assert!(check_date_range("test", a, a).is_ok());
    }
}
