//! The `vigil` command line. Exit codes: 0 success, 1 failure (bad config, a source or output
//! failed), 2 bad usage.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::{Context, Result, bail};
use clap::{CommandFactory, Parser, Subcommand};

use vigil::config;
use vigil::config::spec::Resize;
use vigil::detect::nms::NmsParams;
use vigil::detect::{self, PostParams};
use vigil::frame::{Detection, Frame};
use vigil::output::record::Record;
use vigil::runtime::metrics::PipelineMetrics;
use vigil::runtime::{self, RunOptions, RunReport};

#[derive(Parser)]
#[command(
    name = "vigil",
    version,
    about = "Real-time video analytics: detect, track, record"
)]
struct Cli {
    /// Only errors on stderr: logs at error level, no progress bar, no run summary.
    #[arg(short, long, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a pipeline file until its sources end (files) or SIGINT/SIGTERM (drains, finalizes outputs).
    Run {
        /// The pipeline file (YAML).
        pipeline: PathBuf,
        /// Leave wall-clock fields out of metadata so reruns give identical output.
        #[arg(long)]
        deterministic: bool,
        /// After SIGINT/SIGTERM, how long stages and file outputs may take to drain; then what is
        /// left is finalized as it is and vigil exits 1 naming what did not drain.
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        drain_timeout: std::time::Duration,
    },
    /// Validate pipeline files: prints every problem as file:line:column: message.
    Check {
        /// Pipeline files to check.
        #[arg(required_unless_present = "config_dir")]
        files: Vec<PathBuf>,
        /// Also check every pipeline file (`*.yaml`, `*.yml`) of this folder, as `vigil serve` would load them.
        #[arg(long)]
        config_dir: Option<PathBuf>,
        /// Also print the resolved plan (defaults settled, paths absolute, secrets masked).
        #[arg(long)]
        print_plan: bool,
        /// With --config-dir: the most sources all its files may have together (as `vigil serve`).
        #[arg(long, default_value_t = vigil::service::DEFAULT_MAX_SOURCES)]
        max_sources: usize,
    },
    /// Run every pipeline file of a folder as a service: each pipeline isolated, hot reload on
    /// SIGHUP and on file changes (a bad file is rejected, the running pipeline keeps going),
    /// the web console and its API (tokens: `vigil token create`), /healthz /readyz /metrics,
    /// systemd notify and watchdog.
    Serve {
        /// Folder of pipeline files.
        #[arg(long, default_value = "/etc/vigil/pipelines")]
        config_dir: PathBuf,
        /// Address of the HTTP endpoints. Localhost only by default; use e.g. 0.0.0.0:9090 to
        /// expose them (behind a firewall or a reverse proxy).
        #[arg(long, default_value = "127.0.0.1:9090")]
        http: std::net::SocketAddr,
        /// How often the folder is checked for changed files.
        #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
        poll: std::time::Duration,
        /// How long stopping (SIGTERM) or reloading a pipeline may take to drain; then what is
        /// left is finalized as it is and the pipeline is reported as not drained. (A pipeline is
        /// stuck when a stage stalls for its `queues.stall_timeout`.)
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        drain_timeout: std::time::Duration,
        /// The most sources every pipeline file together may run (each costs memory and
        /// threads; see README, "Limits"). A file that would pass it is rejected.
        #[arg(long, default_value_t = vigil::service::DEFAULT_MAX_SOURCES)]
        max_sources: usize,
        /// What the service writes: API tokens and the pipelines created through the API
        /// (`STATE_DIR/pipelines`, read beside --config-dir). Default: $STATE_DIRECTORY (systemd's
        /// StateDirectory=), else /var/lib/vigil.
        #[arg(long)]
        state_dir: Option<PathBuf>,
        /// Serve /metrics without a token (for a scraper that cannot send one; it shows counts,
        /// never video or configuration).
        #[arg(long)]
        metrics_public: bool,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// The pipelines of a cluster of `vigil serve --cluster` nodes, in etcd.
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
        #[command(flatten)]
        etcd: EtcdArgs,
    },
    /// API tokens of `vigil serve` (stored hashed in STATE_DIR/tokens.json).
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Detect objects in still images and print them.
    Detect {
        #[arg(required = true)]
        images: Vec<PathBuf>,
        /// Model manifest.
        #[arg(long, default_value = "models/yolov3-tiny.yaml")]
        model: PathBuf,
        /// Weights file to use instead of the manifest's (your own training, or one written by
        /// `vigil synth-weights`); the manifest's checksum is then not checked.
        #[arg(long)]
        weights: Option<PathBuf>,
        /// Minimum score.
        #[arg(long, default_value_t = config::spec::DEFAULT_CONFIDENCE)]
        confidence: f32,
        /// NMS IoU threshold [default: 0.45; none for models that suppress in their graph].
        #[arg(long)]
        iou: Option<f32>,
        /// Override the manifest's resize: letterbox or stretch.
        #[arg(long, value_parser = parse_resize)]
        resize: Option<Resize>,
        /// cpu, cuda:N or auto.
        #[arg(long, default_value = "cpu")]
        device: detect::DeviceChoice,
        /// One JSON record per image (the metadata schema) instead of a table.
        #[arg(long)]
        json: bool,
        /// Also write each image with its detections (and masks) drawn into this folder, under
        /// its own file name.
        #[arg(long, value_name = "DIR")]
        save: Option<PathBuf>,
    },
    /// Write seeded random weights for a model's cfg: the same seed gives the same bytes on every
    /// machine (parity references, trying a cfg without trained weights).
    SynthWeights {
        /// Model manifest.
        #[arg(long)]
        model: PathBuf,
        /// PRNG seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// The `.weights` file to write.
        #[arg(long)]
        out: PathBuf,
        /// Input size `WxH` instead of the cfg's (`[local]`/`[connected]` weights depend on it);
        /// the cfg with that size is written beside `out` with the extension `.cfg`.
        #[arg(long, value_parser = parse_size)]
        size: Option<(usize, usize)>,
    },
    /// Replay a pipeline's recorded sources deterministically and compare with golden metadata:
    /// exit 0 within the pipeline's `regress` tolerances, 1 otherwise; writes a report.
    Regress {
        /// The pipeline file (file sources only).
        pipeline: PathBuf,
        /// Folder of golden JSONL, one `<source>.jsonl` per source.
        #[arg(long)]
        golden: PathBuf,
        /// Rewrite the goldens from this run (after a deliberate change).
        #[arg(long)]
        update: bool,
        /// Folder for report.md, the chart and the thumbnails.
        #[arg(long, default_value = "regress-report")]
        report: PathBuf,
    },
    /// Time the detector against OpenCV's DNN on the same weights, decoding alone and the whole
    /// pipeline, on the first source of a pipeline; prints a table of ratios.
    Bench {
        /// The pipeline whose model and first source are measured.
        #[arg(default_value = "pipelines/demo.yaml")]
        pipeline: PathBuf,
        /// Forward passes timed (after 3 warm-ups).
        #[arg(long, default_value_t = 30)]
        repeats: usize,
        /// Frames decoded / run through the pipeline.
        #[arg(long, default_value_t = 200)]
        frames: u64,
        /// The OpenCV DNN baseline script.
        #[arg(long, default_value = "scripts/bench/opencv_dnn.py")]
        opencv_script: PathBuf,
        /// The Python with OpenCV that runs it (`make bench` makes .venv-bench).
        #[arg(long, default_value = "python3")]
        python: String,
        /// Instead: time this ONNX or TensorFlow Lite model (file or manifest) against ONNX
        /// Runtime or the LiteRT interpreter on 2 threads.
        #[arg(long)]
        model: Option<PathBuf>,
        /// With --model: the input size WxH where the model leaves it dynamic.
        #[arg(long, value_parser = parse_size)]
        size: Option<(usize, usize)>,
        /// With --model: the Python that has onnxruntime (scripts/reference/onnx-venv builds it).
        #[arg(long, default_value = ".venv-onnx/bin/python")]
        ort_python: PathBuf,
        /// With --model: the ONNX Runtime baseline script.
        #[arg(long, default_value = "scripts/bench/ort_bench.py")]
        ort_script: PathBuf,
        /// With a TFLite --model: the Python that has ai-edge-litert
        /// (scripts/reference/tflite-reference builds it).
        #[arg(long, default_value = ".venv-tflite/bin/python")]
        litert_python: PathBuf,
        /// With a TFLite --model: the LiteRT baseline script.
        #[arg(long, default_value = "scripts/bench/litert_bench.py")]
        litert_script: PathBuf,
        /// Instead: how many real-time copies of the pipeline's first source are held, detecting
        /// every frame and every 2nd frame.
        #[arg(long)]
        density: bool,
        /// With --density: seconds of video per trial.
        #[arg(long, default_value_t = 20)]
        density_seconds: u64,
    },
    /// Tools for ONNX models: inspect one, or run it on a tensor and keep every output.
    Model {
        #[command(subcommand)]
        command: ModelCommand,
    },
    /// Replay recorded tracks (or detections, through the pipeline's tracker) from a MOT15 file
    /// through one source's zones and lines, without video; prints the events as JSON lines.
    Analyze {
        /// MOT15 tracks (`frame,id,x,y,w,h,…`): the ids are the track ids.
        #[arg(
            long,
            required_unless_present = "detections",
            conflicts_with = "detections"
        )]
        tracks: Option<PathBuf>,
        /// MOT15 detections (ids ignored): they go through the pipeline's tracker.
        #[arg(long)]
        detections: Option<PathBuf>,
        /// The pipeline file whose zones, lines and `analytics` settings apply.
        #[arg(long)]
        config: PathBuf,
        /// The source whose zones and lines apply. Default: the first.
        #[arg(long)]
        source: Option<String>,
        /// Frame size as WxH (normalized coordinates scale to it).
        #[arg(long, value_parser = parse_size)]
        size: (usize, usize),
        /// Frame rate of the recording: stream time is (frame − 1) / fps.
        #[arg(long, default_value_t = 25.0)]
        fps: f64,
    },
    /// Score a tracker's output against ground truth (MOT15 CSV files): MOTA, MOTP, IDF1, …
    TrackEval {
        /// Ground truth (`frame,id,x,y,w,h,…`).
        #[arg(long)]
        gt: PathBuf,
        /// Tracker output in the same format.
        #[arg(long)]
        pred: PathBuf,
        /// Minimum IoU for a match.
        #[arg(long, default_value_t = 0.5)]
        iou: f64,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print the shell completion script for SHELL (e.g. `vigil completions bash >
    /// /etc/bash_completion.d/vigil`, `vigil completions zsh > ~/.zfunc/_vigil`).
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Print vigil's man page (roff), or write one page per subcommand into a folder.
    Man {
        /// Write `vigil.1`, `vigil-run.1`, … into this folder instead of printing `vigil.1`.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

/// How to reach etcd.
#[derive(clap::Args, Clone)]
struct EtcdArgs {
    /// etcd endpoints, comma-separated.
    #[arg(
        long = "etcd",
        default_value = "http://127.0.0.1:2379",
        value_delimiter = ','
    )]
    endpoints: Vec<String>,
    #[command(flatten)]
    security: EtcdSecurity,
}

