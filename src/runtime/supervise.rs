//! Watching a running stage graph: every stage thread reports how it ended (a panic included) on
//! one channel; the supervisor turns that into the run's report, stops the sources when a stage
//! fails, finds stalled stages, and enforces the drain deadline after a stop request.
//!
//! A stage is **stalled** when frames wait on its input edge, it has taken none for
//! `stall_timeout`, and it is not itself waiting for room downstream (then the stage below is the
//! one to blame). A stalled stage is treated as failed: its edges are closed so that its
//! neighbours stop waiting for it, and its thread is left behind (a thread stuck in a system call
//! cannot be stopped from outside). `vigil serve`'s health uses the same definition (the stage's
//! state in [`StageStats`]).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use super::error::{StageError, chain};
use crate::ingest::IngestReport;
use crate::runtime::edge::{EdgeCloser, EdgeStats};
use crate::runtime::metrics::{StageState, StageStats};

/// How often the supervisor looks at the clock, the stop flag and the stall watchdog.
const TICK: Duration = Duration::from_millis(100);
/// After the drain deadline has closed every edge, how long stages get to finalize (MP4 index,
/// JSONL sync) before the run returns without them.
pub const FINALIZE_GRACE: Duration = Duration::from_millis(1500);

/// How a run's errors say that its stop request's drain deadline passed.
pub const UNDRAINED: &str = "did not drain within";

/// What a stage thread returns when it ends well.
#[derive(Debug)]
pub enum Outcome {
    /// A source's ingest (its report may still carry the source's error).
    Ingest(IngestReport),
    /// An inner stage (preprocess, detect, track) drained.
    Drained,
    /// An output finished: frames written.
    Wrote(u64),
}

/// What role a stage plays, for what its failure means to the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A source: its failure ends only its own stream.
    Ingest,
    /// Preprocess, detect, track: a failure ends the pipeline.
    Inner,
    /// An output: a failure stops that output only.
    Output,
}

/// The edges the stall watchdog looks at for one stage.
#[derive(Debug)]
pub struct Watch {
    pub input: Arc<EdgeStats>,
    pub outputs: Vec<Arc<EdgeStats>>,
    /// The stage's input and output edges, closed when it stalls.
    pub closers: Vec<EdgeCloser>,
}

/// One stage thread as the supervisor knows it.
#[derive(Debug)]
pub struct Slot {
    /// e.g. `detect`, `preprocess[cam]`, `output jsonl out/cam.jsonl`.
    pub name: String,
    pub role: Role,
    pub stats: Arc<StageStats>,
    pub watch: Option<Watch>,
    handle: Option<JoinHandle<()>>,
    /// Reported ended (or given up on: stalled, or past the drain deadline).
    ended: bool,
    /// Given up on: its thread is not joined.
    abandoned: bool,
    /// The stall watchdog's view: input items taken when it last moved, and since when.
    last_received: u64,
    since: Option<Instant>,
}

impl Slot {
    pub fn new(name: String, role: Role, stats: Arc<StageStats>, watch: Option<Watch>) -> Self {
        Self {
            name,
            role,
            stats,
            watch,
            handle: None,
            ended: false,
            abandoned: false,
            last_received: 0,
            since: None,
        }
    }
}

/// A stage thread's last word.
struct Ended {
    slot: usize,
    result: Result<Outcome, String>,
}

/// The message of a caught panic.
pub fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

/// Run `f`, turning a panic into an error that says so.
pub fn guarded<R>(f: impl FnOnce() -> Result<R, StageError>) -> Result<R, StageError> {
    catch_unwind(AssertUnwindSafe(f))
        .unwrap_or_else(|p| Err(StageError::Panicked(panic_message(p.as_ref()))))
}

/// Every stage thread of a run, and the channel they end on.
pub struct Stages {
    slots: Vec<Slot>,
    ended_tx: Sender<Ended>,
    ended_rx: Receiver<Ended>,
}

impl Default for Stages {
    fn default() -> Self {
        let (ended_tx, ended_rx) = crossbeam_channel::unbounded();
        Self {
            slots: Vec::new(),
            ended_tx,
            ended_rx,
        }
    }
}

impl Stages {
    /// Stages started so far.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Start `body` on a thread named `thread` for `slot`. A thread that cannot start drops `body`
    /// (its edges close, so the stages around it wind down) and is reported as failed.
    pub fn spawn<F>(&mut self, thread: String, slot: Slot, body: F)
    where
        F: FnOnce() -> Result<Outcome, StageError> + Send + 'static,
    {
        let index = self.slots.len();
        let tx = self.ended_tx.clone();
        let spawned = std::thread::Builder::new().name(thread).spawn(move || {
            let result = guarded(body).map_err(|e| chain(&e));
            let _ = tx.send(Ended {
                slot: index,
                result,
            });
        });
        let mut slot = slot;
        match spawned {
            Ok(h) => slot.handle = Some(h),
            Err(e) => {
                let _ = self.ended_tx.send(Ended {
                    slot: index,
                    result: Err(chain(&StageError::Thread(e))),
                });
            }
        }
        self.slots.push(slot);
    }
}

/// Everything the supervisor decides with.
pub struct Supervisor<'a> {
    pub stages: Stages,
    /// The caller's stop request (SIGTERM, a reload).
    pub stop_requested: &'a AtomicBool,
    /// One stop flag per source, polled by its ingest.
    pub source_stops: Vec<Arc<AtomicBool>>,
    /// Every edge of the graph, closed at the drain deadline.
    pub every_edge: Vec<EdgeCloser>,
    pub stall_timeout: Duration,
    pub drain_timeout: Duration,
    /// Set once the drain deadline is known (outputs that wait on a peer, MQTT, stop at it).
    pub drain_deadline: Arc<std::sync::Mutex<Option<Instant>>>,
}

