//! Which node runs which pipeline: a pure function of what every node reads from etcd (live
//! nodes with their capacity, pipelines with their stream counts, current owners), so every
//! node computes the same answer and none needs to be elected to decide.
//!
//! 1. **Sticky**: a pipeline stays with its current owner while that node lives and has room —
//!    a node failing moves only its own pipelines.
//! 2. **Unowned** pipelines (new, or their node died) go, largest first, to the node that is
//!    least used after taking them (streams / capacity); ties go to the highest rendezvous score
//!    (a hash of pipeline and node), so the choice does not depend on list order.
//! 3. **Rebalance** (a node joined, or capacities changed): while moving one pipeline from the
//!    most used node to the least used one lowers the higher of the two, move the one that
//!    scores highest on the target. It stops as soon as no move helps: no flapping.

use std::collections::BTreeMap;

/// A live node as placement sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeCap {
    pub id: String,
    /// Streams (sources) it may run at most.
    pub capacity: usize,
    /// Device kinds it has besides the CPU (`cuda`).
    pub devices: Vec<String>,
}

impl NodeCap {
    /// Whether `p` may run here: room aside, the device its detector asks for.
    fn suits(&self, p: &Demand) -> bool {
        p.needs.as_ref().is_none_or(|d| self.devices.contains(d))
    }
}

/// A pipeline as placement sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Demand {
    pub name: String,
    /// Its sources.
    pub streams: usize,
    /// A device kind its detector must have (`cuda` for `device: cuda:N`); `None`: any node.
    pub needs: Option<String>,
}

