//! `vigil serve`: every pipeline file of a folder, each on its own threads, for months.
//!
//! - Start: every `*.yaml`/`*.yml` in the folder is validated and started; a bad file is reported
//!   (file:line:col, every problem) and skipped, the others run. Then systemd hears `READY=1`.
//! - Reload (SIGHUP, or a file's content changing — the folder is polled, which works on every
//!   filesystem): new and changed files are validated first. A bad file is rejected with its
//!   errors and whatever ran from it keeps running untouched; a good changed file restarts only its
//!   own pipeline (the old one drains and finalizes its outputs first); a removed file stops its
//!   pipeline.
//! - Health: a pipeline is stuck when one of its stages or outputs has stalled (frames wait on it
//!   and it took none for the pipeline's `queues.stall_timeout`, the runtime's own definition).
//!   systemd's watchdog is fed only while no pipeline is stuck; `/healthz` says the same, and also
//!   fails while an output of a running pipeline has failed.
//! - Stop (SIGTERM/SIGINT): every pipeline drains and finalizes within `drain_timeout`; a second
//!   signal exits at once.

pub mod api;
pub mod auth;
pub mod console;
pub mod history;
pub mod http;
pub mod live;
pub mod media;
pub mod prom;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use crate::config::{self, Plan};
use crate::runtime::metrics::{PipelineMetrics, lock};
use crate::runtime::{RunOptions, RunReport};

/// How `vigil serve` runs.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub config_dir: PathBuf,
    /// Address of the HTTP endpoints (`/healthz`, `/readyz`, `/metrics`, `/pipelines`).
    pub http: SocketAddr,
    /// How often the folder is checked for changed files.
    pub poll: Duration,
    /// How long stopping or reloading one pipeline may take to drain (see `RunOptions`).
    pub drain_timeout: Duration,
    /// Sources of every pipeline file together (see [`DEFAULT_MAX_SOURCES`]).
    pub max_sources: usize,
    /// Where the service keeps what it writes: API tokens (`tokens.json`) and the pipelines
    /// created through the API (`pipelines/`, read beside `config_dir`).
    pub state_dir: PathBuf,
    /// `/metrics` without a token (for a Prometheus that cannot send one).
    pub metrics_public: bool,
    /// Cluster mode (`vigil serve --cluster`): the pipelines this node owns, as the cluster
    /// agent writes them, instead of `config_dir`.
    pub cluster: Option<ClusterNode>,
}

/// What the service needs to know of cluster mode (the cluster agent, a layer above, drives it).
#[derive(Clone)]
pub struct ClusterNode {
    pub node_id: String,
    /// The folder the agent writes owned pipelines into.
    pub owned_dir: PathBuf,
    /// Where relative paths of cluster pipelines resolve (`--data-dir`).
    pub data_dir: PathBuf,
    /// Where the API writes pipelines in cluster mode (the cluster's store, etcd).
    pub store: Arc<dyn PipelineStore>,
}

impl std::fmt::Debug for ClusterNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterNode")
            .field("node_id", &self.node_id)
            .field("owned_dir", &self.owned_dir)
            .field("data_dir", &self.data_dir)
            .finish_non_exhaustive()
    }
}

/// The fleet's pipelines as the API changes them in cluster mode (blocking calls).
pub trait PipelineStore: Send + Sync {
    /// Store `text` as pipeline `name` (validated by the caller).
    fn put(&self, name: &str, text: &str) -> Result<(), String>;
    /// Remove pipeline `name`; whether it existed.
    fn delete(&self, name: &str) -> Result<bool, String>;
}

/// The state folder when none is given: systemd's `StateDirectory=` (`$STATE_DIRECTORY`), else
/// `/var/lib/vigil`.
pub fn default_state_dir() -> PathBuf {
    std::env::var_os("STATE_DIRECTORY")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/lib/vigil"))
}

