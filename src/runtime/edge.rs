//! Bounded edges between stages, each with an explicit policy for when it is full.
//!
//! `block` makes the sender wait (lossless: files, regression); `drop_oldest` throws away the oldest
//! queued item so that a live source never waits on a slow stage and latency stays bounded. End of
//! stream ([`Msg::Eos`]) is never dropped.
//!
//! No end can wait for ever on the other: when the receiver goes (its stage returned, failed or
//! panicked), every send fails at once, blocked ones included; when the runtime *closes* an edge
//! (a stalled stage, a drain deadline) both ends fail at once. Closing is a second crossbeam
//! channel that never carries a message: dropping its only sender wakes everyone selecting on it.
//! `drop_oldest` removes the head through the receiver's own handle, lent to the senders only while
//! the receiver lives, so a sender never keeps a dead edge open.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crossbeam_channel::{Receiver, Sender, TryRecvError, TrySendError, select};

use crate::flow::{Sink, SinkClosed};
use crate::frame::Msg;

pub use crate::flow::WhenFull;

/// Counters of one edge, shared by its ends and readable by metrics and the stall watchdog.
#[derive(Debug, Default)]
pub struct EdgeStats {
    /// Items offered by the sender (including those later dropped).
    pub sent: AtomicU64,
    /// Items thrown away by `drop_oldest`.
    pub dropped: AtomicU64,
    /// Items taken by the receiver.
    pub received: AtomicU64,
    /// Senders waiting for room right now (a stage blocked on its downstream is not stalled itself).
    pub waiting_senders: AtomicU64,
    /// The receiver is gone or the runtime closed the edge.
    pub closed: AtomicBool,
}

impl EdgeStats {
    /// Items waiting in the queue now (from the counters, so readable without the channel).
    pub fn depth(&self) -> u64 {
        let sent = self.sent.load(Ordering::Relaxed);
        let gone = self.dropped.load(Ordering::Relaxed) + self.received.load(Ordering::Relaxed);
        sent.saturating_sub(gone)
    }

    /// Some sender is blocked on this edge being full.
    pub fn has_waiting_sender(&self) -> bool {
        self.waiting_senders.load(Ordering::Relaxed) > 0
    }
}

/// What both ends share.
struct Shared<T> {
    name: Arc<str>,
    when_full: WhenFull,
    stats: Arc<EdgeStats>,
    /// Dropping this sender closes the edge: everyone selecting on `closed` wakes.
    closer: Mutex<Option<Sender<()>>>,
    /// `drop_oldest`: the receiver's handle, lent to senders to remove the head of the queue; taken
    /// away when the receiver goes, so the channel then disconnects.
    drain: Mutex<Option<Receiver<Msg<T>>>>,
}

impl<T> Shared<T> {
    fn close(&self) {
        self.stats.closed.store(true, Ordering::Relaxed);
        drop(
            self.closer
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
    }
}

/// A handle that closes an edge from outside (the runtime's watchdog and drain deadline).
pub struct EdgeCloser(Arc<dyn Close + Send + Sync>);

impl std::fmt::Debug for EdgeCloser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EdgeCloser")
    }
}

trait Close {
    fn close(&self);
}

impl<T> Close for Shared<T> {
    fn close(&self) {
        Shared::close(self);
    }
}

impl Clone for EdgeCloser {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl EdgeCloser {
    /// Both ends fail from now on; whatever is queued is abandoned.
    pub fn close(&self) {
        self.0.close();
    }
}

/// The sending end of an edge.
pub struct EdgeTx<T> {
    shared: Arc<Shared<T>>,
    tx: Sender<Msg<T>>,
    closed: Receiver<()>,
}

impl<T> Clone for EdgeTx<T> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
            tx: self.tx.clone(),
            closed: self.closed.clone(),
        }
    }
}

/// The receiving end of an edge. Dropping it closes the edge.
pub struct EdgeRx<T> {
    shared: Arc<Shared<T>>,
    rx: Receiver<Msg<T>>,
    closed: Receiver<()>,
}

impl<T> std::fmt::Debug for EdgeTx<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EdgeTx({})", self.shared.name)
    }
}

impl<T> std::fmt::Debug for EdgeRx<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EdgeRx({})", self.shared.name)
    }
}

