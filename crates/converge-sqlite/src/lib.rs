//! The embedded source store: SQLite standing in for Firestore.
//!
//! A batch of document writes commits in one SQLite transaction together with one
//! change event per changed document (a transactional outbox), so a write and its
//! event are durable together or not at all. [`converge-relay`] then delivers the
//! outbox as Eventarc-format CloudEvents. The same database holds the error log and
//! the quarantine (the [`ErrorLog`] trait), next to the source data as ARCHITECTURE.md asks,
//! and the detectors' opportunities (the [`OpportunityStore`] trait, `opportunities.rs`).
//!
//! [`OpportunityStore`]: converge_core::OpportunityStore
//!
//! Why this file is ~600 lines: the store, its writer (the commit clock and the read
//! floor) and the [`SourceStore`] implementation share private state that splitting
//! would turn into `pub(crate)` fields reached from several files; the outbox, error
//! log, opportunities, raw scans and schema are their own modules.
//!
//! [`SourceStore`]: converge_core::SourceStore
//!
//! # Concurrency
//!
//! One writer connection behind a mutex (SQLite serializes writers anyway; the mutex
//! also serializes commit-time assignment) and a small pool of read-only
//! connections. WAL mode lets readers work on a snapshot while the writer commits.
//! All SQLite work runs on tokio's blocking pool.
//!
//! # Commit times
//!
//! Like Firestore's, commit times are strictly increasing per store:
//! `max(clock.now(), last commit + 1µs, last read time + 1µs)`, taken under the write
//! lock. Every write of a batch gets the batch's commit time as its `update_time`, and
//! it is the event time of the batch's events.
//!
//! # Read times
//!
//! As in Firestore, a read's time is the moment of the read, not its last commit: each
//! read records its time (after every commit and every earlier read) under the write
//! lock before taking its snapshot, so every commit it does not see is dated after it
//! (`take_read_floor`). Rows read from the source are versioned with it.
//!
//! [`converge-relay`]: ../converge_relay/index.html

mod changes;
mod codec;
mod error;
mod error_log;
mod opportunities;
mod outbox;
mod path;
mod raw;
mod schema;

use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use async_trait::async_trait;
use converge_core::hash::content_hash;
use converge_core::{Clock, DocState, DocWrite, Document, DocumentChange, Fields, MirrorConfig, PathRange, ReadAt, Scan, SourceScope, SourceStore, StoreError, Timestamp};
use converge_events::{encode_event_data, EventSource};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use tokio::sync::{mpsc, oneshot, Notify};

pub use crate::codec::CodecError;
pub use crate::error::{SqliteError, BACKEND};
pub use crate::outbox::{DeliveryOutcome, OutboxEvent, OutboxStats};
pub use crate::changes::INDEXED_CHANGE_FIELD;
pub use crate::raw::INDEXED_DATE_FIELD;

/// The event type of every outbox event: Firestore's catch-all trigger type, which
/// carries creates, updates and deletes (told apart by `value` / `old_value`).
pub const WRITTEN_EVENT_TYPE: &str = "google.cloud.firestore.document.v1.written";

/// States per message of a scan's channel: big enough to amortize the channel,
/// small enough that a scan holds little memory.
const SCAN_CHUNK: usize = 512;
/// Chunks a scan reads ahead of its consumer.
const SCAN_CHUNKS_AHEAD: usize = 4;
/// Idle read connections kept open: as many as an incremental reconcile asks at once
/// (8 range counts). With 4, half of its 1,024 counts of a level opened a connection of
/// their own (schema read, cold page cache): 3.3 s for what one connection counts in
/// 0.8 s at 10,000,000 documents.
const MAX_IDLE_READERS: usize = 8;

/// The SQLite document store with its outbox, error log and quarantine.
/// Cheap to clone: clones share the connections.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    clock: Arc<dyn Clock>,
    source: EventSource,
    writer: Mutex<Writer>,
    idle_readers: Mutex<Vec<Connection>>,
    /// Signalled after every commit that added outbox events, so the relay wakes at
    /// once instead of waiting for its next poll.
    outbox_signal: Arc<Notify>,
    /// Which writes get an outbox event (see `raw.rs`); `None`: every write.
    outbox_filter: RwLock<Option<MirrorConfig>>,
}

