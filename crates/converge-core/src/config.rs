//! The mirror configuration: which documents mirror into which changelog table, and
//! which of their fields are promoted to typed columns.
//!
//! ```toml
//! [[route]]
//! pattern = "orgs/{tenant}/records/{doc}"   # {tenant} and {doc} are required; {doc} last
//! table = "records"                          # changelog table; views records_latest, records_as_of
//!
//! change_field = "updated_at"              # optional: the timestamp every write sets
//!                                            # (what an incremental reconcile queries)
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
    /// The top-level timestamp field every write of the app sets (ideally
    /// `FieldValue.serverTimestamp()`): what an incremental reconcile queries for the
    /// documents written since its last verified point (see [`crate::incremental`]).
    /// Without one, the route's incremental reconcile is a full one.
    pub change_field: Option<String>,
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

    /// The path of one document of one tenant, the pattern's other wildcards filled
    /// from `wildcards` in order (`orgs/{tenant}/projects/{project}/tasks/{doc}` with
    /// `["p1"]` → `orgs/acme/projects/p1/tasks/t1`); `None` when their number differs.
    pub fn document_path_with(&self, tenant: &str, wildcards: &[&str], doc_id: &str) -> Option<String> {
        let mut fill = wildcards.iter();
        let parts: Vec<&str> = self
            .segments
            .iter()
            .map(|segment| match segment {
                Segment::Literal(l) => Some(l.as_str()),
                Segment::Tenant => Some(tenant),
                Segment::Doc => Some(doc_id),
                Segment::Wildcard => fill.next().copied(),
            })
            .collect::<Option<_>>()?;
        fill.next().is_none().then(|| parts.join("/"))
    }

    /// Every document of `tenant` this pattern matches, at any depth: what the source
    /// scans for a reconcile or a rebuild of one tenant. An invalid tenant id is refused.
    pub fn tenant_scope(&self, tenant: &str) -> Result<SourceScope, crate::path::PathProblem> {
        crate::path::check_id(tenant)?;
        Ok(self.scope(Some(tenant)))
    }

    /// Every document this pattern matches, of every tenant: how tenants are found when
    /// a wildcard comes before `{tenant}`.
    pub fn every_tenant_scope(&self) -> SourceScope {
        self.scope(None)
    }

    fn scope(&self, tenant: Option<&str>) -> SourceScope {
        let segments = self
            .segments
            .iter()
            .map(|segment| match (segment, tenant) {
                (Segment::Literal(l), _) => ScopeSegment::Id(l.clone()),
                (Segment::Tenant, Some(tenant)) => ScopeSegment::Id(tenant.to_owned()),
                _ => ScopeSegment::Any,
            })
            .collect();
        SourceScope::new(segments)
    }

    /// The tenant of a path this pattern matches.
    pub fn tenant_of(&self, path: &str) -> Option<String> {
        self.capture(path).map(|(tenant, _, _)| tenant)
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

/// Which documents of the source one scan covers: every document whose path has the
/// scope's segments, each a given id or any id (`orgs/acme/projects/*/tasks/*`). The
/// documents all lie under [`SourceScope::parent`] (the longest run of given ids that
/// ends at a document, `orgs/acme`; empty for the database root) in collections named
/// [`SourceScope::collection_id`] (`tasks`); a `tasks` collection elsewhere in that
/// subtree (`orgs/acme/tasks/t1`, `orgs/acme/projects/p/tasks/t/tasks/u`) is not in
/// the scope. One collection (`orgs/acme/records`) is the simplest scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceScope {
    segments: Vec<ScopeSegment>,
    /// Leading segments that form the parent document (even, all `Id`).
    parent_len: usize,
}

/// One segment of a [`SourceScope`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScopeSegment {
    Id(String),
    Any,
}

impl SourceScope {
    /// Built from a pattern's segments: even in number, the next to last an id.
    fn new(segments: Vec<ScopeSegment>) -> Self {
        debug_assert!(segments.len() >= 2 && segments.len() % 2 == 0);
        let given = segments.iter().take_while(|s| matches!(s, ScopeSegment::Id(_))).count();
        let parent_len = (given.min(segments.len() - 2)) & !1;
        Self { segments, parent_len }
    }

