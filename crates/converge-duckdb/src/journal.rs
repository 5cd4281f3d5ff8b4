//! The warehouse's write-ahead journal: where an appended row is durable first.
//!
//! Why it exists: DuckDB checkpoints its own WAL into the database file inside the
//! commit that crosses the WAL threshold, and every commit behind it waits — 2 to 4
//! seconds at the 256 MB threshold on a 2-core machine, so a sync function answering
//! after its DuckDB commit held events for seconds about every two minutes at
//! 5,000 events/s (`converge bench sync --seconds 120`: p99 1.7 s). DuckDB 1.5 lets
//! insert-only commits run during a checkpoint only into tables the checkpoint is not
//! writing, which the changelog always is.
//!
//! So an append is made durable here (one write and one `fdatasync` per group
//! commit) and answered; the warehouse's loader thread then appends it to DuckDB, and
//! a checkpoint stalls only the loader. Readers wait until the loader has caught up
//! with every append made before they asked (see `DuckWarehouse::reader`), so a read
//! sees every acknowledged row, as before.
//!
//! Recovery: DuckDB remembers the sequence number of the last batch it loaded, in the
//! same transaction as the batch's rows (`converge_journal`). At open, batches after
//! it are loaded again, and a torn batch at the end (a crash during its write, so
//! never acknowledged) is cut off. Once DuckDB has every batch, the file is emptied.
//!
//! Format: a sequence of batches, each `[len u32][crc32 u32][seq u64][payload]`, all
//! little-endian; `len` counts `seq` and `payload`, the CRC covers them. The payload
//! is the rows in a compact binary form ([`encode_rows`]); only this module reads it.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use converge_core::{ChangeRow, Op, PromotedValue, StoreError};

use crate::appender::PromotedNames;
use crate::db::BACKEND;

/// Header bytes before a batch's payload: len, crc, seq.
const HEADER: usize = 4 + 4 + 8;
/// A batch larger than this is corruption, not data (a group commit is ≤ 4,096 rows
/// of at most a few MiB each in principle, far less in practice).
const MAX_BATCH_BYTES: u32 = 1 << 30;

/// One batch read back from the journal.
pub(crate) struct JournalBatch {
    pub seq: u64,
    pub rows: Vec<ChangeRow>,
    /// The promoted column names of the rows' tables when they were appended; `None`
    /// in a batch a version before the third format wrote (see [`FORMAT_3`]).
    pub names: Option<PromotedNames>,
}

/// The open journal file, positioned at its end.
pub(crate) struct Journal {
    path: PathBuf,
    file: File,
    len: u64,
    /// Reused encoding buffer: one allocation for the life of the journal.
    buffer: Vec<u8>,
}

fn io_error(path: &Path, doing: &str, error: std::io::Error) -> StoreError {
    StoreError::retryable(BACKEND, format!("warehouse journal {}: cannot {doing}: {error}", path.display()))
}

