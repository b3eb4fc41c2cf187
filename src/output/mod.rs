//! Outputs: MP4 (with overlay), JSON lines, MQTT (through a durable outbox), RTSP restream. Each output runs on its own thread behind its own edge,
//! so a slow one never stalls the others.

pub mod jsonl;
pub mod mp4;
pub mod mqtt;
pub mod outbox;
pub mod overlay;
pub mod record;
pub mod rtsp;

use std::fs::File;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("{path}: {message}")]
    Io { path: String, message: String },
    #[error("{path}: encoder: {message}")]
    Encode { path: String, message: String },
}

/// Create `path` (empty) and its parent folders.
pub fn create_file(path: &Path) -> Result<File, OutputError> {
    open_file(path, false)
}

/// Open `path` for appending (created if missing, with its parent folders).
pub fn append_file(path: &Path) -> Result<File, OutputError> {
    open_file(path, true)
}

fn open_file(path: &Path, append: bool) -> Result<File, OutputError> {
    let io = |e: std::io::Error| OutputError::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    if append {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(io)
    } else {
        File::create(path).map_err(io)
    }
}