struct Writer {
    conn: Connection,
    /// The last commit time handed out (µs). Kept here, under the writer lock, so
    /// that assigning a commit time and committing are one critical section.
    last_commit_us: i64,
}

impl SqliteStore {
    /// Opens (creating if needed) the store at `path`. `source` names the project
    /// and database the events claim to come from.
    pub fn open(path: &Path, clock: Arc<dyn Clock>, source: EventSource) -> Result<Self, StoreError> {
        Self::open_inner(path, clock, source).map_err(StoreError::from)
    }

    fn open_inner(path: &Path, clock: Arc<dyn Clock>, source: EventSource) -> Result<Self, SqliteError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)?;
        }
        let conn = schema::open_writer(path)?;
        let last_commit_us = match schema::read_last_commit(&conn)? {
            Some(last) => last,
            None => {
                // A new store counts its creation as its first commit. Scans report the
                // latest commit as their read time, and an empty store must still
                // report a time after anything a warehouse could hold from before.
                let created = clock.now().as_micros();
                schema::write_last_commit(&conn, created)?;
                created
            }
        };
        tracing::info!(path = %path.display(), last_commit_us, "opened sqlite source store");
        Ok(Self {
            inner: Arc::new(Inner {
                path: path.to_owned(),
                clock,
                source,
                writer: Mutex::new(Writer { conn, last_commit_us }),
                idle_readers: Mutex::new(Vec::new()),
                outbox_signal: Arc::new(Notify::new()),
                outbox_filter: RwLock::new(None),
            }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The project and database the outbox events name.
    pub fn event_source(&self) -> &EventSource {
        &self.inner.source
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.inner.clock
    }

    /// Notified (one permit) whenever a commit adds outbox events.
    pub fn outbox_signal(&self) -> Arc<Notify> {
        self.inner.outbox_signal.clone()
    }

    /// Runs `work` on the blocking pool.
    async fn blocking<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T, SqliteError> + Send + 'static,
    {
        let inner = self.inner.clone();
        match tokio::task::spawn_blocking(move || work(&inner)).await {
            Ok(result) => result.map_err(StoreError::from),
            Err(join_error) => Err(SqliteError::Task(join_error.to_string()).into()),
        }
    }
}

impl SqliteStore {
    /// A consistent, streamed scan of `scope` by `sql` in the form the scope needs;
    /// `map_row` turns each row into an item. One collection is read through the
    /// `collection_path` index; a scope at any depth (a nested route) walks the path
    /// range of its parent's subtree (`orgs/acme/` … `orgs/acme0`, in path order by the
    /// primary key) and keeps the paths the scope matches exactly, so a same-named
    /// collection elsewhere in the subtree is skipped before its row is decoded.
    async fn scan<T: Send + 'static>(
        &self,
        scope: &SourceScope,
        sql: ScopeSql,
        map_row: fn(&str, &rusqlite::Row<'_>) -> Result<T, SqliteError>,
    ) -> Result<Scan<T>, StoreError> {
        match scope.collection_path() {
            Some(collection_path) => self.scan_query(sql.collection, vec![collection_path], map_row).await,
            None => {
                let (sql, args) = match subtree_range(&scope.parent()) {
                    Some((from, to)) => (sql.subtree, vec![from, to]),
                    None => (sql.everything, Vec::new()),
                };
                self.scan_filtered(sql, args, Some(scope.clone()), map_row).await
            }
        }
    }

    /// A consistent, streamed query: `sql` selects the path first and takes `args` as
    /// `?1`, `?2`, …; `map_row` turns each row into an item. Every scan of the store
    /// (collections, raw records by date) runs through here.
    pub(crate) async fn scan_query<T: Send + 'static>(
        &self,
        sql: &'static str,
        args: Vec<String>,
        map_row: fn(&str, &rusqlite::Row<'_>) -> Result<T, SqliteError>,
    ) -> Result<Scan<T>, StoreError> {
        self.scan_filtered(sql, args, None, map_row).await
    }

    /// [`SqliteStore::scan_query`], keeping only the rows whose path `keep` matches.
    pub(crate) async fn scan_filtered<T: Send + 'static>(
        &self,
        sql: &'static str,
        args: Vec<String>,
        keep: Option<SourceScope>,
        map_row: fn(&str, &rusqlite::Row<'_>) -> Result<T, SqliteError>,
    ) -> Result<Scan<T>, StoreError> {
        let (snapshot_tx, snapshot_rx) = oneshot::channel();
        let (chunk_tx, chunk_rx) = mpsc::channel(SCAN_CHUNKS_AHEAD);
        let inner = self.inner.clone();
        let map_row = move |path: &str, row: &rusqlite::Row<'_>| match &keep {
            Some(scope) if !scope.matches(path) => Ok(None),
            _ => map_row(path, row).map(Some),
        };
        tokio::task::spawn_blocking(move || inner.stream_query(sql, &args, map_row, snapshot_tx, chunk_tx));
        let read_time = match snapshot_rx.await {
            Ok(result) => result?,
            Err(_) => return Err(SqliteError::Task("the scan's reader thread ended before taking its snapshot".into()).into()),
        };
        let mut chunk_rx = chunk_rx;
        let items = converge_core::flatten_chunks(futures::stream::poll_fn(move |cx| chunk_rx.poll_recv(cx)));
        Ok(Scan { read_time, items })
    }
}

/// A document from a row of `path, fields, create_time_us, update_time_us`.
pub(crate) fn document_from_row(path: &str, row: &rusqlite::Row<'_>) -> Result<Document, SqliteError> {
    StoredDoc { fields: row.get(1)?, create_time_us: row.get(2)?, update_time_us: row.get(3)? }.into_document(path)
}

impl Inner {
    fn writer(&self) -> MutexGuard<'_, Writer> {
        // A panic while holding the lock unwound through the open transaction, whose
        // drop rolled it back: the connection is consistent, so the lock is usable.
        self.writer.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn with_reader<T>(&self, read: impl FnOnce(&Connection) -> Result<T, SqliteError>) -> Result<T, SqliteError> {
        let pooled = self.idle_readers.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let conn = match pooled {
            Some(conn) => conn,
            None => schema::open_reader(&self.path)?,
        };
        let result = read(&conn);
        // A connection is only returned outside any transaction: `read` uses RAII
        // transactions, which end when it returns.
        let mut idle = self.idle_readers.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < MAX_IDLE_READERS && conn.is_autocommit() {
            idle.push(conn);
        }
        result
    }

    fn apply(&self, writes: Vec<DocWrite>) -> Result<Timestamp, SqliteError> {
        // Validation and encoding happen before taking the writer lock.
        let prepared = prepare_writes(writes)?;
        let mut guard = self.writer();
        let writer = &mut *guard;
        let filter = self.outbox_filter.read().unwrap_or_else(|p| p.into_inner()).clone();
        let tx = writer.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        // Under the write lock (of every process on this file): after every earlier
        // commit, and after every read time handed out, so a commit a read did not see
        // is always dated after that read (see `take_read_floor`).
        let last_commit_us = schema::read_last_commit(&tx)?.unwrap_or(0).max(writer.last_commit_us);
        let floor_us = schema::read_read_floor(&tx)?.unwrap_or(0);
        let commit_us = self.clock.now().as_micros().max(last_commit_us + 1).max(floor_us + 1);
        let commit_time = Timestamp::from_micros(commit_us);
        let mut events = 0usize;
        {
            let mut select_doc = tx.prepare_cached("SELECT fields, create_time_us, update_time_us FROM documents WHERE path = ?1")?;
            let mut insert_doc = tx.prepare_cached(
                "INSERT INTO documents (path, collection_path, doc_id, fields, content_hash, create_time_us, update_time_us, date_key, change_key) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, ?7, ?8)",
            )?;
            let mut update_doc =
                tx.prepare_cached("UPDATE documents SET fields = ?2, content_hash = ?3, update_time_us = ?4, date_key = ?5, change_key = ?6 WHERE path = ?1")?;
            let mut delete_doc = tx.prepare_cached("DELETE FROM documents WHERE path = ?1")?;
            let mut insert_event = tx.prepare_cached(
                "INSERT INTO outbox (event_id, event_type, event_time_us, document, data) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            for write in prepared {
                let path = write.path();
                let existing = select_doc
                    .query_row([path], |row| Ok(StoredDoc { fields: row.get(0)?, create_time_us: row.get(1)?, update_time_us: row.get(2)? }))
                    .optional()?;
                let (value, old_value) = match write {
                    PreparedWrite::Set { path, collection_path, doc_id, fields, blob, hash } => {
                        let (create_time_us, old_value) = match existing {
                            // Firestore fires no trigger for a write that changes nothing, and
                            // keeps the document's update_time.
                            Some(old) if old.fields == blob => continue,
                            Some(old) => {
                                update_doc.execute(params![path, blob, hash, commit_us, raw::date_key(&fields), changes::change_key(&fields)])?;
                                (old.create_time_us, Some(old.into_document(&path)?))
                            }
                            None => {
                                insert_doc.execute(params![path, collection_path, doc_id, blob, hash, commit_us, raw::date_key(&fields), changes::change_key(&fields)])?;
                                (commit_us, None)
                            }
                        };
                        let value = Document { path, fields, create_time: Timestamp::from_micros(create_time_us), update_time: commit_time };
                        (Some(value), old_value)
                    }
                    PreparedWrite::Delete { path } => {
                        // Deleting a missing document is not an error and changes nothing.
                        let Some(old) = existing else { continue };
                        delete_doc.execute([&path])?;
                        (None, Some(old.into_document(&path)?))
                    }
                };
                let update_mask = match (&value, &old_value) {
                    (Some(new), Some(old)) => changed_fields(&old.fields, &new.fields),
                    _ => Vec::new(),
                };
                let document = value.as_ref().or(old_value.as_ref()).map(|d| d.path.clone()).unwrap_or_default();
                if !Self::outbox_wants(&filter, &document) {
                    continue;
                }
                let change = DocumentChange {
                    event_id: uuid::Uuid::new_v4().to_string(),
                    event_type: WRITTEN_EVENT_TYPE.to_owned(),
                    event_time: commit_time,
                    document,
                    value,
                    old_value,
                    update_mask,
                };
                let data = encode_event_data(&change, &self.source);
                insert_event.execute(params![change.event_id, change.event_type, commit_us, change.document, data])?;
                events += 1;
            }
        }
        schema::write_last_commit(&tx, commit_us)?;
        tx.commit()?;
        writer.last_commit_us = commit_us;
        drop(guard);
        if events > 0 {
            self.outbox_signal.notify_one();
        }
        tracing::trace!(commit_us, events, "applied write batch");
        Ok(commit_time)
    }

    /// Fixes a read time for a read about to start: the moment of the read on this
    /// store's clock (and after every earlier read), recorded under the write lock so
    /// that every commit after it is dated after it. The read that follows takes its snapshot after this, and its
    /// read time is the later of this and the last commit it sees (a commit that
    /// slipped in between is dated after this floor and is in the snapshot).
    /// Firestore's read times mean the same: the moment of the read, not the last
    /// commit (an idle store's reads move forward with the clock).
    fn take_read_floor(&self) -> Result<i64, SqliteError> {
        let mut guard = self.writer();
        let writer = &mut *guard;
        let tx = writer.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let last_commit_us = schema::read_last_commit(&tx)?.unwrap_or(0);
        let floor_us = schema::read_read_floor(&tx)?.unwrap_or(0);
        // Strictly after every earlier read, too: two reads never share an instant, so
        // a later read's rows always outrank an earlier read's (two reads at one instant
        // that disagreed could not be ordered).
        let read_us = self.clock.now().as_micros().max(last_commit_us).max(floor_us + 1);
        schema::write_read_floor(&tx, read_us)?;
        tx.commit()?;
        Ok(read_us)
    }

    /// Documents at one read time (see `take_read_floor`).
    fn get_all(&self, paths: &[String]) -> Result<ReadAt<Vec<Option<Document>>>, SqliteError> {
        for path in paths {
            path::split_document_path(path)?;
        }
        let floor_us = self.take_read_floor()?;
        self.with_reader(|conn| {
            let tx = conn.unchecked_transaction()?;
            let read_us = schema::read_last_commit(&tx)?.unwrap_or(0).max(floor_us);
            let mut stmt = tx.prepare_cached("SELECT fields, create_time_us, update_time_us FROM documents WHERE path = ?1")?;
            let mut docs = Vec::with_capacity(paths.len());
            for path in paths {
                let stored = stmt
                    .query_row([path], |row| Ok(StoredDoc { fields: row.get(0)?, create_time_us: row.get(1)?, update_time_us: row.get(2)? }))
                    .optional()?;
                docs.push(stored.map(|doc| doc.into_document(path)).transpose()?);
            }
            Ok(ReadAt { read_time: Timestamp::from_micros(read_us), value: docs })
        })
    }

    fn get(&self, path: &str) -> Result<Option<Document>, SqliteError> {
        path::split_document_path(path)?;
        self.with_reader(|conn| {
            let mut stmt = conn.prepare_cached("SELECT fields, create_time_us, update_time_us FROM documents WHERE path = ?1")?;
            let stored = stmt
                .query_row([path], |row| Ok(StoredDoc { fields: row.get(0)?, create_time_us: row.get(1)?, update_time_us: row.get(2)? }))
                .optional()?;
            stored.map(|doc| doc.into_document(path)).transpose()
        })
    }

    /// Ids directly in `collection_path`: its documents, and the parents of deeper
    /// collections. Deeper collections are found by seeking the index on
    /// `collection_path` from one distinct value to the next, so the cost grows with
    /// the number of collections, not of documents.
    fn list_document_ids(&self, collection_path: &str) -> Result<Vec<String>, SqliteError> {
        self.with_reader(|conn| {
            let mut ids = BTreeSet::new();
            let mut direct = conn.prepare_cached("SELECT doc_id FROM documents WHERE collection_path = ?1")?;
            let mut rows = direct.query([collection_path])?;
            while let Some(row) = rows.next()? {
                ids.insert(row.get::<_, String>(0)?);
            }
            let prefix = format!("{collection_path}/");
            // Every path below `prefix` sorts before `prefix` with '/' raised to '0'.
            let end = format!("{collection_path}0");
            let mut next = conn.prepare_cached(
                "SELECT collection_path FROM documents WHERE collection_path > ?1 AND collection_path < ?2 ORDER BY collection_path LIMIT 1",
            )?;
            let mut after = prefix.clone();
            while let Some(deeper) = next.query_row(params![after, end], |row| row.get::<_, String>(0)).optional()? {
                if let Some(id) = deeper.strip_prefix(&prefix).and_then(|rest| rest.split('/').next()) {
                    ids.insert(id.to_owned());
                    // Skip every collection under this id: `{prefix}{id}/` … `{prefix}{id}0`.
                    after = format!("{prefix}{id}0");
                    if deeper >= after {
                        after = deeper;
                    }
                } else {
                    after = deeper;
                }
            }
            Ok(ids.into_iter().collect())
        })
    }

    fn count(&self, scope: &SourceScope) -> Result<u64, SqliteError> {
        self.with_reader(|conn| {
            if let Some(collection_path) = scope.collection_path() {
                let mut stmt = conn.prepare_cached(concat!("SELECT count(*) FROM documents INDEXED BY ", crate::changes::count_index!(), " WHERE collection_path = ?1"))?;
                return Ok(outbox::non_negative(stmt.query_row([collection_path], |row| row.get(0))?));
            }
            // A scope at any depth: the subtree under its leading ids (`orgs/acme/projects/`
            // for `orgs/acme/projects/*/tasks/*`, not all of `orgs/acme`), counted by the
            // paths it matches.
            let mut count = 0u64;
            let mut tally = |rows: &mut rusqlite::Rows<'_>| -> Result<(), SqliteError> {
                while let Some(row) = rows.next()? {
                    count += u64::from(scope.matches(row.get_ref(0)?.as_str().map_err(rusqlite::Error::from)?));
                }
                Ok(())
            };
            match leading_range(scope) {
                Some((from, to)) => tally(&mut conn.prepare_cached("SELECT path FROM documents WHERE path > ?1 AND path < ?2")?.query([from, to])?)?,
                None => tally(&mut conn.prepare_cached("SELECT path FROM documents")?.query([])?)?,
            }
            Ok(count)
        })
    }

    /// Streams a query's rows from one read transaction: first the snapshot's read
    /// time on `snapshot`, then the items in chunks on `chunks`. Stops early (and ends
    /// the transaction) when the consumer goes away.
    fn stream_query<T: Send + 'static>(
        &self,
        sql: &str,
        args: &[String],
        map_row: impl Fn(&str, &rusqlite::Row<'_>) -> Result<Option<T>, SqliteError>,
        snapshot: oneshot::Sender<Result<Timestamp, SqliteError>>,
        chunks: mpsc::Sender<Result<Vec<T>, StoreError>>,
    ) {
        let mut snapshot = Some(snapshot);
        let floor_us = match self.take_read_floor() {
            Ok(floor_us) => floor_us,
            Err(error) => {
                if let Some(sender) = snapshot.take() {
                    let _ = sender.send(Err(error));
                }
                return;
            }
        };
        let result = self.with_reader(|conn| {
            let tx = conn.unchecked_transaction()?;
            // The first read fixes the snapshot; every later read in `tx` sees it.
            let read_time_us = schema::read_last_commit(&tx)?.unwrap_or(0).max(floor_us);
            let Some(sender) = snapshot.take() else { return Ok(()) };
            if sender.send(Ok(Timestamp::from_micros(read_time_us))).is_err() {
                return Ok(());
            }
            let mut stmt = tx.prepare_cached(sql)?;
            let mut rows = stmt.query(rusqlite::params_from_iter(args))?;
            let mut chunk = Vec::with_capacity(SCAN_CHUNK);
            while let Some(row) = rows.next()? {
                let path: String = row.get(0)?;
                let Some(item) = map_row(&path, row)? else { continue };
                chunk.push(item);
                if chunk.len() == SCAN_CHUNK {
                    let full = std::mem::replace(&mut chunk, Vec::with_capacity(SCAN_CHUNK));
                    if chunks.blocking_send(Ok(full)).is_err() {
                        return Ok(());
                    }
                }
            }
            if !chunk.is_empty() {
                let _ = chunks.blocking_send(Ok(chunk));
            }
            Ok(())
        });
        if let Err(error) = result {
            match snapshot.take() {
                Some(sender) => {
                    let _ = sender.send(Err(error));
                }
                None => {
                    let _ = chunks.blocking_send(Err(error.into()));
                }
            }
        }
    }
}

