//! The node side of cluster mode: hold a lease, announce the node, take and give back pipelines
//! as [`super::placement`] says, and write the pipelines this node owns into the folder the
//! service runs (`Service` then starts and stops them like files of a config folder).
//!
//! Fencing — at most one runner per pipeline:
//! - A pipeline runs only on the node whose lease holds `/vigil/owners/{name}`; another node can
//!   create that key only after the owner gave it back (after stopping the pipeline) or after
//!   the owner's lease expired in etcd.
//! - The lease expires no sooner than `ttl` after the last keep-alive etcd received, which came
//!   after this node sent it. The fence thread stops every pipeline (`Service::stop_all_now`)
//!   once `ttl / 2` has passed since the last keep-alive sent that etcd answered; the runtime
//!   drains within `--drain-timeout` (cluster mode caps it at `ttl / 4`). So a node cut off from
//!   etcd has stopped its pipelines at `3/4 ttl`, before any other node may start them — unless
//!   the process itself is frozen (SIGSTOP, a paused VM) for longer than `ttl / 2`: then nothing
//!   of it runs to notice, and it may run on for the length of the freeze after its lease ended.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::ClusterError;
use super::placement::{Demand, NodeCap, place};
use super::store::{EtcdAccess, NodeInfo, Snapshot, Store};
use crate::flow::lock;
use crate::service::{Companion, Service};

/// How a node takes part.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub access: EtcdAccess,
    pub node: NodeInfo,
    /// The lease's time to live.
    pub ttl: Duration,
    /// Where owned pipelines are written for the service (emptied at start).
    pub owned_dir: PathBuf,
}

/// How often the agent looks at etcd.
const TICK: Duration = Duration::from_secs(1);

/// When the last keep-alive that etcd answered was sent (`None`: no lease).
type LastAck = Arc<Mutex<Option<Instant>>>;

/// Start the agent and its fence thread; the returned function stops the agent (after the
/// service drained) and revokes the lease, so others take over at once.
pub fn start(service: Arc<Service>, cfg: AgentConfig) -> Result<Companion, String> {
    clear_dir(&cfg.owned_dir).map_err(|e| format!("{}: {e}", cfg.owned_dir.display()))?;
    let stop = Arc::new(AtomicBool::new(false));
    let last_ack: LastAck = Arc::default();
    let fence = fence_thread(service.clone(), last_ack.clone(), cfg.ttl, stop.clone())
        .map_err(|e| format!("cannot start the fence thread: {e}"))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let (s, a) = (stop.clone(), last_ack.clone());
    let agent = std::thread::Builder::new()
        .name("cluster".into())
        .spawn(move || {
            runtime.block_on(
                Agent {
                    service,
                    cfg,
                    stop: s,
                    last_ack: a,
                    store: None,
                    lease: None,
                }
                .run(),
            );
        })
        .map_err(|e| e.to_string())?;
    Ok(Box::new(move || {
        stop.store(true, Ordering::Relaxed);
        let _ = agent.join();
        let _ = fence.join();
    }))
}

/// Remove the pipeline files a previous run left (they are owned by nobody now).
fn clear_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for e in std::fs::read_dir(dir)?.filter_map(Result::ok) {
        if e.path().is_file() {
            std::fs::remove_file(e.path())?;
        }
    }
    Ok(())
}

/// Stops every pipeline once the lease may be lost (see the module's notes).
fn fence_thread(
    service: Arc<Service>,
    last_ack: LastAck,
    ttl: Duration,
    stop: Arc<AtomicBool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("cluster-fence".into())
        .spawn(move || {
            let mut fenced = false;
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(100));
                let stale = lock(&last_ack).is_none_or(|t| t.elapsed() > ttl / 2);
                if stale && !fenced {
                    tracing::error!("cluster: no keep-alive answered for {:?}: stopping every pipeline (fenced)", ttl / 2);
                    service.stop_all_now();
                }
                fenced = stale;
            }
        })
}

struct Agent {
    service: Arc<Service>,
    cfg: AgentConfig,
    stop: Arc<AtomicBool>,
    last_ack: LastAck,
    store: Option<Store>,
    lease: Option<i64>,
}