/// etcd's authentication and TLS, as a node or the `cluster` commands reach it.
#[derive(clap::Args, Clone)]
struct EtcdSecurity {
    /// etcd user, when etcd has authentication on (the password from --etcd-password-file).
    #[arg(long)]
    etcd_user: Option<String>,
    #[arg(long, requires = "etcd_user")]
    etcd_password_file: Option<PathBuf>,
    /// CA certificate (PEM) that signed etcd's server certificate (https:// endpoints).
    #[arg(long)]
    etcd_ca: Option<PathBuf>,
    /// Client certificate (PEM) when etcd asks for one (`--client-cert-auth`), with --etcd-key.
    #[arg(long, requires = "etcd_key")]
    etcd_cert: Option<PathBuf>,
    #[arg(long, requires = "etcd_cert")]
    etcd_key: Option<PathBuf>,
}

impl EtcdSecurity {
    fn access(&self, endpoints: &[String]) -> anyhow::Result<vigil::cluster::store::EtcdAccess> {
        use anyhow::Context;
        let read = |p: &PathBuf| std::fs::read(p).with_context(|| p.display().to_string());
        let user = match (&self.etcd_user, &self.etcd_password_file) {
            (Some(u), Some(f)) => Some((
                u.clone(),
                String::from_utf8_lossy(&read(f)?).trim_end().to_string(),
            )),
            (Some(u), None) => Some((u.clone(), String::new())),
            _ => None,
        };
        let client_pem = match (&self.etcd_cert, &self.etcd_key) {
            (Some(c), Some(k)) => Some((read(c)?, read(k)?)),
            _ => None,
        };
        let ca_pem = self.etcd_ca.as_ref().map(read).transpose()?;
        let tls = (ca_pem.is_some() || client_pem.is_some())
            .then_some(vigil::cluster::store::EtcdTls { ca_pem, client_pem });
        Ok(vigil::cluster::store::EtcdAccess {
            endpoints: endpoints.to_vec(),
            user,
            tls,
        })
    }
}