/// Default total of sources across every pipeline file of `vigil serve` (`--max-sources`): from
/// measurement (README, "Limits": 12–16 MiB and 5–7 threads a source), 64 sources are ≈ 1.2 GiB
/// and ≈ 450 threads plus one detector per file.
pub const DEFAULT_MAX_SOURCES: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{0}: {1}")]
    ConfigDir(String, String),
    #[error("HTTP on {0}: {1}")]
    Http(SocketAddr, String),
    #[error("GStreamer: {0}")]
    Gst(String),
    #[error("cannot handle signals")]
    Signal(#[source] std::io::Error),
    #[error("{0}")]
    Companion(String),
    #[error("stopped, but not everything drained in time: {0}")]
    Undrained(String),
}

/// Where a pipeline is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PipelineState {
    /// Loading its model, then running.
    Running,
    /// Every source ended (files), outputs finalized.
    Finished,
    /// It could not start or a part of it failed; see `error`.
    Failed,
    /// Its file is invalid and nothing from it runs.
    Rejected,
}

/// One pipeline file and what runs from it.
pub struct Entry {
    pub file: PathBuf,
    /// The pipeline's `name` (of the running config).
    pub name: String,
    /// SHA-256 of the running config file's bytes.
    pub config_sha256: String,
    pub started_at: SystemTime,
    pub metrics: Arc<PipelineMetrics>,
    pub plan: Option<Arc<Plan>>,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<Result<RunReport, String>>>,
    pub state: PipelineState,
    /// Errors of the run (failed, or rejected when nothing ever ran from the file).
    pub error: Option<String>,
    /// Why the newest version of the file was rejected (the pipeline runs its previous config).
    pub reload_error: Option<String>,
    /// SHA-256 of the file version that was rejected (so an unchanged bad file is not re-reported).
    pub rejected_sha256: Option<String>,
    /// Rejected only because of other files (a name one holds, the total of sources): the
    /// service's `generation` then. Retried once another pipeline started or stopped.
    pub blocked_at: Option<u64>,
    /// Times this file was (re)started.
    pub starts: u64,
    /// Written through the API (under the state folder): the API may change and delete it.
    pub managed: bool,
}

/// The pipelines of a `vigil serve`, shared with the HTTP endpoints.
pub struct Service {
    pub opts: ServeOptions,
    pub entries: Mutex<BTreeMap<PathBuf, Entry>>,
    /// Every pipeline started at least once (systemd was told READY).
    pub ready: AtomicBool,
    pub stopping: AtomicBool,
    pub reloads: AtomicU64,
    pub reload_failures: AtomicU64,
    /// Moves whenever a pipeline starts or stops: files blocked by others are then retried.
    generation: AtomicU64,
    pub started_at: SystemTime,
    /// The events of every pipeline (`/events`, `/events/stream`, `/metrics`).
    pub events: Arc<crate::runtime::events::EventHub>,
    /// Tokens, console sessions, login limits.
    pub auth: auth::Auth,
    /// One reconcile at a time (the folder poll and the API both run them).
    reconciling: Mutex<()>,
    /// `(pipeline, source)` paused through the API; kept across restarts of the pipeline and of
    /// the service (`STATE_DIR/paused.json`).
    pub paused: Mutex<BTreeSet<(String, String)>>,
    /// The last hour of each source (the console's charts).
    pub history: Mutex<history::History>,
}

/// The pipeline files of `dir` (`*.yaml`, `*.yml`, not hidden), sorted, with their contents' hash.
pub fn pipeline_files(dir: &Path) -> Result<BTreeMap<PathBuf, String>, ServeError> {
    let rd = std::fs::read_dir(dir)
        .map_err(|e| ServeError::ConfigDir(dir.display().to_string(), e.to_string()))?;
    let mut out = BTreeMap::new();
    for e in rd.filter_map(|e| e.ok()) {
        let p = e.path();
        let name = e.file_name();
        let name = name.to_string_lossy();
        let yaml = p.extension().is_some_and(|x| x == "yaml" || x == "yml");
        if !yaml || name.starts_with('.') || !p.is_file() {
            continue;
        }
        // a file being written may vanish or be partial: the next poll sees it whole
        if let Ok(bytes) = std::fs::read(&p) {
            out.insert(p, crate::hash::sha256_hex(&bytes));
        }
    }
    Ok(out)
}

