//! How a stage thread fails. The supervisor keeps the whole chain as one line (`cause: its
//! cause: …`) for logs, `/pipelines` and the run report.

use crate::detect::DetectError;
use crate::output::OutputError;
use crate::preprocess::PreprocessError;

#[derive(Debug, thiserror::Error)]
pub enum StageError {
    /// `VIGIL_FAULT` asked for it.
    #[error("{0}")]
    Injected(String),
    #[error("frame {seq}")]
    Preprocess {
        seq: u64,
        #[source]
        source: PreprocessError,
    },
    #[error("detector")]
    Detect(#[source] DetectError),
    #[error("cannot start")]
    OutputStart(#[source] OutputError),
    #[error("writing")]
    Write(#[source] OutputError),
    /// An output failed after writing this many frames (its file is finalized up to there).
    #[error("after {written} frames")]
    After {
        written: u64,
        #[source]
        error: Box<StageError>,
    },
    /// An output failed, and finalizing what it had failed too.
    #[error("finalizing failed too ({finalizing})")]
    AndFinalize {
        finalizing: OutputError,
        #[source]
        error: Box<StageError>,
    },
    #[error("finalizing")]
    Finalize(#[source] OutputError),
    #[error("panicked: {0}")]
    Panicked(String),
    #[error("cannot start its thread")]
    Thread(#[source] std::io::Error),
}

/// `e` and its causes on one line: `outer: inner: innermost`.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chain_reads_outer_to_inner() {
        let e = StageError::After {
            written: 12,
            error: Box::new(StageError::Write(OutputError::Io {
                path: "out/a.jsonl".into(),
                message: "disk full".into(),
            })),
        };
        assert_eq!(
            chain(&e),
            "after 12 frames: writing: out/a.jsonl: disk full"
        );
    }
}
