//! The validated, resolved form of a pipeline file: paths absolute, model manifest read, defaults
//! settled. No stage reads the raw spec.

use std::path::{Path, PathBuf};

use serde_saphyr::{Location, Spanned};

use super::spec::{self, OutputSpec, Pace, PipelineSpec, Resize, TrackerSpec};
use super::{ConfigError, Problem};
use crate::analytics::AnalyticsSettings;
use crate::detect::batch::Batching;
use crate::detect::manifest::ModelInfo;
use crate::detect::nms::NmsParams;
use crate::detect::{DetectError, Detector, DeviceChoice, PostParams, Precision};
use crate::flow::WhenFull;
use crate::ingest::{self, DEFAULT_RTSP_LATENCY, SourceSettings};
use crate::output::{OutputSettings, Resolve};
use crate::paths::{escapes_folder, relative_to};
use crate::retry::ReconnectPolicy;
use crate::track::TrackerKind;
use crate::track::bytetrack::ByteTrackParams;

/// A pipeline ready to run.
#[derive(Debug, Clone)]
pub struct Plan {
    pub file: PathBuf,
    pub name: String,
    /// Where `name` is written in the file (line, column), for problems across files.
    pub name_at: (u64, u64),
    pub sources: Vec<SourceSettings>,
    pub model: ModelInfo,
    pub device: DeviceChoice,
    pub precision: Precision,
    pub resize: Resize,
    pub post: PostParams,
    pub batch: Batching,
    /// Run the detector on every `every`-th frame of each source.
    pub every: u32,
    /// Detector settings per source (the pipeline's, with the source's overrides), as `sources`.
    pub source_detect: Vec<SourceDetect>,
    /// Zones and lines per source, as `sources` (empty settings: none).
    pub source_analytics: Vec<AnalyticsSettings>,
    /// `None`: no tracking.
    pub tracker: Option<TrackerKind>,
    /// `vigil regress` tolerances.
    pub regress: super::Tolerances,
    pub queue_capacity: usize,
    /// A stage with frames waiting and none taken for this long has stalled.
    pub stall_timeout: std::time::Duration,
    /// Outputs, already expanded per source.
    pub outputs: Vec<OutputPlan>,
}

impl Plan {
    /// The detector this plan names, loaded on its device in its precision.
    pub fn load_detector(&self) -> Result<Box<dyn Detector>, DetectError> {
        crate::detect::load_at(
            &self.model,
            &crate::detect::device(self.device)?,
            self.precision,
        )
    }

    /// The resolved plan as a person reads it (`vigil check --print-plan`); credentials in URIs masked.
    pub fn describe(&self) -> String {
        let mut o = String::new();
        let mut line = |s: String| {
            o.push_str(&s);
            o.push('\n');
        };
        line(format!("pipeline: {}", self.name));
        line(format!("file: {}", self.file.display()));
        line("sources:".into());
        for s in &self.sources {
            line(format!("  - id: {}", s.id));
            line(format!("    uri: {}", crate::ingest::redact_uri(&s.uri)));
            line(format!(
                "    pace: {:?}, live: {}, first edge when full: {:?}",
                s.pace, s.live, s.when_full
            ));
        }
        line(format!(
            "model: {} ({}), input {}x{}, resize {:?}",
            self.model.name,
            self.model.manifest.display(),
            self.model.input.0,
            self.model.input.1,
            self.resize
        ));
        line(format!(
            "device: {}, precision: {:?}",
            self.device, self.precision
        ));
        line(format!("confidence: {}", self.post.confidence));
        if let Some(mask) = &self.post.classes {
            let names: Vec<&str> = mask
                .iter()
                .zip(&self.model.classes)
                .filter(|(m, _)| **m)
                .map(|(_, n)| n.as_str())
                .collect();
            line(format!("classes: [{}]", names.join(", ")));
        }
        line(format!(
            "nms: iou {}, class-aware {}, max {}",
            self.post.nms.iou, self.post.nms.class_aware, self.post.nms.max_detections
        ));
        line(format!("tracker: {:?}", self.tracker));
        line(format!(
            "detector every {} frame(s), batch: {} (wait {:?}), queue capacity: {}",
            self.every, self.batch.max, self.batch.wait, self.queue_capacity
        ));
        line("outputs:".into());
        for out in &self.outputs {
            line(format!("  - source {}: {:?}", out.source, out.settings));
        }
        o
    }
}