impl Service {
    pub fn new(opts: ServeOptions) -> Self {
        Self {
            entries: Mutex::new(BTreeMap::new()),
            ready: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            reloads: AtomicU64::new(0),
            reload_failures: AtomicU64::new(0),
            generation: AtomicU64::new(0),
            started_at: SystemTime::now(),
            events: Arc::default(),
            auth: auth::Auth::new(&opts.state_dir),
            reconciling: Mutex::new(()),
            paused: Mutex::new(read_paused(&opts.state_dir)),
            history: Mutex::default(),
            opts,
        }
    }

    /// Where pipelines created through the API are written (read beside `config_dir`).
    pub fn managed_dir(&self) -> PathBuf {
        self.opts.state_dir.join("pipelines")
    }

    /// The pipeline files of the config folder and of the API's folder (missing: none).
    fn all_files(&self) -> Result<BTreeMap<PathBuf, String>, ServeError> {
        if let Some(c) = &self.opts.cluster {
            return pipeline_files(&c.owned_dir);
        }
        let mut files = pipeline_files(&self.opts.config_dir)?;
        let managed = self.managed_dir();
        if managed.is_dir() {
            files.extend(pipeline_files(&managed)?);
        }
        Ok(files)
    }

    /// Sources paused through the API stay paused when their pipeline restarts.
    fn apply_paused(&self, e: &Entry) {
        let paused = lock(&self.paused);
        for s in &e.metrics.sources {
            let key = (e.name.clone(), s.id.clone());
            s.paused.store(paused.contains(&key), Ordering::Relaxed);
        }
    }

    /// Validate the pipeline file `file`. A cluster pipeline resolves its relative paths
    /// against `--data-dir`, not against the folder the agent wrote it to.
    fn load(&self, file: &Path) -> Result<Plan, config::ConfigError> {
        let Some(c) = &self.opts.cluster else {
            return config::load(file);
        };
        let text = std::fs::read_to_string(file).map_err(|e| config::ConfigError {
            problems: vec![config::Problem {
                file: file.to_path_buf(),
                line: 0,
                column: 0,
                message: format!("cannot read pipeline file: {e}"),
            }],
        })?;
        let name = file.file_name().unwrap_or_default();
        config::parse(&c.data_dir.join(name), &text)
    }

    /// Stop every pipeline now without waiting (cluster fencing: the lease may be lost); the
    /// stages drain within their deadline on their own threads.
    pub fn stop_all_now(&self) {
        for e in lock(&self.entries).values() {
            e.stop.store(true, Ordering::Relaxed);
        }
    }

    /// Sample every running pipeline's sources into the history.
    pub fn sample_history(&self) {
        let pipelines: Vec<_> = lock(&self.entries)
            .values()
            .filter(|e| e.state == PipelineState::Running)
            .map(|e| (e.name.clone(), e.metrics.clone()))
            .collect();
        lock(&self.history).sample(&pipelines);
    }

