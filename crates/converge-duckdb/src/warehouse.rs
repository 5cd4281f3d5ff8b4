//! [`DuckWarehouse`]: the changelog in a DuckDB database file.

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use futures::stream::BoxStream;
use converge_core::{
    AppendReceipt, ChangeRow, CompactionPlan, CurrentRefresh, DocState, ErrorKind, MirrorConfig, PathRange, RefreshFrom, RunRecord, Scan, StoreError,
    TableCompaction, Timestamp, VerifiedPoint, Warehouse, WarehouseBytes,
};
use duckdb::{params, Connection};

use crate::appender::{append_rows, check_rows, names_of, promoted_names};
use crate::db::{db_error, join_error, query_json_blocking, query_streaming, feed_blocking_writer, WriterChunk, BACKEND};
use crate::journal::Journal;
use crate::loader::{by_table, load, JournalWriter, Loader, LoaderLimits, LOAD_ROWS};
use crate::recent_event_ids::RecentEvents;
use crate::runs;
use crate::schema::{create_statements, CREATE_JOURNAL, CREATE_RUNS, CREATE_TABLE_STATE, STATE_COLUMNS};

/// How many recent event ids the warehouse remembers for skipping redeliveries.
/// 16 bytes each: about 8 MiB.
const RECENT_EVENTS: usize = 500_000;
/// How many of the newest stored event ids a reopened warehouse remembers again.
/// Redeliveries after a crash come within seconds to minutes; older ones are
/// harmless copies the latest view ignores. Reading more costs a sort of the table's
/// newest rows at every start (and memory in short-lived commands).
const RECENT_EVENTS_RELOADED: usize = 100_000;

/// DuckDB's memory cap for a file-backed warehouse (see [`DuckWarehouse::open`]),
/// unless `CONVERGE_DUCKDB_MEMORY_LIMIT` says otherwise. 48MB is too little for the
/// latest view of a 1,000,000-document tenant (DuckDB fails with Out of Memory).
const MEMORY_LIMIT: &str = "96MB";
/// DuckDB checkpoints its WAL when it passes this size (see `from_connection`).
const WAL_CHECKPOINT: &str = "64MB";
/// The environment variable that overrides [`MEMORY_LIMIT`] (DuckDB syntax: `256MB`,
/// `1GB`). Also listed in `converge_function::env`.
pub const MEMORY_LIMIT_ENV: &str = "CONVERGE_DUCKDB_MEMORY_LIMIT";

/// The embedded warehouse. Cheap to clone; all clones share one database.
#[derive(Clone)]
pub struct DuckWarehouse {
    inner: Arc<Inner>,
}

struct Inner {
    /// Which database this is (its file), for messages.
    place: String,
    /// The one writing connection, shared with the loader thread. DuckDB connections
    /// are not `Sync`; writes are serialized here.
    writer: Arc<Mutex<Connection>>,
    config: Mutex<Option<MirrorConfig>>,
    /// Event ids appended recently (and, after a restart, the latest ones stored), so
    /// a redelivered event is skipped instead of appended again.
    recent: Mutex<RecentEvents>,
    /// Where an append is durable first (see [`crate::journal`]).
    journal: Arc<Mutex<JournalWriter>>,
    /// Moves journaled appends into DuckDB. Stopped (after loading what is queued)
    /// when the last handle goes.
    loader: Loader,
    /// Held by a current-table refresh or a compaction: one at a time, so their
    /// transactions never conflict over the table state.
    maintenance: Mutex<()>,
    /// What the queries would process on BigQuery (`crate::incremental`).
    bytes: crate::incremental::ScanBytes,
}