/// What the detector does for one source.
#[derive(Debug, Clone)]
pub struct SourceDetect {
    pub post: PostParams,
    pub every: u32,
    /// The load governor's budget for frame age at the detector (`None`: not governed).
    pub latency_budget: Option<std::time::Duration>,
    pub priority: i32,
}

#[derive(Debug, Clone)]
pub struct OutputPlan {
    pub source: String,
    pub settings: OutputSettings,
}

/// How long a stage may hold waiting frames without taking one before it counts as stalled.
pub const DEFAULT_STALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

struct Collector<'a> {
    file: &'a Path,
    problems: Vec<Problem>,
}

impl Collector<'_> {
    fn at(&mut self, loc: Location, message: String) {
        self.problems.push(Problem {
            file: self.file.to_path_buf(),
            line: loc.line(),
            column: loc.column(),
            message,
        });
    }
}

/// The class filter for `names`, each unknown name reported at its place.
fn class_mask(
    c: &mut Collector,
    names: &[Spanned<String>],
    m: &ModelInfo,
    what: &str,
) -> Vec<bool> {
    let mut mask = vec![false; m.classes.len()];
    for n in names {
        match m.class_id(&n.value) {
            Some(i) => mask[i as usize] = true,
            None => c.at(
                n.referenced,
                format!("{what}: model `{}` has no class `{}`", m.name, n.value),
            ),
        }
    }
    mask
}

/// Sources one pipeline file may have. Each costs memory and threads whatever it shows (README,
/// "Limits", measured by `scripts/measure-source-cost`: 5–7 threads and 12–16 MiB per source at
/// SD sizes): 32 is ≈ 0.7 GiB and 230 threads. More cameras belong in several files, which
/// `vigil serve --max-sources` bounds together.
pub const MAX_SOURCES: usize = 32;
/// Output entries one pipeline file may have (each runs once per source, on its own thread).
pub const MAX_OUTPUTS: usize = 8;

/// Refuse a pipeline bigger than [`MAX_SOURCES`] / [`MAX_OUTPUTS`], at the first entry too many.
fn check_size(c: &mut Collector, spec: &PipelineSpec) {
    if let Some(extra) = spec.sources.value.get(MAX_SOURCES) {
        c.at(
            extra.id.referenced,
            format!(
                "too many sources: {} in this file, at most {MAX_SOURCES} per pipeline \
                 (split the cameras over several files)",
                spec.sources.value.len()
            ),
        );
    }
    if let Some(extra) = spec.outputs.get(MAX_OUTPUTS) {
        c.at(
            extra.referenced,
            format!(
                "too many outputs: {} in this file, at most {MAX_OUTPUTS} per pipeline",
                spec.outputs.len()
            ),
        );
    }
}

fn every_of(c: &mut Collector, e: &Spanned<u32>, what: &str) -> u32 {
    if e.value == 0 || e.value > 1000 {
        c.at(
            e.referenced,
            format!("{what} must be 1..=1000, got {}", e.value),
        );
    }
    e.value.clamp(1, 1000)
}

fn in_unit(c: &mut Collector, v: &Spanned<f32>, what: &str) -> f32 {
    if !(0.0..=1.0).contains(&v.value) {
        c.at(
            v.referenced,
            format!("{what} must be between 0 and 1, got {}", v.value),
        );
    }
    v.value
}

