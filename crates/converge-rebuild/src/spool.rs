//! The warehouse's latest states, read to the end into an anonymous temporary file
//! before the rebuild writes anything, then streamed back from it.
//!
//! Why: a streamed warehouse query keeps its working memory (DuckDB: the sorted
//! result, inside its capped buffer pool) until its last row is read. Read alongside
//! the rebuild's own appends, the latest-states query of a 1,000,000-document tenant
//! and the append's transaction-local rows shared one pool for the whole run. Drained
//! first, the query is over before the first row is appended; the states wait on
//! disk (in the page cache, not in this process), a few dozen bytes each.
//!
//! The file is unlinked from the start (`tempfile::tempfile`), so nothing is left
//! behind however the run ends.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};

use converge_core::{DocState, StoreError};
use futures::stream::BoxStream;
use futures::StreamExt;

/// States per chunk read back (one channel message, one wake-up per chunk), and
/// chunks read ahead of the consumer.
const CHUNK: usize = 1024;
const CHUNKS_AHEAD: usize = 4;

const BACKEND: &str = "rebuild spool";

fn io_error(context: &str, error: std::io::Error) -> StoreError {
    // A full or failing temporary directory may well be fixed by the next attempt.
    StoreError::retryable(
        BACKEND,
        format!("{context}: {error}; the rebuild keeps the warehouse's latest states in a temporary file (TMPDIR) while it runs"),
    )
}

/// Reads `states` to the end into a temporary file; returns them again, in the same
/// order, as a stream read from that file. An error in `states` is returned here,
/// before anything was written to the warehouse.
pub async fn spool(mut states: BoxStream<'static, Result<DocState, StoreError>>) -> Result<Spooled, StoreError> {
    let file = tokio::task::spawn_blocking(tempfile::tempfile)
        .await
        .map_err(|e| StoreError::permanent(BACKEND, format!("spool task failed: {e}")))?
        .map_err(|e| io_error("cannot create the temporary file", e))?;
    let (sender, mut receiver) = tokio::sync::mpsc::channel::<Vec<DocState>>(CHUNKS_AHEAD);
    let writer = tokio::task::spawn_blocking(move || -> Result<(File, u64), StoreError> {
        let mut out = BufWriter::with_capacity(1 << 16, file);
        let mut count = 0u64;
        while let Some(chunk) = receiver.blocking_recv() {
            for state in &chunk {
                write_state(&mut out, state).map_err(|e| io_error("cannot write the temporary file", e))?;
            }
            count += chunk.len() as u64;
        }
        let mut file = out.into_inner().map_err(|e| io_error("cannot write the temporary file", e.into_error()))?;
        file.seek(SeekFrom::Start(0)).map_err(|e| io_error("cannot rewind the temporary file", e))?;
        Ok((file, count))
    });
    let mut chunk = Vec::with_capacity(CHUNK);
    let mut read_error = None;
    while let Some(state) = states.next().await {
        match state {
            Ok(state) => chunk.push(state),
            Err(error) => {
                read_error = Some(error);
                break;
            }
        }
        if chunk.len() == CHUNK && sender.send(std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK))).await.is_err() {
            break; // the writer failed; its error is returned below
        }
    }
    if read_error.is_none() && !chunk.is_empty() {
        let _ = sender.send(chunk).await;
    }
    drop(sender);
    drop(states);
    let written = writer.await.map_err(|e| StoreError::permanent(BACKEND, format!("spool task failed: {e}")))?;
    if let Some(error) = read_error {
        return Err(error);
    }
    let (file, count) = written?;
    Ok(Spooled { count, states: read_back(file, count) })
}

/// States read to the end and kept in a temporary file.
pub struct Spooled {
    /// How many there are.
    pub count: u64,
    /// The states again, in the order read.
    pub states: BoxStream<'static, Result<DocState, StoreError>>,
}

