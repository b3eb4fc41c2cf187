//! JSON lines: one [`Record`] per frame. Each line is written whole with one `write` call, so a file
//! cut short by a crash still holds only complete lines (and SIGTERM drains before exit).

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{Output, OutputContext, OutputError, Resolve};
use crate::frame::Frame;

/// `kind: jsonl`: one JSON record per processed frame (schema in ARCHITECTURE.md).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonlSpec {
    /// File to write (its folder is created); may use `{pipeline}` and `{source}`.
    pub path: String,
}

/// A JSONL output resolved for one source.
#[derive(Debug, Clone, PartialEq)]
pub struct JsonlSettings {
    pub path: PathBuf,
}

impl Output for JsonlWriter {
    type Spec = JsonlSpec;
    type Settings = JsonlSettings;

    fn resolve(spec: &JsonlSpec, cx: &mut Resolve) -> Option<JsonlSettings> {
        let path = cx.path(&spec.path, "output path", false)?;
        Some(JsonlSettings { path })
    }

    fn describe(settings: &JsonlSettings) -> String {
        format!("jsonl {}", settings.path.display())
    }

    fn start(settings: JsonlSettings, cx: &OutputContext) -> Result<Self, OutputError> {
        Self::create(&settings.path, cx.keep_existing)
    }

    fn write(&mut self, frame: &Frame, cx: &OutputContext) -> Result<(), OutputError> {
        self.write_record(&cx.record(frame))
    }

    fn finish(self, _deadline: Option<std::time::Instant>) -> Result<u64, OutputError> {
        self.close()
    }

    fn file(&self) -> Option<&Path> {
        Some(&self.path)
    }
}

pub struct JsonlWriter {
    path: PathBuf,
    file: File,
    pub lines: u64,
}

impl JsonlWriter {
    /// `append`: keep what the file holds and add to it (a restarted service pipeline).
    pub fn create(path: &Path, append: bool) -> Result<Self, OutputError> {
        let file = if append {
            super::append_file(path)?
        } else {
            super::create_file(path)?
        };
        Ok(Self {
            path: path.to_path_buf(),
            file,
            lines: 0,
        })
    }

    /// One value as one whole line.
    pub fn write_record<T: serde::Serialize>(&mut self, record: &T) -> Result<(), OutputError> {
        let mut line = serde_json::to_string(record).map_err(|e| OutputError::Io {
            path: self.path.display().to_string(),
            message: e.to_string(),
        })?;
        line.push('\n');
        self.file
            .write_all(line.as_bytes())
            .map_err(|e| OutputError::Io {
                path: self.path.display().to_string(),
                message: e.to_string(),
            })?;
        self.lines += 1;
        Ok(())
    }

    /// Flush to disk; returns the lines written.
    pub fn close(self) -> Result<u64, OutputError> {
        self.file.sync_all().map_err(|e| OutputError::Io {
            path: self.path.display().to_string(),
            message: e.to_string(),
        })?;
        Ok(self.lines)
    }
}