impl EtcdArgs {
    fn access(&self) -> anyhow::Result<vigil::cluster::store::EtcdAccess> {
        self.security.access(&self.endpoints)
    }
}

/// `vigil serve --cluster`.
#[derive(clap::Args, Clone)]
struct ClusterArgs {
    /// Run as a node of a cluster: pipelines come from etcd at these endpoints (comma-separated),
    /// not from --config-dir.
    #[arg(long, value_delimiter = ',')]
    cluster: Option<Vec<String>>,
    /// This node's id (unique in the cluster). Default: the host name.
    #[arg(long)]
    node_id: Option<String>,
    /// Streams (sources) this node runs at most. Default: --max-sources.
    #[arg(long)]
    capacity: Option<usize>,
    /// Where relative paths of cluster pipelines resolve. Default: the state folder.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// The node's etcd lease: a node that dies is replaced within this (plus a second).
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    lease_ttl: std::time::Duration,
    #[command(flatten)]
    security: EtcdSecurity,
}

#[derive(Subcommand)]
enum ClusterCommand {
    /// Validate pipeline files (like `vigil check`) and store them all, or nothing if one is bad.
    Apply {
        /// Pipeline files or folders.
        #[arg(short = 'f', long = "file", required = true)]
        files: Vec<PathBuf>,
    },
    /// Print a pipeline's text, or the names of all.
    Get { name: Option<String> },
    /// Remove a pipeline (its node stops it).
    Delete { name: String },
    /// Nodes, and which runs which pipeline.
    Status,
}

fn cluster_command(command: ClusterCommand, etcd: &EtcdArgs) -> anyhow::Result<ExitCode> {
    use vigil::cluster::cli;
    let access = etcd.access()?;
    match command {
        ClusterCommand::Apply { files } => match cli::apply(&access, &files) {
            Ok(names) => println!("applied: {}", names.join(", ")),
            Err(vigil::cluster::ClusterError::Invalid(text)) => {
                eprintln!("{text}");
                return Ok(ExitCode::from(1));
            }
            Err(e) => return Err(e.into()),
        },
        ClusterCommand::Get { name } => print!("{}", cli::get(&access, name.as_deref())?),
        ClusterCommand::Delete { name } => cli::delete(&access, &name)?,
        ClusterCommand::Status => print!("{}", cli::status(&access)?),
    }
    Ok(ExitCode::SUCCESS)
}