impl Journal {
    /// Opens (or creates) the journal at `path` and hands every intact batch to
    /// `each`, in order. A torn or corrupt batch ends the journal: it and anything
    /// after it are cut off (they were never acknowledged: a batch is answered only
    /// after its `fdatasync`).
    pub fn open(path: &Path, mut each: impl FnMut(JournalBatch) -> Result<(), StoreError>) -> Result<Self, StoreError> {
        let mut file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path).map_err(|e| io_error(path, "open", e))?;
        let mut intact = 0u64;
        {
            let mut reader = BufReader::with_capacity(1 << 20, &mut file);
            let mut header = [0u8; HEADER];
            let mut payload = Vec::new();
            loop {
                if !read_full(&mut reader, &mut header).map_err(|e| io_error(path, "read", e))? {
                    break;
                }
                let len = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes"));
                let crc = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
                if !(8..=MAX_BATCH_BYTES).contains(&len) {
                    break;
                }
                payload.resize(len as usize - 8, 0);
                if !read_full(&mut reader, &mut payload).map_err(|e| io_error(path, "read", e))? {
                    break;
                }
                let mut hasher = crc32fast::Hasher::new();
                hasher.update(&header[8..16]);
                hasher.update(&payload);
                if hasher.finalize() != crc {
                    break;
                }
                let Some((rows, names)) = decode_rows(&payload) else { break };
                let seq = u64::from_le_bytes(header[8..16].try_into().expect("8 bytes"));
                each(JournalBatch { seq, rows, names })?;
                intact += HEADER as u64 + payload.len() as u64;
            }
        }
        let on_disk = file.metadata().map_err(|e| io_error(path, "stat", e))?.len();
        if on_disk != intact {
            tracing::warn!(journal = %path.display(), cut_bytes = on_disk - intact, "cutting a torn batch off the warehouse journal (written during a crash, never acknowledged)");
            file.set_len(intact).map_err(|e| io_error(path, "truncate", e))?;
            file.sync_all().map_err(|e| io_error(path, "sync", e))?;
        }
        file.seek(SeekFrom::Start(intact)).map_err(|e| io_error(path, "seek", e))?;
        Ok(Self { path: path.to_owned(), file, len: intact, buffer: Vec::new() })
    }

    /// Appends one batch and waits until it is on disk.
    pub fn append(&mut self, seq: u64, rows: &[ChangeRow], names: &[(String, Vec<String>)]) -> Result<(), StoreError> {
        self.buffer.clear();
        self.buffer.extend_from_slice(&[0u8; 8]); // len and crc, filled in below
        self.buffer.extend_from_slice(&seq.to_le_bytes());
        encode_rows(rows, names, &mut self.buffer);
        let len = u32::try_from(self.buffer.len() - 8)
            .ok()
            .filter(|len| *len <= MAX_BATCH_BYTES)
            .ok_or_else(|| StoreError::permanent(BACKEND, format!("a batch of {} rows is over the journal's 1 GiB batch limit", rows.len())))?;
        let crc = crc32fast::hash(&self.buffer[8..]);
        self.buffer[0..4].copy_from_slice(&len.to_le_bytes());
        self.buffer[4..8].copy_from_slice(&crc.to_le_bytes());
        let written = self.file.write_all(&self.buffer).and_then(|_| self.file.sync_data());
        if let Err(error) = written {
            // Whatever part of the batch reached the file is cut off again, so the
            // next batch does not follow a torn one (which would hide it at replay).
            let _ = self.file.set_len(self.len);
            let _ = self.file.seek(SeekFrom::Start(self.len));
            return Err(io_error(&self.path, "append", error));
        }
        self.len += self.buffer.len() as u64;
        if self.buffer.capacity() > 8 << 20 {
            self.buffer = Vec::new(); // do not keep a huge batch's buffer
        }
        Ok(())
    }

    /// Bytes in the journal.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Empties the journal; only when DuckDB holds every batch in it.
    pub fn clear(&mut self) -> Result<(), StoreError> {
        self.file.set_len(0).map_err(|e| io_error(&self.path, "truncate", e))?;
        self.file.seek(SeekFrom::Start(0)).map_err(|e| io_error(&self.path, "seek", e))?;
        self.file.sync_all().map_err(|e| io_error(&self.path, "sync", e))?;
        self.len = 0;
        Ok(())
    }
}

