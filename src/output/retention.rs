//! Keeping a folder of recordings within bounds: files older than `max_age` go, then the oldest
//! go until the folder is under `max_size`. Files are taken by their modification time.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Trim the files of `folder` whose names start with `own` (one output's recordings: a shared
/// folder's other files are not ours), never deleting those that start with `keep` (the
/// recording just made); returns the files deleted.
pub fn trim(
    folder: &Path,
    own: &str,
    keep: &str,
    max_size: u64,
    max_age: Option<Duration>,
    now: SystemTime,
) -> u64 {
    let Ok(entries) = std::fs::read_dir(folder) else {
        return 0;
    };
    let mut files: Vec<(SystemTime, u64, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            if !e.file_name().to_string_lossy().starts_with(own) {
                return None;
            }
            let m = e.metadata().ok()?;
            m.is_file()
                .then(|| (m.modified().unwrap_or(now), m.len(), e.path()))
        })
        .collect();
    files.sort();
    let mut total: u64 = files.iter().map(|f| f.1).sum();
    let mut deleted = 0;
    for (modified, len, path) in files {
        let name = path.file_name().map(|n| n.to_string_lossy().to_string());
        if name.is_some_and(|n| !keep.is_empty() && n.starts_with(keep)) {
            continue;
        }
        let too_old = max_age.is_some_and(|a| now.duration_since(modified).unwrap_or_default() > a);
        if !too_old && total <= max_size {
            break;
        }
        match std::fs::remove_file(&path) {
            Ok(()) => {
                total = total.saturating_sub(len);
                deleted += 1;
                tracing::info!(file = %path.display(), "retention: deleted");
            }
            Err(e) => tracing::warn!(file = %path.display(), "retention: cannot delete: {e}"),
        }
    }
    deleted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oldest_go_first_until_under_the_size() {
        let dir = tempfile::tempdir().unwrap();
        for (i, name) in ["a", "b", "c", "d"].iter().enumerate() {
            let p = dir.path().join(name);
            std::fs::write(&p, vec![0u8; 100]).unwrap();
            let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000 + i as u64);
            std::fs::File::options()
                .write(true)
                .open(&p)
                .unwrap()
                .set_modified(t)
                .unwrap();
        }
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(2_000);
        assert_eq!(trim(dir.path(), "", "", 250, None, now), 2);
        assert!(!dir.path().join("a").exists() && !dir.path().join("b").exists());
        assert!(dir.path().join("c").exists() && dir.path().join("d").exists());
        // by age: everything older than 999.5 s
        assert_eq!(
            trim(
                dir.path(),
                "",
                "d",
                u64::MAX,
                Some(Duration::from_millis(997_500)),
                now
            ),
            1
        );
        assert!(dir.path().join("d").exists());
        // what is kept is never deleted, even over the size
        assert_eq!(trim(dir.path(), "", "d", 0, None, now), 0);
        // files that are not the output's own are left alone
        assert_eq!(trim(dir.path(), "other-", "", 0, None, now), 0);
        assert!(dir.path().join("d").exists());
    }
}
