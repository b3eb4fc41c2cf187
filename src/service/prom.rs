//! `/metrics`: the live counters of every pipeline in Prometheus text format (0.0.4), encoded by
//! `prometheus-client` from a snapshot taken at scrape time (a custom collector: the counters live
//! in the pipelines' own atomics, so nothing is copied on the hot path).
//!
//! | metric | labels | kind |
//! |---|---|---|
//! | `vigil_pipeline_up` | pipeline, file | gauge (1 running) |
//! | `vigil_pipeline_starts_total` | pipeline, file | counter |
//! | `vigil_config_reloads_total`, `vigil_config_reload_failures_total` | | counter |
//! | `vigil_source_frames_in_total`, `…_processed_total`, `…_dropped_total`, `vigil_source_reconnects_total` | pipeline, source | counter |
//! | `vigil_source_state` | pipeline, source, state | gauge (1 for the current state) |
//! | `vigil_capture_to_output_seconds` | pipeline, source | histogram |
//! | `vigil_stage_frames_total`, `vigil_stage_busy_seconds_total` | pipeline, stage | counter |
//! | `vigil_stage_seconds_per_frame` | pipeline, stage | gauge (mean) |
//! | `vigil_stage_state` | pipeline, stage, state | gauge (1 for the current state; outputs are stages `output …`) |
//! | `vigil_edge_depth` | pipeline, edge | gauge |
//! | `vigil_edge_sent_total`, `vigil_edge_dropped_total` | pipeline, edge | counter |
//! | `vigil_detector_seconds` | pipeline | histogram (per frame) |
//! | `vigil_detector_batches_total`, `vigil_detector_batched_frames_total` | pipeline | counter (their ratio: the mean batch) |
//! | `vigil_mqtt_connected`, `vigil_mqtt_backlog`, `vigil_mqtt_outbox_bytes` | pipeline, output | gauge |
//! | `vigil_mqtt_queued_total`, `…_delivered_total`, `…_redelivered_total`, `…_dropped_total` | pipeline, output | counter |
//! | `vigil_events_total` | pipeline, source, region, kind, direction, class | counter |
//! | `vigil_zone_occupancy` | pipeline, source, zone, class | gauge |

use std::sync::Arc;
use std::sync::atomic::Ordering;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::{PipelineState, Service};
use crate::ingest::supervisor::SourceState;
use crate::runtime::metrics::{LatencyHistogram, OutputStats, PipelineMetrics, StageState, lock};

type Labels = Vec<(String, String)>;

/// Histogram bounds, milliseconds.
const BOUNDS_MS: &[u64] = &[5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000];

/// The zone and line counters of every pipeline, for one scrape.
#[derive(Debug)]
struct EventsSnapshot {
    counters: std::collections::BTreeMap<crate::runtime::events::EventKey, u64>,
    occupancy: std::collections::BTreeMap<crate::runtime::events::ZoneKey, u64>,
}

impl Collector for EventsSnapshot {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let label = |pairs: &[(&str, &String)]| -> Labels {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_string(), (*v).clone()))
                .collect()
        };
        let events: Vec<(Labels, u64)> = self
            .counters
            .iter()
            .map(|((p, s, r, k, d, c), n)| {
                let l = [
                    ("pipeline", p),
                    ("source", s),
                    ("region", r),
                    ("kind", k),
                    ("direction", d),
                    ("class", c),
                ];
                (label(&l), *n)
            })
            .collect();
        counter(
            &mut enc,
            "vigil_events",
            "Zone and line events (enter, exit, dwell, cross) by region, direction and class",
            &events,
        )?;
        let occupancy: Vec<(Labels, f64)> = self
            .occupancy
            .iter()
            .map(|((p, s, z, c), n)| {
                let l = [("pipeline", p), ("source", s), ("zone", z), ("class", c)];
                (label(&l), *n as f64)
            })
            .collect();
        gauge(
            &mut enc,
            "vigil_zone_occupancy",
            "Confirmed tracks in a zone now, by class",
            &occupancy,
        )
    }
}

/// A snapshot of the service for one scrape.
#[derive(Debug)]
struct Snapshot {
    reloads: u64,
    reload_failures: u64,
    pipelines: Vec<(String, String, bool, u64, Arc<PipelineMetrics>)>,
}

