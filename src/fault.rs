//! Fault injection, a debugging aid: `VIGIL_FAULT=STAGE@N[:KIND]` makes one stage fail at its N-th
//! frame (0-based), so that what a real failure does to a run — which stage is named, what drains,
//! which files stay playable — can be seen on demand. The fault tests in `tests/it/faults.rs` use
//! it; nobody else should.
//!
//! - `STAGE`: `ingest`, `preprocess`, `detect`, `track`, or an output: `mp4`, `jsonl`, `mqtt`, `rtsp`.
//! - `KIND`: `error` (default: the stage returns an error), `panic`, or `stall` (the stage stops
//!   making progress for ever, as a stage stuck in a system call would).
//!
//! Unset (the normal case), every check is one load of an initialised `OnceLock`.

use std::sync::OnceLock;
use std::time::Duration;

/// The environment variable read once per process.
pub const ENV: &str = "VIGIL_FAULT";

/// What the injected fault does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    Error,
    Panic,
    Stall,
}

/// One injected fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    pub stage: String,
    pub at_frame: u64,
    pub kind: FaultKind,
}

/// `VIGIL_FAULT` could not be understood.
#[derive(Debug, thiserror::Error)]
#[error("{ENV}=`{0}`: expected STAGE@FRAME[:error|panic|stall], e.g. detect@20:panic")]
pub struct BadFault(String);

impl std::str::FromStr for Fault {
    type Err = BadFault;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadFault(s.to_string());
        let (stage, rest) = s.split_once('@').ok_or_else(bad)?;
        let (n, kind) = rest.split_once(':').unwrap_or((rest, "error"));
        let kind = match kind {
            "error" => FaultKind::Error,
            "panic" => FaultKind::Panic,
            "stall" => FaultKind::Stall,
            _ => return Err(bad()),
        };
        // the stage names live above this layer (outputs register theirs): the runtime warns
        // about a name no stage has
        let identifier = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        };
        if !identifier(stage) {
            return Err(bad());
        }
        Ok(Self {
            stage: stage.to_string(),
            at_frame: n.parse().map_err(|_| bad())?,
            kind,
        })
    }
}

static FAULT: OnceLock<Option<Fault>> = OnceLock::new();

/// The fault of this process, if `VIGIL_FAULT` asks for one (a bad value is logged and ignored).
fn configured() -> Option<&'static Fault> {
    FAULT
        .get_or_init(|| {
            let v = std::env::var(ENV).ok()?;
            match v.parse() {
                Ok(f) => {
                    tracing::warn!("fault injection on: {v}");
                    Some(f)
                }
                Err(e) => {
                    tracing::error!("{e}");
                    None
                }
            }
        })
        .as_ref()
}

/// The stage the configured fault is for, if there is one.
pub fn target() -> Option<&'static str> {
    configured().map(|f| f.stage.as_str())
}

/// Called by `stage` before it handles frame `seq`: `Err` (or a panic, or no return) when the
/// configured fault is due.
pub fn check(stage: &str, seq: u64) -> Result<(), String> {
    let Some(f) = configured() else {
        return Ok(());
    };
    if f.stage != stage || f.at_frame != seq {
        return Ok(());
    }
    match f.kind {
        FaultKind::Error => Err(format!("injected fault ({ENV}) at frame {seq}")),
        FaultKind::Panic => panic!("injected panic ({ENV}) at frame {seq}"),
        FaultKind::Stall => loop {
            std::thread::sleep(Duration::from_secs(3600));
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stage_frame_and_kind() {
        let f: Fault = "detect@20:panic".parse().unwrap();
        assert_eq!(
            f,
            Fault {
                stage: "detect".into(),
                at_frame: 20,
                kind: FaultKind::Panic
            }
        );
        assert_eq!("jsonl@3".parse::<Fault>().unwrap().kind, FaultKind::Error);
        assert!("no where@3".parse::<Fault>().is_err());
        assert!("@3".parse::<Fault>().is_err());
        assert!("detect@x".parse::<Fault>().is_err());
        assert!("detect@1:explode".parse::<Fault>().is_err());
    }
}