/// A document row as stored.
struct StoredDoc {
    fields: Vec<u8>,
    create_time_us: i64,
    update_time_us: i64,
}

impl StoredDoc {
    fn into_document(self, path: &str) -> Result<Document, SqliteError> {
        let fields = codec::decode_fields(&self.fields).map_err(|source| SqliteError::CorruptDocument { path: path.to_owned(), source })?;
        Ok(Document {
            path: path.to_owned(),
            fields,
            create_time: Timestamp::from_micros(self.create_time_us),
            update_time: Timestamp::from_micros(self.update_time_us),
        })
    }
}

/// A validated write with its encodings computed.
enum PreparedWrite {
    Set { path: String, collection_path: String, doc_id: String, fields: Fields, blob: Vec<u8>, hash: String },
    Delete { path: String },
}

impl PreparedWrite {
    fn path(&self) -> &str {
        match self {
            PreparedWrite::Set { path, .. } | PreparedWrite::Delete { path } => path,
        }
    }
}

fn prepare_writes(writes: Vec<DocWrite>) -> Result<Vec<PreparedWrite>, SqliteError> {
    let mut seen = HashSet::with_capacity(writes.len());
    for write in &writes {
        let path = match write {
            DocWrite::Set { path, .. } | DocWrite::Delete { path } => path.as_str(),
        };
        path::split_document_path(path)?;
        if !seen.insert(path) {
            return Err(SqliteError::DuplicateWrite(path.to_owned()));
        }
    }
    drop(seen);
    writes
        .into_iter()
        .map(|write| {
            Ok(match write {
                DocWrite::Set { path, fields } => {
                    let (collection_path, doc_id) = path::split_document_path(&path)?;
                    let (collection_path, doc_id) = (collection_path.to_owned(), doc_id.to_owned());
                    let blob = codec::encode_fields(&fields);
                    let hash = content_hash(&fields);
                    PreparedWrite::Set { path, collection_path, doc_id, fields, blob, hash }
                }
                DocWrite::Delete { path } => PreparedWrite::Delete { path },
            })
        })
        .collect()
}