    /// Bring the running pipelines in line with the folder. Returns how many files were rejected.
    pub fn reconcile(&self) -> Result<usize, ServeError> {
        let _one_at_a_time = lock(&self.reconciling);
        let files = self.all_files()?;
        let mut rejected = 0;
        // removed files: stop their pipelines
        let gone: Vec<PathBuf> = lock(&self.entries)
            .keys()
            .filter(|f| !files.contains_key(*f))
            .cloned()
            .collect();
        for f in gone {
            if let Some(e) = lock(&self.entries).remove(&f) {
                tracing::info!(file = %f.display(), "pipeline file removed: stopping its pipeline");
                stop_and_join(e);
                self.generation.fetch_add(1, Ordering::Relaxed);
            }
        }
        for (file, sha) in files {
            if self.unchanged(&file, &sha) {
                continue;
            }
            let loaded = self
                .load(&file)
                .map_err(|problems| (problems.to_string(), false))
                .and_then(|plan| match self.blocked_by_others(&file, &plan) {
                    Some(why) => Err((why, true)),
                    None => Ok(plan),
                });
            match loaded {
                Err((text, by_others)) => {
                    rejected += 1;
                    self.reject(&file, sha, text, by_others);
                }
                Ok(plan) => {
                    // The old pipeline stays listed (and scraped) while it drains.
                    let old = lock(&self.entries).get_mut(&file).map(|e| {
                        e.stop.store(true, Ordering::Relaxed);
                        if e.state != PipelineState::Rejected {
                            tracing::info!(file = %file.display(), pipeline = %e.name, "pipeline file changed: restarting its pipeline");
                            self.reloads.fetch_add(1, Ordering::Relaxed);
                        }
                        (e.starts, e.name.clone(), e.handle.take())
                    });
                    let starts = old.as_ref().map_or(0, |o| o.0);
                    if let Some((_, name, Some(h))) = old {
                        match h.join() {
                            Ok(Ok(r)) if r.errors.is_empty() => {
                                tracing::info!(pipeline = %name, "previous pipeline drained")
                            }
                            Ok(Ok(r)) => {
                                tracing::warn!(pipeline = %name, "previous pipeline ended with errors: {}", r.errors.join("; "))
                            }
                            Ok(Err(e)) => {
                                tracing::warn!(pipeline = %name, "previous pipeline: {e}")
                            }
                            Err(_) => {
                                tracing::error!(pipeline = %name, "previous pipeline thread panicked")
                            }
                        }
                    }
                    let mut plan = plan;
                    if let Some(old) = lock(&self.entries).get(&file) {
                        continue_seq(old, &mut plan);
                    }
                    continue_seq_of_jsonl(&mut plan);
                    let run = RunOptions {
                        deterministic: false,
                        keep_existing: true,
                        drain_timeout: self.opts.drain_timeout,
                        node: self.opts.cluster.as_ref().map(|c| c.node_id.clone()),
                    };
                    let mut e = start(file.clone(), sha, plan, run, &self.events);
                    e.starts = starts + 1;
                    e.managed = file.starts_with(self.managed_dir());
                    self.apply_paused(&e);
                    lock(&self.entries).insert(file, e);
                    self.generation.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        Ok(rejected)
    }

    /// Whether `file` at `sha` needs nothing done: it is what runs, or the version already
    /// rejected (unless it was rejected for other files' sake and those changed since). A file
    /// back at its running content has its reload error cleared.
    fn unchanged(&self, file: &Path, sha: &str) -> bool {
        let generation = self.generation.load(Ordering::Relaxed);
        let mut entries = lock(&self.entries);
        let Some(e) = entries.get_mut(file) else {
            return false;
        };
        let retry = e.blocked_at.is_some_and(|g| g != generation);
        if e.config_sha256 == sha {
            e.rejected_sha256 = None;
            e.blocked_at = None;
            if e.reload_error.take().is_some() {
                tracing::info!(file = %file.display(), "pipeline file is back to its running config: reload error cleared");
            }
            return true;
        }
        e.rejected_sha256.as_deref() == Some(sha) && !retry
    }

    /// Why `plan` (of `file`) cannot run beside the other files' pipelines, if so: another holds
    /// its name (listed and not rejected), or together they would pass `max_sources`.
    pub(crate) fn blocked_by_others(&self, file: &Path, plan: &Plan) -> Option<String> {
        let entries = lock(&self.entries);
        let others = || entries.iter().filter(|(f, _)| *f != file);
        if let Some((other, _)) =
            others().find(|(_, e)| e.name == plan.name && e.state != PipelineState::Rejected)
        {
            return Some(name_taken(plan, other));
        }
        let running: usize = others()
            .filter(|(_, e)| e.state == PipelineState::Running)
            .filter_map(|(_, e)| e.plan.as_ref())
            .map(|p| p.sources.len())
            .sum();
        let max = self.opts.max_sources;
        (running + plan.sources.len() > max).then(|| {
            format!(
                "{}: its {} sources and the {running} running would pass --max-sources {max} \
                 (the total of every pipeline file; each source costs memory and threads)",
                plan.file.display(),
                plan.sources.len()
            )
        })
    }

    /// Record that the version `sha` of `file` cannot run (`text` says why); whatever runs from
    /// the file keeps running. `by_others`: rejected only because of other files' pipelines.
    fn reject(&self, file: &Path, sha: String, text: String, by_others: bool) {
        self.reload_failures.fetch_add(1, Ordering::Relaxed);
        let mut entries = lock(&self.entries);
        let keeps = entries
            .get(file)
            .is_some_and(|e| e.state != PipelineState::Rejected);
        tracing::error!(file = %file.display(), "pipeline file rejected{}:\n{text}",
            if keeps { "; the running pipeline keeps its previous config" } else { "" });
        let e = entries.entry(file.to_path_buf()).or_insert_with(|| Entry {
            file: file.to_path_buf(),
            name: file
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default(),
            config_sha256: String::new(),
            started_at: SystemTime::now(),
            metrics: Arc::default(),
            plan: None,
            stop: Arc::default(),
            handle: None,
            state: PipelineState::Rejected,
            error: None,
            reload_error: None,
            rejected_sha256: None,
            blocked_at: None,
            starts: 0,
            managed: file.starts_with(self.managed_dir()),
        });
        if e.state == PipelineState::Rejected {
            e.error = Some(text.clone());
        }
        e.reload_error = Some(text);
        e.rejected_sha256 = Some(sha);
        e.blocked_at = by_others.then(|| self.generation.load(Ordering::Relaxed));
    }

    /// Notice pipelines whose threads have ended (finished or failed).
    pub fn reap(&self) {
        let mut entries = lock(&self.entries);
        for e in entries.values_mut() {
            if e.handle.as_ref().is_some_and(|h| h.is_finished())
                && let Some(h) = e.handle.take()
            {
                settle(e, h);
                // its sources no longer count against --max-sources
                self.generation.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Running pipelines with a stalled stage or output (`queues.stall_timeout`, the runtime's
    /// definition), as `pipeline: stage, …`.
    pub fn stuck(&self) -> Vec<String> {
        lock(&self.entries)
            .values()
            .filter(|e| e.state == PipelineState::Running)
            .filter_map(|e| {
                let stalled = e.metrics.stalled();
                (!stalled.is_empty()).then(|| format!("{}: {}", e.name, stalled.join(", ")))
            })
            .collect()
    }

    /// Outputs of running pipelines that failed or stalled: `pipeline: error naming the output`.
    pub fn failed_outputs(&self) -> Vec<String> {
        lock(&self.entries)
            .values()
            .filter(|e| e.state == PipelineState::Running)
            .flat_map(|e| {
                e.metrics
                    .failed_outputs()
                    .into_iter()
                    // the error names its output (`output jsonl … failed: …`)
                    .map(|(_, err)| format!("{}: {err}", e.name))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Stop every pipeline (drain, finalize) and wait for them.
    /// Stop every pipeline (drain, finalize) and wait for them. Returns the errors of pipelines
    /// that did not drain within the deadline (`pipeline: what`).
    pub fn shutdown(&self) -> Vec<String> {
        self.stopping.store(true, Ordering::Relaxed);
        let entries = std::mem::take(&mut *lock(&self.entries));
        for e in entries.values() {
            e.stop.store(true, Ordering::Relaxed);
        }
        let mut undrained = Vec::new();
        for (_, e) in entries {
            let name = e.name.clone();
            if let Some(err) =
                stop_and_join(e).filter(|e| e.contains(crate::runtime::supervise::UNDRAINED))
            {
                undrained.push(format!("{name}: {err}"));
            }
        }
        undrained
    }
}

/// Why `plan` cannot run: `other` already runs a pipeline of the same name (two would write the
/// same `{pipeline}` paths and expose the same /metrics series).
fn name_taken(plan: &Plan, other: &Path) -> String {
    format!(
        "{}:{}:{}: pipeline name `{}` is already used by {}: names must be unique across the folder \
         (they key /metrics, /pipelines and `{{pipeline}}` in output paths)",
        plan.file.display(),
        plan.name_at.0,
        plan.name_at.1,
        plan.name,
        other.display()
    )
}

/// What `vigil serve` would refuse across the valid `plans` of a folder (in file order, as it
/// starts them): a name an earlier file already uses, sources past `max_sources` in total.
pub fn folder_problems(plans: &[Plan], max_sources: usize) -> Vec<String> {
    let mut problems = Vec::new();
    let mut names: BTreeMap<&str, &Path> = BTreeMap::new();
    let mut total = 0;
    for p in plans {
        if let Some(other) = names.get(p.name.as_str()) {
            problems.push(name_taken(p, other));
            continue;
        }
        names.insert(&p.name, &p.file);
        total += p.sources.len();
        if total > max_sources {
            problems.push(format!(
                "{}: its {} sources bring the folder to {total}, over --max-sources {max_sources} \
                 (the total of every pipeline file; each source costs memory and threads)",
                p.file.display(),
                p.sources.len()
            ));
        }
    }
    problems
}

/// A reloaded pipeline appends to its outputs: each source that ran before numbers its frames on
/// from where that run stopped (its first seq plus the frames it decoded).
fn continue_seq(old: &Entry, plan: &mut Plan) {
    let Some(old_plan) = &old.plan else { return };
    for s in &mut plan.sources {
        let before = old_plan.sources.iter().find(|o| o.id == s.id);
        let decoded = old.metrics.sources.iter().find(|m| m.id == s.id);
        if let (Some(before), Some(decoded)) = (before, decoded) {
            s.seq_start = before.seq_start + decoded.ingest.frames.load(Ordering::Relaxed);
        }
    }
}

/// After a restart of the service the JSONL outputs are appended to as well: each source numbers
/// its frames on from the last record its JSONL files hold, so `seq` never repeats in a file.
fn continue_seq_of_jsonl(plan: &mut Plan) {
    for s in &mut plan.sources {
        let last = plan
            .outputs
            .iter()
            .filter(|o| o.source == s.id)
            .filter_map(|o| match &o.settings {
                crate::output::OutputSettings::Jsonl(j) => last_seq(&j.path),
                _ => None,
            })
            .max();
        if let Some(last) = last {
            s.seq_start = s.seq_start.max(last + 1);
        }
    }
}

/// The `seq` of the last whole record of a JSONL file (read from its last 64 KiB).
fn last_seq(path: &Path) -> Option<u64> {
    use std::io::{Read, Seek, SeekFrom};
    const TAIL: u64 = 64 * 1024;
    // a FIFO or a device has nothing to read back (and opening a FIFO would wait for a writer)
    let meta = std::fs::metadata(path)
        .ok()
        .filter(std::fs::Metadata::is_file)?;
    let mut f = std::fs::File::open(path).ok()?;
    f.seek(SeekFrom::Start(meta.len().saturating_sub(TAIL)))
        .ok()?;
    let mut tail = Vec::new();
    f.take(TAIL).read_to_end(&mut tail).ok()?;
    String::from_utf8_lossy(&tail)
        .lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find_map(|v| v.get("seq")?.as_u64())
}

/// Start the pipeline of `plan` on its own thread.
fn start(
    file: PathBuf,
    sha: String,
    plan: Plan,
    run: RunOptions,
    events: &Arc<crate::runtime::events::EventHub>,
) -> Entry {
    let plan = Arc::new(plan);
    let mut metrics = PipelineMetrics::for_plan(&plan);
    metrics.events = events.clone();
    let metrics = Arc::new(metrics);
    let stop = Arc::new(AtomicBool::new(false));
    let (p, m, s) = (plan.clone(), metrics.clone(), stop.clone());
    tracing::info!(file = %file.display(), pipeline = %plan.name, sources = plan.sources.len(), "starting pipeline");
    let handle = std::thread::Builder::new()
        .name(format!("pipeline-{}", plan.name))
        .spawn(move || -> Result<RunReport, String> {
            let detector = p.load_detector().map_err(|e| e.to_string())?;
            Ok(crate::runtime::pipeline::run_observed(
                &p, detector, &s, &run, &m,
            ))
        });
    let (handle, state, error) = match handle {
        Ok(h) => (Some(h), PipelineState::Running, None),
        Err(e) => (
            None,
            PipelineState::Failed,
            Some(format!("cannot start a thread: {e}")),
        ),
    };
    Entry {
        file,
        name: plan.name.clone(),
        config_sha256: sha,
        started_at: SystemTime::now(),
        metrics,
        plan: Some(plan),
        stop,
        handle,
        state,
        error,
        reload_error: None,
        rejected_sha256: None,
        blocked_at: None,
        starts: 1,
        managed: false,
    }
}

/// Record how a pipeline's thread ended.
fn settle(e: &mut Entry, h: JoinHandle<Result<RunReport, String>>) {
    let (state, error) = match h.join() {
        Ok(Ok(r)) if r.errors.is_empty() => (PipelineState::Finished, None),
        Ok(Ok(r)) => (PipelineState::Failed, Some(r.errors.join("; "))),
        Ok(Err(e)) => (PipelineState::Failed, Some(e)),
        Err(_) => (
            PipelineState::Failed,
            Some("the pipeline thread panicked".to_string()),
        ),
    };
    match &error {
        Some(err) => {
            tracing::error!(pipeline = %e.name, "pipeline failed: {err}")
        }
        None => tracing::info!(pipeline = %e.name, "pipeline finished"),
    }
    e.state = state;
    e.error = error;
}

/// Stop `e`'s pipeline and wait for it (at most its drain deadline); returns its error, if any.
fn stop_and_join(mut e: Entry) -> Option<String> {
    e.stop.store(true, Ordering::Relaxed);
    if let Some(h) = e.handle.take() {
        settle(&mut e, h);
    }
    e.error
}

/// SIGTERM and SIGINT set `stop` (drain and finish); a second one while draining exits at once.
pub fn stop_on_signals(stop: &Arc<AtomicBool>) -> std::io::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    for sig in [SIGTERM, SIGINT] {
        // registered first, so it sees the flag as the previous signal left it
        signal_hook::flag::register_conditional_shutdown(sig, 1, stop.clone())?;
        signal_hook::flag::register(sig, stop.clone())?;
    }
    Ok(())
}

/// Run the service until SIGTERM/SIGINT: start, serve HTTP, reload on SIGHUP and file changes,
/// feed systemd's watchdog while healthy, then drain everything.
pub fn serve(opts: ServeOptions) -> Result<(), ServeError> {
    serve_with(opts, |_| Ok(None))
}

/// What runs beside the service and is stopped after it has drained (the cluster agent).
pub type Companion = Box<dyn FnOnce() + Send>;

/// [`serve`], with `companion` started once the HTTP server is up (before the first reconcile);
/// the function it returns runs after every pipeline has drained.
pub fn serve_with(
    opts: ServeOptions,
    companion: impl FnOnce(Arc<Service>) -> Result<Option<Companion>, String>,
) -> Result<(), ServeError> {
    use signal_hook::consts::SIGHUP;
    crate::ingest::init().map_err(ServeError::Gst)?;
    let term = Arc::new(AtomicBool::new(false));
    let hup = Arc::new(AtomicBool::new(false));
    stop_on_signals(&term).map_err(ServeError::Signal)?;
    signal_hook::flag::register(SIGHUP, hup.clone()).map_err(ServeError::Signal)?;

    let service = Arc::new(Service::new(opts.clone()));
    prepare_state_dir(&service);
    let http = http::start(service.clone(), opts.http)?;
    let companion = companion(service.clone()).map_err(ServeError::Companion)?;
    service.reconcile()?;
    service.ready.store(true, Ordering::Relaxed);
    let n = lock(&service.entries).len();
    notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(&format!("{n} pipeline files")),
    ]);
    tracing::info!(dir = %opts.config_dir.display(), http = %opts.http, pipelines = n, "serving");

    let watchdog = sd_notify::watchdog_enabled();
    let mut last_feed = Instant::now();
    let mut last_poll = Instant::now();
    let mut stuck_logged = false;
    let mut last_sample = Instant::now();
    while !term.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
        service.reap();
        if last_sample.elapsed() >= history::INTERVAL {
            last_sample = Instant::now();
            service.sample_history();
        }
        let reload = hup.swap(false, Ordering::Relaxed);
        if reload || last_poll.elapsed() >= opts.poll {
            last_poll = Instant::now();
            if reload {
                tracing::info!("SIGHUP: reloading pipeline files");
                notify(&[sd_notify::NotifyState::Reloading]);
            }
            if let Err(e) = service.reconcile() {
                tracing::error!("reload: {e}");
            }
            if reload {
                notify(&[sd_notify::NotifyState::Ready]);
            }
        }
        if let Some(interval) = watchdog
            && last_feed.elapsed() >= interval / 3
        {
            let stuck = service.stuck();
            if stuck.is_empty() {
                notify(&[sd_notify::NotifyState::Watchdog]);
                last_feed = Instant::now();
                stuck_logged = false;
            } else if !stuck_logged {
                tracing::error!(pipelines = ?stuck, "pipelines make no progress: no longer feeding the watchdog");
                stuck_logged = true;
            }
        }
    }
    tracing::info!("stopping: draining every pipeline");
    notify(&[sd_notify::NotifyState::Stopping]);
    let undrained = service.shutdown();
    if let Some(stop) = companion {
        stop();
    }
    http.stop();
    if undrained.is_empty() {
        Ok(())
    } else {
        Err(ServeError::Undrained(undrained.join("; ")))
    }
}

fn paused_file(state_dir: &Path) -> PathBuf {
    state_dir.join("paused.json")
}

/// The sources paused through the API before this start (none when the file is missing or bad).
fn read_paused(state_dir: &Path) -> BTreeSet<(String, String)> {
    let file = paused_file(state_dir);
    let Ok(bytes) = std::fs::read(&file) else {
        return BTreeSet::new();
    };
    serde_json::from_slice(&bytes).unwrap_or_else(|e| {
        tracing::warn!(file = %file.display(), "ignored: {e}");
        BTreeSet::new()
    })
}

impl Service {
    /// Keep the paused sources for the next start of the service.
    pub fn save_paused(&self) {
        let file = paused_file(&self.opts.state_dir);
        let json = serde_json::to_vec(&*lock(&self.paused)).unwrap_or_default();
        if let Err(e) = api::write_atomically(&file, &json) {
            tracing::warn!(file = %file.display(), "cannot keep the paused sources: {e}");
        }
    }
}

/// Make the API's pipeline folder, and say how to get in when no token exists yet.
fn prepare_state_dir(service: &Service) {
    let managed = service.managed_dir();
    if let Err(e) = std::fs::create_dir_all(&managed) {
        tracing::warn!(dir = %managed.display(), "cannot create the API's pipeline folder ({e}): pipelines cannot be created through the API");
    }
    if service.auth.token_count() == 0 {
        tracing::warn!(state_dir = %service.opts.state_dir.display(), "no API token yet: the console and the API answer 401 until one exists (vigil token create --role admin --state-dir {})", service.opts.state_dir.display());
    }
}

fn notify(states: &[sd_notify::NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!("sd_notify: {e}");
    }
}
