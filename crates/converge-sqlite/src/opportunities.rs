//! Opportunities ([`OpportunityStore`]) in a table of the source database, next to the
//! documents the app reads, as Firestore keeps them under `orgs/{tenant}/opportunities`.
//!
//! The table is created with `IF NOT EXISTS` whenever the writer opens, so databases
//! made before it existed gain it without a schema version of its own. An upsert is
//! one statement (`INSERT … ON CONFLICT DO UPDATE`), so a concurrent pair cannot
//! create two rows or lose the first sighting.

use async_trait::async_trait;
use converge_core::{Evidence, Opportunity, OpportunityStatus, OpportunityStore, StoreError, Timestamp, UpsertOutcome};
use rusqlite::{params, Connection, OptionalExtension, Row};

use crate::error::SqliteError;
use crate::SqliteStore;

pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS opportunities (
    tenant          TEXT NOT NULL,
    id              TEXT NOT NULL,
    detector        TEXT NOT NULL,
    title           TEXT NOT NULL,
    severity        TEXT NOT NULL,
    entity_type     TEXT NOT NULL,
    entity_id       TEXT NOT NULL,
    message         TEXT NOT NULL,
    recent_value    REAL,
    baseline_value  REAL,
    reference_value REAL,
    volume          REAL,
    period          TEXT NOT NULL,
    as_of           TEXT NOT NULL,
    -- Timestamps as seconds + nanoseconds: exact, and they sort.
    first_seen_s    INTEGER NOT NULL,
    first_seen_ns   INTEGER NOT NULL,
    last_seen_s     INTEGER NOT NULL,
    last_seen_ns    INTEGER NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('open', 'resolved')),
    resolved_at_s   INTEGER,
    resolved_at_ns  INTEGER,
    batch_id        TEXT NOT NULL,
    PRIMARY KEY (tenant, id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS opportunities_open ON opportunities (tenant, id) WHERE status = 'open';
";

/// Columns added after the table was first shipped: a database made before gains them
/// on open (old rows read them as NULL: no evidence recorded).
const EVIDENCE_COLUMNS: [(&str, &str); 6] = [
    ("test", "TEXT"),
    ("effect_pct", "REAL"),
    ("baseline_volume", "REAL"),
    ("statistic", "REAL"),
    ("p_value", "REAL"),
    ("q_value", "REAL"),
];

pub(crate) fn ensure_schema(conn: &Connection) -> Result<(), SqliteError> {
    conn.execute_batch(SCHEMA)?;
    crate::schema::add_missing_columns(conn, "opportunities", &EVIDENCE_COLUMNS)
}

const COLUMNS: &str = "tenant, id, detector, title, severity, entity_type, entity_id, message, \
     recent_value, baseline_value, reference_value, volume, period, as_of, \
     first_seen_s, first_seen_ns, last_seen_s, last_seen_ns, status, resolved_at_s, resolved_at_ns, batch_id, \
     test, effect_pct, baseline_volume, statistic, p_value, q_value";

#[async_trait]
impl OpportunityStore for SqliteStore {
    async fn upsert_opportunity(&self, o: Opportunity) -> Result<UpsertOutcome, StoreError> {
        self.blocking(move |inner| {
            let writer = inner.writer();
            let existed: bool = writer
                .conn
                .prepare_cached("SELECT 1 FROM opportunities WHERE tenant = ?1 AND id = ?2")?
                .query_row([&o.tenant, &o.id], |_| Ok(()))
                .optional()?
                .is_some();
            // Every field but first_seen is replaced; it fires, so it is open again.
            let mut stmt = writer.conn.prepare_cached(&format!(
                "INSERT INTO opportunities ({COLUMNS}) VALUES \
                 (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, 'open', NULL, NULL, ?19, ?20, ?21, ?22, ?23, ?24, ?25) \
                 ON CONFLICT (tenant, id) DO UPDATE SET \
                     detector = excluded.detector, title = excluded.title, severity = excluded.severity, \
                     entity_type = excluded.entity_type, entity_id = excluded.entity_id, message = excluded.message, \
                     recent_value = excluded.recent_value, baseline_value = excluded.baseline_value, \
                     reference_value = excluded.reference_value, volume = excluded.volume, period = excluded.period, \
                     as_of = excluded.as_of, last_seen_s = excluded.last_seen_s, last_seen_ns = excluded.last_seen_ns, \
                     status = 'open', resolved_at_s = NULL, resolved_at_ns = NULL, batch_id = excluded.batch_id, \
                     test = excluded.test, effect_pct = excluded.effect_pct, baseline_volume = excluded.baseline_volume, \
                     statistic = excluded.statistic, p_value = excluded.p_value, q_value = excluded.q_value"
            ))?;
            stmt.execute(params![
                o.tenant,
                o.id,
                o.detector,
                o.title,
                o.severity,
                o.entity_type,
                o.entity_id,
                o.message,
                o.recent_value,
                o.baseline_value,
                o.reference_value,
                o.volume,
                o.period,
                o.as_of,
                o.first_seen.seconds,
                o.first_seen.nanos,
                o.last_seen.seconds,
                o.last_seen.nanos,
                o.batch_id,
                o.evidence.test,
                o.evidence.effect_pct,
                o.evidence.baseline_volume,
                o.evidence.statistic,
                o.evidence.p_value,
                o.evidence.q_value,
            ])?;
            Ok(if existed { UpsertOutcome::Updated } else { UpsertOutcome::Opened })
        })
        .await
    }

    async fn opportunity(&self, tenant: &str, id: &str) -> Result<Option<Opportunity>, StoreError> {
        let (tenant, id) = (tenant.to_owned(), id.to_owned());
        self.blocking(move |inner| {
            inner.with_reader(|conn| {
                let mut stmt = conn.prepare_cached(&format!("SELECT {COLUMNS} FROM opportunities WHERE tenant = ?1 AND id = ?2"))?;
                let mut rows = stmt.query([tenant, id])?;
                match rows.next()? {
                    Some(row) => Ok(Some(from_row(row)?)),
                    None => Ok(None),
                }
            })
        })
        .await
    }

    async fn open_opportunities(&self, tenant: Option<&str>) -> Result<Vec<Opportunity>, StoreError> {
        let tenant = tenant.map(str::to_owned);
        self.blocking(move |inner| {
            inner.with_reader(|conn| {
                let mut stmt = conn.prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM opportunities WHERE status = 'open' AND (?1 IS NULL OR tenant = ?1) ORDER BY tenant, id"
                ))?;
                let mut rows = stmt.query([tenant])?;
                let mut out = Vec::new();
                while let Some(row) = rows.next()? {
                    out.push(from_row(row)?);
                }
                Ok(out)
            })
        })
        .await
    }

    async fn resolve_opportunity(&self, tenant: &str, id: &str, at: Timestamp, batch_id: &str) -> Result<bool, StoreError> {
        let (tenant, id, batch_id) = (tenant.to_owned(), id.to_owned(), batch_id.to_owned());
        self.blocking(move |inner| {
            let writer = inner.writer();
            let changed = writer.conn.execute(
                "UPDATE opportunities SET status = 'resolved', resolved_at_s = ?3, resolved_at_ns = ?4, batch_id = ?5 \
                 WHERE tenant = ?1 AND id = ?2 AND status = 'open'",
                params![tenant, id, at.seconds, at.nanos, batch_id],
            )?;
            Ok(changed > 0)
        })
        .await
    }
}

