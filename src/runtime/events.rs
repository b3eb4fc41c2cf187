//! Where the events of running pipelines gather for the service: the most recent ones (for
//! `/events`), live subscribers (`/events/stream`, server-sent events), and counters per zone and
//! line (for `/metrics`). Publishing never waits: a subscriber that falls behind is dropped.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use crossbeam_channel::{Receiver, Sender, TrySendError};

use crate::event::EventKind;
use crate::flow::lock;
use crate::output::record::EventRecord;

/// Events kept for `/events`.
const RECENT: usize = 1000;
/// Events a subscriber may have waiting before it is dropped.
const SUBSCRIBER_QUEUE: usize = 1024;
/// Live subscribers at most (each holds a thread and a socket).
pub const MAX_SUBSCRIBERS: usize = 32;

/// `(pipeline, source, region, kind, direction, class)`.
pub type EventKey = (String, String, String, String, String, String);
/// `(pipeline, source, zone, class)`.
pub type ZoneKey = (String, String, String, String);

/// One event as the hub keeps it: its JSON line, and its number (ids for SSE).
#[derive(Debug, Clone)]
pub struct Published {
    pub id: u64,
    pub json: Arc<str>,
}

#[derive(Debug, Default)]
struct Inner {
    next_id: u64,
    recent: VecDeque<Published>,
    subscribers: Vec<(Sender<Published>, Arc<AtomicBool>)>,
    counters: BTreeMap<EventKey, u64>,
    occupancy: BTreeMap<ZoneKey, u64>,
}

/// The events of every pipeline of a process.
#[derive(Debug, Default)]
pub struct EventHub {
    inner: Mutex<Inner>,
}

impl EventHub {
    /// Record `e`: kept, counted, and sent to every subscriber that keeps up.
    pub fn publish(&self, e: &EventRecord) {
        let Ok(json) = serde_json::to_string(e) else {
            return;
        };
        let mut g = lock(&self.inner);
        g.next_id += 1;
        let p = Published {
            id: g.next_id,
            json: json.into(),
        };
        if g.recent.len() == RECENT {
            g.recent.pop_front();
        }
        g.recent.push_back(p.clone());
        g.subscribers.retain(|(s, alive)| {
            alive.load(Ordering::Relaxed)
                && match s.try_send(p.clone()) {
                    Ok(()) => true,
                    Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => false,
                }
        });
        count(&mut g, e);
    }

    /// The last `n` events, oldest first, each with its id.
    pub fn recent(&self, n: usize) -> Vec<Published> {
        let g = lock(&self.inner);
        g.recent
            .iter()
            .skip(g.recent.len().saturating_sub(n))
            .cloned()
            .collect()
    }

    /// A live feed of the events from now on; `None` when [`MAX_SUBSCRIBERS`] are listening.
    pub fn subscribe(&self) -> Option<Subscription> {
        let mut g = lock(&self.inner);
        g.subscribers
            .retain(|(_, alive)| alive.load(Ordering::Relaxed));
        if g.subscribers.len() >= MAX_SUBSCRIBERS {
            return None;
        }
        let (tx, rx) = crossbeam_channel::bounded(SUBSCRIBER_QUEUE);
        let alive = Arc::new(AtomicBool::new(true));
        g.subscribers.push((tx, alive.clone()));
        Some(Subscription { rx, alive })
    }

    /// Events so far, by pipeline, source, region, kind, direction and class.
    pub fn counters(&self) -> BTreeMap<EventKey, u64> {
        lock(&self.inner).counters.clone()
    }

    /// Confirmed tracks in each zone now, by class.
    pub fn occupancy(&self) -> BTreeMap<ZoneKey, u64> {
        lock(&self.inner).occupancy.clone()
    }
}

/// A live feed of events; dropping it unsubscribes.
#[derive(Debug)]
pub struct Subscription {
    pub rx: Receiver<Published>,
    alive: Arc<AtomicBool>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.alive.store(false, Ordering::Relaxed);
    }
}

/// Count one event (counts are per interval and have their own events: not counted).
fn count(g: &mut Inner, e: &EventRecord) {
    let ev = &e.event;
    if ev.kind == EventKind::Count {
        return;
    }
    let class = e.class.clone().unwrap_or_default();
    let key = (
        e.pipeline.clone(),
        e.source.clone(),
        ev.region.clone(),
        ev.kind.as_str().to_string(),
        ev.direction.clone().unwrap_or_default(),
        class.clone(),
    );
    *g.counters.entry(key).or_insert(0) += 1;
    let zone = (
        e.pipeline.clone(),
        e.source.clone(),
        ev.region.clone(),
        class,
    );
    match ev.kind {
        EventKind::Enter => *g.occupancy.entry(zone).or_insert(0) += 1,
        EventKind::Exit => {
            if let Some(n) = g.occupancy.get_mut(&zone) {
                *n = n.saturating_sub(1);
            }
        }
        _ => {}
    }
}
