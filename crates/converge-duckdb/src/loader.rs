//! The loader: one thread that appends journaled batches to DuckDB, in order.
//!
//! An append is answered once its batch is in the journal (see [`crate::journal`]);
//! this thread then appends it to the changelog tables. When DuckDB stalls (its
//! checkpoint runs inside a commit) only this thread waits, and the batches that
//! arrive meanwhile go into its next, larger transaction. Readers call
//! [`Loader::caught_up`] first, so they see every batch appended before they asked.
//!
//! A failed load is retried with backoff, never dropped: the rows were acknowledged.
//! Readers meanwhile get a retryable error naming the failure, and new appends are
//! refused (retryable) once [`LoaderLimits::max_queued_rows`] are waiting, so nothing piles up
//! without bound. A process that stops with batches still queued loses nothing:
//! they are in the journal and are loaded again at the next open.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use converge_core::{ChangeRow, StoreError};
use duckdb::Connection;

use crate::journal::{Journal, JournalBatch};
use crate::appender::{append_rows, names_of};
use crate::db::{db_error, BACKEND};

/// How far the loader may fall behind, and how long callers wait for it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LoaderLimits {
    /// Rows queued before new appends wait (then are refused, retryable): 100,000 is
    /// about 20 seconds at 5,000 events/s, some hundreds of MB at most.
    pub max_queued_rows: usize,
    /// How long an append waits for room in the queue before it is refused.
    pub room_wait: Duration,
    /// How long a reader waits for the loader to catch up before its read is
    /// refused: longer than any checkpoint (seconds); a loader failing for this long
    /// is reported.
    pub catch_up_wait: Duration,
}

impl Default for LoaderLimits {
    fn default() -> Self {
        Self { max_queued_rows: 100_000, room_wait: Duration::from_secs(10), catch_up_wait: Duration::from_secs(120) }
    }
}
/// Rows in one load transaction, at most: a stalled loader catches up in big steps.
pub(crate) const LOAD_ROWS: usize = 32_768;
/// The journal is emptied once it is this large and DuckDB holds all of it.
const JOURNAL_CLEAR_BYTES: u64 = 64 << 20;

/// The journal file and the sequence number of the next batch, behind one lock: a
/// batch's sequence, its place in the file and its place in the queue agree.
pub(crate) struct JournalWriter {
    /// `None` for an in-memory warehouse: nothing there survives the process anyway.
    pub journal: Option<Journal>,
    pub next_seq: u64,
}

#[derive(Default)]
struct State {
    queue: VecDeque<JournalBatch>,
    queued_rows: usize,
    /// Sequence of the last batch handed to the loader.
    written: u64,
    /// Sequence of the last batch committed to DuckDB.
    loaded: u64,
    /// Why the last load failed, while it keeps failing.
    failure: Option<String>,
    stopping: bool,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits (at most `limit`) until `done` holds; otherwise a retryable error with
    /// the message `late` makes.
    fn wait_until(&self, limit: Duration, done: impl Fn(&State) -> bool, late: impl FnOnce(&State) -> String) -> Result<(), StoreError> {
        let deadline = Instant::now() + limit;
        let mut state = self.lock();
        while !done(&state) {
            let now = Instant::now();
            if now >= deadline {
                return Err(StoreError::retryable(BACKEND, late(&state)));
            }
            state = self.changed.wait_timeout(state, deadline - now).unwrap_or_else(|p| p.into_inner()).0;
        }
        Ok(())
    }
}

