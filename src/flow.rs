//! How frames flow between parts, at the bottom of the layer list so that every component can
//! use it: the full-policy of an edge ([`WhenFull`]), the [`Sink`] a component hands its output
//! to (the runtime's edges implement it; a test or a tool can pass a closure), and the counters a
//! stage keeps ([`StageStats`]). The runtime builds the edges; components only see a `Sink`.

use std::sync::Mutex;
use std::sync::PoisonError;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::frame::Msg;

/// What a sender does when the edge is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// Wait for room: nothing is lost, the upstream slows down.
    Block,
    /// Drop the oldest queued item to make room: latency stays bounded, drops are counted.
    DropOldest,
}

/// Whoever took the messages is gone: the downstream has stopped.
#[derive(Debug, thiserror::Error)]
#[error("{0}: the downstream has stopped")]
pub struct SinkClosed(pub String);

/// Where a component hands what it produced. End of stream travels in-band as [`Msg::Eos`].
pub trait Sink<T>: Sync {
    /// Hand on one message (waiting or dropping by the sink's own full-policy); fails at once
    /// when the consumer is gone.
    fn send(&self, msg: Msg<T>) -> Result<(), SinkClosed>;
    /// `n` items were lost before they reached this sink (e.g. in a decoder's own queue); they
    /// count as the sink's drops.
    fn lost_before(&self, n: u64) {
        let _ = n;
    }
}

/// A closure is a sink (decoding into a `Vec` in a test, a tool collecting frames).
impl<T, F> Sink<T> for F
where
    F: Fn(Msg<T>) -> Result<(), SinkClosed> + Sync,
{
    fn send(&self, msg: Msg<T>) -> Result<(), SinkClosed> {
        self(msg)
    }
}

/// Where a stage (or an output) is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StageState {
    Running,
    /// Drained and ended.
    Finished,
    /// Returned an error or panicked; see its error.
    Failed,
    /// Made no progress for `queues.stall_timeout` with work waiting; given up on.
    Stalled,
}

impl StageState {
    pub const ALL: [StageState; 4] = [
        StageState::Running,
        StageState::Finished,
        StageState::Failed,
        StageState::Stalled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Finished => "finished",
            Self::Failed => "failed",
            Self::Stalled => "stalled",
        }
    }

    fn from_u8(v: u8) -> Self {
        Self::ALL
            .get(usize::from(v))
            .copied()
            .unwrap_or(Self::Failed)
    }
}

#[derive(Debug, Default)]
pub struct StageStats {
    pub frames: AtomicU64,
    pub busy_ns: AtomicU64,
    /// A [`StageState`] (0 = running).
    state: AtomicU8,
    /// Why it failed or stalled.
    error: Mutex<Option<String>>,
    /// For an output: the file it writes now (an MP4 continues in `NAME-N.mp4` after a restart
    /// or a size change).
    file: Mutex<Option<String>>,
}

impl StageStats {
    pub fn state(&self) -> StageState {
        StageState::from_u8(self.state.load(Ordering::Relaxed))
    }

    pub fn set_state(&self, s: StageState) {
        self.state.store(s as u8, Ordering::Relaxed);
    }

    pub fn set_error(&self, e: String) {
        *lock(&self.error) = Some(e);
    }

    /// Failed with `e` (a stalled stage stays stalled).
    pub fn fail(&self, e: String) {
        if self.state() != StageState::Stalled {
            self.set_state(StageState::Failed);
        }
        self.set_error(e);
    }

    pub fn error(&self) -> Option<String> {
        lock(&self.error).clone()
    }

    pub fn set_file(&self, f: String) {
        *lock(&self.file) = Some(f);
    }

    pub fn file(&self) -> Option<String> {
        lock(&self.file).clone()
    }

    pub fn record(&self, took: Duration) {
        self.frames.fetch_add(1, Ordering::Relaxed);
        self.busy_ns
            .fetch_add(took.as_nanos() as u64, Ordering::Relaxed);
    }

    /// Mean milliseconds per frame so far.
    pub fn mean_ms(&self) -> f64 {
        let n = self.frames.load(Ordering::Relaxed);
        if n == 0 {
            0.0
        } else {
            self.busy_ns.load(Ordering::Relaxed) as f64 / n as f64 / 1e6
        }
    }
}

/// A counters list stays usable even if a thread panicked while holding it.
pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
