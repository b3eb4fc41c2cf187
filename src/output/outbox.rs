//! A durable on-disk outbox: records are appended to segment files (one record per line, each line
//! written whole) and read back in order by a deliverer, which commits what the receiver
//! acknowledged. The outbox is bounded: when it outgrows `max_bytes` its oldest segment is deleted
//! and the undelivered records in it are counted as dropped. The delivered position (`cursor`) is
//! saved by write-and-rename, at most every [`CURSOR_EVERY`] and on close, so a restart resumes
//! where delivery stopped (records after the last save are delivered again: at-least-once).
//!
//! ```text
//! dir/0000000000000007.seg   oldest segment still holding undelivered records
//! dir/0000000000000008.seg   newest segment, appended to
//! dir/cursor                 "7 12345": first undelivered record is at byte 12345 of segment 7
//! ```

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How often the delivered position is saved while delivering.
pub const CURSOR_EVERY: Duration = Duration::from_millis(200);
/// Segments per outbox at its size limit (the granularity of dropping the oldest records).
const SEGMENTS_AT_LIMIT: u64 = 8;

#[derive(Debug, thiserror::Error)]
#[error("outbox {path}: {message}")]
pub struct OutboxError {
    pub path: String,
    pub message: String,
}

/// A place in the outbox: byte `offset` of segment `segment`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pos {
    pub segment: u64,
    pub offset: u64,
}

#[derive(Debug)]
pub struct Outbox {
    dir: PathBuf,
    max_bytes: u64,
    segment_bytes: u64,
    /// `(id, bytes)` oldest first; never empty.
    segments: VecDeque<(u64, u64)>,
    tail: File,
    /// First undelivered record.
    cursor: Pos,
    cursor_saved: Option<Instant>,
    /// Records not yet delivered.
    backlog: u64,
    /// Records dropped at the size limit since open.
    dropped: u64,
}

fn seg_name(id: u64) -> String {
    format!("{id:016}.seg")
}