/// Fills `buffer`; `false` if the input ended first (a torn batch, or the clean end
/// when nothing was read).
fn read_full(reader: &mut impl Read, buffer: &mut [u8]) -> std::io::Result<bool> {
    let mut filled = 0;
    while filled < buffer.len() {
        match reader.read(&mut buffer[filled..]) {
            Ok(0) => return Ok(false),
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

fn put_str(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(&(text.len() as u32).to_le_bytes());
    out.extend_from_slice(text.as_bytes());
}

fn put_opt_str(out: &mut Vec<u8>, text: &Option<String>) {
    match text {
        None => out.push(0),
        Some(text) => {
            out.push(1);
            put_str(out, text);
        }
    }
}

fn op_code(op: Op) -> u8 {
    match op {
        Op::Create => 0,
        Op::Update => 1,
        Op::Delete => 2,
        Op::Rebuild => 3,
        Op::Repair => 4,
    }
}

fn op_from_code(code: u8) -> Option<Op> {
    Some(match code {
        0 => Op::Create,
        1 => Op::Update,
        2 => Op::Delete,
        3 => Op::Rebuild,
        4 => Op::Repair,
        _ => return None,
    })
}

/// The rows in the journal's binary form: the [`FORMAT_3`] marker, the promoted column
/// names of the tables the rows go to, a count, then each row's fields in declaration
/// order (strings length-prefixed, options and promoted values tagged).
pub(crate) fn encode_rows(rows: &[ChangeRow], names: &[(String, Vec<String>)], out: &mut Vec<u8>) {
    out.extend_from_slice(&FORMAT_3.to_le_bytes());
    let tables: Vec<&(String, Vec<String>)> = names.iter().filter(|(table, _)| rows.iter().any(|row| row.table == *table)).collect();
    out.extend_from_slice(&(tables.len() as u32).to_le_bytes());
    for (table, columns) in tables {
        put_str(out, table);
        out.extend_from_slice(&(columns.len() as u32).to_le_bytes());
        for column in columns {
            put_str(out, column);
        }
    }
    out.extend_from_slice(&(rows.len() as u32).to_le_bytes());
    for row in rows {
        put_str(out, &row.table);
        put_str(out, &row.tenant);
        put_str(out, &row.collection);
        put_str(out, &row.doc_id);
        put_str(out, &row.doc_path);
        out.push(op_code(row.op));
        out.push(row.is_deleted as u8);
        out.extend_from_slice(&row.version.to_le_bytes());
        put_str(out, &row.event_id);
        put_opt_str(out, &row.content_hash);
        put_opt_str(out, &row.data);
        out.extend_from_slice(&(row.promoted.len() as u32).to_le_bytes());
        for value in &row.promoted {
            match value {
                None => out.push(0),
                Some(PromotedValue::String(s)) => {
                    out.push(1);
                    put_str(out, s);
                }
                Some(PromotedValue::Int64(i)) => {
                    out.push(2);
                    out.extend_from_slice(&i.to_le_bytes());
                }
                Some(PromotedValue::Float64(f)) => {
                    out.push(3);
                    out.extend_from_slice(&f.to_le_bytes());
                }
                Some(PromotedValue::Bool(b)) => {
                    out.push(4);
                    out.push(*b as u8);
                }
                Some(PromotedValue::Timestamp(us)) => {
                    out.push(5);
                    out.extend_from_slice(&us.to_le_bytes());
                }
                Some(PromotedValue::Date(days)) => {
                    out.push(6);
                    out.extend_from_slice(&days.to_le_bytes());
                }
            }
        }
        out.extend_from_slice(&row.ingested_at.to_le_bytes());
        put_str(out, &row.run_id);
        put_str(out, &row.code_version);
        put_opt_i64(out, row.update_time);
        put_opt_i64(out, row.create_time);
    }
}

/// The payload's first word in the second format (rows carry `update_time` and
/// `create_time`). The first format began with the row count, which never reaches
/// it, so a journal a previous version left behind still loads.
const FORMAT_2: u32 = u32::MAX;

/// The payload's first word in the third format: the second, preceded by each table's
/// promoted column names, so rows journaled before a promoted column was added load
/// by name into the table it was added to (NULL there).
const FORMAT_3: u32 = u32::MAX - 1;

fn put_opt_i64(out: &mut Vec<u8>, value: Option<i64>) {
    match value {
        None => out.push(0),
        Some(v) => {
            out.push(1);
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
}

/// A cursor over a payload; every read is bounds-checked (`None` = malformed).
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4).map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
    }
    fn i32(&mut self) -> Option<i32> {
        self.take(4).map(|b| i32::from_le_bytes(b.try_into().expect("4 bytes")))
    }
    fn i64(&mut self) -> Option<i64> {
        self.take(8).map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")))
    }
    fn string(&mut self) -> Option<String> {
        let len = self.u32()? as usize;
        String::from_utf8(self.take(len)?.to_vec()).ok()
    }
    fn opt_i64(&mut self) -> Option<Option<i64>> {
        match self.u8()? {
            0 => Some(None),
            1 => Some(Some(self.i64()?)),
            _ => None,
        }
    }

    fn opt_string(&mut self) -> Option<Option<String>> {
        match self.u8()? {
            0 => Some(None),
            1 => Some(Some(self.string()?)),
            _ => None,
        }
    }
}

/// The inverse of [`encode_rows`]; `None` if the payload is not one. The names are
/// `None` in the first and second formats.
pub(crate) fn decode_rows(payload: &[u8]) -> Option<(Vec<ChangeRow>, Option<PromotedNames>)> {
    let mut c = Cursor(payload);
    let mut count = c.u32()? as usize;
    let format_3 = count == FORMAT_3 as usize;
    let format_2 = count == FORMAT_2 as usize || format_3;
    let mut names = None;
    if format_3 {
        let tables = c.u32()? as usize;
        let mut list = Vec::with_capacity(tables.min(64));
        for _ in 0..tables {
            let table = c.string()?;
            let columns = c.u32()? as usize;
            let mut names = Vec::with_capacity(columns.min(256));
            for _ in 0..columns {
                names.push(c.string()?);
            }
            list.push((table, names));
        }
        names = Some(list);
    }
    if format_2 {
        count = c.u32()? as usize;
    }
    // A row takes at least ~60 bytes: a corrupt count cannot reserve gigabytes.
    let mut rows = Vec::with_capacity(count.min(payload.len() / 32));
    for _ in 0..count {
        let table = c.string()?;
        let tenant = c.string()?;
        let collection = c.string()?;
        let doc_id = c.string()?;
        let doc_path = c.string()?;
        let op = op_from_code(c.u8()?)?;
        let is_deleted = c.u8()? != 0;
        let version = c.i64()?;
        let event_id = c.string()?;
        let content_hash = c.opt_string()?;
        let data = c.opt_string()?;
        let promoted_len = c.u32()? as usize;
        let mut promoted = Vec::with_capacity(promoted_len.min(256));
        for _ in 0..promoted_len {
            promoted.push(match c.u8()? {
                0 => None,
                1 => Some(PromotedValue::String(c.string()?)),
                2 => Some(PromotedValue::Int64(c.i64()?)),
                3 => Some(PromotedValue::Float64(f64::from_bits(c.i64()? as u64))),
                4 => Some(PromotedValue::Bool(c.u8()? != 0)),
                5 => Some(PromotedValue::Timestamp(c.i64()?)),
                6 => Some(PromotedValue::Date(c.i32()?)),
                _ => return None,
            });
        }
        let ingested_at = c.i64()?;
        let run_id = c.string()?;
        let code_version = c.string()?;
        let (update_time, create_time) = if format_2 { (c.opt_i64()?, c.opt_i64()?) } else { (None, None) };
        rows.push(ChangeRow {
            table,
            tenant,
            collection,
            doc_id,
            doc_path,
            op,
            is_deleted,
            version,
            event_id,
            content_hash,
            data,
            promoted,
            ingested_at,
            run_id,
            code_version,
            update_time,
            create_time,
        });
    }
    c.0.is_empty().then_some((rows, names))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Row `i` of table `records` with one value of every promoted type.
    fn row(i: usize) -> ChangeRow {
        row_with_promoted(
            i,
            vec![
                None,
                Some(PromotedValue::String("fund-1".into())),
                Some(PromotedValue::Int64(i64::MIN + i as i64)),
                Some(PromotedValue::Float64(-0.25)),
                Some(PromotedValue::Bool(true)),
                Some(PromotedValue::Timestamp(-5)),
                Some(PromotedValue::Date(19_000)),
            ],
        )
    }

    /// Row `i` of table `records`: every third one a tombstone, the others updates.
    pub(crate) fn row_with_promoted(i: usize, promoted: Vec<Option<PromotedValue>>) -> ChangeRow {
        ChangeRow {
            table: "records".into(),
            tenant: "acme".into(),
            collection: "records".into(),
            doc_id: format!("r{i}"),
            doc_path: format!("orgs/acme/records/r{i}"),
            op: if i % 3 == 0 { Op::Delete } else { Op::Update },
            is_deleted: i % 3 == 0,
            version: 1_700_000_000_000_000 + i as i64,
            event_id: format!("ev-{i}"),
            content_hash: (i % 3 != 0).then(|| format!("h{i}")),
            data: (i % 3 != 0).then(|| "{\"amount\":{\"double\":1.5},\"é\":\"ü\"}".into()),
            promoted,
            ingested_at: 42,
            run_id: "run".into(),
            code_version: "v1".into(),
            update_time: (i % 3 != 0).then_some(1_600_000_000_000_000 + i as i64),
            create_time: (i % 2 == 0).then_some(1_500_000_000_000_000),
        }
    }

    /// The promoted column names of [`row`]'s values.
    pub(crate) fn names() -> PromotedNames {
        vec![("records".into(), (0..7).map(|i| format!("p{i}")).collect()), ("invoices".into(), vec!["total".into()])]
    }

    #[test]
    fn payloads_in_the_first_and_second_formats_still_decode() {
        // The first format: no marker word, no update/create times at the end of a row;
        // the second: a marker word, no promoted column names.
        let mut old = row(3);
        let mut payload = Vec::new();
        encode_rows(std::slice::from_ref(&old), &[], &mut payload);
        assert_eq!(payload[..8], [FORMAT_3.to_le_bytes(), 0u32.to_le_bytes()].concat());
        let second_format = [&FORMAT_2.to_le_bytes()[..], &payload[8..]].concat();
        assert_eq!(decode_rows(&second_format), Some((vec![old.clone()], None)));
        old.update_time = None;
        old.create_time = None;
        let mut payload = Vec::new();
        encode_rows(std::slice::from_ref(&old), &[], &mut payload);
        assert_eq!(payload[payload.len() - 2..], [0, 0]);
        let first_format = &payload[8..payload.len() - 2];
        assert_eq!(decode_rows(first_format), Some((vec![old], None)));
    }

    fn read_back(path: &Path) -> Vec<JournalBatch> {
        let mut batches = Vec::new();
        Journal::open(path, |b| {
            batches.push(b);
            Ok(())
        })
        .unwrap();
        batches
    }

    #[test]
    fn rows_round_trip_through_the_binary_form() {
        let rows: Vec<_> = (0..7).map(row).collect();
        let mut bytes = Vec::new();
        encode_rows(&rows, &names(), &mut bytes);
        // Only the names of the tables the rows go to.
        assert_eq!(decode_rows(&bytes).unwrap(), (rows, Some(names()[..1].to_vec())));
        // Every proper prefix is refused, not misread.
        for cut in 0..bytes.len() {
            assert!(decode_rows(&bytes[..cut]).is_none(), "prefix of {cut} bytes decoded");
        }
    }

    #[test]
    fn batches_come_back_in_order_after_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j");
        let mut journal = Journal::open(&path, |_| Ok(())).unwrap();
        journal.append(1, &[row(1), row(2)], &names()).unwrap();
        journal.append(2, &[row(3)], &names()).unwrap();
        drop(journal);
        let batches = read_back(&path);
        assert_eq!(batches.iter().map(|b| b.seq).collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(batches[0].rows, vec![row(1), row(2)]);
        assert_eq!(batches[1].rows, vec![row(3)]);
    }

    #[test]
    fn a_torn_last_batch_is_cut_off_and_the_journal_goes_on_after_the_intact_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j");
        let mut journal = Journal::open(&path, |_| Ok(())).unwrap();
        journal.append(1, &[row(1)], &names()).unwrap();
        let intact = journal.len();
        journal.append(2, &[row(2), row(4)], &names()).unwrap();
        drop(journal);
        // A crash during the second batch's write: only part of it reached the disk.
        let full = std::fs::metadata(&path).unwrap().len();
        OpenOptions::new().write(true).open(&path).unwrap().set_len(full - 9).unwrap();

        let mut journal = Journal::open(&path, |_| Ok(())).unwrap();
        assert_eq!(journal.len(), intact);
        journal.append(3, &[row(5)], &names()).unwrap();
        drop(journal);
        let batches = read_back(&path);
        assert_eq!(batches.iter().map(|b| b.seq).collect::<Vec<_>>(), vec![1, 3]);
    }

    #[test]
    fn a_flipped_bit_ends_the_journal_at_the_corrupt_batch() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j");
        let mut journal = Journal::open(&path, |_| Ok(())).unwrap();
        journal.append(1, &[row(1)], &names()).unwrap();
        let first = journal.len() as usize;
        journal.append(2, &[row(2)], &names()).unwrap();
        drop(journal);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[first + HEADER + 10] ^= 0x40;
        std::fs::write(&path, &bytes).unwrap();
        let batches = read_back(&path);
        assert_eq!(batches.iter().map(|b| b.seq).collect::<Vec<_>>(), vec![1]);
    }

    #[test]
    fn clearing_empties_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j");
        let mut journal = Journal::open(&path, |_| Ok(())).unwrap();
        journal.append(1, &[row(1)], &names()).unwrap();
        journal.clear().unwrap();
        journal.append(2, &[row(2)], &names()).unwrap();
        drop(journal);
        let batches = read_back(&path);
        assert_eq!(batches.iter().map(|b| b.seq).collect::<Vec<_>>(), vec![2]);
    }
}