impl Agent {
    async fn run(mut self) {
        while !self.stop.load(Ordering::Relaxed) {
            let tick = Instant::now();
            if let Err(e) = self.step().await {
                tracing::warn!("cluster: {e}");
                self.store = None;
            }
            tokio::time::sleep(TICK.saturating_sub(tick.elapsed())).await;
        }
        if let (Some(store), Some(lease)) = (self.store.as_mut(), self.lease) {
            // hand over at once instead of after the TTL
            let _ = tokio::time::timeout(Duration::from_secs(2), store.revoke(lease)).await;
            tracing::info!(node = %self.cfg.node.id, "cluster: lease revoked, pipelines handed over");
        }
    }

    fn fenced(&self) -> bool {
        lock(&self.last_ack).is_none_or(|t| t.elapsed() > self.cfg.ttl / 2)
    }

    /// One look at etcd: keep the lease, then act on a snapshot.
    async fn step(&mut self) -> Result<(), ClusterError> {
        if self.lease.is_some() && self.fenced() {
            // the fence thread stopped the pipelines: drop them and start a new session
            self.drop_all().await;
            self.lease = None;
        }
        if self.store.is_none() {
            self.store = Some(timed(Store::connect(&self.cfg.access)).await?);
        }
        self.keep_lease().await?;
        let store = self.store.as_mut().ok_or(ClusterError::NotConnected)?;
        let snap = timed(store.snapshot()).await?;
        self.act(&snap).await
    }

    /// Renew the lease, or make a new one (a new session: announce the node, and move what
    /// this node still owns under an old lease to the new one).
    async fn keep_lease(&mut self) -> Result<(), ClusterError> {
        let store = self.store.as_mut().ok_or(ClusterError::NotConnected)?;
        let sent = Instant::now();
        if let Some(lease) = self.lease {
            if timed(store.keep_alive_once(lease)).await? > 0 {
                *lock(&self.last_ack) = Some(sent);
                return Ok(());
            }
            tracing::warn!(lease, "cluster: the lease expired in etcd");
            self.lease = None;
        }
        let ttl = self.cfg.ttl.as_secs().max(1) as i64;
        let lease = timed(store.grant(ttl)).await?;
        timed(store.register(&self.cfg.node, lease)).await?;
        let snap = timed(store.snapshot()).await?;
        for (name, owner) in &snap.owners {
            if *owner == self.cfg.node.id {
                timed(store.rebind(name, owner, lease)).await?;
            }
        }
        self.lease = Some(lease);
        *lock(&self.last_ack) = Some(sent);
        tracing::info!(node = %self.cfg.node.id, lease, "cluster: joined");
        Ok(())
    }

    /// Stop and forget every owned pipeline locally (ownership keys are left to their lease).
    async fn drop_all(&mut self) {
        let _ = clear_dir(&self.cfg.owned_dir);
        self.reconcile().await;
    }

    async fn reconcile(&self) {
        let service = self.service.clone();
        match tokio::task::spawn_blocking(move || service.reconcile()).await {
            Ok(Err(e)) => tracing::error!("cluster: {e}"),
            Err(e) => tracing::error!("cluster: {e}"),
            Ok(Ok(_)) => {}
        }
    }