impl Outbox {
    /// Open (or create) the outbox in `dir`, holding at most about `max_bytes`. A line cut short by
    /// a crash at the end of the newest segment is removed.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Self, OutboxError> {
        let err = |m: String| OutboxError {
            path: dir.display().to_string(),
            message: m,
        };
        std::fs::create_dir_all(dir).map_err(|e| err(format!("cannot create: {e}")))?;
        let mut ids: Vec<u64> = std::fs::read_dir(dir)
            .map_err(|e| err(format!("cannot list: {e}")))?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                e.file_name()
                    .to_str()?
                    .strip_suffix(".seg")?
                    .parse::<u64>()
                    .ok()
            })
            .collect();
        ids.sort_unstable();
        if ids.is_empty() {
            ids.push(1);
        }
        let mut segments = VecDeque::new();
        for &id in &ids {
            let len = std::fs::metadata(dir.join(seg_name(id)))
                .map(|m| m.len())
                .unwrap_or(0);
            segments.push_back((id, len));
        }
        let last = *ids.last().unwrap_or(&1);
        let tail_path = dir.join(seg_name(last));
        let tail = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&tail_path)
            .map_err(|e| err(format!("cannot open {}: {e}", tail_path.display())))?;
        // cut a torn last line
        let whole = whole_lines_len(&tail_path).map_err(|e| err(e.to_string()))?;
        tail.set_len(whole).map_err(|e| err(e.to_string()))?;
        if let Some(back) = segments.back_mut() {
            back.1 = whole;
        }
        let first = segments.front().map_or(1, |s| s.0);
        let mut cursor = std::fs::read_to_string(dir.join("cursor"))
            .ok()
            .and_then(|t| {
                let (s, o) = t.trim().split_once(' ')?;
                Some(Pos {
                    segment: s.parse().ok()?,
                    offset: o.parse().ok()?,
                })
            })
            .unwrap_or(Pos {
                segment: first,
                offset: 0,
            });
        if cursor.segment < first {
            cursor = Pos {
                segment: first,
                offset: 0,
            };
        }
        let mut ob = Self {
            dir: dir.to_path_buf(),
            max_bytes: max_bytes.max(4096),
            segment_bytes: (max_bytes / SEGMENTS_AT_LIMIT).max(1024),
            segments,
            tail,
            cursor,
            cursor_saved: None,
            backlog: 0,
            dropped: 0,
        };
        if let Some(&(_, len)) = ob.segments.iter().find(|s| s.0 == cursor.segment) {
            ob.cursor.offset = ob.cursor.offset.min(len);
        }
        ob.backlog = ob.count_from(ob.cursor).map_err(|e| err(e.to_string()))?;
        Ok(ob)
    }

    fn path(&self, id: u64) -> PathBuf {
        self.dir.join(seg_name(id))
    }

    fn err(&self, m: impl std::fmt::Display) -> OutboxError {
        OutboxError {
            path: self.dir.display().to_string(),
            message: m.to_string(),
        }
    }

    /// Records from `from` to the end of the outbox.
    fn count_from(&self, from: Pos) -> std::io::Result<u64> {
        let mut n = 0;
        for &(id, _) in &self.segments {
            if id < from.segment {
                continue;
            }
            let offset = if id == from.segment { from.offset } else { 0 };
            n += count_lines(&self.path(id), offset)?;
        }
        Ok(n)
    }

    /// Append one record (a line without `\n`). Drops the oldest segment when over the limit.
    pub fn append(&mut self, record: &[u8]) -> Result<(), OutboxError> {
        let len = record.len() as u64 + 1;
        let (tail_id, tail_len) = self.segments.back().copied().unwrap_or((1, 0));
        if tail_len > 0 && tail_len + len > self.segment_bytes {
            self.tail.sync_data().map_err(|e| self.err(e))?;
            let id = tail_id + 1;
            let p = self.path(id);
            self.tail = OpenOptions::new()
                .create(true)
                .read(true)
                .append(true)
                .open(&p)
                .map_err(|e| self.err(format!("cannot create {}: {e}", p.display())))?;
            self.segments.push_back((id, 0));
        }
        let mut line = Vec::with_capacity(record.len() + 1);
        line.extend_from_slice(record);
        line.push(b'\n');
        self.tail.write_all(&line).map_err(|e| self.err(e))?;
        if let Some(back) = self.segments.back_mut() {
            back.1 += len;
        }
        self.backlog += 1;
        while self.bytes() > self.max_bytes && self.segments.len() > 1 {
            self.drop_oldest()?;
        }
        Ok(())
    }

    fn drop_oldest(&mut self) -> Result<(), OutboxError> {
        let Some((id, _)) = self.segments.pop_front() else {
            return Ok(());
        };
        if self.cursor.segment <= id {
            let from = if self.cursor.segment == id {
                self.cursor.offset
            } else {
                0
            };
            let lost = count_lines(&self.path(id), from).map_err(|e| self.err(e))?;
            self.dropped += lost;
            self.backlog = self.backlog.saturating_sub(lost);
            let next = self.segments.front().map_or(id + 1, |s| s.0);
            self.cursor = Pos {
                segment: next,
                offset: 0,
            };
            self.save_cursor()?;
        }
        std::fs::remove_file(self.path(id)).map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Up to `max` records from `from` on (clamped to the first undelivered one), each with the
    /// position after it.
    pub fn read(&self, from: Pos, max: usize) -> Result<Vec<(Vec<u8>, Pos)>, OutboxError> {
        let mut pos = from.max(self.cursor);
        let mut out = Vec::new();
        while out.len() < max {
            let Some(&(_, len)) = self.segments.iter().find(|s| s.0 == pos.segment) else {
                break;
            };
            if pos.offset >= len {
                // end of this segment: on to the next one, if any
                match self.segments.iter().find(|s| s.0 > pos.segment) {
                    Some(&(next, _)) => {
                        pos = Pos {
                            segment: next,
                            offset: 0,
                        };
                        continue;
                    }
                    None => break,
                }
            }
            let mut f = File::open(self.path(pos.segment)).map_err(|e| self.err(e))?;
            f.seek(SeekFrom::Start(pos.offset))
                .map_err(|e| self.err(e))?;
            let mut r = BufReader::new(f.take(len - pos.offset));
            while out.len() < max {
                let mut line = Vec::new();
                let n = r.read_until(b'\n', &mut line).map_err(|e| self.err(e))?;
                if n == 0 || line.last() != Some(&b'\n') {
                    break;
                }
                line.pop();
                pos.offset += n as u64;
                out.push((line, pos));
            }
        }
        Ok(out)
    }

    /// `n` records up to `upto` were delivered: move the cursor, delete delivered segments, save
    /// the cursor now and then.
    pub fn commit(&mut self, upto: Pos, n: u64) -> Result<(), OutboxError> {
        if upto <= self.cursor {
            return Ok(());
        }
        self.cursor = upto;
        self.backlog = self.backlog.saturating_sub(n);
        while self.segments.len() > 1 && self.segments.front().is_some_and(|s| s.0 < upto.segment) {
            if let Some((id, _)) = self.segments.pop_front() {
                std::fs::remove_file(self.path(id)).map_err(|e| self.err(e))?;
            }
        }
        if self
            .cursor_saved
            .is_none_or(|t| t.elapsed() >= CURSOR_EVERY)
        {
            self.save_cursor()?;
        }
        Ok(())
    }

    /// Save the delivered position (write a temporary file, then rename over the old one).
    pub fn save_cursor(&mut self) -> Result<(), OutboxError> {
        let tmp = self.dir.join("cursor.tmp");
        std::fs::write(
            &tmp,
            format!("{} {}\n", self.cursor.segment, self.cursor.offset),
        )
        .map_err(|e| self.err(e))?;
        std::fs::rename(&tmp, self.dir.join("cursor")).map_err(|e| self.err(e))?;
        self.cursor_saved = Some(Instant::now());
        Ok(())
    }

    /// Flush everything to disk (segments and cursor).
    pub fn sync(&mut self) -> Result<(), OutboxError> {
        self.tail.sync_data().map_err(|e| self.err(e))?;
        self.save_cursor()
    }

    pub fn cursor(&self) -> Pos {
        self.cursor
    }
    /// Records not yet delivered.
    pub fn backlog(&self) -> u64 {
        self.backlog
    }
    /// Records dropped at the size limit since open.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
    /// Bytes on disk.
    pub fn bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.1).sum()
    }
}

