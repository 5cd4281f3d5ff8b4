//! The mirror configuration: which documents mirror into which changelog table, and
//! which of their fields are promoted to typed columns.
//!
//! ```toml
//! [[route]]
//! pattern = "orgs/{tenant}/records/{doc}"   # {tenant} and {doc} are required; {doc} last
//! table = "records"                          # changelog table; views records_latest, records_as_of
//!
//! [[route.promote]]
//! column = "amount"      # column name in the warehouse
//! field = "amount"       # field path in the document (dots for nested maps)
//! type = "float64"       # string | int64 | float64 | bool | timestamp | date
//! ```
//!
//! With no file, [`MirrorConfig::default`] mirrors `orgs/{tenant}/records/{doc}` into
//! `records` with the demo's promoted columns.

use serde::Deserialize;

use crate::error::ConfigError;

/// Every route, tried in order; the first whose pattern matches a path wins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorConfig {
    pub routes: Vec<Route>,
}

/// One document path pattern and the table it mirrors into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub pattern: PathPattern,
    pub table: String,
    pub promoted: Vec<PromotedColumn>,
}

/// A field copied out of the document into a typed column.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PromotedColumn {
    pub column: String,
    pub field: String,
    #[serde(rename = "type")]
    pub column_type: ColumnType,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ColumnType {
    String,
    Int64,
    Float64,
    Bool,
    Timestamp,
    Date,
}

impl ColumnType {
    pub fn name(self) -> &'static str {
        match self {
            ColumnType::String => "string",
            ColumnType::Int64 => "int64",
            ColumnType::Float64 => "float64",
            ColumnType::Bool => "bool",
            ColumnType::Timestamp => "timestamp",
            ColumnType::Date => "date",
        }
    }
}

/// A parsed pattern such as `orgs/{tenant}/records/{doc}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathPattern {
    text: String,
    segments: Vec<Segment>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Tenant,
    Doc,
    /// Any other `{name}`: matches one segment, not captured.
    Wildcard,
}

/// A document path resolved against a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutedPath<'r> {
    pub route: &'r Route,
    pub tenant: String,
    pub doc_id: String,
    /// The collection id the document lives in (the segment before `{doc}`).
    pub collection: String,
}

impl PathPattern {
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let invalid = |reason: &str| ConfigError::InvalidPattern { pattern: text.to_owned(), reason: reason.to_owned() };
        let parts: Vec<&str> = text.split('/').collect();
        if parts.len() % 2 != 0 {
            return Err(invalid("a document path has an even number of segments (collection/doc pairs)"));
        }
        let segments: Vec<Segment> = parts
            .iter()
            .map(|part| match *part {
                "" => Err(invalid("empty segment")),
                "{tenant}" => Ok(Segment::Tenant),
                "{doc}" => Ok(Segment::Doc),
                p if p.starts_with('{') && p.ends_with('}') => Ok(Segment::Wildcard),
                p if p.contains('{') || p.contains('}') => Err(invalid("braces must enclose a whole segment")),
                p => Ok(Segment::Literal(p.to_owned())),
            })
            .collect::<Result<_, _>>()?;
        if segments.iter().filter(|s| **s == Segment::Tenant).count() != 1 {
            return Err(invalid("needs exactly one {tenant} segment"));
        }
        if segments.last() != Some(&Segment::Doc) || segments.iter().filter(|s| **s == Segment::Doc).count() != 1 {
            return Err(invalid("needs exactly one {doc} segment, and it must be last"));
        }
        if !matches!(segments[segments.len() - 2], Segment::Literal(_)) {
            return Err(invalid("the segment before {doc} must be a literal collection id"));
        }
        Ok(Self { text: text.to_owned(), segments })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The collection holding one tenant's documents, e.g. `orgs/acme/records`, when
    /// the pattern has no wildcard besides `{tenant}` and `{doc}`.
    pub fn collection_path(&self, tenant: &str) -> Option<String> {
        let mut out = Vec::with_capacity(self.segments.len() - 1);
        for segment in &self.segments[..self.segments.len() - 1] {
            match segment {
                Segment::Literal(l) => out.push(l.as_str()),
                Segment::Tenant => out.push(tenant),
                Segment::Doc | Segment::Wildcard => return None,
            }
        }
        Some(out.join("/"))
    }

    /// The collection whose document ids are the tenants (`orgs` for
    /// `orgs/{tenant}/records/{doc}`); `None` when a wildcard comes before `{tenant}`.
    pub fn tenant_parent(&self) -> Option<String> {
        let mut out = Vec::new();
        for segment in &self.segments {
            match segment {
                Segment::Literal(l) => out.push(l.as_str()),
                Segment::Tenant => return Some(out.join("/")),
                Segment::Doc | Segment::Wildcard => return None,
            }
        }
        None
    }

    /// The path of one document of one tenant.
    pub fn document_path(&self, tenant: &str, doc_id: &str) -> Option<String> {
        self.collection_path(tenant).map(|c| format!("{c}/{doc_id}"))
    }

    fn capture(&self, path: &str) -> Option<(String, String, String)> {
        let parts: Vec<&str> = path.split('/').collect();
        if parts.len() != self.segments.len() || parts.iter().any(|p| p.is_empty()) {
            return None;
        }
        let (mut tenant, mut doc, mut collection) = (None, None, None);
        for (i, (segment, part)) in self.segments.iter().zip(&parts).enumerate() {
            match segment {
                Segment::Literal(l) if l != part => return None,
                Segment::Literal(_) | Segment::Wildcard => {}
                Segment::Tenant => tenant = Some(*part),
                Segment::Doc => {
                    doc = Some(*part);
                    collection = Some(parts[i - 1]);
                }
            }
        }
        Some((tenant?.to_owned(), doc?.to_owned(), collection?.to_owned()))
    }
}

