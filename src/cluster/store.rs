//! What vigil keeps in etcd, under one prefix (`/vigil/`):
//!
//! | key | value | lease |
//! |---|---|---|
//! | `/vigil/pipelines/{name}` | the pipeline file's text, as written | none |
//! | `/vigil/nodes/{id}` | JSON [`NodeInfo`] (capacity, HTTP address) | the node's |
//! | `/vigil/owners/{name}` | the id of the node running the pipeline | the owner's |
//!
//! A node's keys vanish with its lease, so "live nodes" and "owners" are what etcd says they
//! are, never a node's own belief. Ownership is taken with a transaction that succeeds only if
//! the key does not exist (`create_revision == 0`) and given back only if it is still ours.

use std::collections::BTreeMap;

use etcd_client::{Client, Compare, CompareOp, ConnectOptions, GetOptions, PutOptions, Txn, TxnOp};
use serde::{Deserialize, Serialize};

use super::ClusterError;

pub const PREFIX: &str = "/vigil/";
const PIPELINES: &str = "/vigil/pipelines/";
const NODES: &str = "/vigil/nodes/";
const OWNERS: &str = "/vigil/owners/";

/// A node as it announces itself.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NodeInfo {
    pub id: String,
    /// Streams (sources) it runs at most.
    pub capacity: usize,
    /// Its HTTP address (console, `/pipelines`).
    pub http: String,
    /// Device kinds besides the CPU (`cuda` when built with CUDA and a GPU answers).
    #[serde(default)]
    pub devices: Vec<String>,
}

/// Everything under the prefix at one revision.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    pub revision: i64,
    /// name → text.
    pub pipelines: BTreeMap<String, String>,
    pub nodes: Vec<NodeInfo>,
    /// pipeline name → node id.
    pub owners: BTreeMap<String, String>,
}

/// How to reach etcd.
#[derive(Debug, Clone, Default)]
pub struct EtcdAccess {
    pub endpoints: Vec<String>,
    /// `(user, password)` when etcd has authentication on.
    pub user: Option<(String, String)>,
    /// TLS to etcd (`https://` endpoints).
    pub tls: Option<EtcdTls>,
}

/// Certificates for TLS to etcd, PEM.
#[derive(Debug, Clone, Default)]
pub struct EtcdTls {
    /// The CA that signed etcd's certificate.
    pub ca_pem: Option<Vec<u8>>,
    /// `(certificate, key)` when etcd asks clients for a certificate.
    pub client_pem: Option<(Vec<u8>, Vec<u8>)>,
}

pub struct Store {
    client: Client,
}

impl Store {
    pub async fn connect(access: &EtcdAccess) -> Result<Self, ClusterError> {
        let mut options = ConnectOptions::new()
            .with_connect_timeout(std::time::Duration::from_secs(2))
            .with_timeout(std::time::Duration::from_secs(2));
        if let Some((user, password)) = &access.user {
            options = options.with_user(user.clone(), password.clone());
        }
        if let Some(tls) = &access.tls {
            let mut t = etcd_client::TlsOptions::new();
            if let Some(ca) = &tls.ca_pem {
                t = t.ca_certificate(etcd_client::Certificate::from_pem(ca));
            }
            if let Some((cert, key)) = &tls.client_pem {
                t = t.identity(etcd_client::Identity::from_pem(cert, key));
            }
            options = options.with_tls(t);
        }
        let client = Client::connect(&access.endpoints, Some(options))
            .await
            .map_err(|e| ClusterError::Etcd(access.endpoints.join(","), e))?;
        Ok(Self { client })
    }

    fn err(&self, e: etcd_client::Error) -> ClusterError {
        ClusterError::Etcd("etcd".into(), e)
    }

    /// Pipelines, live nodes and owners, read in one request (one revision).
    pub async fn snapshot(&mut self) -> Result<Snapshot, ClusterError> {
        let resp = self
            .client
            .get(PREFIX, Some(GetOptions::new().with_prefix()))
            .await
            .map_err(|e| self.err(e))?;
        let mut snap = Snapshot {
            revision: resp.header().map_or(0, |h| h.revision()),
            ..Snapshot::default()
        };
        for kv in resp.kvs() {
            let (Ok(key), Ok(value)) = (kv.key_str(), kv.value_str()) else {
                continue;
            };
            if let Some(name) = key.strip_prefix(PIPELINES) {
                snap.pipelines.insert(name.to_string(), value.to_string());
            } else if key.starts_with(NODES) {
                if let Ok(n) = serde_json::from_str::<NodeInfo>(value) {
                    snap.nodes.push(n);
                }
            } else if let Some(name) = key.strip_prefix(OWNERS) {
                snap.owners.insert(name.to_string(), value.to_string());
            }
        }
        Ok(snap)
    }

