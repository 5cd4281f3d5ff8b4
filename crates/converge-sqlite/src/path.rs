//! Document and collection paths, relative to the documents root
//! (`orgs/acme/records/r1` is a document; `orgs/acme/records` its collection).

use crate::error::SqliteError;

/// Splits a document path into its collection path and document id.
pub fn split_document_path(path: &str) -> Result<(&str, &str), SqliteError> {
    let invalid = |reason| SqliteError::InvalidDocumentPath { path: path.to_owned(), reason };
    let segments = check_segments(path).map_err(invalid)?;
    if segments % 2 != 0 {
        return Err(invalid("a document path has an even number of segments (collection/id/...)"));
    }
    // `check_segments` guarantees at least one '/' in a path of two or more segments.
    let (collection, id) = path.rsplit_once('/').ok_or_else(|| invalid("missing document id"))?;
    Ok((collection, id))
}

pub fn check_collection_path(path: &str) -> Result<(), SqliteError> {
    let invalid = |reason| SqliteError::InvalidCollectionPath { path: path.to_owned(), reason };
    let segments = check_segments(path).map_err(invalid)?;
    if segments % 2 != 1 {
        return Err(invalid("a collection path has an odd number of segments (collection or .../id/collection)"));
    }
    Ok(())
}

/// Number of segments, if every one is a valid Firestore id.
fn check_segments(path: &str) -> Result<usize, &'static str> {
    if path.is_empty() {
        return Err("empty");
    }
    let mut count = 0;
    for segment in path.split('/') {
        match segment {
            "" => return Err("empty segment (leading, trailing or doubled '/')"),
            "." | ".." => return Err("`.` and `..` are not ids"),
            _ => count += 1,
        }
    }
    Ok(count)
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
        for bad in ["", "c", "c/d/e", "/c/d", "c/d/", "c//d", "c/.."] {
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
