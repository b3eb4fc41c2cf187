//! Outputs: MP4 (with overlay), JSON lines, MQTT (through a durable outbox), RTSP restream. Each
//! output runs on its own thread behind its own edge, so a slow one never stalls the others.
//!
//! Every kind is one module implementing [`Output`] (its pipeline-file keys, how they resolve per
//! source, and the writer) plus one line in the [`outputs!`] registration below; config, the
//! runtime and the docs take the kinds from there.

pub mod clips;
pub mod events;
pub mod jsonl;
pub mod mp4;
pub mod mqtt;
pub mod outbox;
pub mod overlay;
pub mod record;
pub mod retention;
pub mod rle;
pub mod rtsp;
pub mod snapshot;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::frame::Frame;
use record::Record;

#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("{path}: {message}")]
    Io { path: String, message: String },
    #[error("{path}: encoder: {message}")]
    Encode { path: String, message: String },
}

/// End an encoder pipeline's stream at its `appsrc` and wait (at most `limit`) until its muxer
/// has written the file's index.
pub fn end_and_wait(
    pipeline: &gstreamer::Pipeline,
    src: &gstreamer_app::AppSrc,
    limit: std::time::Duration,
) -> Result<(), String> {
    use gstreamer::prelude::*;
    src.end_of_stream()
        .map_err(|f| format!("cannot end the stream: {f:?}"))?;
    let bus = pipeline.bus().ok_or("the encoder pipeline has no bus")?;
    let msg = bus.timed_pop_filtered(
        gstreamer::ClockTime::from_nseconds(limit.as_nanos() as u64),
        &[gstreamer::MessageType::Eos, gstreamer::MessageType::Error],
    );
    match msg.as_ref().map(|m| m.view()) {
        Some(gstreamer::MessageView::Eos(_)) => Ok(()),
        Some(gstreamer::MessageView::Error(e)) => Err(e.error().to_string()),
        _ => Err(format!("the muxer did not finish within {limit:?}")),
    }
}

/// Create `path` (empty) and its parent folders.
pub fn create_file(path: &Path) -> Result<File, OutputError> {
    open_file(path, false)
}

/// Open `path` for appending (created if missing, with its parent folders).
pub fn append_file(path: &Path) -> Result<File, OutputError> {
    open_file(path, true)
}

fn open_file(path: &Path, append: bool) -> Result<File, OutputError> {
    let io = |e: std::io::Error| OutputError::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    if append {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(io)
    } else {
        File::create(path).map_err(io)
    }
}

/// serde default of the outputs' on-by-default switches (`overlay`, `snapshot`).
fn default_true() -> bool {
    true
}

/// One output kind.
pub trait Output: Sized + Send + 'static {
    /// The keys a person writes for it in the pipeline file, besides `kind`.
    type Spec: serde::de::DeserializeOwned + std::fmt::Debug;
    /// Its spec resolved for one source: plain values.
    type Settings: Clone + std::fmt::Debug + Send + 'static;
    /// Check `spec` and resolve it for the source of `cx`; problems go to `cx` (and then the
    /// result does not matter).
    fn resolve(spec: &Self::Spec, cx: &mut Resolve) -> Option<Self::Settings>;
    /// One line for logs, metrics and `/pipelines`; never a credential.
    fn describe(settings: &Self::Settings) -> String;
    /// Open it (on the output's own thread).
    fn start(settings: Self::Settings, cx: &OutputContext) -> Result<Self, OutputError>;
    fn write(&mut self, frame: &Frame, cx: &OutputContext) -> Result<(), OutputError>;
    /// Finalize; an output waiting on a peer stops waiting at `deadline`. Returns frames written.
    fn finish(self, deadline: Option<Instant>) -> Result<u64, OutputError>;
    /// The file it writes now, for outputs that write one (shown in `/pipelines`).
    fn file(&self) -> Option<&Path> {
        None
    }
    /// Counters it keeps beyond frames and time, for `/metrics`.
    fn stats(&self) -> Option<OutputStats> {
        None
    }
}

/// Counters of an output beyond frames and time.
#[derive(Debug, Clone)]
pub enum OutputStats {
    Mqtt(std::sync::Arc<mqtt::MqttStats>),
}

/// What every output of a source knows besides its own settings.
#[derive(Debug, Clone)]
pub struct OutputContext {
    pub pipeline: String,
    pub source: String,
    pub classes: Vec<String>,
    /// No wall-clock times in records (goldens, regression).
    pub deterministic: bool,
    /// Append to what a previous run wrote (a reload of `vigil serve`) instead of replacing it.
    pub keep_existing: bool,
    /// The cluster node running the pipeline, for its records.
    pub node: Option<String>,
}

impl OutputContext {
    /// The metadata record of `frame` (JSONL, MQTT).
    pub fn record(&self, frame: &Frame) -> Record {
        let mut r = Record::of(frame, &self.pipeline, &self.classes, !self.deterministic);
        r.node.clone_from(&self.node);
        r
    }
}

/// Resolving one output entry of a pipeline file for one source: where relative paths start,
/// the placeholders' values, and what other outputs already claimed (a file written twice, a
/// mount served twice). A problem reported for every source alike is kept once.
pub struct Resolve<'a> {
    pub pipeline: &'a str,
    pub source: &'a str,
    /// The pipeline file's folder.
    pub base: &'a Path,
    problems: &'a mut Vec<String>,
    claims: &'a mut Vec<String>,
}