impl DuckWarehouse {
    /// Opens (or creates) the database file. Fails with a clear message if another
    /// process holds it: DuckDB allows one writing process per file.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| StoreError::permanent(BACKEND, format!("cannot create {}: {e}", parent.display())))?;
        }
        let connection = Connection::open(path).map_err(|e| {
            let mut error = db_error(&format!("cannot open warehouse {}", path.display()), e);
            if error.message.contains("lock") {
                error.message.push_str(" (is another converge process using this data directory? stop it, or use another --data-dir)");
            }
            error
        })?;
        // A file-backed database can spill to disk, so its memory is capped: the
        // latest view of a 1,000,000-document tenant, sorted by path for the
        // reconciler's merge, otherwise holds ~450 MB. Large sorts and aggregations
        // spill to `<file>.tmp` instead, at little cost in time.
        let limit = std::env::var(MEMORY_LIMIT_ENV).ok().filter(|v| !v.trim().is_empty()).unwrap_or_else(|| MEMORY_LIMIT.to_owned());
        let valid = limit.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == ' ');
        if !valid || connection.execute_batch(&format!("SET memory_limit = '{limit}'")).is_err() {
            return Err(StoreError::permanent(
                BACKEND,
                format!("{MEMORY_LIMIT_ENV}={limit:?} is not a DuckDB memory size; expected e.g. `96MB` or `1GB`"),
            ));
        }

        // DuckDB's allocator keeps freed pages for reuse and returns them to the system
        // lazily; a rebuild or a reconciliation frees as much as it allocates, so ask
        // it to return them promptly (background purging, flush after large tasks):
        // about 10% less peak memory for a 1,000,000-document rebuild.
        if let Err(error) = connection.execute_batch("SET allocator_background_threads = true; SET allocator_flush_threshold = '32MB'") {
            tracing::warn!(%error, "could not tune DuckDB's allocator; peak memory may be higher");
        }
        let mut connection = connection;
        let (journal, loaded) = recover_journal(&mut connection, &Self::journal_path(path))?;
        Self::from_connection(connection, Some(journal), loaded, format!("the DuckDB warehouse {}", path.display()))
    }

    /// The journal of the warehouse file at `path`: `<file>.journal`, beside it.
    pub fn journal_path(path: &Path) -> std::path::PathBuf {
        let mut name = path.as_os_str().to_owned();
        name.push(".journal");
        name.into()
    }

    /// A private in-memory warehouse, for tests. Appends go through the same loader
    /// thread, without a journal file.
    pub fn open_in_memory() -> Result<Self, StoreError> {
        let connection = Connection::open_in_memory().map_err(|e| db_error("cannot open in-memory warehouse", e))?;
        Self::from_connection(connection, None, 0, "the in-memory DuckDB warehouse".to_owned())
    }

    fn from_connection(connection: Connection, journal: Option<Journal>, loaded: u64, place: String) -> Result<Self, StoreError> {
        // DuckDB checkpoints (compresses its WAL into the database file) inside the
        // commit that passes a WAL threshold, 16 MB by default. Only the loader thread
        // waits for it (appends are answered from the journal), so the threshold
        // trades the loader's pauses against how many appended rows are not yet
        // checkpointed: those are read back from DuckDB's spill file when they do not
        // fit its memory cap. At 256 MB the demo's report over 300,000 records took
        // 80-103 ms, at 64 MB 61-71 ms. Closing checkpoints too.
        if let Err(error) = connection.execute_batch(&format!("SET wal_autocheckpoint = '{WAL_CHECKPOINT}'")) {
            tracing::warn!(%error, "could not set DuckDB's checkpoint threshold");
        }
        let writer = Arc::new(Mutex::new(connection));
        let journal = Arc::new(Mutex::new(JournalWriter { journal, next_seq: loaded + 1 }));
        let loader = Loader::start(writer.clone(), journal.clone(), loaded, LoaderLimits::default())?;
        Ok(Self {
            inner: Arc::new(Inner {
                place,
                writer,
                config: Mutex::new(None),
                recent: Mutex::new(RecentEvents::new(RECENT_EVENTS)),
                journal,
                loader,
                maintenance: Mutex::new(()),
                bytes: Default::default(),
            }),
        })
    }

    fn writer(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave a half-applied append: every
        // append is one DuckDB transaction, rolled back if not committed.
        self.inner.writer.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A new connection for reading, independent of the writer. It sees every row
    /// appended before this call: it waits (blocking) until the loader has moved them
    /// from the journal into DuckDB — at once, but for seconds while DuckDB
    /// checkpoints.
    pub fn reader(&self) -> Result<Connection, StoreError> {
        self.inner.loader.caught_up()?;
        self.writer().try_clone().map_err(|e| db_error("cannot open a reader connection", e))
    }

    /// Takes `config` as the table layout for later calls, once its tables exist.
    /// After a restart it remembers the newest stored events again: redelivery most
    /// often follows a crash.
    fn adopt(&self, connection: &Connection, config: MirrorConfig) -> Result<(), StoreError> {
        let mut recent = self.inner.recent.lock().unwrap_or_else(|p| p.into_inner());
        for route in &config.routes {
            let sql = format!("SELECT event_id FROM {} ORDER BY ingested_at DESC LIMIT {}", route.table, RECENT_EVENTS_RELOADED / config.routes.len());
            let mut statement = connection.prepare(&sql).map_err(|e| db_error("read recent events", e))?;
            let ids = statement.query_map([], |row| row.get::<_, String>(0)).map_err(|e| db_error("read recent events", e))?;
            for id in ids {
                recent.insert(&id.map_err(|e| db_error("read recent events", e))?);
            }
        }
        drop(recent);
        *self.inner.config.lock().unwrap_or_else(|p| p.into_inner()) = Some(config);
        Ok(())
    }

    fn config(&self) -> Result<MirrorConfig, StoreError> {
        self.inner.config.lock().unwrap_or_else(|p| p.into_inner()).clone().ok_or_else(|| {
            StoreError::permanent(BACKEND, "ensure_tables must run before appends (the warehouse has no table layout yet)")
        })
    }

    /// Runs a read-only query and returns each row as a JSON object, in DuckDB's own
    /// JSON rendering of every type. Used by `converge sql` and the demo report.
    pub async fn query_json(&self, sql: &str) -> Result<Vec<serde_json::Value>, StoreError> {
        let connection = self.reader()?;
        let sql = sql.trim().trim_end_matches(';').to_owned();
        tokio::task::spawn_blocking(move || query_json_blocking(&connection, &sql)).await.map_err(join_error)?
    }

    /// Runs a query with one text parameter per `?`, returning JSON rows.
    pub async fn query_json_with(&self, sql: &str, args: Vec<String>) -> Result<Vec<serde_json::Value>, StoreError> {
        let connection = self.reader()?;
        let wrapped = format!("SELECT to_json(_row)::VARCHAR FROM ({}) AS _row", sql.trim().trim_end_matches(';'));
        tokio::task::spawn_blocking(move || {
            let mut statement = connection.prepare(&wrapped).map_err(|e| db_error("query", e))?;
            let rows = statement
                .query_map(duckdb::params_from_iter(args.iter()), |row| row.get::<_, String>(0))
                .map_err(|e| db_error("query", e))?;
            rows.map(|text| {
                let text = text.map_err(|e| db_error("query", e))?;
                serde_json::from_str(&text).map_err(|e| StoreError::permanent(BACKEND, format!("row is not JSON: {e}")))
            })
            .collect()
        })
        .await
        .map_err(join_error)?
    }

    /// Total rows in a changelog table (every version, tombstones included).
    pub async fn changelog_rows(&self, table: &str) -> Result<u64, StoreError> {
        self.check_table(table)?;
        let connection = self.reader()?;
        let sql = format!("SELECT count(*) FROM {table}");
        tokio::task::spawn_blocking(move || {
            connection.query_row(&sql, [], |row| row.get::<_, i64>(0)).map(|n| n as u64).map_err(|e| db_error("count", e))
        })
        .await
        .map_err(join_error)?
    }

    /// Counts a scan of `table` in the bytes-processed estimate (`crate::incremental`).
    fn count_scan(&self, table: &str) -> Result<(), StoreError> {
        let connection = self.reader()?;
        self.inner.bytes.scanned(&connection, table);
        Ok(())
    }

    /// Table names reach SQL text only after this check against the configuration.
    fn check_table(&self, table: &str) -> Result<(), StoreError> {
        self.route(table).map(|_| ())
    }

    fn route(&self, table: &str) -> Result<converge_core::Route, StoreError> {
        match self.config()?.table(table) {
            Some(route) => Ok(route.clone()),
            None => Err(StoreError::new(ErrorKind::NotFound, BACKEND, format!("no mirrored table named `{table}`"))),
        }
    }

    /// Document states (path, update time, content hash, version: [`STATE_COLUMNS`])
    /// from `sql` with `args`, streamed: a bounded channel of chunks from a blocking
    /// reader, so memory stays flat whatever the tenant's size, the consumer sets the
    /// pace, and the threads meet once per chunk, not once per document.
    fn stream_states(
        &self,
        sql: String,
        args: Vec<duckdb::types::Value>,
    ) -> Result<Scan<DocState>, StoreError> {
        self.stream(sql, args, Rows::States)
    }

    /// [`Self::stream_states`] over rows of [`Rows`]' shape.
    fn stream(
        &self,
        sql: String,
        args: Vec<duckdb::types::Value>,
        shape: Rows,
    ) -> Result<Scan<DocState>, StoreError> {
        let connection = self.reader()?;
        let read_time = converge_core::SystemClock.now_timestamp();
        let (sender, mut receiver) = tokio::sync::mpsc::channel::<Result<Vec<DocState>, StoreError>>(STATE_CHUNKS_AHEAD);
        std::thread::spawn(move || {
            let run = || -> Result<(), StoreError> {
                let error = |e| db_error("scan states", e);
                let mut statement = connection.prepare(&sql).map_err(error)?;
                let mut rows =
                    query_streaming(&mut statement, duckdb::params_from_iter(args.iter()))
                        .map_err(error)?;
                let mut chunk = Vec::with_capacity(STATE_CHUNK);
                // Rows::Candidates: the best row so far of the document being read.
                let mut best: Option<(DocState, bool, i128)> = None;
                while let Some(row) = rows.next().map_err(error)? {
                    let first: String = row.get(0).map_err(error)?;
                    let doc_path = match &shape {
                        Rows::Candidates {
                            collection: Some(collection),
                        } => format!("{collection}/{first}"),
                        _ => first,
                    };
                    let state = DocState {
                        doc_path,
                        update_time: row.get(1).map_err(error)?,
                        content_hash: row
                            .get::<_, Option<String>>(2)
                            .map_err(error)?
                            .unwrap_or_default(),
                        version: row.get(3).map_err(error)?,
                    };
                    let done = match shape {
                        Rows::States => Some(state),
                        Rows::Candidates { .. } => {
                            let (deleted, key): (bool, i128) =
                                (row.get(4).map_err(error)?, row.get(5).map_err(error)?);
                            match &mut best {
                                Some((held, held_deleted, held_key))
                                    if held.doc_path == state.doc_path =>
                                {
                                    if key > *held_key {
                                        (*held, *held_deleted, *held_key) = (state, deleted, key);
                                    }
                                    None
                                }
                                _ => best
                                    .replace((state, deleted, key))
                                    .and_then(|(held, deleted, _)| (!deleted).then_some(held)),
                            }
                        }
                    };
                    if let Some(state) = done {
                        chunk.push(state);
                        if chunk.len() == STATE_CHUNK
                            && sender
                                .blocking_send(Ok(std::mem::replace(
                                    &mut chunk,
                                    Vec::with_capacity(STATE_CHUNK),
                                )))
                                .is_err()
                        {
                            return Ok(()); // the consumer stopped reading
                        }
                    }
                }
                if let Some((held, false, _)) = best {
                    chunk.push(held);
                }
                if !chunk.is_empty() {
                    let _ = sender.blocking_send(Ok(chunk));
                }
                Ok(())
            };
            if let Err(error) = run() {
                let _ = sender.blocking_send(Err(error));
            }
        });
        Ok(Scan { read_time, items: converge_core::flatten_chunks(futures::stream::poll_fn(move |cx| receiver.poll_recv(cx))) })
    }

    /// Durable once in the journal; the loader appends the rows to DuckDB after.
    fn append_blocking(&self, rows: Vec<ChangeRow>) -> Result<AppendReceipt, StoreError> {
        let config = self.config()?;
        let mut receipt = AppendReceipt::default();
        // Redelivery can put the same event twice into one group commit.
        let mut recent = self.inner.recent.lock().unwrap_or_else(|p| p.into_inner());
        let keep: Vec<bool> = {
            let mut seen = HashSet::with_capacity(rows.len());
            rows.iter().map(|row| seen.insert(row.event_id.as_str()) && !recent.contains(&row.event_id)).collect()
        };
        let offered = rows.len();
        let fresh: Vec<ChangeRow> = rows.into_iter().zip(keep).filter_map(|(row, keep)| keep.then_some(row)).collect();
        receipt.duplicates = (offered - fresh.len()) as u64;
        check_rows(&config, fresh.iter())?;
        if fresh.is_empty() {
            return Ok(receipt);
        }
        self.inner.loader.wait_for_room(fresh.len())?;
        let names = promoted_names(&config);
        let mut writer = self.inner.journal.lock().unwrap_or_else(|p| p.into_inner());
        let seq = writer.next_seq;
        if let Some(journal) = writer.journal.as_mut() {
            journal.append(seq, &fresh, &names)?;
        }
        writer.next_seq += 1;
        // Remembered only once durable: a failed append must be retried in full.
        for row in &fresh {
            recent.insert(&row.event_id);
        }
        receipt.written = fresh.len() as u64;
        self.inner.loader.push(crate::journal::JournalBatch { seq, rows: fresh, names: Some(names) });
        drop(writer);
        Ok(receipt)
    }

    /// The blocking half of [`Warehouse::append_atomic`]: one transaction on its own
    /// connection (so live appends go on meanwhile), committed only on
    /// [`WriterChunk::Commit`]. If the sender goes away first, the transaction rolls back.
    ///
    /// Rows whose event id the warehouse stored recently are skipped. Duplicates
    /// within the stream itself are not looked for: remembering a million ids costs
    /// tens of megabytes, a rebuild's stream has one row per document, and a copy
    /// would be an identical row, which the latest view tolerates. Nor are the
    /// stream's ids added to the recent ones: it is not redelivered.
    fn append_atomic_blocking(
        &self,
        mut connection: Connection,
        mut chunks: tokio::sync::mpsc::Receiver<WriterChunk<ChangeRow>>,
    ) -> Result<AppendReceipt, StoreError> {
        let config = self.config()?;
        let names = promoted_names(&config);
        let transaction = connection.transaction().map_err(|e| db_error("begin atomic append", e))?;
        let mut receipt = AppendReceipt::default();
        let mut oldest: Vec<(String, i64)> = Vec::new();
        loop {
            match chunks.blocking_recv() {
                Some(WriterChunk::Rows(rows)) => {
                    let recent = self.inner.recent.lock().unwrap_or_else(|p| p.into_inner());
                    let fresh: Vec<&ChangeRow> = rows.iter().filter(|row| !recent.contains(&row.event_id)).collect();
                    drop(recent);
                    receipt.duplicates += (rows.len() - fresh.len()) as u64;
                    check_rows(&config, fresh.iter().copied())?;
                    for (table, table_rows) in by_table(fresh.into_iter()) {
                        receipt.written += append_rows(&transaction, table, &table_rows, names_of(Some(&names), table))?;
                        let chunk_oldest = table_rows.iter().map(|row| row.ingested_at).min().unwrap_or(i64::MAX);
                        match oldest.iter_mut().find(|(t, _)| t == table) {
                            Some((_, at)) => *at = (*at).min(chunk_oldest),
                            None => oldest.push((table.to_owned(), chunk_oldest)),
                        }
                    }
                }
                Some(WriterChunk::Commit) => {
                    // The rows were stamped before this commit, maybe long before: the
                    // current table's next refresh must read from the oldest of them.
                    for (table, at) in &oldest {
                        crate::retention::lower_watermark(&transaction, table, *at)?;
                    }
                    break;
                }
                None => return Err(StoreError::retryable(BACKEND, "atomic append abandoned before commit; nothing was written")),
            }
        }
        transaction.commit().map_err(|e| db_error("commit atomic append", e))?;
        Ok(receipt)
    }
}