    /// Write every `(name, text)` in one transaction: all or nothing.
    pub async fn apply(&mut self, pipelines: &[(String, String)]) -> Result<(), ClusterError> {
        let ops: Vec<TxnOp> = pipelines
            .iter()
            .map(|(name, text)| TxnOp::put(format!("{PIPELINES}{name}"), text.as_str(), None))
            .collect();
        self.client
            .txn(Txn::new().and_then(ops))
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Remove pipeline `name`; whether it existed. Its owner stops it on its next look.
    pub async fn delete_pipeline(&mut self, name: &str) -> Result<bool, ClusterError> {
        let r = self
            .client
            .delete(format!("{PIPELINES}{name}"), None)
            .await
            .map_err(|e| self.err(e))?;
        Ok(r.deleted() > 0)
    }

    /// A lease of `ttl` seconds.
    pub async fn grant(&mut self, ttl: i64) -> Result<i64, ClusterError> {
        Ok(self
            .client
            .lease_grant(ttl, None)
            .await
            .map_err(|e| self.err(e))?
            .id())
    }

    pub async fn revoke(&mut self, lease: i64) -> Result<(), ClusterError> {
        self.client
            .lease_revoke(lease)
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// One keep-alive of `lease`; the TTL etcd now gives it (0: the lease is gone).
    pub async fn keep_alive_once(&mut self, lease: i64) -> Result<i64, ClusterError> {
        let (mut keeper, mut stream) = self
            .client
            .lease_keep_alive(lease)
            .await
            .map_err(|e| self.err(e))?;
        keeper.keep_alive().await.map_err(|e| self.err(e))?;
        match stream.message().await.map_err(|e| self.err(e))? {
            Some(r) => Ok(r.ttl()),
            None => Ok(0),
        }
    }

    /// Announce `node` under `lease`.
    pub async fn register(&mut self, node: &NodeInfo, lease: i64) -> Result<(), ClusterError> {
        let json = serde_json::to_string(node).map_err(|e| ClusterError::Invalid(e.to_string()))?;
        self.client
            .put(
                format!("{NODES}{}", node.id),
                json,
                Some(PutOptions::new().with_lease(lease)),
            )
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Take pipeline `name` for `node` if nobody owns it; whether we got it.
    pub async fn acquire(
        &mut self,
        name: &str,
        node: &str,
        lease: i64,
    ) -> Result<bool, ClusterError> {
        let key = format!("{OWNERS}{name}");
        let txn = Txn::new()
            .when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                key.as_str(),
                node,
                Some(PutOptions::new().with_lease(lease)),
            )]);
        let r = self.client.txn(txn).await.map_err(|e| self.err(e))?;
        Ok(r.succeeded())
    }

    /// Move pipeline `name`, if `node` still owns it, under `lease` (a new session of the node).
    pub async fn rebind(&mut self, name: &str, node: &str, lease: i64) -> Result<(), ClusterError> {
        let key = format!("{OWNERS}{name}");
        let txn = Txn::new()
            .when([Compare::value(key.as_str(), CompareOp::Equal, node)])
            .and_then([TxnOp::put(
                key.as_str(),
                node,
                Some(PutOptions::new().with_lease(lease)),
            )]);
        self.client.txn(txn).await.map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Give pipeline `name` back if `node` still owns it.
    pub async fn release(&mut self, name: &str, node: &str) -> Result<(), ClusterError> {
        let key = format!("{OWNERS}{name}");
        let txn = Txn::new()
            .when([Compare::value(key.as_str(), CompareOp::Equal, node)])
            .and_then([TxnOp::delete(key.as_str(), None)]);
        self.client.txn(txn).await.map_err(|e| self.err(e))?;
        Ok(())
    }
}
