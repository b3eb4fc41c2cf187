//! MQTT output: one JSON record per processed frame, or one per track event (`start` when a
//! track appears, `end` when it has been gone for `end_after` frames), published with QoS 1.
//!
//! Every record goes through a durable [`Outbox`] on disk first; a deliverer thread publishes from
//! it in order, a window of [`WINDOW`] at a time, and commits what the broker acknowledged
//! (PUBACK). When the broker is unreachable the outbox simply grows (up to its size limit, then the
//! oldest records are dropped and counted) and the deliverer reconnects with backoff; on each new
//! connection it publishes again from the first unacknowledged record, so nothing is lost and
//! order is kept, at the price of QoS-1 duplicates of the records that were in flight when the
//! connection broke (counted as `redelivered`). At end of stream the output waits up to `drain` for
//! the outbox to empty; what is left stays on disk and goes out after the next start.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rumqttc::{Client, Event, MqttOptions, Outgoing, Packet, QoS, RecvTimeoutError};
use serde::{Deserialize, Serialize};

use super::outbox::{Outbox, Pos};
use super::record::EventRecord;
use super::{Output, OutputContext, OutputError, OutputStats, Resolve};
use crate::flow::lock;
use crate::frame::Frame;
use crate::lifecycle::TrackLifecycle;
use crate::retry::{ReconnectPolicy, backoff};
use crate::units::{ByteSize, HumanDuration};

/// Broker of MQTT outputs when the file names none.
const DEFAULT_MQTT_BROKER: &str = "127.0.0.1:1883";
/// Outbox size limit of MQTT outputs when the file says nothing.
const DEFAULT_OUTBOX_MAX: u64 = 64 << 20;
const MIN_OUTBOX: u64 = 64 << 10;
/// How long MQTT outputs keep delivering after end of stream when the file says nothing.
const DEFAULT_MQTT_DRAIN: std::time::Duration = std::time::Duration::from_secs(10);

/// `host:port` or `host` (then `default_port`); IPv6 as `[::1]:1883`.
pub fn parse_host_port(s: &str, default_port: u16) -> Result<(String, u16), String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty address".into());
    }
    if s.contains("://") {
        return Err(format!("`{s}`: write host:port, without a scheme"));
    }
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("`{s}`: `[` without `]`"))?;
        (h.to_string(), after.strip_prefix(':'))
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (s.to_string(), None),
        }
    };
    let port = match port {
        None => default_port,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|&p| p > 0)
            .ok_or_else(|| format!("`{s}`: port `{p}` is not a number in 1..=65535"))?,
    };
    Ok((host, port))
}

fn default_end_after() -> u32 {
    30
}

/// `kind: mqtt`: MQTT, QoS 1: one record per frame or per track event. Records go through a
/// durable outbox on disk, so a broker outage loses nothing (up to the outbox's size) and order
/// is kept.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttSpec {
    /// Broker as `host:port` (port 1883 when left out). Default `127.0.0.1:1883`.
    #[serde(default)]
    pub broker: Option<String>,
    /// Topic; may use `{pipeline}`, `{source}` and, for events, `{kind}` (`enter`, `cross`, …).
    /// Default `vigil/{pipeline}/{source}` for frames, `vigil/{pipeline}/{source}/{kind}` for
    /// events.
    #[serde(default)]
    pub topic: Option<String>,
    /// `frames` (the JSONL record of every processed frame) or `events` (event records: `start`
    /// when a track appears, `end` when it is gone, and the source's zone and line events).
    /// Default `frames`.
    #[serde(default)]
    pub publish: Publish,
    /// MQTT client id. Default `vigil-{pipeline}-{source}`.
    #[serde(default)]
    pub client_id: Option<String>,
    /// User name, if the broker wants one (use `${VAR}` to keep it out of the file).
    #[serde(default)]
    pub username: Option<String>,
    /// Password (use `${VAR}`; it is never logged).
    #[serde(default)]
    pub password: Option<String>,
    /// Folder of the outbox; may use `{pipeline}` and `{source}`. Default
    /// `outbox/{pipeline}-{source}` beside the pipeline file.
    #[serde(default)]
    pub outbox: Option<String>,
    /// Largest size of the outbox on disk (e.g. `64MiB`); when full, the oldest records are
    /// dropped and counted. Default 64MiB.
    #[serde(default)]
    pub outbox_max: Option<ByteSize>,
    /// At end of stream or stop, how long to keep delivering what is left (the rest stays in
    /// the outbox for the next start). Default `10s`.
    #[serde(default)]
    pub drain: Option<HumanDuration>,
    /// Events mode: frames a track may be missing before its `end` event. Default 30.
    #[serde(default = "default_end_after")]
    pub end_after: u32,
}