/// Validate a parsed pipeline file into a [`Plan`], collecting every problem.
pub fn resolve(file: &Path, spec: PipelineSpec) -> Result<Plan, ConfigError> {
    let mut c = Collector {
        file,
        problems: Vec::new(),
    };
    let base = match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = spec.name.value.clone();
    if name.trim().is_empty() {
        c.at(spec.name.referenced, "name must not be empty".into());
    } else if let Some(why) = escapes_folder(&name) {
        c.at(
            spec.name.referenced,
            format!("name `{name}` {why} (it is `{{pipeline}}` in output paths)"),
        );
    }
    if spec.sources.value.is_empty() {
        c.at(
            spec.sources.referenced,
            "sources: at least one source is needed".into(),
        );
    }
    check_size(&mut c, &spec);
    let mut sources: Vec<SourceSettings> = Vec::new();
    for s in &spec.sources.value {
        let source = resolve_source(&mut c, &base, s, spec.queues.when_full, &sources);
        sources.push(source);
    }
    let detector = resolve_detector(&mut c, &spec, &base);
    let source_analytics = resolve_analytics(&mut c, &spec, detector.model.as_ref());
    let (queue_capacity, stall_timeout) = resolve_queues(&mut c, &spec.queues);
    let tracker = resolve_tracker(&mut c, spec.tracker.as_ref());
    let outputs = resolve_outputs(&mut c, &spec.outputs, &sources, &name, &base);
    match detector.model {
        Some(model) if c.problems.is_empty() => Ok(Plan {
            file: file.to_path_buf(),
            name,
            name_at: (spec.name.referenced.line(), spec.name.referenced.column()),
            sources,
            resize: spec.detector.resize.unwrap_or(model.resize),
            model,
            device: detector.device,
            precision: spec.detector.precision.unwrap_or_default(),
            post: detector.post,
            batch: detector.batch,
            every: detector.every,
            source_detect: detector.per_source,
            source_analytics,
            tracker,
            regress: super::Tolerances::from_spec(spec.regress.as_ref()),
            queue_capacity,
            stall_timeout,
            outputs,
        }),
        _ => Err(ConfigError {
            problems: c.problems,
        }),
    }
}

/// One source: its id checked (unique, usable in paths), its URI made openable, and the
/// defaults of a live source or a file settled.
fn resolve_source(
    c: &mut Collector,
    base: &Path,
    s: &spec::SourceSpec,
    when_full: Option<WhenFull>,
    earlier: &[SourceSettings],
) -> SourceSettings {
    let id = s.id.value.clone();
    let allowed = |ch: char| ch.is_ascii_alphanumeric() || "-_.".contains(ch);
    if id.is_empty() || !id.chars().all(allowed) {
        c.at(
            s.id.referenced,
            format!("source id `{id}` must be non-empty letters, digits, `-`, `_` or `.`"),
        );
    } else if let Some(why) = escapes_folder(&id) {
        c.at(
            s.id.referenced,
            format!("source id `{id}` {why} (it is `{{source}}` in output paths)"),
        );
    }
    if earlier.iter().any(|p| p.id == id) {
        c.at(s.id.referenced, format!("duplicate source id `{id}`"));
    }
    let uri = resolve_uri(c, base, s, &id);
    let live = !(uri.starts_with("file:")) || s.pace == Pace::Realtime;
    let when_full = when_full.unwrap_or(if live {
        WhenFull::DropOldest
    } else {
        WhenFull::Block
    });
    let stall = match &s.stall {
        Some(d) if d.value.0.is_zero() => {
            c.at(d.referenced, "stall must be longer than 0s".into());
            None
        }
        Some(d) => Some(d.value.0),
        // a file that gives no frame for long has hung its decoder: end it, named
        None if live => Some(ingest::DEFAULT_STALL),
        None => Some(ingest::DEFAULT_FILE_STALL),
    };
    let d = ReconnectPolicy::default();
    let r = s.reconnect.as_ref();
    SourceSettings {
        id,
        uri,
        pace: s.pace,
        live,
        when_full,
        stall,
        max_frames: s.max_frames,
        reconnect: ReconnectPolicy {
            initial: r.and_then(|r| r.initial).map_or(d.initial, |x| x.0),
            max: r.and_then(|r| r.max).map_or(d.max, |x| x.0),
            retries: r.and_then(|r| r.retries),
        },
        rtsp_tcp: s.transport != Some(spec::Transport::Udp),
        rtsp_latency: s.latency.map_or(DEFAULT_RTSP_LATENCY, |l| l.0),
        seq_start: 0,
    }
}