/// Top-level fields added, removed or changed: the event's `update_mask`, as
/// Firestore field paths.
fn changed_fields(old: &Fields, new: &Fields) -> Vec<String> {
    let keys: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    keys.into_iter().filter(|key| old.get(*key) != new.get(*key)).map(|key| path::field_path(key)).collect()
}

#[async_trait]
impl SourceStore for SqliteStore {
    async fn get(&self, path: &str) -> Result<Option<Document>, StoreError> {
        let path = path.to_owned();
        self.blocking(move |inner| inner.get(&path)).await
    }

    async fn apply(&self, writes: Vec<DocWrite>) -> Result<Timestamp, StoreError> {
        self.blocking(move |inner| inner.apply(writes)).await
    }

    async fn get_all(&self, paths: &[String]) -> Result<ReadAt<Vec<Option<Document>>>, StoreError> {
        let paths = paths.to_vec();
        self.blocking(move |inner| inner.get_all(&paths)).await
    }

    async fn scan_states(&self, scope: &SourceScope) -> Result<Scan<DocState>, StoreError> {
        const SQL: ScopeSql = ScopeSql {
            collection: "SELECT path, update_time_us, content_hash FROM documents WHERE collection_path = ?1 ORDER BY path",
            subtree: "SELECT path, update_time_us, content_hash FROM documents WHERE path > ?1 AND path < ?2 ORDER BY path",
            everything: "SELECT path, update_time_us, content_hash FROM documents ORDER BY path",
        };
        self.scan(scope, SQL, |path, row| Ok(DocState::from_source(path.to_owned(), row.get(1)?, row.get(2)?))).await
    }