    /// Every document directly in the collection at `collection_path`.
    pub fn collection(collection_path: &str) -> Result<Self, crate::path::PathProblem> {
        crate::path::check_collection_path(collection_path)?;
        let mut segments: Vec<ScopeSegment> = collection_path.split('/').map(|s| ScopeSegment::Id(s.to_owned())).collect();
        segments.push(ScopeSegment::Any);
        Ok(Self::new(segments))
    }

    pub fn segments(&self) -> &[ScopeSegment] {
        &self.segments
    }

    /// The document every path of the scope lies under (`orgs/acme`), or `""` for the
    /// database root.
    pub fn parent(&self) -> String {
        self.ids(0, self.parent_len)
    }

    /// The id of the collections holding the scope's documents (`tasks`).
    pub fn collection_id(&self) -> &str {
        match &self.segments[self.segments.len() - 2] {
            ScopeSegment::Id(id) => id,
            ScopeSegment::Any => unreachable!("a scope's next to last segment is a collection id"),
        }
    }

    /// The one collection holding every document of the scope, when there is one
    /// (no wildcard before the last segment): `orgs/acme/records`.
    pub fn collection_path(&self) -> Option<String> {
        (self.parent_len == self.segments.len() - 2).then(|| self.ids(0, self.segments.len() - 1))
    }

    /// Whether `path` is a document of the scope: exactly as many segments, each the
    /// given id where one is given.
    pub fn matches(&self, path: &str) -> bool {
        let mut parts = path.split('/');
        for segment in &self.segments {
            match (segment, parts.next()) {
                (_, None | Some("")) => return false,
                (ScopeSegment::Id(id), Some(part)) if id != part => return false,
                _ => {}
            }
        }
        parts.next().is_none()
    }

    fn ids(&self, from: usize, to: usize) -> String {
        self.segments[from..to]
            .iter()
            .map(|s| match s {
                ScopeSegment::Id(id) => id.as_str(),
                ScopeSegment::Any => "*",
            })
            .collect::<Vec<_>>()
            .join("/")
    }
}

impl std::fmt::Display for SourceScope {
    /// `orgs/acme/projects/*/tasks/*`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.ids(0, self.segments.len()))
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
            #[serde(default)]
            change_field: Option<String>,
        }
        let file: File = toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        let routes = file
            .routes
            .into_iter()
            .map(|r| Ok(Route { pattern: PathPattern::parse(&r.pattern)?, table: r.table, promoted: r.promote, change_field: r.change_field }))
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
            if let Some(field) = &route.change_field {
                if field.is_empty() || field.contains('.') || field.contains('`') {
                    return Err(ConfigError::Invalid(format!(
                        "change_field {field:?} of table `{}` is not a top-level field name: expected the name of the timestamp field every write sets, such as \"updated_at\"",
                        route.table
                    )));
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

    /// Whether `path` mirrors into `table`: the first route matching it is that table's.
    /// A scan of one route's scope can hold paths an earlier, overlapping route claims
    /// (`orgs/{tenant}/projects/main/tasks/{doc}` before
    /// `orgs/{tenant}/projects/{project}/tasks/{doc}`); they are that route's, not this one's.
    pub fn routes_to(&self, path: &str, table: &str) -> bool {
        self.route(path).is_some_and(|routed| routed.route.table == table)
    }

    /// The configuration as the TOML [`MirrorConfig::from_toml`] reads back (what
    /// `converge demo` leaves in its data directory as `mirror.toml`).
    pub fn to_toml(&self) -> String {
        let quoted = |text: &str| format!("{text:?}");
        let mut out = String::new();
        for route in &self.routes {
            out.push_str(&format!("[[route]]\npattern = {}\ntable = {}\n", quoted(route.pattern.as_str()), quoted(&route.table)));
            let promoted: Vec<String> = route
                .promoted
                .iter()
                .map(|c| format!("{{ column = {}, field = {}, type = {} }}", quoted(&c.column), quoted(&c.field), quoted(c.column_type.name())))
                .collect();
            if !promoted.is_empty() {
                out.push_str(&format!("promote = [{}]\n", promoted.join(", ")));
            }
            if let Some(field) = &route.change_field {
                out.push_str(&format!("change_field = {}\n", quoted(field)));
            }
            out.push('\n');
        }
        out
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
            change_field: Some(DEFAULT_CHANGE_FIELD.into()),
        }])
        .expect("built-in configuration is valid")
    }
}