impl<T> Drop for EdgeRx<T> {
    fn drop(&mut self) {
        self.shared.close();
        drop(
            self.shared
                .drain
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
    }
}

/// The receiver is gone or the edge was closed: the downstream stage has stopped.
#[derive(Debug, thiserror::Error)]
#[error("edge {0}: the downstream stage has stopped")]
pub struct Disconnected(pub Arc<str>);

/// Every sender is gone and the queue is empty, or the edge was closed.
#[derive(Debug, thiserror::Error)]
#[error("the upstream has ended")]
pub struct Ended;

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
    let (closer, closed) = crossbeam_channel::bounded::<()>(0);
    let drain = (when_full == WhenFull::DropOldest).then(|| rx.clone());
    let shared = Arc::new(Shared {
        name: name.into(),
        when_full,
        stats,
        closer: Mutex::new(Some(closer)),
        drain: Mutex::new(drain),
    });
    (
        EdgeTx {
            shared: shared.clone(),
            tx,
            closed: closed.clone(),
        },
        EdgeRx { shared, rx, closed },
    )
}

impl<T: Send> Sink<T> for EdgeTx<T> {
    fn send(&self, msg: Msg<T>) -> Result<(), SinkClosed> {
        EdgeTx::send(self, msg).map_err(|d| SinkClosed(format!("edge {}", d.0)))
    }

    fn lost_before(&self, n: u64) {
        self.shared.stats.dropped.fetch_add(n, Ordering::Relaxed);
    }
}

impl<T> EdgeTx<T> {
    /// Send one message according to the edge's full-policy. `Eos` is never dropped. Fails at once
    /// when the receiver is gone or the edge is closed, also while waiting for room.
    pub fn send(&self, msg: Msg<T>) -> Result<(), Disconnected> {
        if self.is_closed() {
            return Err(self.disconnected());
        }
        if self.shared.when_full == WhenFull::DropOldest && matches!(msg, Msg::Item(_)) {
            self.send_dropping_oldest(msg)?;
        } else {
            self.send_blocking(msg)?;
        }
        self.shared.stats.sent.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn disconnected(&self) -> Disconnected {
        Disconnected(self.shared.name.clone())
    }

    fn is_closed(&self) -> bool {
        self.shared.stats.closed.load(Ordering::Relaxed)
    }

    fn send_blocking(&self, msg: Msg<T>) -> Result<(), Disconnected> {
        let msg = match self.tx.try_send(msg) {
            Ok(()) => return Ok(()),
            Err(TrySendError::Disconnected(_)) => return Err(self.disconnected()),
            Err(TrySendError::Full(back)) => back,
        };
        let waiting = &self.shared.stats.waiting_senders;
        waiting.fetch_add(1, Ordering::Relaxed);
        let sent = select! {
            send(self.tx, msg) -> r => r.is_ok(),
            recv(self.closed) -> _ => false,
        };
        waiting.fetch_sub(1, Ordering::Relaxed);
        if sent {
            Ok(())
        } else {
            Err(self.disconnected())
        }
    }

    fn send_dropping_oldest(&self, mut msg: Msg<T>) -> Result<(), Disconnected> {
        loop {
            match self.tx.try_send(msg) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Disconnected(_)) => return Err(self.disconnected()),
                Err(TrySendError::Full(back)) => msg = back,
            }
            if self.is_closed() {
                return Err(self.disconnected());
            }
            // Take the head through the receiver's handle; release the lock before any wait.
            let head = {
                let drain = self
                    .shared
                    .drain
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                match drain.as_ref() {
                    None => return Err(self.disconnected()),
                    Some(rx) => rx.try_recv(),
                }
            };
            match head {
                Ok(Msg::Item(_)) => {
                    self.shared.stats.dropped.fetch_add(1, Ordering::Relaxed);
                    tracing::trace!(edge = %self.shared.name, "full: dropped oldest");
                }
                // An end-of-stream is never dropped: put it back at the tail. Everything queued
                // before it has already been taken, so its stream stays in order.
                Ok(eos @ Msg::Eos(_)) => self.send_blocking(eos)?,
                Err(_) => {}
            }
        }
    }

    pub fn stats(&self) -> &Arc<EdgeStats> {
        &self.shared.stats
    }

    /// A handle to close this edge from outside.
    pub fn closer(&self) -> EdgeCloser
    where
        T: Send + 'static,
    {
        EdgeCloser(self.shared.clone())
    }
}

