//! Document and collection paths, relative to the documents root
//! (`orgs/acme/records/r1` is a document; `orgs/acme/records` its collection).

use crate::error::SqliteError;

/// Splits a document path into its collection path and document id (Firestore's rules,
/// [`converge_core::path`]).
pub fn split_document_path(path: &str) -> Result<(&str, &str), SqliteError> {
    converge_core::path::split_document_path(path).map_err(|reason| SqliteError::InvalidDocumentPath { path: path.to_owned(), reason })
}

pub fn check_collection_path(path: &str) -> Result<(), SqliteError> {
    converge_core::path::check_collection_path(path).map_err(|reason| SqliteError::InvalidCollectionPath { path: path.to_owned(), reason })
}

/// A top-level field name as a Firestore field path: backquoted unless it is a
/// simple identifier (the form `update_mask` uses).
pub fn field_path(name: &str) -> String {
    let simple = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if simple {
        name.to_owned()
    } else {
        format!("`{}`", name.replace('\\', "\\\\").replace('`', "\\`"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn document_and_collection_paths() {
        assert_eq!(split_document_path("orgs/a/records/r1").unwrap(), ("orgs/a/records", "r1"));
        assert_eq!(split_document_path("c/d").unwrap(), ("c", "d"));
        for bad in ["", "c", "c/d/e", "/c/d", "c/d/", "c//d", "c/..", "c/__x__"] {
            assert!(split_document_path(bad).is_err(), "{bad}");
        }
        assert!(check_collection_path("orgs/a/records").is_ok());
        assert!(check_collection_path("orgs").is_ok());
        assert!(check_collection_path("orgs/a").is_err());
    }

    #[test]
    fn field_paths_quote_what_needs_quoting() {
        assert_eq!(field_path("amount_2"), "amount_2");
        assert_eq!(field_path("2x"), "`2x`");
        assert_eq!(field_path("a.b"), "`a.b`");
        assert_eq!(field_path("a`b"), "`a\\`b`");
    }
}
