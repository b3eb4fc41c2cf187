//! Plane geometry in frame pixels for zones (polygons) and lines (polylines).

/// A point in frame pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pt {
    pub x: f64,
    pub y: f64,
}

/// `(b − a) × (p − a)`: positive when `p` is on the right-hand side of someone walking from `a`
/// to `b` as drawn on screen (image y points down).
fn cross(a: Pt, b: Pt, p: Pt) -> f64 {
    (b.x - a.x) * (p.y - a.y) - (b.y - a.y) * (p.x - a.x)
}

/// Whether `p` is inside `polygon` (even-odd rule; a point on an edge may go either way).
pub fn inside(polygon: &[Pt], p: Pt) -> bool {
    let mut odd = false;
    let mut j = polygon.len().wrapping_sub(1);
    for (i, a) in polygon.iter().enumerate() {
        let b = polygon[j];
        if (a.y > p.y) != (b.y > p.y) && p.x < (b.x - a.x) * (p.y - a.y) / (b.y - a.y) + a.x {
            odd = !odd;
        }
        j = i;
    }
    odd
}

/// Signed distance from `p` to the polyline, through its nearest segment: positive on the side
/// `cross` calls positive. Zero-length segments are skipped.
pub fn signed_distance(line: &[Pt], p: Pt) -> f64 {
    let mut best = f64::INFINITY;
    let mut signed = 0.0;
    for w in line.windows(2) {
        let (a, b) = (w[0], w[1]);
        let (dx, dy) = (b.x - a.x, b.y - a.y);
        let len2 = dx * dx + dy * dy;
        if len2 == 0.0 {
            continue;
        }
        let t = (((p.x - a.x) * dx + (p.y - a.y) * dy) / len2).clamp(0.0, 1.0);
        let (qx, qy) = (a.x + t * dx, a.y + t * dy);
        let d = ((p.x - qx).powi(2) + (p.y - qy).powi(2)).sqrt();
        if d < best {
            best = d;
            signed = if cross(a, b, p) >= 0.0 { d } else { -d };
        }
    }
    signed
}

/// Whether the segment `p → q` crosses the polyline (touching counts), and on which segment's
/// side it ends: `Some(true)` when it ends on the positive side of the segment it crosses.
pub fn crossing(line: &[Pt], p: Pt, q: Pt) -> Option<bool> {
    for w in line.windows(2) {
        let (a, b) = (w[0], w[1]);
        let (d1, d2) = (cross(a, b, p), cross(a, b, q));
        let (d3, d4) = (cross(p, q, a), cross(p, q, b));
        if (d1 * d2) <= 0.0 && (d3 * d4) <= 0.0 && !(d1 == 0.0 && d2 == 0.0) && d1 != d2 {
            return Some(d2 > d1);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pt(x: f64, y: f64) -> Pt {
        Pt { x, y }
    }

    #[test]
    fn square_contains_its_centre_not_outside() {
        let sq = [pt(0.0, 0.0), pt(10.0, 0.0), pt(10.0, 10.0), pt(0.0, 10.0)];
        assert!(inside(&sq, pt(5.0, 5.0)));
        assert!(!inside(&sq, pt(15.0, 5.0)));
        assert!(!inside(&sq, pt(5.0, -1.0)));
    }

    #[test]
    fn crossing_a_vertical_line_has_a_direction() {
        // walking down the screen at x = 5, the right-hand (positive) side is x < 5
        let line = [pt(5.0, 0.0), pt(5.0, 10.0)];
        assert!(signed_distance(&line, pt(3.0, 5.0)) > 0.0);
        assert!((signed_distance(&line, pt(8.0, 5.0)) + 3.0).abs() < 1e-9);
        assert_eq!(crossing(&line, pt(3.0, 5.0), pt(8.0, 5.0)), Some(false));
        assert_eq!(crossing(&line, pt(8.0, 5.0), pt(3.0, 5.0)), Some(true));
        // passing beyond the line's end is not a crossing
        assert_eq!(crossing(&line, pt(3.0, 12.0), pt(8.0, 12.0)), None);
    }
}