impl Collector for Snapshot {
    #[allow(
        clippy::too_many_lines,
        reason = "one metric family after another, in exposition order"
    )]
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        counter(
            &mut enc,
            "vigil_config_reloads",
            "Pipelines restarted because their file changed",
            &[(vec![], self.reloads)],
        )?;
        counter(
            &mut enc,
            "vigil_config_reload_failures",
            "Pipeline file versions rejected as invalid",
            &[(vec![], self.reload_failures)],
        )?;
        let pl = |name: &str, file: &str| -> Labels {
            vec![
                ("pipeline".into(), name.to_string()),
                ("file".into(), file.to_string()),
            ]
        };
        gauge(
            &mut enc,
            "vigil_pipeline_up",
            "1 while the pipeline runs",
            &self
                .pipelines
                .iter()
                .map(|(n, f, up, _, _)| (pl(n, f), f64::from(u8::from(*up))))
                .collect::<Vec<_>>(),
        )?;
        counter(
            &mut enc,
            "vigil_pipeline_starts",
            "Times the pipeline was (re)started",
            &self
                .pipelines
                .iter()
                .map(|(n, f, _, s, _)| (pl(n, f), *s))
                .collect::<Vec<_>>(),
        )?;

        let src = |p: &str, s: &str| -> Labels {
            vec![
                ("pipeline".into(), p.to_string()),
                ("source".into(), s.to_string()),
            ]
        };
        let mut frames_in = Vec::new();
        let mut processed = Vec::new();
        let mut dropped = Vec::new();
        let mut reconnects = Vec::new();
        let mut states = Vec::new();
        let mut stage_frames = Vec::new();
        let mut stage_busy = Vec::new();
        let mut stage_mean = Vec::new();
        let mut stage_state = Vec::new();
        let mut depth = Vec::new();
        let mut sent = Vec::new();
        let mut edge_dropped = Vec::new();
        let mut mqtt_gauges: [Vec<(Labels, f64)>; 3] = Default::default();
        let mut mqtt_counters: [Vec<(Labels, u64)>; 4] = Default::default();
        for (p, _, _, _, m) in &self.pipelines {
            for s in &m.sources {
                let l = src(p, &s.id);
                frames_in.push((l.clone(), s.ingest.frames.load(Ordering::Relaxed)));
                processed.push((l.clone(), s.processed.frames.load(Ordering::Relaxed)));
                dropped.push((l.clone(), s.first_edge.dropped.load(Ordering::Relaxed)));
                reconnects.push((l.clone(), s.reconnects.load(Ordering::Relaxed)));
                let now = s.state.get();
                for st in [
                    SourceState::Connecting,
                    SourceState::Running,
                    SourceState::Backoff,
                    SourceState::Failed,
                    SourceState::Stopped,
                ] {
                    let mut l = l.clone();
                    l.push(("state".into(), format!("{st:?}").to_lowercase()));
                    states.push((l, f64::from(u8::from(st == now))));
                }
            }
            for (name, st) in lock(&m.stages).iter() {
                let l = vec![
                    ("pipeline".to_string(), p.clone()),
                    ("stage".to_string(), name.clone()),
                ];
                stage_frames.push((l.clone(), st.frames.load(Ordering::Relaxed)));
                stage_busy.push((l.clone(), st.busy_ns.load(Ordering::Relaxed) as f64 / 1e9));
                stage_mean.push((l.clone(), st.mean_ms() / 1e3));
                let now = st.state();
                for state in StageState::ALL {
                    let mut l = l.clone();
                    l.push(("state".into(), state.as_str().into()));
                    stage_state.push((l, f64::from(u8::from(state == now))));
                }
            }
            for (name, st) in lock(&m.edges).iter() {
                let l = vec![
                    ("pipeline".to_string(), p.clone()),
                    ("edge".to_string(), name.clone()),
                ];
                depth.push((l.clone(), st.depth() as f64));
                sent.push((l.clone(), st.sent.load(Ordering::Relaxed)));
                edge_dropped.push((l, st.dropped.load(Ordering::Relaxed)));
            }
            for (name, o) in lock(&m.outputs).iter() {
                let OutputStats::Mqtt(q) = o;
                let l = vec![
                    ("pipeline".to_string(), p.clone()),
                    ("output".to_string(), name.clone()),
                ];
                mqtt_gauges[0].push((
                    l.clone(),
                    f64::from(u8::from(q.connected.load(Ordering::Relaxed))),
                ));
                mqtt_gauges[1].push((l.clone(), q.backlog.load(Ordering::Relaxed) as f64));
                mqtt_gauges[2].push((l.clone(), q.outbox_bytes.load(Ordering::Relaxed) as f64));
                for (i, c) in [&q.queued, &q.delivered, &q.redelivered, &q.dropped]
                    .into_iter()
                    .enumerate()
                {
                    mqtt_counters[i].push((l.clone(), c.load(Ordering::Relaxed)));
                }
            }
        }
        counter(
            &mut enc,
            "vigil_source_frames_in",
            "Frames decoded",
            &frames_in,
        )?;
        counter(
            &mut enc,
            "vigil_source_frames_processed",
            "Frames through detection and tracking, handed to the outputs",
            &processed,
        )?;
        counter(
            &mut enc,
            "vigil_source_frames_dropped",
            "Frames dropped at the source's first edge (live sources, chain busy)",
            &dropped,
        )?;
        counter(
            &mut enc,
            "vigil_source_reconnects",
            "Times a live source came back after losing its stream",
            &reconnects,
        )?;
        gauge(
            &mut enc,
            "vigil_source_state",
            "1 for the source's current state",
            &states,
        )?;
        let mut h = Vec::new();
        for (p, _, _, _, m) in &self.pipelines {
            for s in &m.sources {
                h.push((src(p, &s.id), &s.latency));
            }
        }
        histogram(
            &mut enc,
            "vigil_capture_to_output_seconds",
            "Capture (ingest) to metadata out, per frame",
            &h,
        )?;
        counter(
            &mut enc,
            "vigil_stage_frames",
            "Frames a stage handled",
            &stage_frames,
        )?;
        counter(
            &mut enc,
            "vigil_stage_busy_seconds",
            "Time a stage spent on frames",
            &stage_busy,
        )?;
        gauge(
            &mut enc,
            "vigil_stage_seconds_per_frame",
            "Mean time per frame of a stage",
            &stage_mean,
        )?;
        gauge(
            &mut enc,
            "vigil_stage_state",
            "1 for the stage's (or output's) current state: running, finished, failed, stalled",
            &stage_state,
        )?;
        gauge(
            &mut enc,
            "vigil_edge_depth",
            "Items waiting in an edge now",
            &depth,
        )?;
        counter(
            &mut enc,
            "vigil_edge_sent",
            "Items sent into an edge",
            &sent,
        )?;
        counter(
            &mut enc,
            "vigil_edge_dropped",
            "Items dropped by an edge's drop_oldest policy",
            &edge_dropped,
        )?;
        let h: Vec<(Labels, &LatencyHistogram)> = self
            .pipelines
            .iter()
            .map(|(p, _, _, _, m)| (vec![("pipeline".to_string(), p.clone())], &m.detector))
            .collect();
        histogram(
            &mut enc,
            "vigil_detector_seconds",
            "Detector time per frame (batch time / frames)",
            &h,
        )?;
        let batch_counts = |f: fn(&PipelineMetrics) -> u64| -> Vec<(Labels, u64)> {
            self.pipelines
                .iter()
                .map(|(p, _, _, _, m)| (vec![("pipeline".to_string(), p.clone())], f(m)))
                .collect()
        };
        counter(
            &mut enc,
            "vigil_detector_batches",
            "Forward passes of the detector",
            &batch_counts(|m| m.detector_batches.load(Ordering::Relaxed)),
        )?;
        counter(
            &mut enc,
            "vigil_detector_batched_frames",
            "Frames carried by the detector's forward passes",
            &batch_counts(|m| m.detector_batched_frames.load(Ordering::Relaxed)),
        )?;
        let [connected, backlog, bytes] = &mqtt_gauges;
        gauge(
            &mut enc,
            "vigil_mqtt_connected",
            "1 while connected to the broker",
            connected,
        )?;
        gauge(
            &mut enc,
            "vigil_mqtt_backlog",
            "Records in the outbox not yet acknowledged",
            backlog,
        )?;
        gauge(
            &mut enc,
            "vigil_mqtt_outbox_bytes",
            "Bytes the outbox holds on disk",
            bytes,
        )?;
        let [queued, delivered, redelivered, mdropped] = &mqtt_counters;
        counter(
            &mut enc,
            "vigil_mqtt_queued",
            "Records written to the outbox",
            queued,
        )?;
        counter(
            &mut enc,
            "vigil_mqtt_delivered",
            "Records the broker acknowledged",
            delivered,
        )?;
        counter(
            &mut enc,
            "vigil_mqtt_redelivered",
            "Publishes sent again after a connection loss (possible duplicates)",
            redelivered,
        )?;
        counter(
            &mut enc,
            "vigil_mqtt_dropped",
            "Records dropped because the outbox was full",
            mdropped,
        )?;
        Ok(())
    }
}