/// The change field of the built-in route (and the demo's): the documents' `updated_at`.
pub const DEFAULT_CHANGE_FIELD: &str = "updated_at";

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
    fn a_configuration_reads_back_from_its_toml() {
        let text = "[[route]]\npattern = \"orgs/{tenant}/records/{doc}\"\ntable = \"records\"\npromote = [{ column = \"amount\", field = \"totals.amount\", type = \"float64\" }]\n\n\
                    [[route]]\npattern = \"orgs/{tenant}/projects/{project}/tasks/{doc}\"\ntable = \"tasks\"\n";
        let config = MirrorConfig::from_toml(text).unwrap();
        assert_eq!(MirrorConfig::from_toml(&config.to_toml()).unwrap(), config);
        assert_eq!(MirrorConfig::from_toml(&MirrorConfig::default().to_toml()).unwrap(), MirrorConfig::default());
    }

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
    fn scopes_of_any_depth() {
        let plain = PathPattern::parse("orgs/{tenant}/records/{doc}").unwrap().tenant_scope("acme").unwrap();
        assert_eq!((plain.parent().as_str(), plain.collection_id()), ("orgs/acme", "records"));
        assert_eq!(plain.collection_path().as_deref(), Some("orgs/acme/records"));
        assert_eq!(plain, SourceScope::collection("orgs/acme/records").unwrap());
        assert!(plain.matches("orgs/acme/records/r1"));
        for other in ["orgs/acme/records", "orgs/globex/records/r1", "orgs/acme/records/r1/sub/x", "orgs/acme/records/", "orgs/acme/tasks/r1"] {
            assert!(!plain.matches(other), "{other}");
        }

        let nested = PathPattern::parse("orgs/{tenant}/projects/{project}/tasks/{doc}").unwrap();
        let scope = nested.tenant_scope("acme").unwrap();
        assert_eq!((scope.parent().as_str(), scope.collection_id(), scope.collection_path()), ("orgs/acme", "tasks", None));
        assert_eq!(scope.to_string(), "orgs/acme/projects/*/tasks/*");
        assert!(scope.matches("orgs/acme/projects/p1/tasks/t1"));
        for other in ["orgs/acme/tasks/t1", "orgs/acme/projects/p1/tasks/t1/tasks/t2", "orgs/globex/projects/p1/tasks/t1", "orgs/acme/teams/p1/tasks/t1"] {
            assert!(!scope.matches(other), "{other}");
        }
        assert!(nested.tenant_scope("a/b").is_err());
        assert_eq!(nested.document_path_with("acme", &["p1"], "t1").as_deref(), Some("orgs/acme/projects/p1/tasks/t1"));
        assert_eq!(nested.document_path_with("acme", &[], "t1"), None);
        assert_eq!(nested.tenant_of("orgs/acme/projects/p1/tasks/t1").as_deref(), Some("acme"));

        let before = PathPattern::parse("regions/{region}/orgs/{tenant}/records/{doc}").unwrap();
        let scope = before.tenant_scope("acme").unwrap();
        assert_eq!((scope.parent().as_str(), scope.collection_path()), ("", None));
        assert!(scope.matches("regions/eu/orgs/acme/records/r1") && !scope.matches("regions/eu/orgs/globex/records/r1"));
        let every = before.every_tenant_scope();
        assert!(every.matches("regions/eu/orgs/globex/records/r1"));
        let literal_after = PathPattern::parse("orgs/{tenant}/config/main/items/{doc}").unwrap().tenant_scope("acme").unwrap();
        assert_eq!(literal_after.collection_path().as_deref(), Some("orgs/acme/config/main/items"));
    }

    #[test]
    fn overlapping_routes_keep_their_paths() {
        let config = MirrorConfig::from_toml(
            "[[route]]\npattern = \"orgs/{tenant}/projects/main/tasks/{doc}\"\ntable = \"main_tasks\"\n\
             [[route]]\npattern = \"orgs/{tenant}/projects/{project}/tasks/{doc}\"\ntable = \"tasks\"",
        )
        .unwrap();
        let scope = config.routes[1].pattern.tenant_scope("acme").unwrap();
        assert!(scope.matches("orgs/acme/projects/main/tasks/t1"), "the scan sees it");
        assert!(config.routes_to("orgs/acme/projects/main/tasks/t1", "main_tasks"));
        assert!(!config.routes_to("orgs/acme/projects/main/tasks/t1", "tasks"));
        assert!(config.routes_to("orgs/acme/projects/p2/tasks/t1", "tasks"));
        assert!(!config.routes_to("orgs/acme/other/t1", "tasks"));
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
