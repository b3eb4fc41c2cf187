//! Linear assignment (Hungarian / Kuhn–Munkres from the `pathfinding` crate) over float costs.
//!
//! Costs are scaled to integers (1e-9 resolution) so the solver is exact and deterministic; a
//! rectangular matrix is solved as SciPy's `linear_sum_assignment` does: every row of the smaller
//! side gets a column.

use pathfinding::kuhn_munkres::kuhn_munkres_min;
use pathfinding::matrix::Matrix;

/// Cost resolution.
const SCALE: f64 = 1e9;

/// Minimum-cost assignment of `rows × cols` costs (row-major). Returns `(row, col)` pairs, one per
/// row or column of the smaller side, sorted by row.
pub fn min_cost(costs: &[f64], rows: usize, cols: usize) -> Vec<(usize, usize)> {
    if rows == 0 || cols == 0 {
        return Vec::new();
    }
    let to_int = |c: f64| (c * SCALE).round() as i64;
    let mut pairs: Vec<(usize, usize)> = if rows <= cols {
        let m = Matrix::from_fn(rows, cols, |(r, c)| to_int(costs[r * cols + c]));
        let (_, assign) = kuhn_munkres_min(&m);
        assign.into_iter().enumerate().collect()
    } else {
        let m = Matrix::from_fn(cols, rows, |(c, r)| to_int(costs[r * cols + c]));
        let (_, assign) = kuhn_munkres_min(&m);
        assign
            .into_iter()
            .enumerate()
            .map(|(c, r)| (r, c))
            .collect()
    };
    pairs.sort_unstable();
    pairs
}

/// Assignment that first maximizes how many `valid` pairs are made, then minimizes their summed
/// cost (py-motmetrics' rule: invalid entries act as a prohibitive cost). Invalid pairs are dropped.
pub fn max_valid_min_cost(costs: &[Option<f64>], rows: usize, cols: usize) -> Vec<(usize, usize)> {
    let finite_max = costs.iter().flatten().fold(0f64, |m, c| m.max(c.abs())) + 1.0;
    // Larger than any sum of valid costs: one more valid pair always wins.
    let big = finite_max * (rows.min(cols) as f64 + 1.0);
    let dense: Vec<f64> = costs.iter().map(|c| c.unwrap_or(big)).collect();
    min_cost(&dense, rows, cols)
        .into_iter()
        .filter(|&(r, c)| costs[r * cols + c].is_some())
        .collect()
}

/// Maximum-weight one-to-one matching on non-negative integer weights; pairs of weight 0 dropped.
pub fn max_weight(weights: &[u64], rows: usize, cols: usize) -> Vec<(usize, usize)> {
    let neg: Vec<f64> = weights.iter().map(|&w| -(w as f64) / SCALE).collect();
    min_cost(&neg, rows, cols)
        .into_iter()
        .filter(|&(r, c)| weights[r * cols + c] > 0)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rectangular_both_ways() {
        // 2 rows, 3 cols: rows pick their cheapest distinct columns
        let c = [1.0, 0.1, 5.0, 0.2, 0.3, 5.0];
        assert_eq!(min_cost(&c, 2, 3), [(0, 1), (1, 0)]);
        // transposed: 3 rows, 2 cols
        let t = [1.0, 0.2, 0.1, 0.3, 5.0, 5.0];
        assert_eq!(min_cost(&t, 3, 2), [(0, 1), (1, 0)]);
    }

    #[test]
    fn more_valid_pairs_beat_cheaper_ones() {
        // Greedy would take (0,0) at 0.0 and leave row 1 unmatched; two pairs are better.
        let c = [Some(0.0), Some(0.4), Some(0.3), None];
        assert_eq!(max_valid_min_cost(&c, 2, 2), [(0, 1), (1, 0)]);
    }

    #[test]
    fn max_weight_drops_zero_pairs() {
        let w = [5, 0, 0, 0];
        assert_eq!(max_weight(&w, 2, 2), [(0, 0)]);
    }
}