pub(crate) struct Loader {
    shared: Arc<Shared>,
    limits: LoaderLimits,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Loader {
    /// Starts the loader thread. `loaded` is the sequence DuckDB already holds. With
    /// a journal file (a file-backed warehouse), each load records its last sequence
    /// in `converge_journal`.
    pub fn start(
        connection: Arc<Mutex<Connection>>,
        journal: Arc<Mutex<JournalWriter>>,
        loaded: u64,
        limits: LoaderLimits,
    ) -> Result<Self, StoreError> {
        let record_sequence = journal.lock().unwrap_or_else(|p| p.into_inner()).journal.is_some();
        let shared = Arc::new(Shared { state: Mutex::new(State { written: loaded, loaded, ..State::default() }), changed: Condvar::new() });
        let thread = std::thread::Builder::new()
            .name("warehouse-loader".into())
            .spawn({
                let shared = shared.clone();
                move || run(&shared, &connection, &journal, record_sequence)
            })
            .map_err(|e| StoreError::permanent(BACKEND, format!("cannot start the warehouse loader thread: {e}")))?;
        Ok(Self { shared, limits, thread: Mutex::new(Some(thread)) })
    }

    /// Waits until the queue has room for `rows` more (or is empty: one batch larger
    /// than the bound still goes in alone).
    pub fn wait_for_room(&self, rows: usize) -> Result<(), StoreError> {
        let LoaderLimits { max_queued_rows, room_wait, .. } = self.limits;
        self.shared.wait_until(room_wait, |s| s.queued_rows == 0 || s.queued_rows + rows <= max_queued_rows, |s| {
            format!(
                "the warehouse loader is {} rows behind after {:?}{}; nothing of this append was written, retry later",
                s.queued_rows,
                room_wait,
                failure_suffix(&s.failure)
            )
        })
    }

    /// Queues a journaled batch. Called with the [`JournalWriter`] lock held, so
    /// batches arrive in sequence order.
    pub fn push(&self, batch: JournalBatch) {
        let mut state = self.shared.lock();
        state.written = batch.seq;
        state.queued_rows += batch.rows.len();
        state.queue.push_back(batch);
        drop(state);
        self.shared.changed.notify_all();
    }

    /// Waits until every batch queued before this call is in DuckDB.
    pub fn caught_up(&self) -> Result<(), StoreError> {
        let target = self.shared.lock().written;
        let wait = self.limits.catch_up_wait;
        self.shared.wait_until(wait, |s| s.loaded >= target, |s| {
            format!(
                "the warehouse loader has not loaded {} acknowledged rows after {:?}{}; they are safe in the journal, retry the read later",
                s.queued_rows,
                wait,
                failure_suffix(&s.failure)
            )
        })
    }

    /// Loads what is queued, then ends the thread.
    pub fn stop(&self) {
        self.shared.lock().stopping = true;
        self.shared.changed.notify_all();
        if let Some(thread) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        self.stop();
    }
}

fn failure_suffix(failure: &Option<String>) -> String {
    failure.as_ref().map(|f| format!(" (last load failed: {f})")).unwrap_or_default()
}

fn run(shared: &Shared, connection: &Mutex<Connection>, journal: &Mutex<JournalWriter>, record_sequence: bool) {
    loop {
        let batches = {
            let mut state = shared.lock();
            while state.queue.is_empty() && !state.stopping {
                state = shared.changed.wait(state).unwrap_or_else(|p| p.into_inner());
            }
            if state.queue.is_empty() {
                return; // stopping, and everything is loaded
            }
            let mut batches = Vec::new();
            let mut rows = 0;
            while let Some(batch) = state.queue.front() {
                if rows > 0 && rows + batch.rows.len() > LOAD_ROWS {
                    break;
                }
                rows += batch.rows.len();
                batches.push(state.queue.pop_front().expect("front exists"));
            }
            batches
        };
        let last = batches.last().expect("at least one batch").seq;
        let rows: usize = batches.iter().map(|b| b.rows.len()).sum();
        let mut backoff = Duration::from_millis(50);
        loop {
            let mut conn = connection.lock().unwrap_or_else(|p| p.into_inner());
            let outcome = load(&mut conn, &batches, record_sequence.then_some(last));
            drop(conn);
            match outcome {
                Ok(()) => break,
                Err(error) => {
                    tracing::error!(%error, rows, last_batch = last, "the warehouse loader could not append journaled rows; retrying");
                    let mut state = shared.lock();
                    state.failure = Some(error.message.clone());
                    if state.stopping {
                        // The rows stay in the journal and are loaded at the next open.
                        tracing::warn!(rows, "stopping with journaled rows not yet in DuckDB; the next open loads them");
                        return;
                    }
                    drop(state);
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        drop(batches);
        {
            let mut state = shared.lock();
            state.loaded = last;
            state.queued_rows -= rows;
            state.failure = None;
        }
        shared.changed.notify_all();
        // Empty a large journal once DuckDB holds all of it. `try_lock`: an append in
        // progress means it is not all loaded anyway; the next load tries again.
        if let Ok(mut writer) = journal.try_lock() {
            if let Some(file) = writer.journal.as_mut().filter(|j| j.len() >= JOURNAL_CLEAR_BYTES) {
                let all_loaded = {
                    let state = shared.lock();
                    state.loaded == state.written
                };
                if all_loaded {
                    if let Err(error) = file.clear() {
                        tracing::warn!(%error, "could not empty the warehouse journal; trying again after the next load");
                    }
                }
            }
        }
    }
}

/// Appends `batches` in one transaction, recording `sequence` in it if given.
pub(crate) fn load(connection: &mut Connection, batches: &[JournalBatch], sequence: Option<u64>) -> Result<(), StoreError> {
    let transaction = connection.transaction().map_err(|e| db_error("begin load", e))?;
    // Consecutive batches made with the same promoted columns share one append per
    // table (all of them, but across a configuration change).
    let mut start = 0;
    while start < batches.len() {
        let names = batches[start].names.as_ref();
        let end = start + batches[start..].iter().take_while(|b| b.names.as_ref() == names).count();
        for (table, table_rows) in by_table(batches[start..end].iter().flat_map(|b| b.rows.iter())) {
            append_rows(&transaction, table, &table_rows, names_of(names, table))?;
        }
        start = end;
    }
    if let Some(sequence) = sequence {
        transaction
            .execute("UPDATE converge_journal SET seq = ?", [sequence as i64])
            .map_err(|e| db_error("record the loaded journal sequence", e))?;
    }
    transaction.commit().map_err(|e| db_error("commit load", e))
}

/// Rows grouped by table, in first-seen order.
pub(crate) fn by_table<'r>(rows: impl Iterator<Item = &'r ChangeRow>) -> Vec<(&'r str, Vec<&'r ChangeRow>)> {
    let mut by_table: Vec<(&str, Vec<&ChangeRow>)> = Vec::new();
    for row in rows {
        match by_table.iter_mut().find(|(t, _)| *t == row.table) {
            Some((_, list)) => list.push(row),
            None => by_table.push((row.table.as_str(), vec![row])),
        }
    }
    by_table
}

#[cfg(test)]
mod tests {
    use super::*;
    use converge_core::{ErrorKind, MirrorConfig};

    fn row(i: usize) -> ChangeRow {
        let promoted = MirrorConfig::default().table("records").unwrap().promoted.len();
        crate::journal::tests::row_with_promoted(i, vec![None; promoted])
    }

    /// A write DuckDB refuses: the rows stay queued (they were answered), readers and
    /// new appends get retryable errors that say why, and once DuckDB takes writes
    /// again the loader's retry loads them.
    #[test]
    fn a_failing_load_is_reported_to_readers_and_appenders_then_retried_until_it_passes() {
        let connection = Connection::open_in_memory().unwrap();
        let route = MirrorConfig::default().table("records").unwrap().clone();
        let create = crate::schema::create_statements(&route);
        connection.execute_batch(create.iter().find(|s| s.starts_with("CREATE TABLE IF NOT EXISTS records ")).unwrap()).unwrap();
        let probe = connection.try_clone().unwrap();
        probe.execute_batch("ALTER TABLE records RENAME TO records_away").unwrap();
        let connection = Arc::new(Mutex::new(connection));
        let journal = Arc::new(Mutex::new(JournalWriter { journal: None, next_seq: 1 }));
        let limits = LoaderLimits { max_queued_rows: 3, room_wait: Duration::from_millis(200), catch_up_wait: Duration::from_millis(300) };
        let loader = Loader::start(connection, journal, 0, limits).unwrap();

        let names = Some(crate::appender::promoted_names(&MirrorConfig::default()));
        loader.push(JournalBatch { seq: 1, rows: vec![row(1), row(2)], names: names.clone() });
        let read = loader.caught_up().unwrap_err();
        assert_eq!(read.kind, ErrorKind::Retryable);
        assert!(read.message.contains("not loaded 2 acknowledged rows") && read.message.contains("last load failed"), "{}", read.message);
        let append = loader.wait_for_room(2).unwrap_err();
        assert_eq!(append.kind, ErrorKind::Retryable);
        assert!(append.message.contains("2 rows behind") && append.message.contains("nothing of this append was written"), "{}", append.message);
        loader.wait_for_room(1).expect("room for one more row within the bound");

        probe.execute_batch("ALTER TABLE records_away RENAME TO records").unwrap();
        loader.push(JournalBatch { seq: 2, rows: vec![row(3)], names });
        let deadline = Instant::now() + Duration::from_secs(30);
        while loader.caught_up().is_err() {
            assert!(Instant::now() < deadline, "the loader never recovered");
        }
        let rows: i64 = probe.query_row("SELECT count(*) FROM records", [], |r| r.get(0)).unwrap();
        assert_eq!(rows, 3);
        loader.wait_for_room(3).expect("the queue is empty again");
    }
}
