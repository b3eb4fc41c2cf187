//! Bounded edges between stages, each with an explicit policy for when it is full.
//!
//! `block` makes the sender wait (lossless: files, regression); `drop_oldest` throws away the oldest
//! queued item so that a live source never waits on a slow stage and latency stays bounded. End of
//! stream ([`Msg::Eos`]) is never dropped.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crossbeam_channel::{Receiver, RecvError, SendError, Sender, TrySendError};
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

/// Counters of one edge, shared by its ends and readable by metrics.
#[derive(Debug, Default)]
pub struct EdgeStats {
    /// Items offered by the sender (including those later dropped).
    pub sent: AtomicU64,
    /// Items thrown away by `drop_oldest`.
    pub dropped: AtomicU64,
    /// Items taken by the receiver.
    pub received: AtomicU64,
}

impl EdgeStats {
    /// Items waiting in the queue now (from the counters, so readable without the channel).
    pub fn depth(&self) -> u64 {
        let sent = self.sent.load(Ordering::Relaxed);
        let gone = self.dropped.load(Ordering::Relaxed) + self.received.load(Ordering::Relaxed);
        sent.saturating_sub(gone)
    }
}

/// The sending end of an edge.
#[derive(Debug)]
pub struct EdgeTx<T> {
    name: Arc<str>,
    tx: Sender<Msg<T>>,
    /// Used by `drop_oldest` to remove the head of the queue.
    drain: Receiver<Msg<T>>,
    when_full: WhenFull,
    stats: Arc<EdgeStats>,
}

impl<T> Clone for EdgeTx<T> {
    fn clone(&self) -> Self {
        Self {
            name: self.name.clone(),
            tx: self.tx.clone(),
            drain: self.drain.clone(),
            when_full: self.when_full,
            stats: self.stats.clone(),
        }
    }
}

/// The receiving end of an edge.
#[derive(Debug)]
pub struct EdgeRx<T> {
    rx: Receiver<Msg<T>>,
    stats: Arc<EdgeStats>,
}

/// The receiver is gone: the downstream stage has stopped.
#[derive(Debug, thiserror::Error)]
#[error("edge {0}: the downstream stage has stopped")]
pub struct Disconnected(pub Arc<str>);

/// A bounded edge of `capacity` (at least 1) named `name` (for logs and metrics).
pub fn edge<T>(name: &str, capacity: usize, when_full: WhenFull) -> (EdgeTx<T>, EdgeRx<T>) {
    edge_counted(name, capacity, when_full, Arc::new(EdgeStats::default()))
}

/// [`edge`] counting into `stats` (shared with whoever reads metrics).
pub fn edge_counted<T>(
    name: &str,
    capacity: usize,
    when_full: WhenFull,
    stats: Arc<EdgeStats>,
) -> (EdgeTx<T>, EdgeRx<T>) {
    let (tx, rx) = crossbeam_channel::bounded(capacity.max(1));
    (
        EdgeTx {
            name: name.into(),
            tx,
            drain: rx.clone(),
            when_full,
            stats: stats.clone(),
        },
        EdgeRx { rx, stats },
    )
}

impl<T> EdgeTx<T> {
    /// Send one message according to the edge's full-policy. `Eos` always blocks rather than drop.
    pub fn send(&self, msg: Msg<T>) -> Result<(), Disconnected> {
        let mut msg = msg;
        if self.when_full == WhenFull::DropOldest && matches!(msg, Msg::Item(_)) {
            loop {
                match self.tx.try_send(msg) {
                    Ok(()) => break,
                    Err(TrySendError::Disconnected(_)) => {
                        return Err(Disconnected(self.name.clone()));
                    }
                    Err(TrySendError::Full(back)) => {
                        msg = back;
                        match self.drain.try_recv() {
                            Ok(Msg::Item(_)) => {
                                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                                tracing::trace!(edge = %self.name, "full: dropped oldest");
                            }
                            // An end-of-stream is never dropped: put it back at the tail. Everything
                            // queued before it has already been taken, so its stream stays in order.
                            Ok(eos @ Msg::Eos(_)) => self.blocking_send(eos)?,
                            Err(_) => {}
                        }
                    }
                }
            }
        } else {
            self.blocking_send(msg)?;
        }
        self.stats.sent.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn blocking_send(&self, msg: Msg<T>) -> Result<(), Disconnected> {
        self.tx
            .send(msg)
            .map_err(|SendError(_)| Disconnected(self.name.clone()))
    }

    pub fn stats(&self) -> &Arc<EdgeStats> {
        &self.stats
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl<T> EdgeRx<T> {
    /// Wait for the next message; `Err` once every sender is gone and the queue is empty.
    pub fn recv(&self) -> Result<Msg<T>, RecvError> {
        let m = self.rx.recv()?;
        self.stats.received.fetch_add(1, Ordering::Relaxed);
        Ok(m)
    }

    /// Items waiting in the queue now.
    pub fn depth(&self) -> usize {
        self.rx.len()
    }

    pub fn stats(&self) -> &Arc<EdgeStats> {
        &self.stats
    }

    /// Take whatever is queued right now without waiting (for batching).
    pub fn try_recv(&self) -> Option<Msg<T>> {
        let m = self.rx.try_recv().ok()?;
        self.stats.received.fetch_add(1, Ordering::Relaxed);
        Some(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(rx: &EdgeRx<u32>) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(m) = rx.try_recv() {
            out.push(match m {
                Msg::Item(i) => i.to_string(),
                Msg::Eos(s) => format!("eos:{s}"),
            });
        }
        out
    }

    /// drop_oldest keeps the newest `capacity` items and counts exactly the ones it threw away.
    #[test]
    fn drop_oldest_keeps_newest_and_counts() {
        let (tx, rx) = edge::<u32>("t", 3, WhenFull::DropOldest);
        for i in 0..10 {
            tx.send(Msg::Item(i)).unwrap();
        }
        assert_eq!(items(&rx), ["7", "8", "9"]);
        assert_eq!(tx.stats().dropped.load(Ordering::Relaxed), 7);
        assert_eq!(tx.stats().sent.load(Ordering::Relaxed), 10);
    }

    /// An end-of-stream at the head of a full drop_oldest queue is moved, not lost.
    #[test]
    fn drop_oldest_never_drops_eos() {
        let (tx, rx) = edge::<u32>("t", 2, WhenFull::DropOldest);
        tx.send(Msg::Eos("a".into())).unwrap();
        tx.send(Msg::Item(1)).unwrap();
        tx.send(Msg::Item(2)).unwrap();
        let got = items(&rx);
        assert!(got.contains(&"eos:a".to_string()), "{got:?}");
        assert_eq!(got.last().map(String::as_str), Some("2"));
    }

    /// block waits for room instead of dropping.
    #[test]
    fn block_is_lossless() {
        let (tx, rx) = edge::<u32>("t", 1, WhenFull::Block);
        let h = std::thread::spawn(move || {
            for i in 0..100 {
                tx.send(Msg::Item(i)).unwrap();
            }
        });
        let mut got = Vec::new();
        while let Ok(Msg::Item(i)) = rx.recv() {
            got.push(i);
        }
        h.join().unwrap();
        assert_eq!(got, (0..100).collect::<Vec<_>>());
        assert_eq!(rx.stats().dropped.load(Ordering::Relaxed), 0);
    }
}
