//! CLEAR-MOT and identity metrics (MOTA, MOTP, IDF1, …) computed exactly as py-motmetrics 1.4.0
//! does with IoU distance, so numbers can be compared with published ones.
//!
//! Per frame: pairs with `1 − IoU > threshold` cannot match; an object keeps last frame's partner if
//! that pair is still valid; the rest is a min-cost assignment that first maximizes the number of
//! pairs. A match whose object was last matched to another hypothesis is an ID switch (returning
//! to an earlier one counts again). IDF1 comes from a global one-to-one matching of object and
//! hypothesis ids maximizing the frames in which the pair overlaps by at least the threshold.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use crate::frame::Xyxy;
use crate::track::assign;

/// One box of a MOT file: frame, identity, box.
#[derive(Debug, Clone, PartialEq)]
pub struct MotRow {
    pub frame: i64,
    pub id: i64,
    pub bbox: Xyxy,
}

#[derive(Debug, thiserror::Error)]
#[error("{path}:{line}: {message}")]
pub struct MotError {
    pub path: String,
    pub line: usize,
    pub message: String,
}

/// Parse MOT15/16 CSV text (`frame,id,x,y,w,h,conf,…`; commas or whitespace). Every row is kept.
pub fn parse(path: &str, text: &str) -> Result<Vec<MotRow>, MotError> {
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let f: Vec<&str> = t
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|s| !s.is_empty())
            .collect();
        let err = |message: String| MotError {
            path: path.to_string(),
            line: i + 1,
            message,
        };
        if f.len() < 6 {
            return Err(err(format!(
                "expected at least 6 fields (frame,id,x,y,w,h), found {}",
                f.len()
            )));
        }
        let num = |k: usize| {
            f[k].parse::<f64>()
                .map_err(|_| err(format!("field {} `{}` is not a number", k + 1, f[k])))
        };
        let (x, y, w, h) = (num(2)?, num(3)?, num(4)?, num(5)?);
        rows.push(MotRow {
            frame: num(0)? as i64,
            id: num(1)? as i64,
            bbox: Xyxy {
                x1: x as f32,
                y1: y as f32,
                x2: (x + w) as f32,
                y2: (y + h) as f32,
            },
        });
    }
    Ok(rows)
}

pub fn load(path: &Path) -> Result<Vec<MotRow>, MotError> {
    let text = std::fs::read_to_string(path).map_err(|e| MotError {
        path: path.display().to_string(),
        line: 0,
        message: e.to_string(),
    })?;
    parse(&path.display().to_string(), &text)
}

/// The metrics of py-motmetrics' `motchallenge_metrics` (plus the counts behind them).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct MotMetrics {
    pub mota: f64,
    pub motp: f64,
    pub idf1: f64,
    pub idp: f64,
    pub idr: f64,
    pub recall: f64,
    pub precision: f64,
    pub num_objects: u64,
    pub num_predictions: u64,
    pub num_matches: u64,
    pub num_switches: u64,
    pub num_false_positives: u64,
    pub num_misses: u64,
    pub num_fragmentations: u64,
    pub mostly_tracked: u64,
    pub partially_tracked: u64,
    pub mostly_lost: u64,
    pub num_unique_objects: u64,
    pub idtp: u64,
    pub idfp: u64,
    pub idfn: u64,
}

/// IoU distance in f64, as py-motmetrics computes it (`x2 = x + w`, no +1).
fn iou_distance(a: &Xyxy, b: &Xyxy) -> f64 {
    let f = |x: &Xyxy| [x.x1, x.y1, x.x2, x.y2].map(f64::from);
    1.0 - crate::frame::iou(&f(a), &f(b))
}

