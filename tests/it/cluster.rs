//! Cluster mode (issue 20) against a real etcd on 127.0.0.1: three nodes, six pipelines, each
//! on exactly one node; `kill -9` of a node: its pipelines run elsewhere within the lease TTL
//! plus 5 s; the node back: rebalanced; etcd down for 10 s: never a pipeline on two nodes
//! (sampled every 200 ms), also checked on the records themselves; a bad file applied: nothing
//! written.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::common::free_port;
use super::common::{heavy, model, vigil};
use super::service::{Reaped, get, register_token, wait_for};

const TTL_S: u64 = 5;

/// etcd on 127.0.0.1: clients at `client_url`, its one member's peer port `peer`.
fn etcd_command(data: &Path, client_url: &str, peer: u16, log: &Path) -> std::process::Command {
    let peer_url = format!("http://127.0.0.1:{peer}");
    let mut c = std::process::Command::new("/usr/bin/etcd");
    c.arg("--data-dir")
        .arg(data)
        .args([
            "--listen-client-urls",
            client_url,
            "--advertise-client-urls",
            client_url,
        ])
        .args([
            "--listen-peer-urls",
            &peer_url,
            "--initial-advertise-peer-urls",
            &peer_url,
        ])
        .args(["--initial-cluster", &format!("default={peer_url}")])
        .stderr(std::fs::File::create(log).unwrap());
    c
}

fn etcd_start(data: &Path, client: u16, peer: u16, log: &Path) -> Reaped {
    let child = etcd_command(data, &format!("http://127.0.0.1:{client}"), peer, log)
        .spawn()
        .unwrap();
    wait_for("etcd", Duration::from_secs(30), || {
        std::net::TcpStream::connect(("127.0.0.1", client)).is_ok()
    });
    Reaped(child)
}

/// One `vigil serve --cluster` node.
struct Node {
    id: String,
    http: u16,
    state: PathBuf,
    child: Option<Reaped>,
}

impl Node {
    fn start(&mut self, etcd: &str, log_dir: &Path) {
        register_token(&self.state, self.http);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_dir.join(format!("{}.log", self.id)))
            .unwrap();
        let child = vigil()
            .args([
                "serve",
                "--cluster",
                etcd,
                "--node-id",
                &self.id,
                "--lease-ttl",
                &format!("{TTL_S}s"),
            ])
            .arg("--state-dir")
            .arg(&self.state)
            .args([
                "--http",
                &format!("127.0.0.1:{}", self.http),
                "--capacity",
                "4",
            ])
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(Reaped(child));
        let http = self.http;
        wait_for("the node's HTTP", Duration::from_secs(30), || {
            get(http, "/healthz").is_some()
        });
    }
}

/// The pipelines running on the node at `port` (none when it does not answer).
fn running(port: u16) -> Vec<String> {
    let Some((200, body)) = get(port, "/pipelines") else {
        return Vec::new();
    };
    let list: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap_or_default();
    list.iter()
        .filter(|p| p["state"] == "running")
        .filter_map(|p| p["name"].as_str().map(str::to_string))
        .collect()
}

/// Pipeline → the nodes running it, from every node's `/pipelines`.
fn where_running(ports: &[(String, u16)]) -> BTreeMap<String, Vec<String>> {
    let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (id, port) in ports {
        for p in running(*port) {
            m.entry(p).or_default().push(id.clone());
        }
    }
    m
}

fn all_once(m: &BTreeMap<String, Vec<String>>) -> bool {
    m.len() == 6 && m.values().all(|n| n.len() == 1)
}

/// Samples every 200 ms until stopped; keeps every moment a pipeline ran on two nodes.
fn sampler(
    ports: Vec<(String, u16)>,
    stop: Arc<AtomicBool>,
) -> (std::thread::JoinHandle<usize>, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let h = std::thread::spawn(move || {
        let mut samples = 0;
        while !stop.load(Ordering::Relaxed) {
            for (p, nodes) in where_running(&ports) {
                if nodes.len() > 1 {
                    s.lock().unwrap().push(format!("{p} on {nodes:?}"));
                }
            }
            samples += 1;
            std::thread::sleep(Duration::from_millis(200));
        }
        samples
    });
    (h, seen)
}

fn cluster_cmd(etcd: &str, args: &[&str]) -> std::process::Output {
    vigil()
        .args(["cluster", "--etcd", etcd])
        .args(args)
        .output()
        .unwrap()
}