fn counter<V: prometheus_client::encoding::EncodeCounterValue>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: &[(Labels, V)],
) -> Result<(), std::fmt::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, v) in rows {
        m.encode_family(labels)?
            .encode_counter::<NoLabelSet, V, u64>(v, None)?;
    }
    Ok(())
}

fn gauge(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: &[(Labels, f64)],
) -> Result<(), std::fmt::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, v) in rows {
        m.encode_family(labels)?.encode_gauge(v)?;
    }
    Ok(())
}

fn histogram(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: &[(Labels, &LatencyHistogram)],
) -> Result<(), std::fmt::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Histogram)?;
    for (labels, h) in rows {
        let cum = h.cumulative(BOUNDS_MS);
        let count = h.count();
        // the encoder wants per-bucket counts (it accumulates them itself)
        let mut buckets = Vec::with_capacity(cum.len() + 1);
        let mut prev = 0;
        for (ms, c) in cum {
            buckets.push((ms as f64 / 1e3, c - prev));
            prev = c;
        }
        buckets.push((f64::INFINITY, count.saturating_sub(prev)));
        m.encode_family(labels)?.encode_histogram::<NoLabelSet>(
            h.sum_seconds(),
            count,
            &buckets,
            None,
        )?;
    }
    Ok(())
}