impl Output for MqttWriter {
    type Spec = MqttSpec;
    type Settings = MqttSettings;

    fn resolve(spec: &MqttSpec, cx: &mut Resolve) -> Option<MqttSettings> {
        let broker = spec.broker.as_deref().unwrap_or(DEFAULT_MQTT_BROKER);
        let address =
            parse_host_port(broker, 1883).map_err(|m| cx.problem(format!("mqtt broker: {m}")));
        let outbox_max = spec.outbox_max.map_or(DEFAULT_OUTBOX_MAX, |b| b.0);
        if outbox_max < MIN_OUTBOX {
            cx.problem(format!(
                "mqtt outbox_max must be at least 64KiB, got {outbox_max} bytes"
            ));
        }
        if spec.end_after == 0 {
            cx.problem("mqtt end_after must be at least 1".into());
        }
        if let Some(t) = &spec.topic
            && (t.is_empty() || t.contains(['#', '+']))
        {
            cx.problem(format!(
                "mqtt topic `{t}` must be non-empty and without wildcards (# +)"
            ));
        }
        let default_topic = match spec.publish {
            Publish::Frames => "vigil/{pipeline}/{source}",
            Publish::Events => "vigil/{pipeline}/{source}/{kind}",
        };
        let topic = cx.expand_keeping(spec.topic.as_deref().unwrap_or(default_topic), &["kind"]);
        let client_id = cx.expand(
            spec.client_id
                .as_deref()
                .unwrap_or("vigil-{pipeline}-{source}"),
        );
        let outbox_at = spec
            .outbox
            .as_deref()
            .unwrap_or("outbox/{pipeline}-{source}");
        let outbox = cx.path(outbox_at, "mqtt outbox", true);
        let ((host, port), topic, client_id, outbox) = (address.ok()?, topic?, client_id?, outbox?);
        Some(MqttSettings {
            host,
            port,
            topic,
            client_id,
            username: spec.username.clone(),
            password: spec.password.clone(),
            publish: spec.publish,
            outbox,
            outbox_max,
            drain: spec.drain.map_or(DEFAULT_MQTT_DRAIN, |d| d.0),
            end_after: spec.end_after,
            keep_alive: Duration::from_secs(15),
        })
    }

    fn describe(settings: &MqttSettings) -> String {
        format!(
            "mqtt {}:{}/{}",
            settings.host, settings.port, settings.topic
        )
    }

    fn start(settings: MqttSettings, cx: &OutputContext) -> Result<Self, OutputError> {
        Self::open(settings, cx)
    }

    fn write(&mut self, frame: &Frame, cx: &OutputContext) -> Result<(), OutputError> {
        let Some(lifecycle) = self.lifecycle.as_mut() else {
            return self.append(&cx.record(frame));
        };
        let mut events = lifecycle.update(frame.seq, frame.stream_time_s(), &frame.detections);
        events.extend(frame.events.iter().cloned());
        let with_clock = !cx.deterministic;
        for r in EventRecord::of_events(events, frame, &cx.pipeline, &cx.classes, with_clock) {
            self.append(&r)?;
        }
        Ok(())
    }

    fn finish(self, deadline: Option<Instant>) -> Result<u64, OutputError> {
        self.finish_by(deadline)
    }

    fn stats(&self) -> Option<OutputStats> {
        Some(OutputStats::Mqtt(self.shared.stats.clone()))
    }
}

/// Counters of an MQTT output (see `output::mqtt`).
#[derive(Debug, Default)]
pub struct MqttStats {
    /// Connected to the broker now.
    pub connected: AtomicBool,
    /// Records written to the outbox.
    pub queued: AtomicU64,
    /// Records the broker acknowledged (QoS 1 PUBACK).
    pub delivered: AtomicU64,
    /// Publishes sent again after a connection loss (possible QoS-1 duplicates).
    pub redelivered: AtomicU64,
    /// Records dropped because the outbox reached its size limit.
    pub dropped: AtomicU64,
    /// Records in the outbox not yet acknowledged.
    pub backlog: AtomicU64,
    /// Bytes the outbox holds on disk.
    pub outbox_bytes: AtomicU64,
}

/// Records published and not yet acknowledged, at most.
pub const WINDOW: usize = 32;

/// What is published.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Publish {
    /// One record per processed frame (the JSONL record).
    #[default]
    Frames,
    /// One record when a track starts and one when it ends.
    Events,
}