    /// Give back what is no longer ours (stopped first), take what placement gives us, keep
    /// the owned files in line with etcd's text.
    async fn act(&mut self, snap: &Snapshot) -> Result<(), ClusterError> {
        let me = self.cfg.node.id.clone();
        let lease = self.lease.ok_or(ClusterError::NotConnected)?;
        let desired = desired(snap);
        let ours: Vec<&String> = snap
            .owners
            .iter()
            .filter(|(_, o)| **o == me)
            .map(|(p, _)| p)
            .collect();
        let give_back: Vec<&String> = ours
            .iter()
            .copied()
            .filter(|p| !snap.pipelines.contains_key(*p) || desired.get(*p) != Some(&me))
            .collect();
        if !give_back.is_empty() {
            for p in &give_back {
                let _ = std::fs::remove_file(self.file(p));
            }
            self.reconcile().await;
            let store = self.store.as_mut().ok_or(ClusterError::NotConnected)?;
            for p in &give_back {
                timed(store.release(p, &me)).await?;
                tracing::info!(pipeline = %p, "cluster: stopped and handed back");
            }
        }
        let mut keep: Vec<&String> = ours
            .iter()
            .copied()
            .filter(|p| !give_back.contains(p))
            .collect();
        let store = self.store.as_mut().ok_or(ClusterError::NotConnected)?;
        for (p, n) in &desired {
            if *n == me
                && !snap.owners.contains_key(p)
                && timed(store.acquire(p, &me, lease)).await?
            {
                tracing::info!(pipeline = %p, "cluster: took");
                keep.push(p);
            }
        }
        if self.write_owned(snap, &keep) {
            self.reconcile().await;
        }
        Ok(())
    }

    fn file(&self, pipeline: &str) -> PathBuf {
        self.cfg.owned_dir.join(format!("{pipeline}.yaml"))
    }

    /// Make the owned folder hold exactly `keep`, with etcd's text; whether anything changed.
    fn write_owned(&self, snap: &Snapshot, keep: &[&String]) -> bool {
        let mut changed = false;
        for p in keep {
            let Some(text) = snap.pipelines.get(*p) else {
                continue;
            };
            let file = self.file(p);
            if std::fs::read_to_string(&file).ok().as_deref() != Some(text.as_str()) {
                match crate::service::api::write_atomically(&file, text.as_bytes()) {
                    Ok(()) => changed = true,
                    Err(e) => tracing::error!(file = %file.display(), "cluster: {e}"),
                }
            }
        }
        if let Ok(rd) = std::fs::read_dir(&self.cfg.owned_dir) {
            for e in rd.filter_map(Result::ok) {
                let stem = e
                    .path()
                    .file_stem()
                    .map(|s| s.to_string_lossy().to_string());
                if e.path().is_file() && !keep.iter().any(|k| Some(k.as_str()) == stem.as_deref()) {
                    let _ = std::fs::remove_file(e.path());
                    changed = true;
                }
            }
        }
        changed
    }
}

/// Placement of a snapshot.
pub fn desired(snap: &Snapshot) -> BTreeMap<String, String> {
    let nodes: Vec<NodeCap> = snap
        .nodes
        .iter()
        .map(|n| NodeCap {
            id: n.id.clone(),
            capacity: n.capacity,
            devices: n.devices.clone(),
        })
        .collect();
    let demands: Vec<Demand> = snap
        .pipelines
        .iter()
        .map(|(name, text)| Demand {
            name: name.clone(),
            streams: sources_of(text),
            needs: device_of(text),
        })
        .collect();
    place(&nodes, &demands, &snap.owners)
}

/// How many sources a pipeline text declares (1 when it cannot be read: it was validated when
/// applied, so this is a text edited in etcd by hand).
pub fn sources_of(text: &str) -> usize {
    #[derive(serde::Deserialize)]
    struct Sources {
        sources: Vec<serde::de::IgnoredAny>,
    }
    serde_saphyr::from_str::<Sources>(text).map_or(1, |s| s.sources.len().max(1))
}

/// The device kind a pipeline text's detector insists on (`cuda` for `device: cuda` or
/// `cuda:N`); `auto` and `cpu` run anywhere.
pub fn device_of(text: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Detector {
        device: Option<String>,
    }
    #[derive(serde::Deserialize)]
    struct Pipeline {
        detector: Detector,
    }
    let device = serde_saphyr::from_str::<Pipeline>(text)
        .ok()?
        .detector
        .device?;
    device.starts_with("cuda").then(|| "cuda".to_string())
}

/// etcd calls never wait longer than this (a node cut off notices within its tick).
const CALL_TIMEOUT: Duration = Duration::from_secs(2);

async fn timed<T>(
    f: impl std::future::Future<Output = Result<T, ClusterError>>,
) -> Result<T, ClusterError> {
    tokio::time::timeout(CALL_TIMEOUT, f)
        .await
        .map_err(|_| ClusterError::Timeout)?
}