/// Length of `path` up to and including its last `\n`.
fn whole_lines_len(path: &Path) -> std::io::Result<u64> {
    let mut data = Vec::new();
    File::open(path)?.read_to_end(&mut data)?;
    Ok(data
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i as u64 + 1))
}

/// Complete lines in `path` from byte `offset` on.
fn count_lines(path: &Path, offset: u64) -> std::io::Result<u64> {
    let mut f = File::open(path)?;
    f.seek(SeekFrom::Start(offset))?;
    let mut buf = [0u8; 64 * 1024];
    let mut n = 0u64;
    loop {
        let k = f.read(&mut buf)?;
        if k == 0 {
            return Ok(n);
        }
        n += buf[..k].iter().filter(|&&b| b == b'\n').count() as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(i: u32) -> Vec<u8> {
        format!("{{\"seq\":{i},\"pad\":\"{}\"}}", "x".repeat(100)).into_bytes()
    }

    fn drain(ob: &mut Outbox) -> Vec<Vec<u8>> {
        let mut got = Vec::new();
        loop {
            let batch = ob.read(ob.cursor(), 7).unwrap();
            if batch.is_empty() {
                return got;
            }
            let n = batch.len() as u64;
            let end = batch.last().unwrap().1;
            got.extend(batch.into_iter().map(|(r, _)| r));
            ob.commit(end, n).unwrap();
        }
    }

    #[test]
    fn records_come_back_in_order_across_segments_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut ob = Outbox::open(dir.path(), 64 * 1024).unwrap();
        for i in 0..200 {
            ob.append(&rec(i)).unwrap();
        }
        assert!(ob.segments.len() > 1, "should have rotated");
        // deliver 50, then "crash" (no explicit save beyond commit's) and reopen
        let first = ob.read(ob.cursor(), 50).unwrap();
        let end = first.last().unwrap().1;
        ob.commit(end, 50).unwrap();
        ob.save_cursor().unwrap();
        drop(ob);
        let mut ob = Outbox::open(dir.path(), 64 * 1024).unwrap();
        assert_eq!(ob.backlog(), 150);
        let rest = drain(&mut ob);
        assert_eq!(rest.len(), 150);
        for (k, r) in rest.iter().enumerate() {
            assert_eq!(r, &rec(50 + k as u32));
        }
        assert_eq!(ob.backlog(), 0);
    }

    #[test]
    fn full_outbox_drops_oldest_and_counts_them() {
        let dir = tempfile::tempdir().unwrap();
        let mut ob = Outbox::open(dir.path(), 16 * 1024).unwrap();
        for i in 0..1000 {
            ob.append(&rec(i)).unwrap();
        }
        assert!(ob.bytes() <= 16 * 1024, "{}", ob.bytes());
        let kept = drain(&mut ob);
        assert_eq!(kept.len() as u64 + ob.dropped(), 1000);
        assert!(ob.dropped() > 0);
        // what is kept is the newest, still in order
        assert_eq!(kept.last().unwrap(), &rec(999));
        let first: serde_json::Value = serde_json::from_slice(&kept[0]).unwrap();
        let s0 = first["seq"].as_u64().unwrap();
        assert_eq!(s0, ob.dropped());
    }

    #[test]
    fn torn_last_line_is_cut_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let mut ob = Outbox::open(dir.path(), 1 << 20).unwrap();
        ob.append(&rec(1)).unwrap();
        drop(ob);
        let seg = dir.path().join(seg_name(1));
        let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
        f.write_all(b"{\"seq\":2,\"pa").unwrap();
        let mut ob = Outbox::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(ob.backlog(), 1);
        ob.append(&rec(3)).unwrap();
        assert_eq!(drain(&mut ob), vec![rec(1), rec(3)]);
    }
}