/// Score `pred` against `gt` with IoU distance threshold `max_distance` (0.5 = IoU ≥ 0.5).
#[allow(
    clippy::too_many_lines,
    reason = "CLEAR-MOT and identity metrics step for step as py-motmetrics computes them, for parity"
)]
pub fn evaluate(gt: &[MotRow], pred: &[MotRow], max_distance: f64) -> MotMetrics {
    let mut by_frame: BTreeMap<i64, (Vec<&MotRow>, Vec<&MotRow>)> = BTreeMap::new();
    for r in gt {
        by_frame.entry(r.frame).or_default().0.push(r);
    }
    for r in pred {
        by_frame.entry(r.frame).or_default().1.push(r);
    }
    let mut m = MotMetrics {
        num_objects: gt.len() as u64,
        num_predictions: pred.len() as u64,
        ..Default::default()
    };
    let mut last: HashMap<i64, i64> = HashMap::new();
    let mut dist_sum = 0f64;
    // per object id: frames present, and whether tracked in each (in frame order)
    let mut history: BTreeMap<i64, Vec<bool>> = BTreeMap::new();
    // identity: frames each id appears, and frames each pair is within threshold
    let mut obj_frames: BTreeMap<i64, u64> = BTreeMap::new();
    let mut hyp_frames: BTreeMap<i64, u64> = BTreeMap::new();
    let mut pair_frames: HashMap<(i64, i64), u64> = HashMap::new();

    for (objs, hyps) in by_frame.values_mut() {
        objs.sort_by_key(|r| r.id);
        let (no, nh) = (objs.len(), hyps.len());
        let d: Vec<Option<f64>> = objs
            .iter()
            .flat_map(|o| hyps.iter().map(move |h| (o, h)))
            .map(|(o, h)| Some(iou_distance(&o.bbox, &h.bbox)).filter(|&x| x <= max_distance))
            .collect();
        for o in objs.iter() {
            *obj_frames.entry(o.id).or_default() += 1;
        }
        for h in hyps.iter() {
            *hyp_frames.entry(h.id).or_default() += 1;
        }
        for (i, o) in objs.iter().enumerate() {
            for (j, h) in hyps.iter().enumerate() {
                if d[i * nh + j].is_some() {
                    *pair_frames.entry((o.id, h.id)).or_default() += 1;
                }
            }
        }

        let mut obj_done = vec![false; no];
        let mut hyp_done = vec![false; nh];
        let mut matched: Vec<(usize, usize, bool)> = Vec::new(); // (o, h, switch)
        // 1. keep last frame's partners that are still valid
        for (i, o) in objs.iter().enumerate() {
            let Some(&prev) = last.get(&o.id) else {
                continue;
            };
            if let Some(j) = hyps.iter().position(|h| h.id == prev)
                && !hyp_done[j]
                && d[i * nh + j].is_some()
            {
                obj_done[i] = true;
                hyp_done[j] = true;
                matched.push((i, j, false));
            }
        }
        // 2. assign the rest
        let free_o: Vec<usize> = (0..no).filter(|&i| !obj_done[i]).collect();
        let free_h: Vec<usize> = (0..nh).filter(|&j| !hyp_done[j]).collect();
        let dr = &d;
        let sub: Vec<Option<f64>> = free_o
            .iter()
            .flat_map(|&i| free_h.iter().map(move |&j| dr[i * nh + j]))
            .collect();
        for (r, c) in assign::max_valid_min_cost(&sub, free_o.len(), free_h.len()) {
            let (i, j) = (free_o[r], free_h[c]);
            let switch = last.get(&objs[i].id).is_some_and(|&p| p != hyps[j].id);
            obj_done[i] = true;
            hyp_done[j] = true;
            matched.push((i, j, switch));
        }
        for &(i, j, switch) in &matched {
            dist_sum += d[i * nh + j].unwrap_or(0.0);
            last.insert(objs[i].id, hyps[j].id);
            if switch {
                m.num_switches += 1;
            } else {
                m.num_matches += 1;
            }
        }
        for (i, o) in objs.iter().enumerate() {
            history.entry(o.id).or_default().push(obj_done[i]);
            if !obj_done[i] {
                m.num_misses += 1;
            }
        }
        m.num_false_positives += hyp_done.iter().filter(|&&x| !x).count() as u64;
    }

    let detections = m.num_matches + m.num_switches;
    m.motp = if detections > 0 {
        dist_sum / detections as f64
    } else {
        f64::NAN
    };
    m.mota = 1.0
        - (m.num_misses + m.num_switches + m.num_false_positives) as f64
            / m.num_objects.max(1) as f64;
    m.recall = detections as f64 / m.num_objects.max(1) as f64;
    m.precision = detections as f64 / (detections + m.num_false_positives).max(1) as f64;
    m.num_unique_objects = history.len() as u64;
    for tracked in history.values() {
        let ratio = tracked.iter().filter(|&&t| t).count() as f64 / tracked.len().max(1) as f64;
        if ratio >= 0.8 {
            m.mostly_tracked += 1;
        } else if ratio >= 0.2 {
            m.partially_tracked += 1;
        } else {
            m.mostly_lost += 1;
        }
        if let (Some(first), Some(last)) = (
            tracked.iter().position(|&t| t),
            tracked.iter().rposition(|&t| t),
        ) {
            m.num_fragmentations += tracked[first..=last]
                .windows(2)
                .filter(|w| w[0] && !w[1])
                .count() as u64;
        }
    }

    // identity metrics
    let oids: Vec<i64> = obj_frames.keys().copied().collect();
    let hids: Vec<i64> = hyp_frames.keys().copied().collect();
    let hid_set: BTreeSet<i64> = hids.iter().copied().collect();
    debug_assert_eq!(hid_set.len(), hids.len());
    let weights: Vec<u64> = oids
        .iter()
        .flat_map(|o| hids.iter().map(move |h| (*o, *h)))
        .map(|k| pair_frames.get(&k).copied().unwrap_or(0))
        .collect();
    m.idtp = assign::max_weight(&weights, oids.len(), hids.len())
        .into_iter()
        .map(|(r, c)| weights[r * hids.len() + c])
        .sum();
    m.idfn = m.num_objects - m.idtp;
    m.idfp = m.num_predictions - m.idtp;
    m.idp = m.idtp as f64 / (m.idtp + m.idfp).max(1) as f64;
    m.idr = m.idtp as f64 / (m.idtp + m.idfn).max(1) as f64;
    m.idf1 = 2.0 * m.idtp as f64 / (m.num_objects + m.num_predictions).max(1) as f64;
    m
}

impl std::fmt::Display for MotMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "MOTA        {:.6}", self.mota)?;
        writeln!(f, "MOTP        {:.6}  (mean 1 - IoU of matches)", self.motp)?;
        writeln!(f, "IDF1        {:.6}", self.idf1)?;
        writeln!(f, "IDP         {:.6}", self.idp)?;
        writeln!(f, "IDR         {:.6}", self.idr)?;
        writeln!(f, "recall      {:.6}", self.recall)?;
        writeln!(f, "precision   {:.6}", self.precision)?;
        writeln!(
            f,
            "objects     {}  ({} identities)",
            self.num_objects, self.num_unique_objects
        )?;
        writeln!(f, "predictions {}", self.num_predictions)?;
        writeln!(f, "FP          {}", self.num_false_positives)?;
        writeln!(f, "misses      {}", self.num_misses)?;
        writeln!(f, "ID switches {}", self.num_switches)?;
        writeln!(f, "fragment.   {}", self.num_fragmentations)?;
        write!(
            f,
            "MT / PT / ML {} / {} / {}",
            self.mostly_tracked, self.partially_tracked, self.mostly_lost
        )
    }
}