/// Settings of one MQTT output, resolved. (`Debug` masks the password.)
#[derive(Clone, PartialEq)]
pub struct MqttSettings {
    pub host: String,
    pub port: u16,
    pub topic: String,
    pub client_id: String,
    pub username: Option<String>,
    pub password: Option<String>,
    pub publish: Publish,
    pub outbox: PathBuf,
    pub outbox_max: u64,
    pub drain: Duration,
    pub end_after: u32,
    pub keep_alive: Duration,
}

impl std::fmt::Debug for MqttSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttSettings")
            .field("broker", &format_args!("{}:{}", self.host, self.port))
            .field("topic", &self.topic)
            .field("client_id", &self.client_id)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("publish", &self.publish)
            .field("outbox", &self.outbox)
            .field("outbox_max", &self.outbox_max)
            .field("drain", &self.drain)
            .field("end_after", &self.end_after)
            .finish()
    }
}

struct Shared {
    outbox: Mutex<Outbox>,
    stats: Arc<MqttStats>,
    /// No more records will come; deliver what is left until `deadline`.
    closing: AtomicBool,
    deadline: Mutex<Option<Instant>>,
}

impl Shared {
    fn sync_stats(&self, ob: &Outbox) {
        self.stats.backlog.store(ob.backlog(), Ordering::Relaxed);
        self.stats.outbox_bytes.store(ob.bytes(), Ordering::Relaxed);
        self.stats.dropped.store(ob.dropped(), Ordering::Relaxed);
    }

    /// Closing, and either everything is delivered or the drain time is up.
    fn done(&self) -> bool {
        if !self.closing.load(Ordering::Relaxed) {
            return false;
        }
        lock(&self.outbox).backlog() == 0
            || lock(&self.deadline).is_some_and(|d| Instant::now() >= d)
    }
}

pub struct MqttWriter {
    settings: MqttSettings,
    shared: Arc<Shared>,
    deliverer: Option<std::thread::JoinHandle<()>>,
    /// Events mode: the tracks' start and end.
    lifecycle: Option<TrackLifecycle>,
    cx: OutputContext,
    /// Records written to the outbox.
    pub records: u64,
}

impl MqttWriter {
    /// Open the outbox (resuming any records a previous run left) and start delivering.
    pub fn open(settings: MqttSettings, cx: &OutputContext) -> Result<Self, OutputError> {
        let stats = Arc::new(MqttStats::default());
        let outbox =
            Outbox::open(&settings.outbox, settings.outbox_max).map_err(|e| OutputError::Io {
                path: settings.outbox.display().to_string(),
                message: e.message,
            })?;
        if outbox.backlog() > 0 {
            tracing::info!(topic = %settings.topic, backlog = outbox.backlog(), "resuming delivery of records left in the outbox");
        }
        let shared = Arc::new(Shared {
            outbox: Mutex::new(outbox),
            stats,
            closing: AtomicBool::new(false),
            deadline: Mutex::new(None),
        });
        shared.sync_stats(&lock(&shared.outbox));
        let d_shared = shared.clone();
        let d_settings = settings.clone();
        let deliverer = std::thread::Builder::new()
            .name("mqtt-deliver".into())
            .spawn(move || deliver(&d_shared, &d_settings))
            .map_err(|e| OutputError::Io {
                path: settings.topic.clone(),
                message: format!("cannot start the MQTT thread: {e}"),
            })?;
        Ok(Self {
            lifecycle: (settings.publish == Publish::Events)
                .then(|| TrackLifecycle::new(settings.end_after)),
            settings,
            shared,
            deliverer: Some(deliverer),
            cx: cx.clone(),
            records: 0,
        })
    }

    fn err(&self, m: impl std::fmt::Display) -> OutputError {
        OutputError::Io {
            path: self.settings.outbox.display().to_string(),
            message: m.to_string(),
        }
    }

    fn append<T: Serialize>(&mut self, v: &T) -> Result<(), OutputError> {
        let bytes = serde_json::to_vec(v).map_err(|e| self.err(e))?;
        let mut ob = lock(&self.shared.outbox);
        let dropped_before = ob.dropped();
        ob.append(&bytes).map_err(|e| self.err(e.message))?;
        self.shared.sync_stats(&ob);
        let (dropped, total) = (ob.dropped() - dropped_before, ob.dropped());
        drop(ob);
        if dropped > 0 {
            // once per dropped segment (a few per outbox size), not per record
            tracing::warn!(topic = %self.settings.topic, dropped, dropped_total = total,
                outbox = %self.settings.outbox.display(), outbox_max = self.settings.outbox_max,
                "outbox full: oldest undelivered records dropped");
        }
        self.shared.stats.queued.fetch_add(1, Ordering::Relaxed);
        self.records += 1;
        Ok(())
    }

