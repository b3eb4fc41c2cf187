//! Cheap integrity checks of container files, to tell a truncated recording from a complete one.
//! GStreamer's AVI demuxer rebuilds a missing index and ends "cleanly" at the cut, logging only at
//! debug level; the sizes the container declares say what is missing.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// `Some(explanation)` when `path` is a RIFF (AVI, WAV) or ISO-BMFF (MP4, MOV) file whose declared
/// sizes run past its end. `None` for complete files and for formats not checked here.
pub fn truncation(path: &Path) -> Option<String> {
    let mut f = File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    let mut head = [0u8; 12];
    f.read_exact(&mut head).ok()?;
    if &head[0..4] == b"RIFF" {
        let declared = u64::from(u32::from_le_bytes([head[4], head[5], head[6], head[7]])) + 8;
        return (len < declared).then(|| {
            format!(
                "the RIFF header declares {declared} bytes but the file has {len}: it is truncated"
            )
        });
    }
    if &head[4..8] == b"ftyp" {
        return bmff_truncation(&mut f, len);
    }
    None
}

/// Walk the top-level boxes; one that extends past the end means the file was cut.
fn bmff_truncation(f: &mut File, len: u64) -> Option<String> {
    let mut at = 0u64;
    while at + 8 <= len {
        f.seek(SeekFrom::Start(at)).ok()?;
        let mut b = [0u8; 16];
        f.read_exact(&mut b[..8]).ok()?;
        let size32 = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        let kind = String::from_utf8_lossy(&b[4..8]).to_string();
        let size = match size32 {
            0 => return None, // extends to the end of the file by definition
            1 => {
                f.read_exact(&mut b[8..16]).ok()?;
                u64::from_be_bytes([b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]])
            }
            n => u64::from(n),
        };
        if size < 8 {
            return Some(format!(
                "box `{kind}` at byte {at} has an impossible size {size}: the file is damaged"
            ));
        }
        if at + size > len {
            return Some(format!(
                "box `{kind}` at byte {at} declares {size} bytes but the file ends after {}: it is truncated",
                len - at
            ));
        }
        at += size;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file(bytes: &[u8]) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(bytes).unwrap();
        f
    }

    #[test]
    fn riff_size_beyond_end_is_truncated() {
        let mut b = b"RIFF".to_vec();
        b.extend_from_slice(&100u32.to_le_bytes());
        b.extend_from_slice(b"AVI LIST");
        assert!(truncation(file(&b).path()).is_some());
        let mut b = b"RIFF".to_vec();
        b.extend_from_slice(&8u32.to_le_bytes());
        b.extend_from_slice(b"AVI LIST");
        assert!(truncation(file(&b).path()).is_none());
    }

    #[test]
    fn bmff_box_beyond_end_is_truncated() {
        let mut b = Vec::new();
        b.extend_from_slice(&16u32.to_be_bytes());
        b.extend_from_slice(b"ftypisom\0\0\0\0");
        b.extend_from_slice(&100u32.to_be_bytes());
        b.extend_from_slice(b"mdat");
        assert!(truncation(file(&b).path()).unwrap().contains("mdat"));
        b.truncate(16);
        assert!(truncation(file(&b).path()).is_none());
    }
}
