//! The validated, resolved form of a pipeline file: paths absolute, model manifest read, defaults
//! settled. No stage reads the raw spec.

use std::path::{Path, PathBuf};

use serde_saphyr::{Location, Spanned};

use super::spec::{self, OutputSpec, Pace, PipelineSpec, Resize, TrackerSpec};
use super::{ConfigError, Problem};
use crate::detect::PostParams;
use crate::detect::manifest::ModelInfo;
use crate::detect::nms::NmsParams;
use crate::flow::WhenFull;
use crate::ingest::{self, DEFAULT_RTSP_LATENCY, SourceSettings};
use crate::output::mqtt::{MqttSettings, Publish};
use crate::output::rtsp::RtspSettings;
use crate::track::TrackerKind;
use crate::track::bytetrack::ByteTrackParams;
use crate::track::iou::IouParams;
use crate::track::ocsort::OcSortParams;
use crate::track::sort::SortParams;

/// A pipeline ready to run.
#[derive(Debug, Clone)]
pub struct Plan {
    pub file: PathBuf,
    pub name: String,
    /// Where `name` is written in the file (line, column), for problems across files.
    pub name_at: (u64, u64),
    pub sources: Vec<SourceSettings>,
    pub model: ModelInfo,
    pub device: String,
    pub resize: Resize,
    pub post: PostParams,
    pub batch: usize,
    /// Run the detector on every `every`-th frame of each source.
    pub every: u32,
    /// Detector settings per source (the pipeline's, with the source's overrides), as `sources`.
    pub source_detect: Vec<SourceDetect>,
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
        line(format!("device: {}", self.device));
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
            "detector every {} frame(s), batch: {}, queue capacity: {}",
            self.every, self.batch, self.queue_capacity
        ));
        line("outputs:".into());
        for out in &self.outputs {
            line(format!("  - source {}: {:?}", out.source, out.kind));
        }
        o
    }
}

/// What the detector does for one source.
#[derive(Debug, Clone)]
pub struct SourceDetect {
    pub post: PostParams,
    pub every: u32,
}

#[derive(Debug, Clone)]
pub struct OutputPlan {
    pub source: String,
    pub kind: OutputKind,
}

#[derive(Debug, Clone)]
pub enum OutputKind {
    Mp4 {
        path: PathBuf,
        overlay: bool,
        preset: String,
        bitrate_kbps: u32,
    },
    Jsonl {
        path: PathBuf,
    },
    Mqtt(MqttSettings),
    Rtsp(RtspSettings),
}

impl OutputKind {
    /// Short description for logs and metrics (never a credential).
    pub fn describe(&self) -> String {
        match self {
            Self::Mp4 { path, .. } => format!("mp4 {}", path.display()),
            Self::Jsonl { path } => format!("jsonl {}", path.display()),
            Self::Mqtt(m) => format!("mqtt {}:{}/{}", m.host, m.port, m.topic),
            Self::Rtsp(r) => format!("rtsp {}", r.url()),
        }
    }
}

/// How long a stage may hold waiting frames without taking one before it counts as stalled.
pub const DEFAULT_STALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Broker of MQTT outputs when the file names none.
const DEFAULT_MQTT_BROKER: &str = "127.0.0.1:1883";
/// Outbox size limit of MQTT outputs when the file says nothing.
const DEFAULT_OUTBOX_MAX: u64 = 64 << 20;
const MIN_OUTBOX: u64 = 64 << 10;
/// How long MQTT outputs keep delivering after end of stream when the file says nothing.
const DEFAULT_MQTT_DRAIN: std::time::Duration = std::time::Duration::from_secs(10);

