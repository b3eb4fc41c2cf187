//! docs/pipeline.md is generated from the `///` docs of the pipeline-file structs (src/config/spec.rs,
//! and the types the components own: each tracker's and output kind's `…Spec`, `Pace`, `Resize`), and this test
//! fails when the two drift apart.
//! Regenerate with `VIGIL_BLESS=1 cargo test --release --test it config_docs`.

use super::common::root;

/// `Option<Spanned<f32>>` → `Option<f32>`: the span wrapper is ours, not the user's concern.
fn ty(t: &str) -> String {
    let n = t.matches("Spanned<").count();
    let mut s = t.replace("Spanned<", "");
    for _ in 0..n {
        if s.ends_with('>') {
            s.pop();
        }
    }
    s
}

/// `AsFastAsPossible` → `as_fast_as_possible` (serde's `rename_all = "snake_case"`).
fn snake(name: &str) -> String {
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

/// The schema's files, and which of their items belong to it (`None`: all).
const SCHEMA: &[(&str, Option<&[&str]>)] = &[
    ("src/config/spec.rs", None),
    ("src/ingest/mod.rs", Some(&["Pace"])),
    ("src/frame.rs", Some(&["Resize"])),
    ("src/track/iou.rs", Some(&["IouSpec"])),
    ("src/track/sort.rs", Some(&["SortSpec"])),
    ("src/track/bytetrack.rs", Some(&["ByteTrackSpec"])),
    ("src/track/ocsort.rs", Some(&["OcSortSpec"])),
    ("src/output/mp4.rs", Some(&["Mp4Spec", "X264Preset"])),
    ("src/output/jsonl.rs", Some(&["JsonlSpec"])),
    ("src/output/mqtt.rs", Some(&["MqttSpec", "Publish"])),
    ("src/output/rtsp.rs", Some(&["RtspSpec"])),
    ("src/output/events.rs", Some(&["EventsSpec"])),
    ("src/output/clips.rs", Some(&["ClipsSpec"])),
    (
        "src/analytics/spec.rs",
        Some(&["ZoneSpec", "LineSpec", "AnalyticsSpec", "Coords", "Anchor"]),
    ),
];

fn reference() -> String {
    let mut out = String::from(
        "# Pipeline file reference\n\nGenerated from `src/config/spec.rs` and the settings the components own (the structs are the schema; unknown keys are errors).\n\
         Checked by `tests/it/config_docs.rs`: regenerate with `VIGIL_BLESS=1 cargo test --release --test it config_docs`.\n",
    );
    for (file, only) in SCHEMA {
        let src = std::fs::read_to_string(root().join(file)).unwrap();
        let part = render(&src, *only);
        assert!(!part.is_empty(), "{file}: none of {only:?} found");
        out.push_str(&part);
    }
    out
}

/// Render the structs and enums of `src` (those named in `only`, if given): its doc, then each
/// field or variant with its doc.
fn render(src: &str, only: Option<&[&str]>) -> String {
    let mut out = String::new();
    let mut skipping = false;
    let mut doc: Vec<String> = Vec::new();
    let mut in_item = false;
    let mut depth = 0i32;
    for raw in src.lines() {
        let line = raw.trim();
        if let Some(d) = line.strip_prefix("///") {
            doc.push(d.trim().to_string());
            continue;
        }
        if line.starts_with("#[") {
            continue;
        }
        let opens = line.matches('{').count() as i32;
        let closes = line.matches('}').count() as i32;
        if !in_item {
            if let Some(rest) = line
                .strip_prefix("pub struct ")
                .or_else(|| line.strip_prefix("pub enum "))
            {
                let name = rest.split([' ', '{', '(']).next().unwrap_or(rest);
                skipping = only.is_some_and(|o| !o.contains(&name));
                if !skipping {
                    out.push_str(&format!("\n## `{name}`\n\n{}\n\n", doc.join(" ")));
                }
                in_item = opens > closes;
                depth = opens - closes;
            }
            doc.clear();
            continue;
        }
        let entry = if depth == 1 {
            if let Some(f) = line.strip_prefix("pub ") {
                f.split_once(':').map(|(n, t)| {
                    format!("- `{}` ({}):", n.trim(), ty(t.trim().trim_end_matches(',')))
                })
            } else if line.chars().next().is_some_and(|c| c.is_ascii_uppercase()) {
                Some(format!(
                    "- `{}`:",
                    snake(line.trim_end_matches([',', '{', ' ']))
                ))
            } else {
                None
            }
        } else if depth == 2 {
            line.split_once(':').map(|(n, t)| {
                format!(
                    "  - `{}` ({}):",
                    n.trim(),
                    ty(t.trim().trim_end_matches(','))
                )
            })
        } else {
            None
        };
        if let Some(e) = entry.filter(|_| !skipping) {
            out.push_str(&format!("{e} {}\n", doc.join(" ")));
        }
        doc.clear();
        depth += opens - closes;
        if depth <= 0 {
            in_item = false;
        }
    }
    out
}

#[test]
fn pipeline_reference_matches_the_structs() {
    let want = reference();
    let path = root().join("docs/pipeline.md");
    if std::env::var_os("VIGIL_BLESS").is_some() {
        std::fs::create_dir_all(root().join("docs")).unwrap();
        std::fs::write(&path, &want).unwrap();
    }
    let got = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        got == want,
        "docs/pipeline.md is out of date: run VIGIL_BLESS=1 cargo test --release --test it config_docs"
    );
    // Every field has its documentation.
    for line in want.lines().filter(|l| l.trim_start().starts_with("- `")) {
        assert!(!line.trim_end().ends_with(':'), "undocumented: {line}");
    }
}