/// `count` states from `file`, in the order written.
fn read_back(file: File, count: u64) -> BoxStream<'static, Result<DocState, StoreError>> {
    let (sender, mut receiver) = tokio::sync::mpsc::channel::<Result<Vec<DocState>, StoreError>>(CHUNKS_AHEAD);
    tokio::task::spawn_blocking(move || {
        let mut input = BufReader::with_capacity(1 << 16, file);
        let mut left = count;
        while left > 0 {
            let take = left.min(CHUNK as u64);
            let chunk: Result<Vec<DocState>, StoreError> =
                (0..take).map(|_| read_state(&mut input).map_err(|e| io_error("cannot read the temporary file back", e))).collect();
            left -= take;
            let failed = chunk.is_err();
            if sender.blocking_send(chunk).is_err() || failed {
                return; // the consumer stopped reading, or the error ends the stream
            }
        }
    });
    converge_core::flatten_chunks(futures::stream::poll_fn(move |cx| receiver.poll_recv(cx)))
}

fn write_state(out: &mut impl Write, state: &DocState) -> std::io::Result<()> {
    write_text(out, &state.doc_path)?;
    out.write_all(&state.update_time.to_le_bytes())?;
    out.write_all(&state.version.to_le_bytes())?;
    write_text(out, &state.content_hash)
}

fn read_state(input: &mut impl Read) -> std::io::Result<DocState> {
    let doc_path = read_text(input)?;
    let mut update_time = [0u8; 8];
    input.read_exact(&mut update_time)?;
    let mut version = [0u8; 8];
    input.read_exact(&mut version)?;
    let content_hash = read_text(input)?;
    Ok(DocState { doc_path, update_time: i64::from_le_bytes(update_time), content_hash, version: i64::from_le_bytes(version) })
}

fn write_text(out: &mut impl Write, text: &str) -> std::io::Result<()> {
    let len = u32::try_from(text.len()).map_err(|_| std::io::Error::other("a text longer than 4 GiB"))?;
    out.write_all(&len.to_le_bytes())?;
    out.write_all(text.as_bytes())
}

fn read_text(input: &mut impl Read) -> std::io::Result<String> {
    let mut len = [0u8; 4];
    input.read_exact(&mut len)?;
    let mut bytes = vec![0u8; u32::from_le_bytes(len) as usize];
    input.read_exact(&mut bytes)?;
    String::from_utf8(bytes).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(i: u32) -> DocState {
        DocState {
            doc_path: format!("orgs/acme/records/r{i:07}"),
            update_time: 1_600_000_000_000_000 + i64::from(i),
            content_hash: format!("h{i}"),
            version: 1_700_000_000_000_000 + i64::from(i),
        }
    }

    #[tokio::test]
    async fn states_come_back_in_order_across_chunks() {
        let states: Vec<DocState> = (0..(CHUNK as u32 * 3 + 7)).map(state).collect();
        let spooled = spool(futures::stream::iter(states.clone().into_iter().map(Ok)).boxed()).await.unwrap();
        assert_eq!(spooled.count, states.len() as u64);
        let back: Vec<DocState> = spooled.states.map(Result::unwrap).collect().await;
        assert_eq!(back, states);
    }

    #[tokio::test]
    async fn an_empty_stream_spools_to_an_empty_stream() {
        let spooled = spool(futures::stream::empty().boxed()).await.unwrap();
        assert_eq!((spooled.count, spooled.states.count().await), (0, 0));
    }

    #[tokio::test]
    async fn an_error_while_reading_the_states_is_returned_before_anything_is_streamed() {
        let items = vec![Ok(state(1)), Err(StoreError::retryable("duckdb", "scan latest: connection lost")), Ok(state(2))];
        let error = spool(futures::stream::iter(items).boxed()).await.err().expect("the read error");
        assert!(error.message.contains("connection lost"), "{error:?}");
        assert!(error.is_retryable());
    }
}