/// Opens the journal at `path` and loads into DuckDB every batch it has that DuckDB
/// does not (the sequence in `converge_journal` says which), then empties it.
/// Returns the journal and the last sequence DuckDB holds.
fn recover_journal(connection: &mut Connection, path: &Path) -> Result<(Journal, u64), StoreError> {
    connection.execute_batch(CREATE_JOURNAL).map_err(|e| db_error("create the journal table", e))?;
    connection.execute_batch(CREATE_TABLE_STATE).map_err(|e| db_error("create the table state", e))?;
    let mut loaded = connection
        .query_row("SELECT seq FROM converge_journal", [], |row| row.get::<_, i64>(0))
        .map_err(|e| db_error("read the loaded journal sequence", e))? as u64;
    let mut pending: Vec<crate::journal::JournalBatch> = Vec::new();
    let mut pending_rows = 0;
    let mut replayed = 0;
    // The oldest replayed row per table: rows acknowledged long ago become visible
    // only now, so the current table's watermark is lowered to them.
    let mut oldest: Vec<(String, i64)> = Vec::new();
    let mut flush = |pending: &mut Vec<crate::journal::JournalBatch>, loaded: &mut u64| -> Result<(), StoreError> {
        if let Some(last) = pending.last().map(|b| b.seq) {
            load(connection, pending, Some(last)).map_err(|e| {
                StoreError::new(e.kind, BACKEND, format!(
                    "cannot load the warehouse journal {} into DuckDB: {} (it holds acknowledged rows DuckDB does not have; if the database file was deleted on purpose, delete the journal too)",
                    path.display(),
                    e.message
                ))
            })?;
            *loaded = last;
            pending.clear();
        }
        Ok(())
    };
    let mut journal = Journal::open(path, |batch| {
        if batch.seq <= loaded {
            return Ok(()); // in DuckDB already; the journal was not emptied yet
        }
        pending_rows += batch.rows.len();
        replayed += batch.rows.len();
        for row in &batch.rows {
            match oldest.iter_mut().find(|(t, _)| *t == row.table) {
                Some((_, at)) => *at = (*at).min(row.ingested_at),
                None => oldest.push((row.table.clone(), row.ingested_at)),
            }
        }
        pending.push(batch);
        if pending_rows >= LOAD_ROWS {
            flush(&mut pending, &mut loaded)?;
            pending_rows = 0;
        }
        Ok(())
    })?;
    flush(&mut pending, &mut loaded)?;
    for (table, at) in &oldest {
        crate::retention::lower_watermark(connection, table, *at)?;
    }
    if replayed > 0 {
        tracing::info!(rows = replayed, journal = %path.display(), "loaded journaled rows the last process had acknowledged but not yet appended to DuckDB");
    }
    journal.clear()?;
    Ok((journal, loaded))
}