impl MirrorConfig {
    /// Reads and validates a TOML configuration (see the module docs).
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct File {
            #[serde(default, rename = "route")]
            routes: Vec<RouteFile>,
        }
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct RouteFile {
            pattern: String,
            table: String,
            #[serde(default)]
            promote: Vec<PromotedColumn>,
        }
        let file: File = toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        let routes = file
            .routes
            .into_iter()
            .map(|r| Ok(Route { pattern: PathPattern::parse(&r.pattern)?, table: r.table, promoted: r.promote }))
            .collect::<Result<Vec<_>, ConfigError>>()?;
        Self::new(routes)
    }

    pub fn new(routes: Vec<Route>) -> Result<Self, ConfigError> {
        if routes.is_empty() {
            return Err(ConfigError::Invalid("no [[route]] configured: nothing would be mirrored".into()));
        }
        for route in &routes {
            check_identifier("table", &route.table)?;
            for column in &route.promoted {
                check_identifier("promoted column", &column.column)?;
                if RESERVED_COLUMNS.contains(&column.column.as_str()) {
                    return Err(ConfigError::Invalid(format!(
                        "promoted column `{}` of table `{}` clashes with a changelog column; rename it",
                        column.column, route.table
                    )));
                }
                if column.field.is_empty() || column.field.split('.').any(str::is_empty) {
                    return Err(ConfigError::Invalid(format!("promoted column `{}` has an empty field path", column.column)));
                }
            }
        }
        Ok(Self { routes })
    }

    /// The route whose pattern matches `path` (relative to the documents root).
    pub fn route(&self, path: &str) -> Option<RoutedPath<'_>> {
        self.routes.iter().find_map(|route| {
            route.pattern.capture(path).map(|(tenant, doc_id, collection)| RoutedPath { route, tenant, doc_id, collection })
        })
    }

    pub fn table(&self, name: &str) -> Option<&Route> {
        self.routes.iter().find(|r| r.table == name)
    }
}

impl Default for MirrorConfig {
    fn default() -> Self {
        let column = |name: &str, column_type| PromotedColumn { column: name.into(), field: name.into(), column_type };
        Self::new(vec![Route {
            pattern: PathPattern::parse("orgs/{tenant}/records/{doc}").expect("built-in pattern is valid"),
            table: "records".into(),
            promoted: vec![
                column("account", ColumnType::String),
                column("fund", ColumnType::String),
                column("date", ColumnType::Date),
                column("label", ColumnType::String),
                column("amount", ColumnType::Float64),
            ],
        }])
        .expect("built-in configuration is valid")
    }
}

/// Columns every changelog table has; promoted columns may not reuse them.
pub const RESERVED_COLUMNS: &[&str] = &[
    "tenant", "collection", "doc_id", "doc_path", "op", "is_deleted", "version", "event_id", "content_hash", "data",
    "ingested_at", "run_id", "code_version",
];

/// Table and column names end up in SQL text, so they are restricted to plain
/// identifiers; nothing else from configuration or input is ever spliced into SQL.
fn check_identifier(what: &str, name: &str) -> Result<(), ConfigError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.chars().next().is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(ConfigError::Invalid(format!("{what} name `{name}` must match [a-z_][a-z0-9_]{{0,63}}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_routes_records() {
        let config = MirrorConfig::default();
        let routed = config.route("orgs/acme/records/r1").unwrap();
        assert_eq!((routed.tenant.as_str(), routed.doc_id.as_str(), routed.collection.as_str()), ("acme", "r1", "records"));
        assert_eq!(routed.route.table, "records");
        assert!(config.route("orgs/acme/other/r1").is_none());
        assert!(config.route("orgs/acme/records").is_none());
        assert!(config.route("orgs/acme/records/r1/sub/x").is_none());
        assert!(config.route("orgs//records/r1").is_none());
    }

    #[test]
    fn collection_paths() {
        let p = PathPattern::parse("orgs/{tenant}/records/{doc}").unwrap();
        assert_eq!(p.collection_path("t1").as_deref(), Some("orgs/t1/records"));
        let q = PathPattern::parse("orgs/{tenant}/projects/{project}/tasks/{doc}").unwrap();
        assert_eq!(q.collection_path("t1"), None);
        assert_eq!(q.capture("orgs/t/projects/p/tasks/d"), Some(("t".into(), "d".into(), "tasks".into())));
    }

    #[test]
    fn bad_patterns_are_explained() {
        for bad in ["orgs/{tenant}/records", "{doc}/{tenant}", "orgs/records/{doc}", "orgs/{tenant}/{x}/{doc}", "a/{tenant}x/b/{doc}"] {
            assert!(PathPattern::parse(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn toml_configuration() {
        let config = MirrorConfig::from_toml(
            r#"
            [[route]]
            pattern = "tenants/{tenant}/orders/{doc}"
            table = "orders"
            [[route.promote]]
            column = "total"
            field = "totals.gross"
            type = "float64"
            "#,
        )
        .unwrap();
        assert_eq!(config.routes[0].promoted[0].column_type, ColumnType::Float64);
        let err = MirrorConfig::from_toml("[[route]]\npattern = \"a/{tenant}/b/{doc}\"\ntable = \"Robert'); DROP TABLE x;--\"").unwrap_err();
        assert!(err.to_string().contains("must match"), "{err}");
        let err = MirrorConfig::from_toml("[[route]]\npattern = \"a/{tenant}/b/{doc}\"\ntable = \"t\"\n[[route.promote]]\ncolumn = \"version\"\nfield = \"v\"\ntype = \"int64\"").unwrap_err();
        assert!(err.to_string().contains("clashes"), "{err}");
    }
}
