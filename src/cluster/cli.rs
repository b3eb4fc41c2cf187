//! `vigil cluster apply|get|delete|status`: the fleet's pipelines in etcd.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::ClusterError;
use super::store::{EtcdAccess, Store};

/// Run `f` on a small runtime of its own (the commands are one-shot).
pub fn block_on<T>(
    f: impl std::future::Future<Output = Result<T, ClusterError>>,
) -> Result<T, ClusterError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| ClusterError::Invalid(e.to_string()))?
        .block_on(f)
}

/// The pipeline files `path` names: itself, or a folder's `*.yaml`/`*.yml` (sorted).
fn files(path: &Path) -> Result<Vec<PathBuf>, ClusterError> {
    if !path.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let found =
        crate::service::pipeline_files(path).map_err(|e| ClusterError::Invalid(e.to_string()))?;
    Ok(found.into_keys().collect())
}

/// Validate every file exactly as `vigil check` does (and names unique among them); write
/// them all in one transaction only if none has a problem. Returns the names written.
pub fn apply(access: &EtcdAccess, paths: &[PathBuf]) -> Result<Vec<String>, ClusterError> {
    let mut problems = String::new();
    let mut plans = Vec::new();
    let mut texts = Vec::new();
    for f in paths
        .iter()
        .map(|p| files(p))
        .collect::<Result<Vec<_>, _>>()?
        .concat()
    {
        match crate::config::load(&f) {
            Ok(plan) => {
                let text = std::fs::read_to_string(&f)
                    .map_err(|e| ClusterError::Invalid(format!("{}: {e}", f.display())))?;
                texts.push((plan.name.clone(), text));
                plans.push(plan);
            }
            Err(e) => {
                let _ = writeln!(problems, "{e}");
            }
        }
    }
    for p in crate::service::folder_problems(&plans, usize::MAX) {
        let _ = writeln!(problems, "{p}");
    }
    if !problems.is_empty() {
        return Err(ClusterError::Invalid(format!(
            "nothing written to etcd:\n{}",
            problems.trim_end()
        )));
    }
    if texts.is_empty() {
        return Err(ClusterError::Invalid("no pipeline files given".into()));
    }
    block_on(async {
        let mut store = Store::connect(access).await?;
        store.apply(&texts).await
    })?;
    Ok(texts.into_iter().map(|(n, _)| n).collect())
}

/// The cluster's pipelines as the service's API writes them in cluster mode.
pub struct EtcdPipelines(pub EtcdAccess);

impl crate::service::PipelineStore for EtcdPipelines {
    fn put(&self, name: &str, text: &str) -> Result<(), String> {
        block_on(async {
            let mut store = Store::connect(&self.0).await?;
            store.apply(&[(name.to_string(), text.to_string())]).await
        })
        .map_err(|e| e.to_string())
    }

    fn delete(&self, name: &str) -> Result<bool, String> {
        block_on(async { Store::connect(&self.0).await?.delete_pipeline(name).await })
            .map_err(|e| e.to_string())
    }
}

/// One pipeline's text, or every pipeline's name.
pub fn get(access: &EtcdAccess, name: Option<&str>) -> Result<String, ClusterError> {
    let snap = block_on(async { Store::connect(access).await?.snapshot().await })?;
    match name {
        Some(n) => snap
            .pipelines
            .get(n)
            .cloned()
            .ok_or_else(|| ClusterError::Invalid(format!("no pipeline `{n}` in the cluster"))),
        None => Ok(snap.pipelines.keys().map(|n| format!("{n}\n")).collect()),
    }
}

pub fn delete(access: &EtcdAccess, name: &str) -> Result<(), ClusterError> {
    let existed = block_on(async { Store::connect(access).await?.delete_pipeline(name).await })?;
    if existed {
        Ok(())
    } else {
        Err(ClusterError::Invalid(format!(
            "no pipeline `{name}` in the cluster"
        )))
    }
}

/// Nodes (capacity, address, streams placed) and pipelines (owner now, and where placement
/// wants them).
pub fn status(access: &EtcdAccess) -> Result<String, ClusterError> {
    let snap = block_on(async { Store::connect(access).await?.snapshot().await })?;
    let desired = super::agent::desired(&snap);
    let mut out = format!(
        "revision {}\nnodes ({}):\n",
        snap.revision,
        snap.nodes.len()
    );
    for n in &snap.nodes {
        let streams: usize = snap
            .owners
            .iter()
            .filter(|(_, o)| **o == n.id)
            .filter_map(|(p, _)| snap.pipelines.get(p))
            .map(|t| super::agent::sources_of(t))
            .sum();
        let _ = writeln!(
            out,
            "  {}  http {}  streams {streams}/{}",
            n.id, n.http, n.capacity
        );
    }
    let _ = writeln!(out, "pipelines ({}):", snap.pipelines.len());
    for name in snap.pipelines.keys() {
        let owner = snap.owners.get(name).map_or("-", String::as_str);
        let want = desired
            .get(name)
            .map_or("(no node has room)", String::as_str);
        let moving = if owner != want { "  → moving" } else { "" };
        let _ = writeln!(out, "  {name}  on {owner}  placed on {want}{moving}");
    }
    Ok(out)
}