impl<'a> Resolve<'a> {
    pub fn new(
        pipeline: &'a str,
        source: &'a str,
        base: &'a Path,
        problems: &'a mut Vec<String>,
        claims: &'a mut Vec<String>,
    ) -> Self {
        Self {
            pipeline,
            source,
            base,
            problems,
            claims,
        }
    }

    pub fn problem(&mut self, message: String) {
        if !self.problems.contains(&message) {
            self.problems.push(message);
        }
    }

    /// `template` with `{pipeline}` and `{source}` filled in.
    pub fn expand(&mut self, template: &str) -> Option<String> {
        crate::paths::expand(template, self.pipeline, self.source)
            .map_err(|m| self.problem(m))
            .ok()
    }

    /// [`expand`](Self::expand), leaving the placeholders in `keep` as they are.
    pub fn expand_keeping(&mut self, template: &str, keep: &[&str]) -> Option<String> {
        crate::paths::expand_keeping(template, self.pipeline, self.source, keep)
            .map_err(|m| self.problem(m))
            .ok()
    }

    /// Claim `key` (a path, a URL) for this output; `None` when an earlier output has it.
    pub fn claim(&mut self, key: String) -> Option<String> {
        if self.claims.contains(&key) {
            return None;
        }
        self.claims.push(key.clone());
        Some(key)
    }

    /// The file (or, with `folder`, the folder vigil creates and reuses) at `template`, relative
    /// to the pipeline file: checked for being creatable and for not being written twice.
    pub fn path(&mut self, template: &str, what: &str, folder: bool) -> Option<PathBuf> {
        let path = crate::paths::relative_to(self.base, &self.expand(template)?);
        let unusable = if folder {
            crate::paths::unusable_folder(&path)
        } else {
            crate::paths::uncreatable(&path)
        };
        if let Some(why) = unusable {
            self.problem(format!(
                "{what} {} cannot be created: {why}",
                path.display()
            ));
        }
        if self.claim(path.display().to_string()).is_none() {
            self.problem(format!(
                "{what} {} is written twice (add {{source}} to the path?)",
                path.display()
            ));
        }
        Some(path)
    }
}

/// The registered output kinds: `"kind" => Variant(WriterType)`, one line each. Generates the
/// pipeline-file enum ([`OutputSpec`]), the resolved one ([`OutputSettings`]) and the running one
/// ([`AnyOutput`]).
macro_rules! outputs {
    ($($kind:literal => $variant:ident($ty:ty)),* $(,)?) => {
        /// An output as the pipeline file writes it: `kind` and that kind's keys.
        #[derive(Debug, serde::Deserialize)]
        #[serde(tag = "kind")]
        pub enum OutputSpec {
            $(#[serde(rename = $kind)] $variant(<$ty as Output>::Spec),)*
        }

        /// An output resolved for one source.
        #[derive(Debug, Clone)]
        pub enum OutputSettings {
            $($variant(<$ty as Output>::Settings),)*
        }

        /// A running output.
        #[allow(
            clippy::large_enum_variant,
            reason = "one per output thread, moved once; boxing buys nothing"
        )]
        pub enum AnyOutput {
            $($variant($ty),)*
        }

        /// The `kind` names, in registration order.
        pub const KINDS: &[&str] = &[$($kind),*];

        impl OutputSpec {
            pub fn resolve(&self, cx: &mut Resolve) -> Option<OutputSettings> {
                match self {
                    $(Self::$variant(s) => <$ty as Output>::resolve(s, cx).map(OutputSettings::$variant),)*
                }
            }
        }

        impl OutputSettings {
            pub fn describe(&self) -> String {
                match self {
                    $(Self::$variant(s) => <$ty as Output>::describe(s),)*
                }
            }

            /// Its `kind` (also its name in `VIGIL_FAULT`).
            pub fn kind(&self) -> &'static str {
                match self {
                    $(Self::$variant(_) => $kind,)*
                }
            }

            pub fn start(self, cx: &OutputContext) -> Result<AnyOutput, OutputError> {
                match self {
                    $(Self::$variant(s) => <$ty as Output>::start(s, cx).map(AnyOutput::$variant),)*
                }
            }
        }

        impl AnyOutput {
            pub fn kind(&self) -> &'static str {
                match self {
                    $(Self::$variant(_) => $kind,)*
                }
            }

            pub fn write(&mut self, frame: &Frame, cx: &OutputContext) -> Result<(), OutputError> {
                match self {
                    $(Self::$variant(o) => <$ty as Output>::write(o, frame, cx),)*
                }
            }

            pub fn finish(self, deadline: Option<Instant>) -> Result<u64, OutputError> {
                match self {
                    $(Self::$variant(o) => <$ty as Output>::finish(o, deadline),)*
                }
            }

            pub fn file(&self) -> Option<&Path> {
                match self {
                    $(Self::$variant(o) => <$ty as Output>::file(o),)*
                }
            }

            pub fn stats(&self) -> Option<OutputStats> {
                match self {
                    $(Self::$variant(o) => <$ty as Output>::stats(o),)*
                }
            }
        }
    };
}

outputs! {
    "mp4" => Mp4(mp4::Mp4Writer),
    "jsonl" => Jsonl(jsonl::JsonlWriter),
    "mqtt" => Mqtt(mqtt::MqttWriter),
    "rtsp" => Rtsp(rtsp::RtspWriter),
    "events" => Events(events::EventsWriter),
    "clips" => Clips(clips::ClipsWriter),
}
