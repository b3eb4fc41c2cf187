//! Dependencies point down the layer list of ARCHITECTURE.md ("Layers"), and components never
//! import each other. Every `crate::` and `super::` path of `src/` outside `#[cfg(test)]` counts,
//! inline ones included.
//!
//! The layer of each module is read from that list itself, so the document and the check cannot
//! drift apart: a top-level module missing from the list fails the test too.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use super::common::root;

/// The layer list: the fenced block after `## Layers` in ARCHITECTURE.md, one layer a line as
/// `N  module · module · … — what it is` (a line without a number continues the one above).
fn layers_of(architecture: &str) -> BTreeMap<String, u8> {
    let after = architecture
        .split_once("## Layers")
        .expect("ARCHITECTURE.md has a `## Layers` section")
        .1;
    let block = after
        .split("```")
        .nth(1)
        .expect("the layer list is a fenced block");
    let mut out = BTreeMap::new();
    let mut current = None;
    for line in block.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let (number, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let rest = match number.parse::<u8>() {
            Ok(n) => {
                current = Some(n);
                rest
            }
            Err(_) => line,
        };
        let Some(n) = current else { continue };
        let names = rest.split(" — ").next().unwrap_or("");
        for name in names.split('·') {
            let word: String = name
                .trim()
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !word.is_empty() {
                out.insert(word, n);
            }
        }
    }
    out
}

fn layers() -> BTreeMap<String, u8> {
    layers_of(&std::fs::read_to_string(root().join("ARCHITECTURE.md")).unwrap())
}

/// Components, side by side, sit on this layer and never import each other.
const COMPONENT_LAYER: u8 = 2;

/// `src/output/mp4.rs` → `["output", "mp4"]`; `src/config/mod.rs` → `["config"]`.
fn module_path(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .with_extension("")
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|l| l == "mod") {
        parts.pop();
    }
    parts
}

/// The source without its `#[cfg(test)]` items (the attribute and the braced block after it).
fn without_tests(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..i]);
        let after = &rest[i..];
        let Some(open) = after.find('{') else { break };
        let mut depth = 0usize;
        let mut end = after.len();
        for (j, c) in after[open..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = open + j + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// Top-level modules a file refers to through `crate::X` or `super::…` paths.
fn referenced(module: &[String], text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    for (i, _) in text.match_indices("crate::") {
        out.insert(ident(&text[i + "crate::".len()..]));
    }
    for (i, _) in text.match_indices("super::") {
        // `super::` from a file `a/b.rs` (module [a, b]) is `a`; each more `super::` one up
        let mut ups = 1;
        let mut j = i + "super::".len();
        while text[j..].starts_with("super::") {
            ups += 1;
            j += "super::".len();
        }
        let parent = module.len().saturating_sub(ups);
        let top = if parent == 0 {
            ident(&text[j..])
        } else {
            module[0].clone()
        };
        out.insert(top);
    }
    out
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// `from -> to` for every reference that points up a layer or across components, and
/// `module -> (not in the layer list)` for a module the list does not place.
fn violations(layers: &BTreeMap<String, u8>) -> BTreeSet<String> {
    let src = root().join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut out = BTreeSet::new();
    for f in files {
        let rel = f.strip_prefix(&src).unwrap();
        let module = module_path(rel);
        let Some(from) = module.first().cloned() else {
            continue;
        };
        if from == "lib" {
            continue;
        }
        let Some(&from_layer) = layers.get(&from) else {
            out.insert(format!("{from} -> (not in the layer list)"));
            continue;
        };
        let code: String = std::fs::read_to_string(&f)
            .unwrap()
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .map(|l| format!("{l}\n"))
            .collect();
        let text = without_tests(&code);
        for to in referenced(&module, &text) {
            let Some(&to_layer) = layers.get(&to) else {
                continue;
            };
            let across = to != from && to_layer == COMPONENT_LAYER && from_layer == COMPONENT_LAYER;
            if to_layer > from_layer || across {
                out.insert(format!("{} -> {to}", rel.display()));
            }
        }
    }
    out
}

#[test]
fn imports_point_down_the_layers() {
    let found = violations(&layers());
    assert!(
        found.is_empty(),
        "imports against the layer list of ARCHITECTURE.md: {found:#?}"
    );
}

/// The checker itself: an upward import, a cross-component import and an inline path are found;
/// test modules are not counted.
#[test]
fn the_layer_checker_finds_what_it_should() {
    let m = |s: &str| module_path(Path::new(s));
    assert_eq!(m("output/mod.rs"), ["output"]);
    assert_eq!(m("output/mp4.rs"), ["output", "mp4"]);
    let text = "use crate::runtime::edge::EdgeTx;\nfn f() { crate::track::build(); super::x(); }\n\
                #[cfg(test)]\nmod tests { use crate::service::Service; }\n";
    let got = referenced(&m("ingest/mod.rs"), &without_tests(text));
    assert!(got.contains("runtime") && got.contains("track"), "{got:?}");
    assert!(!got.contains("service"), "{got:?}");
    // `super::` of `ingest/supervisor.rs` stays inside ingest
    assert!(referenced(&m("ingest/supervisor.rs"), "super::x").contains("ingest"));
    let list = layers_of(
        "## Layers\n```\n 3  config — spec\n 2  ingest · output (each\n    kind) · track ·\n    detect\n 1  frame · flow\n```\n",
    );
    assert_eq!(list.get("config"), Some(&3));
    assert_eq!(list.get("detect"), Some(&2));
    assert_eq!(list.get("each"), None);
    assert_eq!(list.get("flow"), Some(&1));
    assert_eq!(layers().get("runtime"), Some(&4));
}