/// Rendezvous score of `pipeline` on `node` (FNV-1a over both names, then mixed).
pub fn score(pipeline: &str, node: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in pipeline.bytes().chain([0xff]).chain(node.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    // splitmix64's finalizer: FNV's low bits alone are poorly spread
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// Load of the nodes while placing.
struct Loads {
    cap: BTreeMap<String, usize>,
    used: BTreeMap<String, usize>,
}

impl Loads {
    fn util_with(&self, node: &str, extra: isize) -> f64 {
        let cap = self.cap[node].max(1) as f64;
        (self.used[node] as isize + extra).max(0) as f64 / cap
    }
    fn fits(&self, node: &str, streams: usize) -> bool {
        self.used[node] + streams <= self.cap[node]
    }
    fn take(&mut self, node: &str, streams: usize) {
        *self.used.entry(node.to_string()).or_default() += streams;
    }
    fn give(&mut self, node: &str, streams: usize) {
        if let Some(u) = self.used.get_mut(node) {
            *u = u.saturating_sub(streams);
        }
    }
}

/// `pipeline → node` for every pipeline that fits somewhere (the others are left out: no node
/// has room). `current`: the owners now.
pub fn place(
    nodes: &[NodeCap],
    pipelines: &[Demand],
    current: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut loads = Loads {
        cap: nodes.iter().map(|n| (n.id.clone(), n.capacity)).collect(),
        used: nodes.iter().map(|n| (n.id.clone(), 0)).collect(),
    };
    let mut out = BTreeMap::new();
    let mut sorted: Vec<&Demand> = pipelines.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    let suits = |node: &str, p: &Demand| nodes.iter().any(|n| n.id == node && n.suits(p));
    for p in &sorted {
        if let Some(owner) = current.get(&p.name)
            && suits(owner, p)
            && loads.fits(owner, p.streams)
        {
            loads.take(owner, p.streams);
            out.insert(p.name.clone(), owner.clone());
        }
    }
    let mut unowned: Vec<&Demand> = sorted
        .iter()
        .copied()
        .filter(|p| !out.contains_key(&p.name))
        .collect();
    unowned.sort_by(|a, b| b.streams.cmp(&a.streams).then_with(|| a.name.cmp(&b.name)));
    for p in unowned {
        let best = nodes
            .iter()
            .filter(|n| n.suits(p) && loads.fits(&n.id, p.streams))
            .min_by(|a, b| {
                let (ua, ub) = (
                    loads.util_with(&a.id, p.streams as isize),
                    loads.util_with(&b.id, p.streams as isize),
                );
                ua.total_cmp(&ub)
                    .then_with(|| score(&p.name, &b.id).cmp(&score(&p.name, &a.id)))
            });
        if let Some(n) = best {
            loads.take(&n.id, p.streams);
            out.insert(p.name.clone(), n.id.clone());
        }
    }
    rebalance(nodes, pipelines, &mut loads, &mut out);
    out
}

/// Step 3: move single pipelines from the most to the least used node while that helps.
fn rebalance(
    nodes: &[NodeCap],
    pipelines: &[Demand],
    loads: &mut Loads,
    out: &mut BTreeMap<String, String>,
) {
    let demand: BTreeMap<&str, &Demand> = pipelines.iter().map(|p| (p.name.as_str(), p)).collect();
    for _ in 0..pipelines.len() {
        let by_util = |a: &&NodeCap, b: &&NodeCap| {
            loads
                .util_with(&a.id, 0)
                .total_cmp(&loads.util_with(&b.id, 0))
                .then_with(|| a.id.cmp(&b.id))
        };
        let (Some(hi), Some(lo)) = (nodes.iter().max_by(by_util), nodes.iter().min_by(by_util))
        else {
            return;
        };
        if hi.id == lo.id {
            return;
        }
        let before = loads.util_with(&hi.id, 0);
        let candidate = out
            .iter()
            .filter(|(_, n)| **n == hi.id)
            .filter(|(p, _)| demand.get(p.as_str()).is_some_and(|d| lo.suits(d)))
            .map(|(p, _)| (p.clone(), demand.get(p.as_str()).map_or(0, |d| d.streams)))
            .filter(|(_, s)| loads.fits(&lo.id, *s))
            .filter(|(_, s)| {
                let after = loads
                    .util_with(&hi.id, -(*s as isize))
                    .max(loads.util_with(&lo.id, *s as isize));
                after + 1e-9 < before
            })
            .max_by_key(|(p, _)| score(p, &lo.id));
        let Some((p, s)) = candidate else { return };
        loads.give(&hi.id, s);
        loads.take(&lo.id, s);
        out.insert(p, lo.id.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(n: usize, cap: usize) -> Vec<NodeCap> {
        (0..n)
            .map(|i| NodeCap {
                id: format!("n{i}"),
                capacity: cap,
                devices: Vec::new(),
            })
            .collect()
    }
    fn pipes(n: usize) -> Vec<Demand> {
        (0..n)
            .map(|i| Demand {
                name: format!("p{i:03}"),
                streams: 1 + i % 3,
                needs: None,
            })
            .collect()
    }

    #[test]
    fn balanced_within_capacity_and_deterministic() {
        let (ns, ps) = (nodes(4, 40), pipes(40));
        let a = place(&ns, &ps, &BTreeMap::new());
        assert_eq!(a.len(), 40);
        let mut used: BTreeMap<&str, usize> = BTreeMap::new();
        for p in &ps {
            *used.entry(a[&p.name].as_str()).or_default() += p.streams;
        }
        let (min, max) = (used.values().min().unwrap(), used.values().max().unwrap());
        assert!(max - min <= 3, "{used:?}");
        let mut reversed = ns.clone();
        reversed.reverse();
        assert_eq!(
            place(&reversed, &ps, &BTreeMap::new()),
            a,
            "order of the lists does not matter"
        );
        assert_eq!(
            place(&ns, &ps, &a),
            a,
            "stable: placing again moves nothing"
        );
    }

    #[test]
    fn a_failed_node_moves_only_its_pipelines_and_a_joining_node_gets_a_share() {
        let (ns, ps) = (nodes(5, 100), pipes(100));
        let a = place(&ns, &ps, &BTreeMap::new());
        let survivors: Vec<NodeCap> = ns.iter().filter(|n| n.id != "n2").cloned().collect();
        let b = place(&survivors, &ps, &a);
        let moved = ps.iter().filter(|p| a[&p.name] != b[&p.name]).count();
        let on_failed = ps.iter().filter(|p| a[&p.name] == "n2").count();
        assert!(
            moved <= on_failed + 3,
            "moved {moved}, the failed node had {on_failed}"
        );
        let c = place(&ns, &ps, &b);
        let to_new = c.values().filter(|n| *n == "n2").count();
        assert!(
            to_new >= on_failed - 3,
            "the node back gets its share: {to_new}"
        );
        assert_eq!(place(&ns, &ps, &c), c, "and then nothing moves");
    }

    #[test]
    fn no_room_leaves_a_pipeline_out() {
        let ns = nodes(1, 2);
        let ps = vec![
            Demand {
                name: "a".into(),
                streams: 2,
                needs: None,
            },
            Demand {
                name: "b".into(),
                streams: 1,
                needs: None,
            },
        ];
        let a = place(&ns, &ps, &BTreeMap::new());
        assert_eq!(a.len(), 1);
        assert_eq!(a["a"], "n0");
    }

    #[test]
    fn a_gpu_pipeline_goes_only_to_a_node_with_a_gpu() {
        let mut ns = nodes(3, 10);
        ns[1].devices = vec!["cuda".into()];
        let mut ps = pipes(9);
        ps[4].needs = Some("cuda".into());
        let a = place(&ns, &ps, &BTreeMap::new());
        assert_eq!(a[&ps[4].name], "n1");
        let without: Vec<NodeCap> = ns.iter().filter(|n| n.id != "n1").cloned().collect();
        let b = place(&without, &ps, &a);
        assert!(
            !b.contains_key(&ps[4].name),
            "no GPU node: not placed anywhere"
        );
        assert_eq!(b.len(), 8);
    }
}
