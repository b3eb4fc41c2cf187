//! Pipeline files: YAML → [`spec`] (what the person wrote) → [`plan::Plan`] (validated, resolved).
//! Every problem is collected and reported at once as `file:line:column: message`.

pub mod plan;
pub mod spec;

use std::fmt;
use std::path::{Path, PathBuf};

pub use plan::Plan;

/// One problem in a pipeline file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: PathBuf,
    /// 1-based; 0 when the problem has no place (the file cannot be read).
    pub line: u64,
    pub column: u64,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file.display(), self.message)
        } else {
            write!(
                f,
                "{}:{}:{}: {}",
                self.file.display(),
                self.line,
                self.column,
                self.message
            )
        }
    }
}

/// A pipeline file that cannot run, with every problem found.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

/// Parse options: no snippets in messages (we print `file:line:col`), budgets against hostile input.
fn options() -> serde_saphyr::Options {
    serde_saphyr::options! { with_snippet: false }
}

/// Read, parse and validate a pipeline file.
pub fn load(path: &Path) -> Result<Plan, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        problems: vec![Problem {
            file: path.to_path_buf(),
            line: 0,
            column: 0,
            message: format!("cannot read pipeline file: {e}"),
        }],
    })?;
    let spec: spec::PipelineSpec =
        serde_saphyr::from_str_with_options(&text, options()).map_err(|e| {
            let (line, column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
            ConfigError {
                problems: vec![Problem {
                    file: path.to_path_buf(),
                    line,
                    column,
                    message: strip_location(&e.to_string()),
                }],
            }
        })?;
    plan::resolve(path, spec)
}

/// serde-saphyr's message may repeat the place (`… at line 3 column 5`); we print it in front.
fn strip_location(msg: &str) -> String {
    let first = msg.lines().next().unwrap_or(msg).trim();
    let first = first.strip_prefix("error: ").unwrap_or(first);
    match first.rfind(" at line ") {
        Some(i) => first[..i].to_string(),
        None => first.to_string(),
    }
}
