//! Firestore's rules for document ids and paths, in one place: every store (and every
//! endpoint that takes a tenant id) accepts exactly what Firestore accepts, so data
//! that works on the embedded default also works in the cloud.
//!
//! Paths are relative to the documents root: `orgs/acme/records/r1` is a document,
//! `orgs/acme/records` its collection.

/// Why an id or a path is not one Firestore accepts.
pub type PathProblem = &'static str;

/// Firestore's longest id, in bytes.
pub const MAX_ID_BYTES: usize = 1500;

/// Checks one document or collection id.
pub fn check_id(id: &str) -> Result<(), PathProblem> {
    match id {
        "" => Err("empty id"),
        _ if id.contains('/') => Err("an id cannot contain `/`"),
        "." | ".." => Err("`.` and `..` are not ids"),
        s if s.len() > 4 && s.starts_with("__") && s.ends_with("__") => Err("ids of the form `__name__` are reserved by Firestore"),
        s if s.len() > MAX_ID_BYTES => Err("an id is at most 1500 bytes"),
        _ => Ok(()),
    }
}

/// Number of segments of `path`, if every one is a valid id.
pub fn check_segments(path: &str) -> Result<usize, PathProblem> {
    if path.is_empty() {
        return Err("empty");
    }
    let mut count = 0;
    for segment in path.split('/') {
        if segment.is_empty() {
            return Err("empty segment (leading, trailing or doubled '/')");
        }
        check_id(segment)?;
        count += 1;
    }
    Ok(count)
}

/// Splits a document path into its collection path and document id.
pub fn split_document_path(path: &str) -> Result<(&str, &str), PathProblem> {
    if check_segments(path)? % 2 != 0 {
        return Err("a document path has an even number of segments (collection/id/...)");
    }
    path.rsplit_once('/').ok_or("missing document id")
}

/// Checks a collection path (an odd number of segments).
pub fn check_collection_path(path: &str) -> Result<(), PathProblem> {
    if check_segments(path)? % 2 != 1 {
        return Err("a collection path has an odd number of segments (collection or .../id/collection)");
    }
    Ok(())
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
    fn ids_follow_firestore() {
        for good in ["acme", "a b", "acme'; DROP TABLE records;--", "__x", "_x_", "é"] {
            assert_eq!(check_id(good), Ok(()), "{good}");
        }
        for bad in ["", ".", "..", "a/b", "../etc", "__name__", &"x".repeat(1501)] {
            assert!(check_id(bad).is_err(), "{bad}");
        }
        assert!(check_id(&"x".repeat(1500)).is_ok());
    }
}
