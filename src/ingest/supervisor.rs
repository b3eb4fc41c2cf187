//! Keeps a live source alive: connect, run, and on an error, a stall or an end of stream, back off
//! (exponentially, with jitter, up to a cap) and connect again — for ever, or until a retry budget
//! is spent. A source that delivered frames starts its backoff afresh. Every state change is
//! logged with the source id (and never its credentials).
//!
//! ```text
//! connecting ──frames──► running ──error / EOS / no frame for `stall`──► backoff ──► connecting
//!      │                                                                   │
//!      └────────────── retries spent ──► failed            stop ──► stopped ◄┘
//! ```

use std::sync::atomic::{AtomicU8, Ordering};

pub use crate::retry::{ReconnectPolicy, backoff, sleep_unless_stopped};

/// Where a source is in its life (readable by metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum SourceState {
    Connecting = 0,
    Running = 1,
    Backoff = 2,
    Failed = 3,
    Stopped = 4,
}

impl SourceState {
    /// Its name in `/pipelines` and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connecting => "connecting",
            Self::Running => "running",
            Self::Backoff => "backoff",
            Self::Failed => "failed",
            Self::Stopped => "stopped",
        }
    }

    pub fn from_u8(v: u8) -> Self {
        match v {
            0 => Self::Connecting,
            1 => Self::Running,
            2 => Self::Backoff,
            3 => Self::Failed,
            _ => Self::Stopped,
        }
    }
}

/// A source's current state, shared with whoever watches it.
#[derive(Debug, Default)]
pub struct StateCell(AtomicU8);

impl StateCell {
    pub fn set(&self, s: SourceState) {
        self.0.store(s as u8, Ordering::Relaxed);
    }
    pub fn get(&self) -> SourceState {
        SourceState::from_u8(self.0.load(Ordering::Relaxed))
    }
}