/// `vigil bench --density`.
fn density(pipeline: &std::path::Path, seconds: u64) -> anyhow::Result<ExitCode> {
    let plan = config::load(pipeline).map_err(|e| anyhow::anyhow!("{e}"))?;
    vigil::ingest::init().map_err(anyhow::Error::msg)?;
    let mut summary = Vec::new();
    for every in [1, 2] {
        let trials = vigil::density::density(&plan, every, seconds).map_err(anyhow::Error::msg)?;
        print!("{}", vigil::density::describe(&trials));
        summary.push((every, vigil::density::held(&trials)));
    }
    for (every, n) in summary {
        println!(
            "density ({}, {seconds} s a trial): detecting every {every} frame(s): {n} stream(s) held in real time",
            plan.model.name
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `vigil serve`, alone or as a cluster node.
fn serve(opts: vigil::service::ServeOptions, c: &ClusterArgs) -> anyhow::Result<ExitCode> {
    let Some(endpoints) = &c.cluster else {
        vigil::service::serve(opts)?;
        return Ok(ExitCode::SUCCESS);
    };
    let node_id = match &c.node_id {
        Some(n) => n.clone(),
        None => std::fs::read_to_string("/etc/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "node".into()),
    };
    let owned_dir = opts.state_dir.join("cluster");
    let mut opts = opts;
    // fencing: a cut-off node must have drained by 3/4 of the lease (cluster::agent)
    opts.drain_timeout = opts.drain_timeout.min(c.lease_ttl / 4);
    let access = c.security.access(endpoints)?;
    opts.cluster = Some(vigil::service::ClusterNode {
        node_id: node_id.clone(),
        owned_dir: owned_dir.clone(),
        data_dir: c.data_dir.clone().unwrap_or_else(|| opts.state_dir.clone()),
        store: std::sync::Arc::new(vigil::cluster::cli::EtcdPipelines(access.clone())),
    });
    let cfg = vigil::cluster::agent::AgentConfig {
        access,
        node: vigil::cluster::store::NodeInfo {
            id: node_id,
            capacity: c.capacity.unwrap_or(opts.max_sources),
            http: opts.http.to_string(),
            // a pipeline that asks for `device: cuda` is placed only where a GPU answers
            devices: if vigil::detect::device(vigil::detect::DeviceChoice::Auto)
                .is_ok_and(|d| d.is_cuda())
            {
                vec!["cuda".into()]
            } else {
                Vec::new()
            },
        },
        ttl: c.lease_ttl,
        owned_dir,
    };
    vigil::service::serve_with(opts, |service| {
        vigil::cluster::agent::start(service, cfg).map(Some)
    })?;
    Ok(ExitCode::SUCCESS)
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a token and print it (once: only its hash is kept).
    Create {
        /// What the token may do: admin (everything) or viewer (read only).
        #[arg(long)]
        role: vigil::service::auth::Role,
        /// A name to tell it by (and to revoke it by). Default: ROLE-N.
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        state_dir: Option<PathBuf>,
    },
    /// List tokens (names, roles, creation time; never the tokens).
    List {
        #[arg(long)]
        state_dir: Option<PathBuf>,
    },
    /// Revoke a token by name (a running service notices at once).
    Revoke {
        name: String,
        #[arg(long)]
        state_dir: Option<PathBuf>,
    },
}

fn token_command(command: TokenCommand) -> anyhow::Result<ExitCode> {
    use vigil::service::auth;
    let dir = |d: Option<PathBuf>| d.unwrap_or_else(vigil::service::default_state_dir);
    match command {
        TokenCommand::Create {
            role,
            name,
            state_dir,
        } => {
            let dir = dir(state_dir);
            let name = match name {
                Some(n) => n,
                None => format!("{role}-{}", auth::read_tokens(&dir)?.len() + 1),
            };
            let token = auth::create_token(&dir, &name, role)?;
            eprintln!(
                "created {role} token `{name}` in {}; it is shown only now:",
                auth::tokens_file(&dir).display()
            );
            println!("{token}");
        }
        TokenCommand::List { state_dir } => {
            for t in auth::read_tokens(&dir(state_dir))? {
                println!(
                    "{}\t{}\tcreated {}",
                    t.name,
                    t.role,
                    humantime::format_rfc3339_seconds(
                        std::time::UNIX_EPOCH + std::time::Duration::from_secs(t.created)
                    )
                );
            }
        }
        TokenCommand::Revoke { name, state_dir } => {
            if !auth::revoke_token(&dir(state_dir), &name)? {
                anyhow::bail!("no token named `{name}`");
            }
            eprintln!("revoked `{name}`");
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Subcommand)]
enum ModelCommand {
    /// Inputs, outputs (shapes resolved), operators, parameters, FLOPs and metadata.
    Inspect {
        /// An `.onnx` file or a model manifest.
        model: PathBuf,
        /// The input size WxH where the model leaves it dynamic.
        #[arg(long, value_parser = parse_size)]
        size: Option<(usize, usize)>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run the model on an NCHW tensor from a `.npy` file and write every graph output to an
    /// `.npz` (compare with another runtime's: `numpy.load`).
    RunRaw {
        /// An `.onnx` file or a model manifest.
        model: PathBuf,
        /// The input tensor (`.npy`, float32, float64 or uint8, shape N×C×H×W, as the model takes it).
        #[arg(long)]
        input: PathBuf,
        /// Where to write the outputs.
        #[arg(long)]
        out: PathBuf,
    },
}

fn size_u32(s: Option<(usize, usize)>) -> Option<(u32, u32)> {
    s.map(|(w, h)| (w as u32, h as u32))
}

fn model_command(command: ModelCommand) -> anyhow::Result<ExitCode> {
    use vigil::model_tools::{ModelArg, inspect, run_raw};
    let text = match command {
        ModelCommand::Inspect { model, size, json } => inspect(
            &ModelArg::resolve(&model, size_u32(size)).map_err(anyhow::Error::msg)?,
            json,
        ),
        ModelCommand::RunRaw { model, input, out } => run_raw(
            &ModelArg::resolve(&model, None).map_err(anyhow::Error::msg)?,
            &input,
            &out,
        ),
    }
    .map_err(anyhow::Error::msg)?;
    println!("{text}");
    Ok(ExitCode::SUCCESS)
}

fn parse_resize(s: &str) -> Result<Resize, String> {
    match s {
        "letterbox" => Ok(Resize::Letterbox),
        "stretch" => Ok(Resize::Stretch),
        _ => Err(format!("`{s}`: expected letterbox or stretch")),
    }
}

fn parse_size(s: &str) -> Result<(usize, usize), String> {
    s.split_once('x')
        .and_then(|(w, h)| Some((w.parse().ok()?, h.parse().ok()?)))
        .filter(|&(w, h)| w > 0 && h > 0)
        .ok_or_else(|| format!("`{s}`: expected WIDTHxHEIGHT, e.g. 96x96"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = if cli.quiet {
        tracing_subscriber::EnvFilter::new("error")
    } else {
        tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| progress::Stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match dispatch(cli.command, cli.quiet) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

#[allow(clippy::too_many_lines, reason = "one arm per subcommand")]
fn dispatch(cmd: Command, quiet: bool) -> Result<ExitCode> {
    match cmd {
        Command::Run {
            pipeline,
            deterministic,
            drain_timeout,
        } => run(&pipeline, deterministic, drain_timeout, quiet),
        Command::Check {
            files,
            config_dir,
            print_plan,
            max_sources,
        } => {
            let mut folder = Vec::new();
            if let Some(dir) = config_dir {
                let found = vigil::service::pipeline_files(&dir)?;
                if found.is_empty() {
                    bail!("{}: no pipeline files (*.yaml, *.yml)", dir.display());
                }
                folder.extend(found.into_keys());
            }
            let (_, listed_ok) = check(&files, print_plan);
            let (plans, folder_ok) = check(&folder, print_plan);
            // the folder's files run together: names unique, sources bounded in total
            let problems = vigil::service::folder_problems(&plans, max_sources);
            for p in &problems {
                println!("{p}");
            }
            Ok(if listed_ok && folder_ok && problems.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Serve {
            config_dir,
            http,
            poll,
            drain_timeout,
            max_sources,
            state_dir,
            metrics_public,
            cluster,
        } => serve(
            vigil::service::ServeOptions {
                config_dir,
                http,
                poll,
                drain_timeout,
                max_sources,
                state_dir: state_dir.unwrap_or_else(vigil::service::default_state_dir),
                metrics_public,
                cluster: None,
            },
            &cluster,
        ),
        Command::Bench {
            model: Some(model),
            size,
            repeats,
            ort_python,
            ort_script,
            litert_python,
            litert_script,
            ..
        } => {
            if let Some(file) = vigil::model_tools::tflite_file(&model) {
                let report = vigil::model_tools::bench_tflite(
                    &file,
                    repeats,
                    &litert_python,
                    &litert_script,
                )
                .map_err(anyhow::Error::msg)?;
                println!("{report}");
                return Ok(ExitCode::SUCCESS);
            }
            let m = vigil::model_tools::ModelArg::resolve(&model, size_u32(size))
                .map_err(anyhow::Error::msg)?;
            let report = vigil::model_tools::bench(&m, repeats, &ort_python, &ort_script)
                .map_err(anyhow::Error::msg)?;
            println!("{report}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Model { command } => model_command(command),
        Command::Token { command } => token_command(command),
        Command::Cluster { command, etcd } => cluster_command(command, &etcd),
        Command::Bench {
            pipeline,
            density: true,
            density_seconds,
            ..
        } => density(&pipeline, density_seconds),
        Command::Bench {
            pipeline,
            repeats,
            frames,
            opencv_script,
            python,
            ..
        } => {
            let plan = config::load(&pipeline).map_err(|e| anyhow::anyhow!("{e}"))?;
            vigil::ingest::init()
                .map_err(anyhow::Error::msg)
                .context("GStreamer")?;
            let settings = vigil::bench::BenchSettings {
                repeats,
                frames,
                opencv_script,
                python,
                ..Default::default()
            };
            let report = vigil::bench::run(&plan, &settings).map_err(anyhow::Error::msg)?;
            println!("{report}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Regress {
            pipeline,
            golden,
            update,
            report,
        } => regress(&pipeline, &golden, update, &report),
        Command::Analyze {
            tracks,
            detections,
            config,
            source,
            size,
            fps,
        } => analyze(
            tracks.or(detections.clone()).as_deref(),
            detections.is_none(),
            &config,
            source.as_deref(),
            size,
            fps,
        ),
        Command::TrackEval {
            gt,
            pred,
            iou,
            json,
        } => {
            let m = vigil::regress::mot::evaluate(
                &vigil::regress::mot::load(&gt)?,
                &vigil::regress::mot::load(&pred)?,
                1.0 - iou,
            );
            if json {
                println!("{}", serde_json::to_string(&m)?);
            } else {
                println!("{m}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::SynthWeights {
            model,
            seed,
            out,
            size,
        } => synth_weights(&model, seed, &out, size),
        Command::Detect {
            images,
            model,
            weights,
            confidence,
            iou,
            resize,
            device,
            json,
            save,
        } => detect_images(
            &images,
            &ModelChoice {
                manifest: &model,
                weights: weights.as_deref(),
            },
            &DetectOptions {
                confidence,
                iou,
                resize,
                device,
                json,
                save: save.as_deref(),
            },
        ),
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "vigil", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Command::Man { dir } => man(dir.as_deref()),
    }
}

/// `vigil man`: the man page on stdout, or with `dir` one page per (sub)command written there.
fn man(dir: Option<&Path>) -> Result<ExitCode> {
    let cmd = Cli::command();
    match dir {
        None => clap_mangen::Man::new(cmd)
            .render(&mut std::io::stdout().lock())
            .context("writing the man page")?,
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| dir.display().to_string())?;
            clap_mangen::generate_to(cmd, dir).with_context(|| dir.display().to_string())?;
            println!("wrote man pages to {}", dir.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Check each file, printing `ok` or its problems; returns the valid plans and whether all were.
fn check(files: &[PathBuf], print_plan: bool) -> (Vec<config::Plan>, bool) {
    let mut ok = true;
    let mut plans = Vec::new();
    for f in files {
        match config::load(f) {
            Ok(plan) => {
                println!("{}: ok", f.display());
                if print_plan {
                    print!("{}", plan.describe());
                }
                plans.push(plan);
            }
            Err(e) => {
                ok = false;
                println!("{e}");
            }
        }
    }
    (plans, ok)
}

fn run(
    path: &Path,
    deterministic: bool,
    drain_timeout: std::time::Duration,
    quiet: bool,
) -> Result<ExitCode> {
    let plan = match config::load(path) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{e}");
            return Ok(ExitCode::from(1));
        }
    };
    vigil::ingest::init()
        .map_err(anyhow::Error::msg)
        .context("GStreamer")?;
    let stop = Arc::new(AtomicBool::new(false));
    vigil::service::stop_on_signals(&stop).context("signal handler")?;
    let detector = plan.load_detector()?;
    tracing::info!(pipeline = %plan.name, model = %plan.model.name, sources = plan.sources.len(), "running");
    let opts = RunOptions {
        deterministic,
        drain_timeout,
        ..Default::default()
    };
    let metrics = Arc::new(PipelineMetrics::for_plan(&plan));
    let go = || runtime::pipeline::run_observed(&plan, detector, &stop, &opts, &metrics);
    // a progress bar only for a person watching: never in logs, pipes, tests or systemd
    let report = if !quiet && std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        progress::watch(&plan, &metrics, go)
    } else {
        go()
    };
    if !quiet {
        print_summary(&plan.name, &report);
    }
    if report.errors.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    for e in &report.errors {
        eprintln!("error: {e}");
    }
    Ok(ExitCode::from(1))
}

/// What `vigil run` did, on stderr: frames and rate, then per stage, source, edge and output.
fn print_summary(name: &str, report: &RunReport) {
    let frames: u64 = report.frames_in.iter().map(|(_, n)| n).sum();
    let secs = report.wall.as_secs_f64();
    eprintln!(
        "{name}: {frames} frames in {secs:.1} s ({:.1} fps){}",
        frames as f64 / secs.max(1e-9),
        if report.stopped {
            ", stopped by signal"
        } else {
            ""
        }
    );
    for (stage, n, ms) in &report.stages {
        eprintln!("  stage {stage}: {n} frames, {ms:.2} ms/frame");
    }
    for (source, p50, p99, n) in report.latency.iter().filter(|l| l.3 > 0) {
        eprintln!(
            "  latency {source}: capture→metadata p50 {} ms, p99 {} ms over {n} frames",
            p50.unwrap_or(0),
            p99.unwrap_or(0)
        );
    }
    for (source, n) in report.reconnects.iter().filter(|r| r.1 > 0) {
        eprintln!("  source {source}: {n} reconnects");
    }
    for (edge, sent, dropped) in report.edges.iter().filter(|e| e.2 > 0) {
        eprintln!("  edge {edge}: {sent} sent, {dropped} dropped");
    }
    for (out, n) in &report.outputs {
        eprintln!("  wrote {out}: {n} frames");
    }
}

#[allow(
    clippy::too_many_lines,
    reason = "the `vigil regress` command flow, step by step"
)]
fn regress(path: &Path, golden: &Path, update: bool, report_dir: &Path) -> Result<ExitCode> {
    let mut plan = match config::load(path) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{e}");
            return Ok(ExitCode::from(1));
        }
    };
    if let Some(s) = plan.sources.iter().find(|s| s.live) {
        bail!(
            "source `{}` is live: regression runs replay recorded files (pace: as_fast_as_possible)",
            s.id
        );
    }
    // Lossless, deterministic replay: every edge blocks, metadata without wall-clock fields, and
    // only JSONL outputs (into a scratch folder).
    let scratch = scratch_dir()?;
    for s in &mut plan.sources {
        s.when_full = vigil::runtime::edge::WhenFull::Block;
    }
    plan.outputs = plan
        .sources
        .iter()
        .map(|s| config::plan::OutputPlan {
            source: s.id.clone(),
            settings: vigil::output::OutputSettings::Jsonl(vigil::output::jsonl::JsonlSettings {
                path: scratch.join(format!("{}.jsonl", s.id)),
            }),
        })
        .collect();
    vigil::ingest::init()
        .map_err(anyhow::Error::msg)
        .context("GStreamer")?;
    let detector = plan.load_detector()?;
    let stop = AtomicBool::new(false);
    let run = runtime::run(
        &plan,
        detector,
        &stop,
        &RunOptions {
            deterministic: true,
            ..Default::default()
        },
    );
    if !run.errors.is_empty() {
        for e in &run.errors {
            eprintln!("error: {e}");
        }
        return Ok(ExitCode::from(1));
    }
    let mut diffs = Vec::new();
    for s in &plan.sources {
        let new_path = scratch.join(format!("{}.jsonl", s.id));
        let golden_path = golden.join(format!("{}.jsonl", s.id));
        let new = vigil::output::record::read_jsonl(&new_path).map_err(anyhow::Error::msg)?;
        if update {
            std::fs::create_dir_all(golden)?;
            std::fs::copy(&new_path, &golden_path)
                .with_context(|| golden_path.display().to_string())?;
            println!(
                "{}: golden updated ({} frames)",
                golden_path.display(),
                new.len()
            );
            continue;
        }
        if !golden_path.is_file() {
            bail!(
                "no golden for source `{}` at {}: run with --update to record one",
                s.id,
                golden_path.display()
            );
        }
        let g = vigil::output::record::read_jsonl(&golden_path).map_err(anyhow::Error::msg)?;
        diffs.push(vigil::regress::compare(&s.id, &g, &new, &plan.regress));
    }
    let _ = std::fs::remove_dir_all(&scratch);
    if update {
        return Ok(ExitCode::SUCCESS);
    }
    let report = vigil::regress::report::write(report_dir, &plan.name, &plan.sources, &diffs)?;
    let mut ok = true;
    for d in &diffs {
        let differing: Vec<String> = d
            .frames
            .iter()
            .filter(|f| f.badness() > 0)
            .map(|f| f.seq.to_string())
            .take(20)
            .collect();
        println!(
            "{}: {} — {} matched, {} missing, {} extra, {} score moves, {} box moves{}",
            d.source,
            if d.passed() { "pass" } else { "FAIL" },
            d.matched,
            d.missing,
            d.extra,
            d.score_violations,
            d.box_moves,
            if differing.is_empty() {
                String::new()
            } else {
                format!("; frames differing: {}", differing.join(", "))
            }
        );
        for f in &d.failures {
            println!("  {f}");
        }
        ok &= d.passed();
    }
    println!("report: {}", report.display());
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// A fresh scratch folder under the system temp dir.
fn scratch_dir() -> Result<PathBuf> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let d = std::env::temp_dir().join(format!("vigil-regress-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&d).with_context(|| d.display().to_string())?;
    Ok(d)
}

fn synth_weights(
    model: &Path,
    seed: u64,
    out: &Path,
    size: Option<(usize, usize)>,
) -> Result<ExitCode> {
    let info = detect::manifest::ModelInfo::load(model)?;
    let mut cfg = vigil::detect::darknet::cfg::Cfg::load(&info.cfg)?;
    if let Some((w, h)) = size {
        cfg = cfg.with_input_size(w, h);
        let cfg_out = out.with_extension("cfg");
        std::fs::write(&cfg_out, cfg.to_text()).with_context(|| cfg_out.display().to_string())?;
        println!("wrote {}", cfg_out.display());
    }
    let (net, bytes) =
        vigil::detect::darknet::DarknetNet::synthesize(&cfg, seed, &candle_core::Device::Cpu)?;
    std::fs::write(out, &bytes).with_context(|| out.display().to_string())?;
    println!(
        "wrote {}: {} parameters for {}x{} input, seed {seed}",
        out.display(),
        (bytes.len() - 20) / 4,
        net.width,
        net.height
    );
    Ok(ExitCode::SUCCESS)
}

/// A model manifest and, optionally, weights that replace the manifest's.
struct ModelChoice<'a> {
    manifest: &'a Path,
    weights: Option<&'a Path>,
}

#[allow(
    clippy::too_many_lines,
    reason = "the `vigil detect` command flow, step by step"
)]
/// `vigil detect`'s settings besides the images and the model.
struct DetectOptions<'a> {
    confidence: f32,
    iou: Option<f32>,
    resize: Option<Resize>,
    device: detect::DeviceChoice,
    json: bool,
    save: Option<&'a Path>,
}

fn detect_images(
    images: &[PathBuf],
    model: &ModelChoice,
    opts: &DetectOptions,
) -> Result<ExitCode> {
    let (confidence, json, save) = (opts.confidence, opts.json, opts.save);
    if let Some(dir) = save {
        std::fs::create_dir_all(dir).with_context(|| format!("--save {}", dir.display()))?;
    }
    let mut info = detect::manifest::ModelInfo::load(model.manifest)?;
    if let Some(w) = model.weights {
        info = info.with_weights(w);
    }
    // a model that suppresses in its graph has had its NMS (an IoU of 1 keeps every box)
    let iou = opts.iou.unwrap_or(if info.nms_in_graph() {
        1.0
    } else {
        config::spec::DEFAULT_NMS_IOU
    });
    if !(0.0..=1.0).contains(&confidence) || !(0.0..=1.0).contains(&iou) {
        bail!("--confidence and --iou must be between 0 and 1");
    }
    let resize = opts.resize.unwrap_or(info.resize);
    let detector = detect::load(&info, &detect::device(opts.device)?)?;
    let post = PostParams {
        confidence,
        classes: None,
        nms: NmsParams {
            iou,
            class_aware: true,
            max_detections: config::spec::DEFAULT_MAX_DETECTIONS,
        },
    };
    let mut failed = false;
    for path in images {
        let image = match vigil::image_io::read(path) {
            Ok(i) => i,
            Err(e) => {
                eprintln!("error: {e}");
                failed = true;
                continue;
            }
        };
        let input = vigil::preprocess::prepare(&image, info.input, resize)?;
        let cands = detector
            .infer(&[&input], confidence)?
            .pop()
            .unwrap_or_default();
        let frame = still_frame(path, image, detect::postprocess(cands, &post, &input));
        let record = Record::of(&frame, "detect", &info.classes, false);
        if let Some(dir) = save {
            save_drawn(
                &frame,
                &info.classes,
                &dir.join(path.file_name().unwrap_or_default()),
            )?;
        }
        if json {
            println!("{}", serde_json::to_string(&record)?);
        } else {
            print_table(path, &frame.image, resize, &record);
        }
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// A still image and its detections as the one frame of a stream named after its file.
fn still_frame(path: &Path, image: vigil::frame::Image, detections: Vec<Detection>) -> Frame {
    Frame {
        stream: path.display().to_string().into(),
        seq: 0,
        pts_ns: None,
        duration_ns: None,
        fps: (0, 1),
        captured_at: std::time::SystemTime::now(),
        ingested: std::time::Instant::now(),
        image: Arc::new(image),
        detections,
        trails: Vec::new(),
        events: Vec::new(),
        regions: None,
        detected: true,
    }
}

/// `vigil detect`'s table for one image.
fn print_table(path: &Path, image: &vigil::frame::Image, resize: Resize, record: &Record) {
    println!(
        "{} ({}x{}, {:?}): {} objects",
        path.display(),
        image.width,
        image.height,
        resize,
        record.detections.len()
    );
    println!(
        "  {:<14} {:>6}  {:>7} {:>7} {:>7} {:>7}",
        "class", "score", "x", "y", "w", "h"
    );
    for d in &record.detections {
        let [x1, y1, x2, y2] = d.bbox;
        println!(
            "  {:<14} {:>6.3}  {:>7.1} {:>7.1} {:>7.1} {:>7.1}",
            d.class,
            d.score,
            x1,
            y1,
            x2 - x1,
            y2 - y1
        );
    }
}

/// `frame` with its detections drawn, written to `to` (the format from its extension).
fn save_drawn(frame: &Frame, classes: &[String], to: &Path) -> Result<()> {
    let bgr = vigil::output::overlay::frame_pixels(frame, classes, true)?;
    let drawn = vigil::frame::Image {
        width: frame.image.width,
        height: frame.image.height,
        bgr,
    };
    vigil::image_io::write(to, &drawn)?;
    Ok(())
}

/// The progress bar of `vigil run` when stderr is a terminal: frames through the pipeline, read
/// from its live metrics, out of the frames its sources will give when that is knowable.
mod progress {
    use std::io::{self, Write};
    use std::sync::atomic::Ordering;
    use std::sync::{Mutex, PoisonError, mpsc};
    use std::time::Duration;

    use indicatif::{ProgressBar, ProgressState, ProgressStyle};
    use vigil::config::Plan;
    use vigil::runtime::metrics::PipelineMetrics;

    /// How often the bar reads the metrics.
    const POLL: Duration = Duration::from_millis(100);
    /// How long the discoverer may take to read one file's duration and frame rate.
    const DISCOVER_TIMEOUT: u64 = 5;

    /// The bar on screen, if any: log lines are written around it (see [`Stderr`]).
    static ACTIVE: Mutex<Option<ProgressBar>> = Mutex::new(None);

    fn active() -> Option<ProgressBar> {
        ACTIVE
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set_active(bar: Option<ProgressBar>) {
        *ACTIVE.lock().unwrap_or_else(PoisonError::into_inner) = bar;
    }

    /// stderr for the log: while a bar is drawn, a log line hides it, is written, and the bar
    /// comes back below it.
    pub struct Stderr;

    impl Write for Stderr {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            match active() {
                Some(bar) => bar.suspend(|| io::stderr().write_all(buf))?,
                None => io::stderr().write_all(buf)?,
            }
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            io::stderr().flush()
        }
    }

    /// Run `work` (the pipeline) with a bar on stderr fed from `metrics` until it returns.
    pub fn watch<T>(plan: &Plan, metrics: &PipelineMetrics, work: impl FnOnce() -> T) -> T {
        let bar = new_bar(total_frames(plan), &plan.name);
        set_active(Some(bar.clone()));
        let out = std::thread::scope(|s| {
            // dropped when `work` returns or unwinds: the poller ends either way
            let (_running, ended) = mpsc::channel::<()>();
            let polled = bar.clone();
            s.spawn(move || {
                while ended.recv_timeout(POLL) == Err(mpsc::RecvTimeoutError::Timeout) {
                    polled.set_position(frames_done(metrics));
                }
            });
            work()
        });
        set_active(None);
        bar.finish_and_clear();
        out
    }

    /// Frames through the pipeline (to the outputs), plus those a live edge dropped.
    fn frames_done(metrics: &PipelineMetrics) -> u64 {
        metrics
            .sources
            .iter()
            .map(|s| {
                s.processed.frames.load(Ordering::Relaxed)
                    + s.first_edge.dropped.load(Ordering::Relaxed)
            })
            .sum()
    }

    /// A bar with ETA when `total` is known, else a spinner with frames and rate.
    fn new_bar(total: Option<u64>, name: &str) -> ProgressBar {
        let (bar, template) = match total {
            Some(n) => (
                ProgressBar::new(n),
                "{prefix} {spinner} {elapsed_precise} [{wide_bar}] {pos}/{len} frames, {fps}, ETA {eta}",
            ),
            None => (
                ProgressBar::no_length(),
                "{prefix} {spinner} {elapsed_precise} {pos} frames, {fps}",
            ),
        };
        let style = ProgressStyle::with_template(template)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .with_key(
                "fps",
                |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                    let _ = write!(w, "{:.1} fps", state.per_sec());
                },
            )
            .progress_chars("=> ");
        bar.set_style(style);
        bar.set_prefix(name.to_owned());
        bar.enable_steady_tick(POLL);
        bar
    }

    /// Frames the run will take from all its sources, if each one's count is knowable.
    fn total_frames(plan: &Plan) -> Option<u64> {
        let timeout = gstreamer::ClockTime::from_seconds(DISCOVER_TIMEOUT);
        let discoverer = gstreamer_pbutils::Discoverer::new(timeout).ok();
        plan.sources
            .iter()
            .map(|s| {
                // a file's duration × frame rate, capped by `max_frames`; a live source's
                // `max_frames`, if it has one
                let whole = discoverer
                    .as_ref()
                    .filter(|_| !s.live)
                    .and_then(|d| file_frames(d, &s.uri));
                source_frames(whole, s.max_frames)
            })
            .sum()
    }

    /// Frames of one source: what it holds, capped by its `max_frames`; either if only one is known.
    fn source_frames(whole: Option<u64>, max_frames: Option<u64>) -> Option<u64> {
        match (whole, max_frames) {
            (Some(n), Some(max)) => Some(n.min(max)),
            (n, max) => n.or(max),
        }
    }

    /// Frames in the file at `uri`: its duration × frame rate, as GStreamer's discoverer reads them.
    fn file_frames(discoverer: &gstreamer_pbutils::Discoverer, uri: &str) -> Option<u64> {
        let info = discoverer.discover_uri(uri).ok()?;
        let ns = u128::from(info.duration()?.nseconds());
        let rate = info.video_streams().first()?.framerate();
        let num = u128::try_from(rate.numer()).ok().filter(|&n| n > 0)?;
        let den = u128::try_from(rate.denom()).ok().filter(|&d| d > 0)?;
        let per = den * 1_000_000_000;
        u64::try_from((ns * num + per / 2) / per).ok()
    }
}

/// `vigil analyze`: the events of a MOT file replayed through a source's zones and lines.
fn analyze(
    mot: Option<&Path>,
    tracks: bool,
    config: &Path,
    source: Option<&str>,
    size: (usize, usize),
    fps: f64,
) -> Result<ExitCode> {
    let size = (u32::try_from(size.0)?, u32::try_from(size.1)?);
    let Some(mot) = mot else {
        bail!("give --tracks or --detections");
    };
    if !(fps.is_finite() && fps > 0.0) {
        bail!("--fps must be above 0");
    }
    let plan = config::load(config).map_err(|e| anyhow::anyhow!("{e}"))?;
    let index = match source {
        None => 0,
        Some(id) => plan
            .sources
            .iter()
            .position(|s| s.id == id)
            .with_context(|| format!("{} has no source `{id}`", config.display()))?,
    };
    let rows = vigil::regress::mot::load(mot)?;
    let replay = vigil::regress::replay::Replay {
        plan: &plan,
        source: index,
        size,
        fps,
        tracks,
    };
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for e in vigil::regress::replay::events(&replay, &rows) {
        let line = serde_json::to_string(&e)?;
        // a reader that stops early (`| head`) is not an error
        match writeln!(out, "{line}") {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(ExitCode::SUCCESS),
            r => r?,
        }
    }
    match out.flush() {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        r => r?,
    }
    Ok(ExitCode::SUCCESS)
}
