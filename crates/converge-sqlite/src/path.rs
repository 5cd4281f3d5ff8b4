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
    fn path_errors_name_the_path_and_firestore_s_reason() {
        // The rules themselves are tested in converge_core::path.
        let error = split_document_path("c/__x__").unwrap_err().to_string();
        assert!(error.contains("c/__x__") && error.contains("reserved"), "{error}");
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