    /// End of stream: end open tracks, deliver for at most `drain` and never past `stop_by` (a
    /// stop request's deadline), stop; what is left is durable in the outbox, not lost. Returns
    /// records queued.
    pub fn finish_by(mut self, stop_by: Option<Instant>) -> Result<u64, OutputError> {
        if let Some(mut lifecycle) = self.lifecycle.take() {
            let cx = &self.cx;
            let records: Vec<EventRecord> = lifecycle
                .finish()
                .into_iter()
                .map(|e| EventRecord::new(e, &cx.pipeline, &cx.source, &cx.classes))
                .collect();
            for r in records {
                self.append(&r)?;
            }
        }
        let own = Instant::now() + self.settings.drain;
        *lock(&self.shared.deadline) = Some(stop_by.map_or(own, |d| d.min(own)));
        self.shared.closing.store(true, Ordering::Relaxed);
        if let Some(d) = self.deliverer.take() {
            let _ = d.join();
        }
        let mut ob = lock(&self.shared.outbox);
        ob.sync().map_err(|e| self.err(e.message))?;
        let st = &self.shared.stats;
        tracing::info!(topic = %self.settings.topic,
            queued = st.queued.load(Ordering::Relaxed),
            delivered = st.delivered.load(Ordering::Relaxed),
            redelivered = st.redelivered.load(Ordering::Relaxed),
            dropped = ob.dropped(),
            "mqtt output finished");
        if ob.backlog() > 0 {
            tracing::warn!(topic = %self.settings.topic, left = ob.backlog(), outbox = %self.settings.outbox.display(), "broker did not take everything in time; the rest stays in the outbox for the next start");
        }
        Ok(self.records)
    }
}

impl Drop for MqttWriter {
    fn drop(&mut self) {
        // An output dropped without finish (error path): stop the deliverer at once.
        if let Some(d) = self.deliverer.take() {
            *lock(&self.shared.deadline) = Some(Instant::now());
            self.shared.closing.store(true, Ordering::Relaxed);
            let _ = d.join();
        }
    }
}

