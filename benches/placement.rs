//! Cluster placement (issue 20) at fleet scale: 1 000 nodes, 10 000 cameras (1–3 streams each).
//! Times one placement decision — steady state, after a node fails, after a node joins — and
//! prints how many cameras each event moves (the goal: a failure moves only the failed node's
//! cameras plus a small constant).

use std::collections::BTreeMap;

use criterion::{Criterion, criterion_group, criterion_main};
use vigil::cluster::placement::{Demand, NodeCap, place};

const NODES: usize = 1000;
const CAMERAS: usize = 10_000;

fn fleet() -> (Vec<NodeCap>, Vec<Demand>) {
    // capacity 40 streams a node: 40 000 in all for ~20 000 streams, so a failure always fits
    let nodes = (0..NODES)
        .map(|i| NodeCap {
            id: format!("node-{i:04}"),
            capacity: 40,
            devices: Vec::new(),
        })
        .collect();
    let cams = (0..CAMERAS)
        .map(|i| Demand {
            name: format!("cam-{i:05}"),
            streams: 1 + i % 3,
            needs: None,
        })
        .collect();
    (nodes, cams)
}

fn moved(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>) -> usize {
    a.iter().filter(|(p, n)| b.get(*p) != Some(*n)).count()
}

/// Churn: 20 failures and 20 joins, each from the placement the previous one left.
fn churn_report(nodes: &[NodeCap], cams: &[Demand], start: &BTreeMap<String, String>) {
    let mut current = start.clone();
    let mut live: Vec<NodeCap> = nodes.to_vec();
    let (mut extra_fail, mut worst_fail, mut moved_join) = (0usize, 0usize, Vec::new());
    for k in 0..20 {
        let victim = live.remove((k * 37) % live.len());
        let on_victim = current.values().filter(|n| **n == victim.id).count();
        let next = place(&live, cams, &current);
        let m = moved(&current, &next);
        extra_fail += m - on_victim;
        worst_fail = worst_fail.max(m - on_victim);
        current = next;
        live.push(victim);
        let next = place(&live, cams, &current);
        moved_join.push(moved(&current, &next));
        current = next;
    }
    eprintln!(
        "placement churn ({NODES} nodes, {CAMERAS} cameras, 20 failures + 20 joins): a failure moved \
         the failed node's cameras + {:.1} others on average (worst + {worst_fail}); a join moved {:.1} \
         cameras on average (a fair share is {:.1})",
        extra_fail as f64 / 20.0,
        moved_join.iter().sum::<usize>() as f64 / 20.0,
        CAMERAS as f64 / NODES as f64
    );
}

fn bench(c: &mut Criterion) {
    let (nodes, cams) = fleet();
    let steady = place(&nodes, &cams, &BTreeMap::new());
    churn_report(&nodes, &cams, &steady);
    let mut g = c.benchmark_group("placement");
    g.sample_size(10);
    g.bench_function("steady_state", |b| b.iter(|| place(&nodes, &cams, &steady)));
    let fewer: Vec<NodeCap> = nodes
        .iter()
        .filter(|n| n.id != "node-0500")
        .cloned()
        .collect();
    g.bench_function("after_a_node_failure", |b| {
        b.iter(|| place(&fewer, &cams, &steady))
    });
    let without = place(&fewer, &cams, &steady);
    g.bench_function("after_a_node_joins", |b| {
        b.iter(|| place(&nodes, &cams, &without))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