/// What the rows of a streamed state query hold.
enum Rows {
    /// One live document's state per row ([`STATE_COLUMNS`]), in path order.
    States,
    /// Every row that may be a document's winner, a document's rows together, with
    /// `is_deleted` and the winner key after the state columns
    /// (`crate::incremental::sorted_candidates_sql`): the greatest key of each
    /// document's rows is its state, unless it is a delete. With a collection, the
    /// first column is the document's id in it (the path is `collection/id`).
    Candidates { collection: Option<String> },
}

/// States per chunk of a latest-view scan, and chunks read ahead of the consumer.
const STATE_CHUNK: usize = 1024;
const STATE_CHUNKS_AHEAD: usize = 4;

#[async_trait]
impl Warehouse for DuckWarehouse {
    async fn ensure_tables(&self, config: &MirrorConfig) -> Result<(), StoreError> {
        let this = self.clone();
        let config = config.clone();
        tokio::task::spawn_blocking(move || {
            let connection = this.writer();
            connection.execute_batch(CREATE_RUNS).map_err(|e| db_error("create the runs table", e))?;
            connection
                .execute_batch(crate::incremental::CREATE_VERIFIED_POINTS)
                .map_err(|e| db_error("create the verified points table", e))?;
            connection.execute_batch(crate::buckets::CREATE_CURRENT_BUCKETS).map_err(|e| db_error("create the buckets table", e))?;
            // A promoted column removed from the configuration or retyped is refused
            // before any DDL; added ones are added by `create_statements`.
            for route in &config.routes {
                crate::schema::promoted_changes(&connection, route)?;
            }
            for route in &config.routes {
                for statement in create_statements(route) {
                    connection.execute_batch(&statement).map_err(|e| db_error(&format!("create table `{}`", route.table), e))?;
                }
            }
            this.adopt(&connection, config)
        })
        .await
        .map_err(join_error)?
    }