/// The deliverer: connect, publish from the outbox, commit acknowledged records, reconnect with
/// backoff when the connection breaks; until closing and done.
fn deliver(shared: &Shared, s: &MqttSettings) {
    let policy = ReconnectPolicy {
        initial: Duration::from_millis(250),
        max: Duration::from_secs(5),
        retries: None,
    };
    let mut failures = 0u32;
    let salt = s.client_id.len() as u64;
    while !shared.done() {
        match session(shared, s) {
            Ok(()) => return,
            Err((why, was_connected)) => {
                shared.stats.connected.store(false, Ordering::Relaxed);
                if was_connected {
                    failures = 0;
                    tracing::warn!(broker = %format!("{}:{}", s.host, s.port), "connection lost: {why}; records wait in the outbox");
                } else if failures == 0 {
                    tracing::warn!(broker = %format!("{}:{}", s.host, s.port), "cannot connect: {why}; records wait in the outbox");
                }
                failures += 1;
                let until = Instant::now() + backoff(&policy, failures, salt);
                while Instant::now() < until && !shared.done() {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
    }
}

struct InFlight {
    after: Pos,
    pkid: Option<u16>,
    acked: bool,
}

/// One connection's life. `Err((why, connected))` when it breaks.
#[allow(
    clippy::too_many_lines,
    reason = "the MQTT session (connect, publish window, acknowledgements) is one state machine in one loop"
)]
fn session(shared: &Shared, s: &MqttSettings) -> Result<(), (String, bool)> {
    let mut opts = MqttOptions::new(&s.client_id, &s.host, s.port);
    opts.set_keep_alive(s.keep_alive);
    // We redeliver from the outbox ourselves: a clean session, no client-side resend queue.
    opts.set_clean_session(true);
    opts.set_inflight(WINDOW as u16);
    opts.set_max_packet_size(4 << 20, 4 << 20);
    if let Some(u) = &s.username {
        opts.set_credentials(u, s.password.clone().unwrap_or_default());
    }
    let (client, mut conn) = Client::new(opts, WINDOW * 2);
    let mut sent: VecDeque<InFlight> = VecDeque::new();
    let mut next = lock(&shared.outbox).cursor();
    let mut connected = false;
    // Everything handed to the client and not acknowledged is published again on the next
    // connection: each is a possible duplicate at the receiver.
    let fail = |why: String, connected: bool, sent: &VecDeque<InFlight>| {
        shared
            .stats
            .redelivered
            .fetch_add(sent.len() as u64, Ordering::Relaxed);
        Err((why, connected))
    };
    loop {
        if connected && sent.len() < WINDOW {
            let batch = {
                let ob = lock(&shared.outbox);
                next = next.max(ob.cursor());
                ob.read(next, WINDOW - sent.len())
            };
            match batch {
                Ok(batch) => {
                    for (payload, after) in batch {
                        let topic = topic_for(&s.topic, &payload);
                        if let Err(e) = client.try_publish(topic, QoS::AtLeastOnce, false, payload)
                        {
                            return fail(format!("publish: {e}"), connected, &sent);
                        }
                        sent.push_back(InFlight {
                            after,
                            pkid: None,
                            acked: false,
                        });
                        next = after;
                    }
                }
                Err(e) => tracing::error!("{e}"),
            }
        }
        if sent.is_empty() && shared.done() {
            let _ = client.disconnect();
            // let the DISCONNECT go out
            let t = Instant::now();
            while t.elapsed() < Duration::from_millis(500) {
                match conn.recv_timeout(Duration::from_millis(50)) {
                    Ok(Ok(_)) | Err(RecvTimeoutError::Timeout) => {}
                    _ => break,
                }
            }
            return Ok(());
        }
        if !sent.is_empty() && shared.done() {
            // drain time is up with records in flight: they stay in the outbox
            return Ok(());
        }
        // Connected: wake often to publish new records. Connecting: give the TCP connect and
        // CONNECT/CONNACK their whole time (a timeout here abandons the attempt), as rumqttc's own
        // connection timeout (5 s) does.
        let wait = if connected {
            Duration::from_millis(20)
        } else {
            Duration::from_secs(5)
        };
        match conn.recv_timeout(wait) {
            Ok(Ok(Event::Incoming(Packet::ConnAck(ack)))) => {
                if ack.code != rumqttc::ConnectReturnCode::Success {
                    return fail(format!("broker refused: {:?}", ack.code), false, &sent);
                }
                connected = true;
                shared.stats.connected.store(true, Ordering::Relaxed);
                tracing::info!(broker = %format!("{}:{}", s.host, s.port), topic = %s.topic, backlog = lock(&shared.outbox).backlog(), "connected");
            }
            Ok(Ok(Event::Outgoing(Outgoing::Publish(pkid)))) => {
                if let Some(f) = sent.iter_mut().find(|f| f.pkid.is_none()) {
                    f.pkid = Some(pkid);
                }
            }
            Ok(Ok(Event::Incoming(Packet::PubAck(ack)))) => {
                if let Some(f) = sent
                    .iter_mut()
                    .find(|f| f.pkid == Some(ack.pkid) && !f.acked)
                {
                    f.acked = true;
                }
                let mut n = 0u64;
                let mut upto = None;
                while sent.front().is_some_and(|f| f.acked) {
                    if let Some(f) = sent.pop_front() {
                        upto = Some(f.after);
                        n += 1;
                    }
                }
                if let Some(p) = upto {
                    let mut ob = lock(&shared.outbox);
                    if let Err(e) = ob.commit(p, n) {
                        tracing::error!("{e}");
                    }
                    shared.sync_stats(&ob);
                    shared.stats.delivered.fetch_add(n, Ordering::Relaxed);
                }
            }
            Ok(Ok(_)) | Err(RecvTimeoutError::Timeout) => {}
            Ok(Err(e)) => return fail(e.to_string(), connected, &sent),
            Err(RecvTimeoutError::Disconnected) => {
                return fail("client closed".into(), connected, &sent);
            }
        }
    }
}

/// The topic of one record: the template with `{kind}` filled from the record's `kind` field
/// (frame records have none: `frame`).
fn topic_for(template: &str, payload: &[u8]) -> String {
    if !template.contains("{kind}") {
        return template.to_string();
    }
    #[derive(serde::Deserialize)]
    struct Kind {
        kind: Option<String>,
    }
    let kind = serde_json::from_slice::<Kind>(payload)
        .ok()
        .and_then(|k| k.kind)
        .unwrap_or_else(|| "frame".into());
    template.replace("{kind}", &kind)
}

#[cfg(test)]
mod tests {
    #[test]
    fn topics_name_the_event_kind() {
        let t = "vigil/p/cam/{kind}";
        assert_eq!(
            super::topic_for(t, br#"{"kind":"cross","seq":1}"#),
            "vigil/p/cam/cross"
        );
        assert_eq!(super::topic_for(t, br#"{"seq":1}"#), "vigil/p/cam/frame");
        assert_eq!(super::topic_for("a/b", br#"{"kind":"x"}"#), "a/b");
    }
}