/// A URI GStreamer can open: `file:` paths made absolute (and the file must exist); empty after
/// a problem.
fn resolve_uri(c: &mut Collector, base: &Path, s: &spec::SourceSpec, id: &str) -> String {
    let raw = s.uri.value.as_str();
    let Some(path) = raw.strip_prefix("file:").filter(|p| !p.starts_with("//")) else {
        if raw.starts_with("test:") || raw.contains("://") {
            return raw.to_string();
        }
        c.at(
            s.uri.referenced,
            format!("source `{id}`: `{raw}` is not a URI (use file:PATH, file:///…, rtsp://…)"),
        );
        return String::new();
    };
    let abs = relative_to(base, path);
    let opened = match std::path::absolute(&abs) {
        Ok(a) if a.is_file() => gstreamer::glib::filename_to_uri(&a, None)
            .map(|u| u.to_string())
            .map_err(|e| format!("source `{id}`: {}: {e}", a.display())),
        _ => Err(format!("source `{id}`: no such file {}", abs.display())),
    };
    opened.unwrap_or_else(|m| {
        c.at(s.uri.referenced, m);
        String::new()
    })
}

/// The detector section resolved.
struct DetectorPlan {
    /// `None` after a problem with the manifest.
    model: Option<ModelInfo>,
    device: DeviceChoice,
    post: PostParams,
    batch: Batching,
    every: u32,
    per_source: Vec<SourceDetect>,
}

/// The model manifest read, the device parsed, thresholds and filters checked; each source's
/// overrides applied.
fn resolve_detector(c: &mut Collector, spec: &PipelineSpec, base: &Path) -> DetectorPlan {
    let d = &spec.detector;
    let model = ModelInfo::load(&relative_to(base, &d.model.value))
        .map_err(|e| c.at(d.model.referenced, format!("detector.model: {e}")))
        .ok();
    let device = d.device.as_ref().map_or(DeviceChoice::Cpu, |dev| {
        dev.value.parse().unwrap_or_else(|e| {
            c.at(
                dev.referenced,
                format!("detector.device `{}`: {e}", dev.value),
            );
            DeviceChoice::Cpu
        })
    });
    if let (Some(p), Some(m)) = (d.precision, &model)
        && !m.family.has_precision(p)
    {
        c.at(
            d.model.referenced,
            format!(
                "detector.precision {p:?} is not available for model {} (family {:?}); f16 runs darknet models",
                m.name, m.family
            ),
        );
    }
    let confidence = d.confidence.as_ref().map_or(spec::DEFAULT_CONFIDENCE, |v| {
        in_unit(c, v, "detector.confidence")
    });
    let classes = match (&d.classes, &model) {
        (Some(names), Some(m)) => Some(class_mask(c, names, m, "detector.classes")),
        _ => None,
    };
    let batch = d.batch.as_ref().map_or(Batching::default(), |b| {
        b.value.resolve().unwrap_or_else(|e| {
            c.at(b.referenced, e);
            Batching::default()
        })
    });
    let every = d
        .every
        .as_ref()
        .map_or(1, |e| every_of(c, e, "detector.every"));
    // a model that suppresses in its graph has had its NMS: an IoU of 1 keeps every box, unless
    // the pipeline writes `nms.iou` itself
    let unwritten = spec.nms.iou.referenced == serde_saphyr::Location::UNKNOWN;
    let iou = if unwritten && model.as_ref().is_some_and(ModelInfo::nms_in_graph) {
        1.0
    } else {
        in_unit(c, &spec.nms.iou, "nms.iou")
    };
    let nms = NmsParams {
        iou,
        class_aware: spec.nms.class_aware,
        max_detections: spec.nms.max_detections,
    };
    let post = PostParams {
        confidence,
        classes,
        nms,
    };
    let per_source = spec
        .sources
        .value
        .iter()
        .map(|src| source_detect(c, src.detector.as_ref(), &post, every, model.as_ref()))
        .collect();
    DetectorPlan {
        model,
        device,
        post,
        batch,
        every,
        per_source,
    }
}