fn write_pipelines(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for i in 0..6 {
        std::fs::write(
            dir.join(format!("cam{i}.yaml")),
            format!(
                "name: cam{i}\nsources:\n  - id: cam\n    uri: test:ball?width=160&height=120&fps=5\n\
                 detector:\n  model: {}\noutputs:\n  - kind: jsonl\n    path: out/{{pipeline}}.jsonl\n",
                model().display()
            ),
        )
        .unwrap();
    }
}

#[test]
fn nodes_share_pipelines_fail_over_rebalance_and_never_run_one_twice() {
    if !Path::new("/usr/bin/etcd").exists() {
        eprintln!("SKIPPED: etcd missing (scripts/install-deps installs etcd-server)");
        return;
    }
    let _heavy = heavy();
    let dir = tempfile::tempdir().unwrap();
    let (client, peer) = (free_port(), free_port());
    let etcd_url = format!("http://127.0.0.1:{client}");
    let mut etcd = etcd_start(
        &dir.path().join("etcd"),
        client,
        peer,
        &dir.path().join("etcd.log"),
    );
    write_pipelines(&dir.path().join("fleet"));
    let applied = cluster_cmd(
        &etcd_url,
        &["apply", "-f", dir.path().join("fleet").to_str().unwrap()],
    );
    assert!(
        applied.status.success(),
        "{}",
        String::from_utf8_lossy(&applied.stderr)
    );

    let mut nodes: Vec<Node> = (1..=3)
        .map(|i| Node {
            id: format!("n{i}"),
            http: free_port(),
            state: dir.path().join(format!("n{i}")),
            child: None,
        })
        .collect();
    for n in &mut nodes {
        n.start(&etcd_url, dir.path());
    }
    let ports: Vec<(String, u16)> = nodes.iter().map(|n| (n.id.clone(), n.http)).collect();
    wait_for(
        "six pipelines, each on one node",
        Duration::from_secs(120),
        || all_once(&where_running(&ports)),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let (sampling, twice) = sampler(ports.clone(), stop.clone());

    // kill -9 of a node: its pipelines run elsewhere within TTL + 5 s
    let before = where_running(&ports);
    let lost: Vec<&String> = before
        .iter()
        .filter(|(_, n)| n[0] == "n1")
        .map(|(p, _)| p)
        .collect();
    assert!(!lost.is_empty(), "n1 ran nothing: {before:?}");
    let killed = Instant::now();
    drop(nodes[0].child.take()); // SIGKILL
    wait_for("failover", Duration::from_secs(TTL_S + 5), || {
        all_once(&where_running(&ports[1..]))
    });
    eprintln!(
        "failover: {} pipelines of the killed node running elsewhere after {:.1} s (lease TTL {TTL_S} s)",
        lost.len(),
        killed.elapsed().as_secs_f64()
    );

    // the node comes back: it gets its share again, nothing twice
    nodes[0].start(&etcd_url, dir.path());
    wait_for("rebalance", Duration::from_secs(60), || {
        let m = where_running(&ports);
        all_once(&m)
            && ["n1", "n2", "n3"]
                .iter()
                .all(|n| m.values().filter(|v| v[0] == *n).count() == 2)
    });

    // etcd gone for 10 s: every node fences itself; then all six run again, once each
    drop(etcd);
    std::thread::sleep(Duration::from_secs(10));
    etcd = etcd_start(
        &dir.path().join("etcd"),
        client,
        peer,
        &dir.path().join("etcd2.log"),
    );
    wait_for(
        "recovery after etcd's outage",
        Duration::from_secs(60),
        || all_once(&where_running(&ports)),
    );
    // the API of any node writes to the cluster: a pipeline PUT through n2 runs on one node
    let n2 = ports[1].1;
    let token = super::service::token_of(n2);
    let text = std::fs::read_to_string(dir.path().join("fleet/cam0.yaml"))
        .unwrap()
        .replace("cam0", "cam6");
    let path = "/api/pipelines/cam6";
    let (code, body, _) = super::console_api::call(n2, "PUT", path, Some(&token), &[], Some(&text));
    assert_eq!(code, 202, "{body}");
    wait_for("cam6 on one node", Duration::from_secs(60), || {
        where_running(&ports)
            .get("cam6")
            .is_some_and(|n| n.len() == 1)
    });
    let (code, body, _) = super::console_api::call(n2, "DELETE", path, Some(&token), &[], None);
    assert_eq!(code, 204, "{body}");
    wait_for("cam6 to stop", Duration::from_secs(60), || {
        !where_running(&ports).contains_key("cam6")
    });
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::Relaxed);
    let samples = sampling.join().unwrap();
    let twice = twice.lock().unwrap().clone();
    assert!(
        twice.is_empty(),
        "ran on two nodes at once in {} of {samples} samples: {twice:?}",
        twice.len()
    );

    // a bad file: rejected with its place, etcd unchanged
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "name: bad\nsources: 3\n").unwrap();
    let out = cluster_cmd(
        &etcd_url,
        &[
            "apply",
            "-f",
            dir.path().join("fleet").to_str().unwrap(),
            "-f",
            bad.to_str().unwrap(),
        ],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.yaml:2:10"), "{err}");
    let names = cluster_cmd(&etcd_url, &["get"]);
    assert_eq!(String::from_utf8_lossy(&names.stdout).lines().count(), 6);

    for n in &mut nodes {
        if let Some(c) = n.child.take() {
            super::service::sigterm(&c.0);
            let mut c = c;
            super::common::wait_exit(&mut c.0, Duration::from_secs(60));
        }
    }
    records_never_overlap(&nodes);
    drop(etcd);
}

