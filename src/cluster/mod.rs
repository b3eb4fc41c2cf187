//! Cluster mode: a set of `vigil serve --cluster` nodes run one fleet of pipelines stored in
//! etcd, each pipeline on exactly one live node (see `agent` for the fencing guarantee,
//! `placement` for who runs what, `store` for the keys). `vigil cluster apply|get|delete|status`
//! manage the fleet (`cli`).

pub mod agent;
pub mod cli;
pub mod placement;
pub mod store;

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("etcd {0}: {1}")]
    Etcd(String, #[source] etcd_client::Error),
    #[error("{0}")]
    Invalid(String),
    #[error("not connected to etcd")]
    NotConnected,
    #[error("etcd did not answer in time")]
    Timeout,
}