/// `host:port` or `host` (then `default_port`); IPv6 as `[::1]:1883`.
fn parse_host_port(s: &str, default_port: u16) -> Result<(String, u16), String> {
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

const PLACEHOLDERS: &[&str] = &["pipeline", "source"];
const X264_PRESETS: &[&str] = &[
    "ultrafast",
    "superfast",
    "veryfast",
    "faster",
    "fast",
    "medium",
    "slow",
    "slower",
    "veryslow",
    "placebo",
];

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

/// Resolve `p` relative to the pipeline file's folder.
fn relative_to(base: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

/// Substitute `{pipeline}`/`{source}`; `Err` names an unknown placeholder.
fn expand(template: &str, pipeline: &str, source: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(i) = rest.find('{') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let j = after
            .find('}')
            .ok_or_else(|| format!("`{template}` has a `{{` without `}}`"))?;
        match &after[..j] {
            "pipeline" => out.push_str(pipeline),
            "source" => out.push_str(source),
            other => {
                return Err(format!(
                    "unknown placeholder `{{{other}}}` in `{template}`; known: {}",
                    PLACEHOLDERS
                        .iter()
                        .map(|p| format!("{{{p}}}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        }
        rest = &after[j + 1..];
    }
    out.push_str(rest);
    Ok(out)
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

/// Why a file at `path` could not be created (a parent is a file, or the path is a folder), if so.
fn uncreatable(path: &Path) -> Option<String> {
    if path.is_dir() {
        return Some("it is a folder".into());
    }
    uncreatable_parent(path)
}

/// Why the folder `path` (an MQTT outbox, which vigil creates and keeps across runs) cannot be
/// used, if so: an existing folder is fine when it is writable, a file in its place is not.
fn unusable_folder(path: &Path) -> Option<String> {
    match std::fs::metadata(path) {
        Ok(m) if !m.is_dir() => Some("it is a file, not a folder".into()),
        Ok(_) => not_writable(path),
        Err(_) => uncreatable_parent(path),
    }
}

/// Whether this process can create files in the existing folder `dir` (permissions alone do not
/// tell: ACLs, read-only mounts, another owner): a probe file is created and removed.
fn not_writable(dir: &Path) -> Option<String> {
    let probe = dir.join(format!(".vigil-check-{}", std::process::id()));
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
    {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            None
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => None,
        Err(e) => Some(format!("the folder is not writable: {e}")),
    }
}

/// Why a placeholder value (`{pipeline}` is the name, `{source}` the id) could escape the folder
/// its output path names, if so: it may not hold a `/` nor be `.` or `..`.
fn escapes_folder(value: &str) -> Option<&'static str> {
    if value.contains('/') {
        Some("must not contain `/`")
    } else if value == "." || value == ".." {
        Some("must not be `.` or `..`")
    } else if value.contains('\0') {
        Some("must not contain a NUL character")
    } else {
        None
    }
}

/// The folders above `path` that exist: the nearest must be a folder.
fn uncreatable_parent(path: &Path) -> Option<String> {
    let mut dir = path.parent();
    while let Some(d) = dir {
        if d.as_os_str().is_empty() {
            break;
        }
        if d.exists() {
            return (!d.is_dir()).then(|| format!("{} is a file, not a folder", d.display()));
        }
        dir = d.parent();
    }
    None
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
#[allow(
    clippy::too_many_lines,
    reason = "validation of every section in one place; the architecture pass (issue 15) moves each part into its component"
)]
pub fn resolve(file: &Path, spec: PipelineSpec) -> Result<Plan, ConfigError> {
    let mut c = Collector {
        file,
        problems: Vec::new(),
    };
    let base = file.parent().map(Path::to_path_buf).unwrap_or_default();
    let base = if base.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        base
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

    // Sources
    if spec.sources.value.is_empty() {
        c.at(
            spec.sources.referenced,
            "sources: at least one source is needed".into(),
        );
    }
    check_size(&mut c, &spec);
    let mut sources: Vec<SourceSettings> = Vec::new();
    for s in &spec.sources.value {
        let id = s.id.value.clone();
        if id.is_empty()
            || !id
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || "-_.".contains(ch))
        {
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
        if sources.iter().any(|p| p.id == id) {
            c.at(s.id.referenced, format!("duplicate source id `{id}`"));
        }
        let raw = s.uri.value.as_str();
        let uri = if let Some(path) = raw.strip_prefix("file:").filter(|p| !p.starts_with("//")) {
            let abs = relative_to(&base, path);
            match std::path::absolute(&abs) {
                Ok(a) if a.is_file() => match gstreamer::glib::filename_to_uri(&a, None) {
                    Ok(u) => u.to_string(),
                    Err(e) => {
                        c.at(
                            s.uri.referenced,
                            format!("source `{id}`: {}: {e}", a.display()),
                        );
                        String::new()
                    }
                },
                _ => {
                    c.at(
                        s.uri.referenced,
                        format!("source `{id}`: no such file {}", abs.display()),
                    );
                    String::new()
                }
            }
        } else if raw.starts_with("test:") || raw.contains("://") {
            raw.to_string()
        } else {
            c.at(
                s.uri.referenced,
                format!("source `{id}`: `{raw}` is not a URI (use file:PATH, file:///…, rtsp://…)"),
            );
            String::new()
        };
        let live = !(uri.starts_with("file:")) || s.pace == Pace::Realtime;
        let when_full = spec.queues.when_full.unwrap_or(if live {
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
            None => Some(if live {
                ingest::DEFAULT_STALL
            } else {
                ingest::DEFAULT_FILE_STALL
            }),
        };
        sources.push(SourceSettings {
            id,
            uri,
            pace: s.pace,
            live,
            when_full,
            stall,
            max_frames: s.max_frames,
            reconnect: {
                let d = crate::ingest::supervisor::ReconnectPolicy::default();
                let r = s.reconnect.as_ref();
                crate::ingest::supervisor::ReconnectPolicy {
                    initial: r.and_then(|r| r.initial).map_or(d.initial, |x| x.0),
                    max: r.and_then(|r| r.max).map_or(d.max, |x| x.0),
                    retries: r.and_then(|r| r.retries),
                }
            },
            rtsp_tcp: s.transport != Some(spec::Transport::Udp),
            rtsp_latency: s.latency.map_or(DEFAULT_RTSP_LATENCY, |l| l.0),
            seq_start: 0,
        });
    }

    // Detector
    let d = &spec.detector;
    let model_path = relative_to(&base, &d.model.value);
    let model = match ModelInfo::load(&model_path) {
        Ok(m) => Some(m),
        Err(e) => {
            c.at(d.model.referenced, format!("detector.model: {e}"));
            None
        }
    };
    let device = d
        .device
        .as_ref()
        .map_or_else(|| "cpu".to_string(), |s| s.value.clone());
    if let Some(dev) = &d.device {
        let ok = dev.value == "cpu"
            || dev.value == "auto"
            || dev
                .value
                .strip_prefix("cuda:")
                .is_some_and(|n| n.parse::<usize>().is_ok());
        if !ok {
            c.at(
                dev.referenced,
                format!(
                    "detector.device `{}`: expected cpu, cuda:N or auto",
                    dev.value
                ),
            );
        }
    }
    let confidence = d.confidence.as_ref().map_or(spec::DEFAULT_CONFIDENCE, |v| {
        in_unit(&mut c, v, "detector.confidence")
    });
    let classes = match (&d.classes, &model) {
        (Some(names), Some(m)) => Some(class_mask(&mut c, names, m, "detector.classes")),
        _ => None,
    };
    let batch = d.batch.as_ref().map_or(1, |b| {
        if b.value == 0 || b.value > 64 {
            c.at(
                b.referenced,
                format!("detector.batch must be 1..=64, got {}", b.value),
            );
        }
        b.value.clamp(1, 64)
    });
    let every = d
        .every
        .as_ref()
        .map_or(1, |e| every_of(&mut c, e, "detector.every"));
    let iou = in_unit(&mut c, &spec.nms.iou, "nms.iou");
    let nms = NmsParams {
        iou,
        class_aware: spec.nms.class_aware,
        max_detections: spec.nms.max_detections,
    };
    let source_detect: Vec<SourceDetect> = spec
        .sources
        .value
        .iter()
        .map(|src| {
            let o = src.detector.as_ref();
            let confidence = o
                .and_then(|o| o.confidence.as_ref())
                .map_or(confidence, |v| {
                    in_unit(&mut c, v, "sources.detector.confidence")
                });
            let classes = match (o.and_then(|o| o.classes.as_ref()), &model) {
                (Some(names), Some(m)) => {
                    Some(class_mask(&mut c, names, m, "sources.detector.classes"))
                }
                _ => classes.clone(),
            };
            let every = o
                .and_then(|o| o.every.as_ref())
                .map_or(every, |e| every_of(&mut c, e, "sources.detector.every"));
            SourceDetect {
                post: PostParams {
                    confidence,
                    classes,
                    nms,
                },
                every,
            }
        })
        .collect();
    let cap = spec.queues.capacity.value;
    if cap == 0 || cap > 4096 {
        c.at(
            spec.queues.capacity.referenced,
            format!("queues.capacity must be 1..=4096, got {cap}"),
        );
    }

    let stall_timeout = match &spec.queues.stall_timeout {
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
    let tracker = resolve_tracker(&mut c, spec.tracker.as_ref());

    // Outputs, expanded per source
    let mut outputs = Vec::new();
    let mut seen_paths: Vec<PathBuf> = Vec::new();
    let mut seen_mounts: Vec<(String, u16, String)> = Vec::new();
    for o in &spec.outputs {
        for (si, s) in sources.iter().enumerate() {
            // placeholders: report a bad template once, not per source
            let exp = |c: &mut Collector, t: &str| match expand(t, &name, &s.id) {
                Ok(v) => Some(v),
                Err(m) => {
                    if si == 0 {
                        c.at(o.referenced, m);
                    }
                    None
                }
            };
            // `folder`: the path is a folder vigil creates and reuses (an MQTT outbox)
            let mut file_at = |c: &mut Collector, p: String, what: &str, folder: bool| {
                let path = relative_to(&base, &p);
                let unusable = if folder {
                    unusable_folder(&path)
                } else {
                    uncreatable(&path)
                };
                if let Some(why) = unusable {
                    c.at(
                        o.referenced,
                        format!("{what} {} cannot be created: {why}", path.display()),
                    );
                }
                if seen_paths.contains(&path) {
                    c.at(
                        o.referenced,
                        format!(
                            "{what} {} is written twice (add {{source}} to the path?)",
                            path.display()
                        ),
                    );
                }
                seen_paths.push(path.clone());
                path
            };
            let kind = match &o.value {
                OutputSpec::Mp4 {
                    path,
                    overlay,
                    preset,
                    bitrate_kbps,
                } => {
                    let preset = preset
                        .clone()
                        .unwrap_or_else(|| spec::DEFAULT_X264_PRESET.to_string());
                    if !X264_PRESETS.contains(&preset.as_str()) && si == 0 {
                        c.at(
                            o.referenced,
                            format!(
                                "mp4 preset `{preset}` is not an x264 preset ({})",
                                X264_PRESETS.join(", ")
                            ),
                        );
                    }
                    exp(&mut c, path).map(|p| OutputKind::Mp4 {
                        path: file_at(&mut c, p, "output path", false),
                        overlay: *overlay,
                        preset,
                        bitrate_kbps: bitrate_kbps.unwrap_or(spec::DEFAULT_BITRATE_KBPS),
                    })
                }
                OutputSpec::Jsonl { path } => exp(&mut c, path).map(|p| OutputKind::Jsonl {
                    path: file_at(&mut c, p, "output path", false),
                }),
                OutputSpec::Mqtt {
                    broker,
                    topic,
                    publish,
                    client_id,
                    username,
                    password,
                    outbox,
                    outbox_max,
                    drain,
                    end_after,
                } => {
                    let broker = broker.as_deref().unwrap_or(DEFAULT_MQTT_BROKER);
                    let hp = parse_host_port(broker, 1883);
                    if let (Err(m), 0) = (&hp, si) {
                        c.at(o.referenced, format!("mqtt broker: {m}"));
                    }
                    let outbox_max = outbox_max.map_or(DEFAULT_OUTBOX_MAX, |b| b.0);
                    if outbox_max < MIN_OUTBOX && si == 0 {
                        c.at(
                            o.referenced,
                            format!(
                                "mqtt outbox_max must be at least 64KiB, got {outbox_max} bytes"
                            ),
                        );
                    }
                    if end_after == &Some(0) && si == 0 {
                        c.at(o.referenced, "mqtt end_after must be at least 1".into());
                    }
                    if let (Some(t), 0) = (topic, si)
                        && (t.is_empty() || t.contains(['#', '+']))
                    {
                        c.at(
                            o.referenced,
                            format!(
                                "mqtt topic `{t}` must be non-empty and without wildcards (# +)"
                            ),
                        );
                    }
                    let topic = exp(
                        &mut c,
                        topic.as_deref().unwrap_or("vigil/{pipeline}/{source}"),
                    );
                    let client_id = exp(
                        &mut c,
                        client_id.as_deref().unwrap_or("vigil-{pipeline}-{source}"),
                    );
                    let outbox = exp(
                        &mut c,
                        outbox.as_deref().unwrap_or("outbox/{pipeline}-{source}"),
                    )
                    .map(|p| file_at(&mut c, p, "mqtt outbox", true));
                    match (hp, topic, client_id, outbox) {
                        (Ok((host, port)), Some(topic), Some(client_id), Some(outbox)) => {
                            Some(OutputKind::Mqtt(MqttSettings {
                                host,
                                port,
                                topic,
                                client_id,
                                username: username.clone(),
                                password: password.clone(),
                                publish: match publish {
                                    Some(spec::MqttPublish::Events) => Publish::Events,
                                    _ => Publish::Frames,
                                },
                                outbox,
                                outbox_max,
                                drain: drain.map_or(DEFAULT_MQTT_DRAIN, |d| d.0),
                                end_after: end_after.unwrap_or(30),
                                keep_alive: std::time::Duration::from_secs(15),
                            }))
                        }
                        _ => None,
                    }
                }
                OutputSpec::Rtsp {
                    bind,
                    port,
                    path,
                    overlay,
                    bitrate_kbps,
                } => {
                    let bind = bind.clone().unwrap_or_else(|| "127.0.0.1".into());
                    if bind.parse::<std::net::IpAddr>().is_err() && si == 0 {
                        c.at(
                            o.referenced,
                            format!("rtsp bind `{bind}` is not an IP address (e.g. 127.0.0.1 or 0.0.0.0)"),
                        );
                    }
                    let port = port.unwrap_or(8554);
                    if port == 0 && si == 0 {
                        c.at(o.referenced, "rtsp port must not be 0".into());
                    }
                    exp(&mut c, path.as_deref().unwrap_or("/{pipeline}/{source}")).map(|p| {
                        let p = if p.starts_with('/') { p } else { format!("/{p}") };
                        let key = (bind.clone(), port, p.clone());
                        if seen_mounts.contains(&key) {
                            c.at(
                                o.referenced,
                                format!(
                                    "rtsp://{bind}:{port}{p} is served twice (add {{source}} to the path?)"
                                ),
                            );
                        }
                        seen_mounts.push(key);
                        OutputKind::Rtsp(RtspSettings {
                            bind: bind.clone(),
                            port,
                            path: p,
                            overlay: *overlay,
                            bitrate_kbps: bitrate_kbps.unwrap_or(spec::DEFAULT_BITRATE_KBPS),
                        })
                    })
                }
            };
            if let Some(kind) = kind {
                outputs.push(OutputPlan {
                    source: s.id.clone(),
                    kind,
                });
            }
        }
    }

    match model {
        Some(model) if c.problems.is_empty() => Ok(Plan {
            file: file.to_path_buf(),
            name,
            name_at: (spec.name.referenced.line(), spec.name.referenced.column()),
            sources,
            resize: d.resize.unwrap_or(model.resize),
            model,
            device,
            post: PostParams {
                confidence,
                classes,
                nms: NmsParams {
                    iou,
                    class_aware: spec.nms.class_aware,
                    max_detections: spec.nms.max_detections,
                },
            },
            batch,
            every,
            source_detect,
            tracker,
            regress: super::Tolerances::from_spec(spec.regress.as_ref()),
            queue_capacity: cap.clamp(1, 4096),
            stall_timeout,
            outputs,
        }),
        _ => Err(ConfigError {
            problems: c.problems,
        }),
    }
}

/// The tracker a spec asks for (ByteTrack when absent), with range checks.
fn resolve_tracker(c: &mut Collector, spec: Option<&Spanned<TrackerSpec>>) -> Option<TrackerKind> {
    let Some(spec) = spec else {
        return Some(TrackerKind::ByteTrack(ByteTrackParams::default()));
    };
    let loc = spec.referenced;
    let mut unit = |name: &str, v: Option<f64>, default: f64| {
        let v = v.unwrap_or(default);
        if !(0.0..=1.0).contains(&v) {
            c.at(
                loc,
                format!("tracker.{name} must be between 0 and 1, got {v}"),
            );
        }
        v
    };
    Some(match &spec.value {
        TrackerSpec::None => return None,
        TrackerSpec::Iou { iou, max_age } => {
            let d = IouParams::default();
            TrackerKind::Iou(IouParams {
                iou: unit("iou", *iou, d.iou),
                max_age: max_age.unwrap_or(d.max_age),
            })
        }
        TrackerSpec::Sort {
            max_age,
            min_hits,
            iou,
        } => {
            let d = SortParams::default();
            TrackerKind::Sort(SortParams {
                iou: unit("iou", *iou, d.iou),
                max_age: max_age.unwrap_or(d.max_age),
                min_hits: min_hits.unwrap_or(d.min_hits),
            })
        }
        TrackerSpec::Bytetrack {
            high,
            low,
            match_thresh,
            max_age,
        } => {
            let d = ByteTrackParams::default();
            let p = ByteTrackParams {
                high: unit("high", *high, d.high),
                low: unit("low", *low, d.low),
                match_thresh: unit("match_thresh", *match_thresh, d.match_thresh),
                max_age: max_age.unwrap_or(d.max_age),
            };
            if p.low >= p.high {
                c.at(
                    loc,
                    format!(
                        "tracker.low ({}) must be below tracker.high ({})",
                        p.low, p.high
                    ),
                );
            }
            TrackerKind::ByteTrack(p)
        }
        TrackerSpec::Ocsort {
            det_thresh,
            max_age,
            min_hits,
            iou,
            delta_t,
            inertia,
        } => {
            let d = OcSortParams::default();
            TrackerKind::OcSort(OcSortParams {
                det_thresh: unit("det_thresh", *det_thresh, d.det_thresh),
                iou: unit("iou", *iou, d.iou),
                inertia: unit("inertia", *inertia, d.inertia),
                max_age: max_age.unwrap_or(d.max_age),
                min_hits: min_hits.unwrap_or(d.min_hits),
                delta_t: delta_t.unwrap_or(d.delta_t).max(1),
            })
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_expand_and_unknown_ones_are_named() {
        assert_eq!(
            expand("out/{pipeline}-{source}.mp4", "p", "cam").unwrap(),
            "out/p-cam.mp4"
        );
        let e = expand("out/{camera}.mp4", "p", "cam").unwrap_err();
        assert!(e.contains("{camera}"), "{e}");
    }
}
