//! JSON lines: one [`Record`] per frame. Each line is written whole with one `write` call, so a file
//! cut short by a crash still holds only complete lines (and SIGTERM drains before exit).

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::OutputError;
use super::record::Record;

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

    pub fn write(&mut self, record: &Record) -> Result<(), OutputError> {
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

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn finish(self) -> Result<u64, OutputError> {
        self.file.sync_all().map_err(|e| OutputError::Io {
            path: self.path.display().to_string(),
            message: e.to_string(),
        })?;
        Ok(self.lines)
    }
}