/// How the run went, as the supervisor saw it.
#[derive(Debug, Default)]
pub struct Supervised {
    pub ingest: Vec<(usize, IngestReport)>,
    /// `(output slot name, frames written)`.
    pub wrote: Vec<(String, u64)>,
    /// Every error in the order it happened, each naming its stage.
    pub errors: Vec<String>,
}

impl Supervisor<'_> {
    /// Wait until every stage has ended or been given up on.
    pub fn run(mut self) -> Supervised {
        let mut out = Supervised::default();
        let mut drain_from: Option<Instant> = None;
        let mut closed_at: Option<Instant> = None;
        while self.stages.slots.iter().any(|s| !s.ended) {
            if let Ok(e) = self.stages.ended_rx.recv_timeout(TICK) {
                self.ended(e, &mut out);
            }
            while let Ok(e) = self.stages.ended_rx.try_recv() {
                self.ended(e, &mut out);
            }
            let now = Instant::now();
            if drain_from.is_none() && self.stop_requested.load(Ordering::Relaxed) {
                drain_from = Some(now);
                *crate::runtime::metrics::lock(&self.drain_deadline) =
                    Some(now + self.drain_timeout);
                self.stop_sources();
            }
            if let Some(t) = drain_from
                && closed_at.is_none()
                && now.duration_since(t) >= self.drain_timeout
            {
                closed_at = Some(now);
                self.close_everything(&mut out);
            }
            if closed_at.is_some_and(|t| now.duration_since(t) >= FINALIZE_GRACE) {
                self.abandon_the_rest(&mut out);
            }
            self.watch_stalls(now, &mut out);
        }
        for s in &mut self.stages.slots {
            if let Some(h) = s.handle.take().filter(|_| !s.abandoned) {
                let _ = h.join();
            }
        }
        out
    }

    fn stop_sources(&self) {
        for s in &self.source_stops {
            s.store(true, Ordering::Relaxed);
        }
    }

    fn ended(&mut self, e: Ended, out: &mut Supervised) {
        let Some(slot) = self.stages.slots.get_mut(e.slot) else {
            return;
        };
        if slot.ended {
            return; // given up on earlier; its late word changes nothing
        }
        slot.ended = true;
        match e.result {
            Ok(Outcome::Ingest(r)) => {
                match &r.error {
                    Some(err) => slot.stats.fail(err.to_string()),
                    None => slot.stats.set_state(StageState::Finished),
                }
                if let Some(err) = &r.error {
                    tracing::error!("{err}");
                    out.errors.push(err.to_string());
                }
                out.ingest.push((e.slot, r));
            }
            Ok(Outcome::Drained) => slot.stats.set_state(StageState::Finished),
            Ok(Outcome::Wrote(n)) => {
                slot.stats.set_state(StageState::Finished);
                out.wrote.push((slot.name.clone(), n));
            }
            Err(err) => {
                let msg = format!("{} failed: {err}", slot.name);
                tracing::error!("{msg}");
                slot.stats.fail(msg.clone());
                out.errors.push(msg);
                if slot.role == Role::Inner {
                    self.stop_sources();
                }
            }
        }
    }

    /// The drain deadline has passed: every edge closes, so every stage that is not stuck ends now
    /// and finalizes what it has.
    fn close_everything(&mut self, out: &mut Supervised) {
        let late: Vec<&str> = self
            .stages
            .slots
            .iter()
            .filter(|s| !s.ended)
            .map(|s| s.name.as_str())
            .collect();
        let msg = format!(
            "{UNDRAINED} {}: {}",
            humantime::format_duration(self.drain_timeout),
            late.join(", ")
        );
        tracing::error!("{msg}");
        out.errors.push(msg);
        for c in &self.every_edge {
            c.close();
        }
    }

    fn abandon_the_rest(&mut self, out: &mut Supervised) {
        for s in self.stages.slots.iter_mut().filter(|s| !s.ended) {
            s.ended = true;
            s.abandoned = true;
            let msg = format!("{} did not finish: left behind", s.name);
            tracing::error!("{msg}");
            s.stats.fail(msg.clone());
            out.errors.push(msg);
        }
    }

    fn watch_stalls(&mut self, now: Instant, out: &mut Supervised) {
        let timeout = self.stall_timeout;
        let mut stalled_inner = false;
        for s in self.stages.slots.iter_mut().filter(|s| !s.ended) {
            let Some(w) = &s.watch else { continue };
            let received = w.input.received.load(Ordering::Relaxed);
            let waiting_downstream = w.outputs.iter().any(|o| o.has_waiting_sender());
            if received != s.last_received || w.input.depth() == 0 || waiting_downstream {
                s.last_received = received;
                s.since = Some(now);
                continue;
            }
            let since = *s.since.get_or_insert(now);
            if now.duration_since(since) < timeout {
                continue;
            }
            let msg = format!(
                "{} stalled: no progress for {} with {} item(s) waiting",
                s.name,
                humantime::format_duration(timeout),
                w.input.depth()
            );
            tracing::error!("{msg}");
            s.stats.set_state(StageState::Stalled);
            s.stats.set_error(msg.clone());
            out.errors.push(msg);
            for c in &w.closers {
                c.close();
            }
            s.ended = true;
            s.abandoned = true;
            stalled_inner |= s.role == Role::Inner;
        }
        if stalled_inner {
            self.stop_sources();
        }
    }
}