/// The text of `/metrics`.
/// The load governor's settings and decisions per source (`runtime::governor`).
#[derive(Debug)]
struct GovernorSnapshot {
    pipelines: Vec<(String, Arc<PipelineMetrics>)>,
}

impl Collector for GovernorSnapshot {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut every = Vec::new();
        let mut age = Vec::new();
        let mut degradations = Vec::new();
        let mut restorations = Vec::new();
        for (p, m) in &self.pipelines {
            for s in &m.sources {
                let l: Labels = vec![
                    ("pipeline".into(), p.clone()),
                    ("source".into(), s.id.clone()),
                ];
                let g = &s.governed;
                every.push((l.clone(), f64::from(g.every.load(Ordering::Relaxed))));
                age.push((l.clone(), g.age_frames.load(Ordering::Relaxed) as f64));
                degradations.push((l.clone(), g.degradations.load(Ordering::Relaxed)));
                restorations.push((l, g.restorations.load(Ordering::Relaxed)));
            }
        }
        gauge(
            &mut enc,
            "vigil_source_detect_every",
            "The detector runs on every Nth frame of the source now (configured, or raised by the load governor)",
            &every,
        )?;
        gauge(
            &mut enc,
            "vigil_source_detector_age_frames",
            "Age of the newest frame the detector took, in frames of the source's nominal rate",
            &age,
        )?;
        counter(
            &mut enc,
            "vigil_governor_degradations",
            "Times the load governor thinned the source's detection (its frames waited past latency_budget)",
            &degradations,
        )?;
        counter(
            &mut enc,
            "vigil_governor_restorations",
            "Times the load governor gave detection back to the source (load fell)",
            &restorations,
        )
    }
}

pub fn render(service: &Service) -> Result<String, std::fmt::Error> {
    let snapshot = Snapshot {
        reloads: service.reloads.load(Ordering::Relaxed),
        reload_failures: service.reload_failures.load(Ordering::Relaxed),
        pipelines: lock(&service.entries)
            .values()
            .map(|e| {
                (
                    e.name.clone(),
                    e.file.display().to_string(),
                    e.state == PipelineState::Running,
                    e.starts,
                    e.metrics.clone(),
                )
            })
            .collect(),
    };
    let governor = GovernorSnapshot {
        pipelines: snapshot
            .pipelines
            .iter()
            .map(|(n, _, _, _, m)| (n.clone(), m.clone()))
            .collect(),
    };
    let mut registry = Registry::default();
    registry.register_collector(Box::new(snapshot));
    registry.register_collector(Box::new(governor));
    registry.register_collector(Box::new(EventsSnapshot {
        counters: service.events.counters(),
        occupancy: service.events.occupancy(),
    }));
    let mut out = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)?;
    Ok(out)
}