    async fn check_tables(&self, config: &MirrorConfig) -> Result<(), StoreError> {
        let this = self.clone();
        let config = config.clone();
        tokio::task::spawn_blocking(move || {
            let connection = this.writer();
            let missing = crate::schema::missing_objects(&connection, &config)?;
            if !missing.is_empty() {
                return Err(StoreError::not_set_up(BACKEND, &this.inner.place, &missing));
            }
            this.adopt(&connection, config)
        })
        .await
        .map_err(join_error)?
    }

    async fn append(&self, rows: Vec<ChangeRow>) -> Result<AppendReceipt, StoreError> {
        if rows.is_empty() {
            return Ok(AppendReceipt::default());
        }
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.append_blocking(rows)).await.map_err(join_error)?
    }

    async fn append_atomic(&self, rows: BoxStream<'static, Result<ChangeRow, StoreError>>) -> Result<AppendReceipt, StoreError> {
        self.config()?;
        let connection = self.reader()?;
        let this = self.clone();
        feed_blocking_writer(rows, move |chunks| this.append_atomic_blocking(connection, chunks)).await
    }

    async fn latest_states(&self, table: &str, tenant: &str) -> Result<Scan<DocState>, StoreError> {
        self.check_table(table)?;
        self.count_scan(table)?;
        let collection = self.route(table)?.pattern.collection_path(tenant);
        let candidates = {
            let connection = self.reader()?;
            let table = table.to_owned();
            let collection = collection.clone();
            tokio::task::spawn_blocking(move || {
                crate::incremental::sorted_candidates_sql(
                    &connection,
                    &table,
                    collection.as_deref(),
                )
            })
            .await
            .map_err(join_error)??
        };
        match candidates {
            Some(sql) => self.stream(
                sql,
                vec![tenant.to_owned().into()],
                Rows::Candidates { collection },
            ),
            None => self.stream_states(
                crate::schema::latest_states_query(table),
                vec![tenant.to_owned().into()],
            ),
        }
    }

    async fn latest_states_of(&self, table: &str, tenant: &str, paths: &[String]) -> Result<Vec<DocState>, StoreError> {
        self.check_table(table)?;
        if paths.is_empty() {
            return Ok(Vec::new());
        }
        let connection = self.reader()?;
        let (this, table, tenant, paths) = (self.clone(), table.to_owned(), tenant.to_owned(), paths.to_vec());
        tokio::task::spawn_blocking(move || {
            this.inner.bytes.scanned(&connection, &table);
            crate::incremental::states_of(&connection, &table, &tenant, &paths)
        })
        .await
        .map_err(join_error)?
    }

    async fn latest_states_in(&self, table: &str, tenant: &str, ranges: &[PathRange]) -> Result<Scan<DocState>, StoreError> {
        self.check_table(table)?;
        self.count_scan(table)?;
        let collection = self.route(table)?.pattern.collection_path(tenant);
        self.stream_states(crate::incremental::states_in_sql(table, collection.as_deref(), ranges), vec![tenant.to_owned().into()])
    }

    async fn current_range_counts(&self, table: &str, tenant: &str, ranges: &[PathRange]) -> Result<Vec<u64>, StoreError> {
        self.check_table(table)?;
        let connection = self.reader()?;
        let collection = self.route(table)?.pattern.collection_path(tenant);
        let (this, table, tenant, ranges) = (self.clone(), table.to_owned(), tenant.to_owned(), ranges.to_vec());
        tokio::task::spawn_blocking(move || {
            // Ranges on the tenant's cut points are added up from its buckets.
            if let Some(counts) = crate::buckets::read(&connection, &table, &tenant)?.and_then(|buckets| crate::buckets::range_counts(&buckets, &ranges)) {
                this.inner.bytes.scanned(&connection, crate::buckets::TABLE);
                return Ok(counts);
            }
            this.inner.bytes.scanned(&connection, &converge_core::retention::current_table(&table));
            crate::incremental::range_counts(&connection, &table, &tenant, collection.as_deref(), &ranges)
        })
        .await
        .map_err(join_error)?
    }

    async fn split_range(&self, table: &str, tenant: &str, range: &PathRange, parts: usize) -> Result<Vec<String>, StoreError> {
        self.check_table(table)?;
        let connection = self.reader()?;
        let (this, table, tenant, range) = (self.clone(), table.to_owned(), tenant.to_owned(), range.clone());
        tokio::task::spawn_blocking(move || {
            // A whole tenant is cut where its buckets begin.
            if range.is_all() {
                if let Some(buckets) = crate::buckets::read(&connection, &table, &tenant)? {
                    this.inner.bytes.scanned(&connection, crate::buckets::TABLE);
                    return Ok(crate::buckets::cuts(&buckets, parts));
                }
            }
            this.inner.bytes.scanned(&connection, &converge_core::retention::current_table(&table));
            crate::incremental::split(&connection, &table, &tenant, &range, parts)
        })
        .await
        .map_err(join_error)?
    }

    async fn verified_points(&self, table: &str) -> Result<Vec<VerifiedPoint>, StoreError> {
        self.check_table(table)?;
        let connection = self.reader()?;
        let table = table.to_owned();
        tokio::task::spawn_blocking(move || crate::incremental::read_points(&connection, &table)).await.map_err(join_error)?
    }

    async fn record_verified_points(&self, points: Vec<VerifiedPoint>) -> Result<(), StoreError> {
        self.config()?;
        let this = self.clone();
        tokio::task::spawn_blocking(move || crate::incremental::record_points(&this.writer(), &points)).await.map_err(join_error)?
    }

    fn bytes_processed(&self) -> WarehouseBytes {
        self.inner.bytes.total()
    }

    async fn current_states(&self, table: &str, tenant: &str) -> Result<Scan<DocState>, StoreError> {
        self.check_table(table)?;
        let sql = format!("SELECT {STATE_COLUMNS} FROM {} WHERE tenant = $1 ORDER BY doc_path", converge_core::retention::current_table(table));
        self.stream_states(sql, vec![tenant.to_owned().into()])
    }

    async fn as_of_states(&self, table: &str, tenant: &str, as_of: Timestamp) -> Result<Scan<DocState>, StoreError> {
        self.check_table(table)?;
        let sql = format!("SELECT {STATE_COLUMNS} FROM {table}_as_of(make_timestamp($2::BIGINT)) WHERE tenant = $1 ORDER BY doc_path");
        self.stream_states(sql, vec![tenant.to_owned().into(), as_of.as_micros().into()])
    }

    async fn tenants(&self, table: &str) -> Result<Vec<String>, StoreError> {
        self.check_table(table)?;
        let connection = self.reader()?;
        let sql = format!("SELECT DISTINCT tenant FROM {table} ORDER BY tenant");
        tokio::task::spawn_blocking(move || {
            let mut statement = connection.prepare(&sql).map_err(|e| db_error("list tenants", e))?;
            let rows = statement.query_map([], |row| row.get::<_, String>(0)).map_err(|e| db_error("list tenants", e))?;
            rows.map(|r| r.map_err(|e| db_error("list tenants", e))).collect()
        })
        .await
        .map_err(join_error)?
    }

    async fn record_run(&self, run: RunRecord) -> Result<(), StoreError> {
        self.config()?;
        let this = self.clone();
        tokio::task::spawn_blocking(move || runs::record(&this.writer(), &run))
        .await
        .map_err(join_error)?
    }

    async fn runs(&self, kind: &str, limit: usize) -> Result<Vec<RunRecord>, StoreError> {
        self.config()?;
        let connection = self.reader()?;
        let kind = kind.to_owned();
        tokio::task::spawn_blocking(move || runs::read(&connection, &kind, limit))
        .await
        .map_err(join_error)?
    }

    async fn refresh_current(&self, table: &str, from: RefreshFrom) -> Result<CurrentRefresh, StoreError> {
        let route = self.route(table)?;
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let _one_at_a_time = this.inner.maintenance.lock().unwrap_or_else(|p| p.into_inner());
            crate::retention::refresh(&this.reader()?, &route, from)
        })
        .await
        .map_err(join_error)?
    }

    async fn compact(&self, table: &str, plan: CompactionPlan) -> Result<TableCompaction, StoreError> {
        let route = self.route(table)?;
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let _one_at_a_time = this.inner.maintenance.lock().unwrap_or_else(|p| p.into_inner());
            crate::retention::compact(&this.reader()?, &route, plan)
        })
        .await
        .map_err(join_error)?
    }

    async fn backfill_promoted(&self, table: &str, column: &str) -> Result<converge_core::schema_change::PromotedBackfill, StoreError> {
        let route = self.route(table)?;
        let promoted = converge_core::schema_change::promoted_column(BACKEND, &route, column)?.clone();
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            // Beside the current tables' refresh and compaction, never during them.
            let _one_at_a_time = this.inner.maintenance.lock().unwrap_or_else(|p| p.into_inner());
            crate::backfill::backfill(&mut this.reader()?, &route, &promoted)
        })
        .await
        .map_err(join_error)?
    }

    async fn latest_count(&self, table: &str, tenant: &str) -> Result<u64, StoreError> {
        self.check_table(table)?;
        let connection = self.reader()?;
        let sql = format!("SELECT count(*) FROM {table}_latest WHERE tenant = ?");
        let tenant = tenant.to_owned();
        tokio::task::spawn_blocking(move || {
            connection
                .query_row(&sql, params![tenant], |row| row.get::<_, i64>(0))
                .map(|n| n as u64)
                .map_err(|e| db_error("count latest", e))
        })
        .await
        .map_err(join_error)?
    }
}

/// Small extension so the warehouse can stamp scans without an injected clock: a
/// scan's read time here is informational (DuckDB reads see committed data only).
trait NowTimestamp {
    fn now_timestamp(&self) -> Timestamp;
}

impl NowTimestamp for converge_core::SystemClock {
    fn now_timestamp(&self) -> Timestamp {
        converge_core::Clock::now(self)
    }
}