/// A source's detector settings: the pipeline's, with the source's overrides.
fn source_detect(
    c: &mut Collector,
    o: Option<&spec::SourceDetectorSpec>,
    pipeline: &PostParams,
    every: u32,
    model: Option<&ModelInfo>,
) -> SourceDetect {
    let confidence = o
        .and_then(|o| o.confidence.as_ref())
        .map_or(pipeline.confidence, |v| {
            in_unit(c, v, "sources.detector.confidence")
        });
    let classes = match (o.and_then(|o| o.classes.as_ref()), model) {
        (Some(names), Some(m)) => Some(class_mask(c, names, m, "sources.detector.classes")),
        _ => pipeline.classes.clone(),
    };
    let every = o
        .and_then(|o| o.every.as_ref())
        .map_or(every, |e| every_of(c, e, "sources.detector.every"));
    let latency_budget = o.and_then(|o| o.latency_budget.as_ref()).map(|b| {
        if b.value.0.is_zero() {
            c.at(
                b.referenced,
                "sources.detector.latency_budget must be above 0".into(),
            );
        }
        b.value.0
    });
    SourceDetect {
        post: PostParams {
            confidence,
            classes,
            nms: pipeline.nms,
        },
        every,
        latency_budget,
        priority: o.and_then(|o| o.priority).unwrap_or(0),
    }
}

/// Each source's zones and lines (class names need the model: without one they wait).
fn resolve_analytics(
    c: &mut Collector,
    spec: &PipelineSpec,
    model: Option<&ModelInfo>,
) -> Vec<AnalyticsSettings> {
    let Some(model) = model else {
        return vec![AnalyticsSettings::default(); spec.sources.value.len()];
    };
    spec.sources
        .value
        .iter()
        .map(|s| {
            let mut problems = Vec::new();
            let a = crate::analytics::spec::resolve(
                &s.zones,
                &s.lines,
                spec.analytics.as_ref(),
                &model.classes,
                &mut problems,
            );
            for p in problems {
                c.at(s.id.referenced, format!("source `{}`: {p}", s.id.value));
            }
            a
        })
        .collect()
}

/// Queue capacity and stall timeout, range-checked.
fn resolve_queues(c: &mut Collector, q: &spec::QueueSpec) -> (usize, std::time::Duration) {
    let cap = q.capacity.value;
    if cap == 0 || cap > 4096 {
        c.at(
            q.capacity.referenced,
            format!("queues.capacity must be 1..=4096, got {cap}"),
        );
    }
    let stall_timeout = match &q.stall_timeout {
        Some(d) if d.value.0.is_zero() => {
            c.at(
                d.referenced,
                "queues.stall_timeout must be longer than 0s".into(),
            );
            DEFAULT_STALL_TIMEOUT
        }
        Some(d) => d.value.0,
        None => DEFAULT_STALL_TIMEOUT,
    };
    (cap.clamp(1, 4096), stall_timeout)
}

/// Every output entry resolved for every source (`outputs` run per source). A problem that is the
/// same for each source is reported once.
fn resolve_outputs(
    c: &mut Collector,
    specs: &[Spanned<OutputSpec>],
    sources: &[SourceSettings],
    pipeline: &str,
    base: &Path,
) -> Vec<OutputPlan> {
    let mut outputs = Vec::new();
    let mut claims = Vec::new();
    for o in specs {
        let mut problems = Vec::new();
        for s in sources {
            let mut cx = Resolve::new(pipeline, &s.id, base, &mut problems, &mut claims);
            if let Some(settings) = o.value.resolve(&mut cx) {
                outputs.push(OutputPlan {
                    source: s.id.clone(),
                    settings,
                });
            }
        }
        for p in problems {
            c.at(o.referenced, p);
        }
    }
    outputs
}

/// The tracker a spec asks for (ByteTrack when absent), with range checks.
fn resolve_tracker(c: &mut Collector, spec: Option<&Spanned<TrackerSpec>>) -> Option<TrackerKind> {
    let Some(spec) = spec else {
        return Some(TrackerKind::ByteTrack(ByteTrackParams::default()));
    };
    let mut problems = Vec::new();
    let kind = spec.value.resolve(&mut problems);
    for p in problems {
        c.at(spec.referenced, p);
    }
    kind
}