impl<T> EdgeRx<T> {
    /// Wait for the next message; `Err` once every sender is gone and the queue is empty, or at
    /// once when the edge is closed (what is queued is then abandoned).
    pub fn recv(&self) -> Result<Msg<T>, Ended> {
        let msg = select! {
            recv(self.rx) -> m => m.map_err(|_| Ended)?,
            recv(self.closed) -> _ => return Err(Ended),
        };
        self.shared.stats.received.fetch_add(1, Ordering::Relaxed);
        Ok(msg)
    }

    pub fn stats(&self) -> &Arc<EdgeStats> {
        &self.shared.stats
    }

    /// The next message if one arrives before `deadline` (for batching); `None` at the deadline,
    /// once every sender is gone, or when the edge is closed.
    pub fn recv_until(&self, deadline: std::time::Instant) -> Option<Msg<T>> {
        let msg = select! {
            recv(self.rx) -> m => m.ok()?,
            recv(self.closed) -> _ => return None,
            default(deadline.saturating_duration_since(std::time::Instant::now())) => return None,
        };
        self.shared.stats.received.fetch_add(1, Ordering::Relaxed);
        Some(msg)
    }

    /// Take whatever is queued right now without waiting (for batching).
    pub fn try_recv(&self) -> Option<Msg<T>> {
        if self.shared.stats.closed.load(Ordering::Relaxed) {
            return None;
        }
        let m = match self.rx.try_recv() {
            Ok(m) => m,
            Err(TryRecvError::Empty | TryRecvError::Disconnected) => return None,
        };
        self.shared.stats.received.fetch_add(1, Ordering::Relaxed);
        Some(m)
    }

    /// A handle to close this edge from outside.
    pub fn closer(&self) -> EdgeCloser
    where
        T: Send + 'static,
    {
        EdgeCloser(self.shared.clone())
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

    /// Regression (nothing-hangs issue): a sender blocked on a full edge wakes with an error as
    /// soon as the receiver goes (a stage that returned, failed or panicked).
    #[test]
    fn blocked_sender_fails_when_the_receiver_goes() {
        for policy in [WhenFull::Block, WhenFull::DropOldest] {
            let (tx, rx) = edge::<u32>("t", 1, policy);
            tx.send(Msg::Item(0)).unwrap();
            let h = std::thread::spawn(move || {
                // a blocking send of EOS (never dropped), on both policies
                tx.send(Msg::Eos("s".into()))
            });
            std::thread::sleep(std::time::Duration::from_millis(50));
            drop(rx);
            assert!(h.join().unwrap().is_err(), "{policy:?}");
        }
    }

    /// drop_oldest keeps no receiver of its own: once the receiver is gone, sends fail.
    #[test]
    fn drop_oldest_send_fails_after_the_receiver_goes() {
        let (tx, rx) = edge::<u32>("t", 2, WhenFull::DropOldest);
        tx.send(Msg::Item(1)).unwrap();
        drop(rx);
        assert!(tx.send(Msg::Item(2)).is_err());
        assert!(tx.send(Msg::Item(3)).is_err());
    }

    /// Closing from outside wakes a blocked sender and a waiting receiver alike.
    #[test]
    fn close_wakes_both_ends() {
        let (tx, rx) = edge::<u32>("t", 1, WhenFull::Block);
        let (tx2, rx2) = edge::<u32>("u", 1, WhenFull::Block);
        tx.send(Msg::Item(0)).unwrap();
        let closer = tx.closer();
        let closer2 = rx2.closer();
        let sender = std::thread::spawn(move || tx.send(Msg::Item(1)));
        let receiver = std::thread::spawn(move || rx2.recv().is_err());
        std::thread::sleep(std::time::Duration::from_millis(50));
        closer.close();
        closer2.close();
        assert!(sender.join().unwrap().is_err());
        assert!(receiver.join().unwrap());
        assert!(rx.stats().closed.load(Ordering::Relaxed));
        drop(tx2);
    }

    /// The receiver sees every sender gone once the queue is empty (end without EOS).
    #[test]
    fn receiver_ends_when_every_sender_is_gone() {
        let (tx, rx) = edge::<u32>("t", 4, WhenFull::Block);
        tx.send(Msg::Item(7)).unwrap();
        drop(tx);
        assert!(matches!(rx.recv(), Ok(Msg::Item(7))));
        assert!(rx.recv().is_err());
    }
}