/// Every record names its node, and per pipeline the records of different nodes never
/// interleave in capture time (one runner at a time, checked on the data itself).
fn records_never_overlap(nodes: &[Node]) {
    for i in 0..6 {
        let mut recs: Vec<(String, String)> = Vec::new();
        for n in nodes {
            let f = n.state.join(format!("out/cam{i}.jsonl"));
            for line in std::fs::read_to_string(&f).unwrap_or_default().lines() {
                let v: serde_json::Value = serde_json::from_str(line).unwrap();
                assert_eq!(v["node"], n.id.as_str(), "{line}");
                recs.push((v["captured_at"].as_str().unwrap().to_string(), n.id.clone()));
            }
        }
        recs.sort();
        let stints = 1 + recs.windows(2).filter(|w| w[0].1 != w[1].1).count();
        // placed, killed away, rebalanced back, and possibly moved once after etcd's outage
        assert!(
            stints <= 5,
            "cam{i}: {stints} runs by turns: records interleave"
        );
        assert!(!recs.is_empty(), "cam{i} wrote nothing");
    }
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, made by `openssl`.
fn certificates(dir: &Path) {
    let run = |args: &str| {
        let ok = std::process::Command::new("openssl")
            .args(args.split_whitespace())
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(
            ok.status.success(),
            "openssl {args}: {}",
            String::from_utf8_lossy(&ok.stderr)
        );
    };
    run(
        "req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=vigil-test-ca",
    );
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    for who in ["server", "client"] {
        run(&format!(
            "req -newkey rsa:2048 -nodes -keyout {who}.key -out {who}.csr -subj /CN={who}"
        ));
        run(&format!(
            "x509 -req -in {who}.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out {who}.pem -days 2 -extfile san.ext"
        ));
    }
}

#[test]
fn cluster_commands_reach_etcd_over_tls_with_a_client_certificate() {
    if !Path::new("/usr/bin/etcd").exists() {
        eprintln!("SKIPPED: etcd missing (scripts/install-deps installs etcd-server)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    certificates(d);
    let (client, peer) = (free_port(), free_port());
    let url = format!("https://127.0.0.1:{client}");
    let child = etcd_command(&d.join("etcd"), &url, peer, &d.join("etcd.log"))
        .arg("--cert-file")
        .arg(d.join("server.pem"))
        .arg("--key-file")
        .arg(d.join("server.key"))
        .arg("--trusted-ca-file")
        .arg(d.join("ca.pem"))
        .arg("--client-cert-auth")
        .spawn()
        .unwrap();
    let _etcd = Reaped(child);
    wait_for("etcd", Duration::from_secs(30), || {
        std::net::TcpStream::connect(("127.0.0.1", client)).is_ok()
    });
    write_pipelines(&d.join("fleet"));
    let tls = |extra: &[&str]| -> std::process::Output {
        let mut args = vec!["cluster", "--etcd", &url, "--etcd-ca"];
        let ca = d.join("ca.pem").display().to_string();
        let (cert, key) = (
            d.join("client.pem").display().to_string(),
            d.join("client.key").display().to_string(),
        );
        args.push(&ca);
        args.extend(["--etcd-cert", &cert, "--etcd-key", &key]);
        args.extend(extra);
        vigil().args(&args).output().unwrap()
    };
    let fleet = d.join("fleet").display().to_string();
    let out = tls(&["apply", "-f", &fleet]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = tls(&["get"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 6);
    // without the client certificate etcd refuses
    let ca = d.join("ca.pem").display().to_string();
    let refused = vigil()
        .args(["cluster", "--etcd", &url, "--etcd-ca", &ca, "get"])
        .output()
        .unwrap();
    assert!(
        !refused.status.success(),
        "{}",
        String::from_utf8_lossy(&refused.stdout)
    );
}