fn from_row(row: &Row<'_>) -> Result<Opportunity, SqliteError> {
    let status: String = row.get(18)?;
    let resolved_s: Option<i64> = row.get(19)?;
    let resolved_ns: Option<i32> = row.get(20)?;
    Ok(Opportunity {
        tenant: row.get(0)?,
        id: row.get(1)?,
        detector: row.get(2)?,
        title: row.get(3)?,
        severity: row.get(4)?,
        entity_type: row.get(5)?,
        entity_id: row.get(6)?,
        message: row.get(7)?,
        recent_value: row.get(8)?,
        baseline_value: row.get(9)?,
        reference_value: row.get(10)?,
        volume: row.get(11)?,
        period: row.get(12)?,
        as_of: row.get(13)?,
        first_seen: Timestamp::new(row.get(14)?, row.get(15)?),
        last_seen: Timestamp::new(row.get(16)?, row.get(17)?),
        status: OpportunityStatus::parse(&status).ok_or(SqliteError::CorruptRow { what: "opportunity status", value: status })?,
        resolved_at: resolved_s.map(|s| Timestamp::new(s, resolved_ns.unwrap_or(0))),
        batch_id: row.get(21)?,
        evidence: Evidence {
            test: row.get::<_, Option<String>>(22)?.unwrap_or_default(),
            effect_pct: row.get(23)?,
            baseline_volume: row.get(24)?,
            statistic: row.get(25)?,
            p_value: row.get(26)?,
            q_value: row.get(27)?,
        },
    })
}
