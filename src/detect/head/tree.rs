//! The WordTree of YOLO9000 (darknet `tree.c`): one `name parent` line per node, parents before
//! children, siblings on consecutive lines. Each run of siblings is a softmax group; a node's
//! absolute probability is its conditional probability times its parent's.

use std::path::Path;

/// A class hierarchy read from a darknet `.tree` file.
#[derive(Debug, Clone, PartialEq)]
pub struct WordTree {
    /// Parent of each node, `None` for a root.
    pub parent: Vec<Option<usize>>,
    /// The sibling group each node's children form, `None` for a leaf.
    pub child_group: Vec<Option<usize>>,
    /// `(offset, size)` of each softmax group, in node order.
    pub groups: Vec<(usize, usize)>,
}

impl WordTree {
    /// Read a `.tree` file.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read tree {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Parse `.tree` text.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut parent = Vec::new();
        let mut child_group: Vec<Option<usize>> = Vec::new();
        let mut groups: Vec<(usize, usize)> = Vec::new();
        let mut last_parent: Option<Option<usize>> = None;
        for (i, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let n = parent.len();
            let p: i64 = line
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| format!("line {}: expected `name parent`", i + 1))?;
            let p = if p < 0 {
                None
            } else if (p as usize) < n {
                Some(p as usize)
            } else {
                return Err(format!(
                    "line {}: parent {p} does not come before node {n}",
                    i + 1
                ));
            };
            if last_parent != Some(p) {
                groups.push((n, 0));
                last_parent = Some(p);
                if let Some(p) = p {
                    if child_group[p].is_some() {
                        return Err(format!(
                            "line {}: the children of node {p} are not on consecutive lines",
                            i + 1
                        ));
                    }
                    child_group[p] = Some(groups.len() - 1);
                }
            }
            if let Some(g) = groups.last_mut() {
                g.1 += 1;
            }
            parent.push(p);
            child_group.push(None);
        }
        if parent.is_empty() {
            return Err("the tree has no nodes".into());
        }
        Ok(Self {
            parent,
            child_group,
            groups,
        })
    }

    /// Number of nodes (= classes).
    pub fn len(&self) -> usize {
        self.parent.len()
    }

    /// Whether the tree has no nodes (never, once parsed).
    pub fn is_empty(&self) -> bool {
        self.parent.is_empty()
    }

    /// Softmax within each sibling group; the values are `stride` apart from `start`.
    pub fn softmax(&self, x: &mut [f32], start: usize, stride: usize) {
        for &(offset, size) in &self.groups {
            super::softmax_strided(x, start + offset * stride, size, stride);
        }
    }

    /// Conditional → absolute probabilities (darknet `hierarchy_predictions`), in place.
    pub fn absolute(&self, x: &mut [f32], start: usize, stride: usize) {
        for (j, p) in self.parent.iter().enumerate() {
            if let Some(p) = p {
                x[start + j * stride] *= x[start + p * stride];
            }
        }
    }

    /// darknet `hierarchy_top_prediction` on absolute probabilities: walk down from the roots,
    /// always into the most likely child, while the path's probability stays above `thresh`.
    pub fn top(&self, x: &[f32], start: usize, stride: usize, thresh: f32) -> usize {
        let mut p = 1.0f32;
        let mut group = 0;
        loop {
            let Some(&(offset, size)) = self.groups.get(group) else {
                return 0;
            };
            let (mut max, mut max_i) = (0.0f32, offset);
            for i in offset..offset + size {
                let v = x[start + i * stride];
                if v > max {
                    max = v;
                    max_i = i;
                }
            }
            if p * max > thresh {
                p *= max;
                match self.child_group[max_i] {
                    Some(g) => group = g,
                    None => return max_i,
                }
            } else if group == 0 {
                return max_i;
            } else {
                return self.parent[offset].unwrap_or(offset);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Groups are runs of siblings; absolute probabilities multiply down the path.
    #[test]
    fn groups_and_absolute_probabilities() {
        let t = WordTree::parse("a -1\nb -1\nc 0\nd 0\ne 1\n").unwrap();
        assert_eq!(t.groups, [(0, 2), (2, 2), (4, 1)]);
        assert_eq!(t.child_group, [Some(1), Some(2), None, None, None]);
        let mut x = vec![0.0, 0.0, 1.0, 0.0, 5.0];
        t.softmax(&mut x, 0, 1);
        assert!((x[0] - 0.5).abs() < 1e-6 && (x[4] - 1.0).abs() < 1e-6);
        t.absolute(&mut x, 0, 1);
        let e = 1f32.exp() / (1.0 + 1f32.exp());
        assert!((x[2] - 0.5 * e).abs() < 1e-6);
        assert!((x[4] - 0.5).abs() < 1e-6);
        // darknet multiplies the path by the (already absolute) child: 0.5 · 0.37 = 0.18, so
        // with 0.1 the walk reaches leaf c, with 0.4 it stops at a.
        assert_eq!(t.top(&x, 0, 1, 0.1), 2);
        assert_eq!(t.top(&x, 0, 1, 0.4), 0);
    }
}