    async fn scan_documents(&self, scope: &SourceScope) -> Result<Scan<Document>, StoreError> {
        const SQL: ScopeSql = ScopeSql {
            collection: "SELECT path, fields, create_time_us, update_time_us FROM documents WHERE collection_path = ?1 ORDER BY path",
            subtree: "SELECT path, fields, create_time_us, update_time_us FROM documents WHERE path > ?1 AND path < ?2 ORDER BY path",
            everything: "SELECT path, fields, create_time_us, update_time_us FROM documents ORDER BY path",
        };
        self.scan(scope, SQL, document_from_row).await
    }

    async fn list_document_ids(&self, collection_path: &str) -> Result<Vec<String>, StoreError> {
        path::check_collection_path(collection_path)?;
        let collection_path = collection_path.to_owned();
        self.blocking(move |inner| inner.list_document_ids(&collection_path)).await
    }

    async fn count(&self, scope: &SourceScope) -> Result<u64, StoreError> {
        let scope = scope.clone();
        self.blocking(move |inner| inner.count(&scope)).await
    }

    async fn changed_since(&self, scope: &SourceScope, field: &str, since: Timestamp) -> Result<Scan<Document>, StoreError> {
        self.changed_documents(scope, field, since).await
    }

    async fn count_range(&self, scope: &SourceScope, range: &PathRange) -> Result<u64, StoreError> {
        self.count_in(scope, range).await
    }

