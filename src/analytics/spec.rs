//! What a pipeline file says about zones and lines, and how it resolves.

use serde::Deserialize;

use super::{AnalyticsSettings, LineSettings, ZoneSettings};
use crate::units::HumanDuration;

/// How zone and line points are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Coords {
    /// Frame pixels.
    #[default]
    Pixels,
    /// Fractions 0–1 of the frame's width and height (the same file fits every resolution).
    Normalized,
}

/// Which point of a box stands for the object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Anchor {
    /// The middle of the box's bottom edge: where a person or a car touches the ground.
    #[default]
    BottomCenter,
    /// The box's centre.
    Center,
}

/// A zone: a polygon in a source's frame.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZoneSpec {
    /// Name, unique among the source's zones and lines (events and metrics carry it).
    pub name: String,
    /// Three or more corners `[x, y]`.
    pub points: Vec<[f64; 2]>,
    /// `pixels` (default) or `normalized` (0–1 of the frame's width and height).
    #[serde(default)]
    pub coords: Coords,
    /// Only these classes (names from the model's class list). Default: every class.
    #[serde(default)]
    pub classes: Option<Vec<String>>,
    /// Time in the zone before a `dwell` event (e.g. `2m`), once per visit. Default: none.
    #[serde(default)]
    pub min_dwell: Option<HumanDuration>,
    /// Frames in a row on the other side of the edge before a track counts as in or out (box
    /// jitter at the edge). Default 3.
    #[serde(default)]
    pub inertia: Option<u32>,
    /// The point of a box that must be inside: `bottom_center` (default) or `center`.
    #[serde(default)]
    pub anchor: Anchor,
}

/// A counting line: two or more points, crossed in two named directions.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LineSpec {
    /// Name, unique among the source's zones and lines.
    pub name: String,
    /// Two or more points `[x, y]` (a polyline).
    pub points: Vec<[f64; 2]>,
    /// `pixels` (default) or `normalized`.
    #[serde(default)]
    pub coords: Coords,
    /// Only these classes. Default: every class.
    #[serde(default)]
    pub classes: Option<Vec<String>>,
    /// Pixels a box's anchor must be from the line to be on a side: jitter within the band
    /// never counts. Default 5; 0 counts every sign change.
    #[serde(default)]
    pub hysteresis: Option<f64>,
    /// Name of a crossing from the left-hand to the right-hand side of someone walking the line
    /// from its first point to its last, as drawn on screen. Default `left_to_right`.
    #[serde(default)]
    pub left_to_right: Option<String>,
    /// Name of the other direction. Default `right_to_left`.
    #[serde(default)]
    pub right_to_left: Option<String>,
    /// The point of a box that crosses: `bottom_center` (default) or `center`.
    #[serde(default)]
    pub anchor: Anchor,
}

/// How tracks become events, for every source of the pipeline.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnalyticsSpec {
    /// Frames a track must be seen before it counts (box flicker makes short-lived tracks).
    /// Default 3.
    #[serde(default)]
    pub min_hits: Option<u32>,
    /// Frames a track may be missing before it is forgotten (zones then report `exit` with
    /// `lost`). Default 30 (ByteTrack's `max_age`).
    #[serde(default)]
    pub forget_after: Option<u64>,
    /// Interval of `count` events per zone and line (e.g. `1m`); `0s` turns them off. Default 60s.
    #[serde(default)]
    pub count_every: Option<HumanDuration>,
}

const DEFAULT_HYSTERESIS: f64 = 5.0;
const DEFAULT_INERTIA: u32 = 3;
const DEFAULT_MIN_HITS: u32 = 3;
const DEFAULT_FORGET_AFTER: u64 = 30;
const DEFAULT_COUNT_EVERY_S: f64 = 60.0;

/// Class names to ids; unknown names are problems.
fn class_ids(
    names: Option<&Vec<String>>,
    classes: &[String],
    what: &str,
    problems: &mut Vec<String>,
) -> Option<Vec<u32>> {
    let names = names?;
    let mut ids = Vec::new();
    for n in names {
        match classes.iter().position(|c| c == n) {
            Some(i) => ids.push(i as u32),
            None => problems.push(format!("{what}: the model has no class `{n}`")),
        }
    }
    Some(ids)
}

fn check_points(
    points: &[[f64; 2]],
    coords: Coords,
    least: usize,
    what: &str,
    problems: &mut Vec<String>,
) {
    if points.len() < least {
        problems.push(format!(
            "{what} needs at least {least} points, has {}",
            points.len()
        ));
    }
    let bad = points
        .iter()
        .flatten()
        .any(|v| !v.is_finite() || (coords == Coords::Normalized && !(0.0..=1.0).contains(v)));
    if bad {
        let range = if coords == Coords::Normalized {
            "between 0 and 1 (coords: normalized)"
        } else {
            "finite numbers"
        };
        problems.push(format!("{what}: every coordinate must be {range}"));
    }
}

/// The analytics of one source: its zones and lines, with the pipeline's `analytics` settings;
/// class names resolved against the model's `classes`.
pub fn resolve(
    zones: &[ZoneSpec],
    lines: &[LineSpec],
    common: Option<&AnalyticsSpec>,
    classes: &[String],
    problems: &mut Vec<String>,
) -> AnalyticsSettings {
    let mut names: Vec<String> = Vec::new();
    let mut unique = |name: &str, problems: &mut Vec<String>| {
        if name.is_empty() || names.iter().any(|n| n == name) {
            problems.push(format!(
                "zone/line name `{name}` must be non-empty and unique in its source"
            ));
        }
        names.push(name.to_string());
    };
    let mut out = AnalyticsSettings::default();
    for z in zones {
        let what = format!("zone `{}`", z.name);
        unique(&z.name, problems);
        check_points(&z.points, z.coords, 3, &what, problems);
        out.zones.push(ZoneSettings {
            name: z.name.clone(),
            points: z.points.clone(),
            coords: z.coords,
            classes: class_ids(z.classes.as_ref(), classes, &what, problems),
            min_dwell_s: z.min_dwell.map(|d| d.0.as_secs_f64()),
            inertia: z.inertia.unwrap_or(DEFAULT_INERTIA).max(1),
            anchor: z.anchor,
        });
    }
    for l in lines {
        let what = format!("line `{}`", l.name);
        unique(&l.name, problems);
        check_points(&l.points, l.coords, 2, &what, problems);
        let hysteresis = l.hysteresis.unwrap_or(DEFAULT_HYSTERESIS);
        if !(hysteresis.is_finite() && hysteresis >= 0.0) {
            problems.push(format!(
                "{what}: hysteresis must be 0 or more pixels, got {hysteresis}"
            ));
        }
        out.lines.push(LineSettings {
            name: l.name.clone(),
            points: l.points.clone(),
            coords: l.coords,
            classes: class_ids(l.classes.as_ref(), classes, &what, problems),
            hysteresis,
            left_to_right: l
                .left_to_right
                .clone()
                .unwrap_or_else(|| "left_to_right".into()),
            right_to_left: l
                .right_to_left
                .clone()
                .unwrap_or_else(|| "right_to_left".into()),
            anchor: l.anchor,
        });
    }
    let common = common.cloned().unwrap_or_default();
    out.min_hits = common.min_hits.unwrap_or(DEFAULT_MIN_HITS).max(1);
    out.forget_after = common.forget_after.unwrap_or(DEFAULT_FORGET_AFTER);
    out.count_every_s = match common.count_every {
        Some(d) if d.0.is_zero() => None,
        Some(d) => Some(d.0.as_secs_f64()),
        None => Some(DEFAULT_COUNT_EVERY_S),
    };
    out
}