    async fn scan_states_in(&self, scope: &SourceScope, range: &PathRange) -> Result<Scan<DocState>, StoreError> {
        self.states_in(scope, range).await
    }
}

/// One scan's query in three forms: over one collection (`?1`: its path), over a
/// parent's subtree (`?1`, `?2`: [`subtree_range`]), over every document.
struct ScopeSql {
    collection: &'static str,
    subtree: &'static str,
    everything: &'static str,
}

/// The exclusive path range of every document below `parent` (`orgs/acme/` …
/// `orgs/acme0`: `0` follows `/`), or `None` for the database root.
pub(crate) fn subtree_range(parent: &str) -> Option<(String, String)> {
    (!parent.is_empty()).then(|| (format!("{parent}/"), format!("{parent}0")))
}

/// The paths under `scope`'s leading ids (its parent document, and the collection after
/// it when that is given too): every document of the scope lies in this range.
pub(crate) fn leading_range(scope: &SourceScope) -> Option<(String, String)> {
    let ids: Vec<&str> = scope
        .segments()
        .iter()
        .map_while(|segment| match segment {
            converge_core::ScopeSegment::Id(id) => Some(id.as_str()),
            converge_core::ScopeSegment::Any => None,
        })
        .collect();
    subtree_range(&ids.join("/"))
}

#[cfg(test)]
mod tests;
