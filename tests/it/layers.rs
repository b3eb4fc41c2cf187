//! Dependencies point down the layer list of ARCHITECTURE.md ("Layers"), and components never
//! import each other. Every `crate::` and `super::` path of `src/` outside `#[cfg(test)]` counts,
//! inline ones included.
//!
//! The edges that break the rule today are listed in `tests/layers-known.txt` (debt the
//! architecture pass removes): a new violation fails this test, and so does a listed one that is
//! gone (delete its line), so the list only shrinks. `VIGIL_BLESS=1` rewrites the list.

use std::collections::BTreeSet;
use std::path::Path;

use super::common::root;

/// The layer of each top-level module (ARCHITECTURE.md "Layers"); components are layer 2.
fn layer(module: &str) -> Option<u8> {
    Some(match module {
        "frame" | "fault" | "hash" | "image_io" => 1,
        "ingest" | "preprocess" | "detect" | "track" | "output" | "analytics" => 2,
        "config" => 3,
        "runtime" => 4,
        "main" | "service" | "regress" | "bench" => 5,
        _ => return None,
    })
}

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

/// `from -> to` for every reference that points up a layer or across components.
fn violations() -> BTreeSet<String> {
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
        let Some(from_layer) = layer(&from) else {
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
            let Some(to_layer) = layer(&to) else { continue };
            let across = to != from && to_layer == 2 && from_layer == 2;
            if to_layer > from_layer || across {
                out.insert(format!("{} -> {to}", rel.display()));
            }
        }
    }
    out
}

#[test]
fn imports_point_down_the_layers() {
    let known_file = root().join("tests/layers-known.txt");
    let known: BTreeSet<String> = std::fs::read_to_string(&known_file)
        .unwrap()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect();
    let found = violations();
    if std::env::var_os("VIGIL_BLESS").is_some() {
        let mut text = String::from(
            "# Imports against the layer list of ARCHITECTURE.md, as `file -> module`: debt that the\n\
             # architecture pass removes. tests/it/layers.rs fails on a new one and on a fixed one\n\
             # still listed. Regenerate: VIGIL_BLESS=1 cargo test --release --test it layers\n",
        );
        for v in &found {
            text.push_str(&format!("{v}\n"));
        }
        std::fs::write(&known_file, text).unwrap();
        return;
    }
    let new: Vec<&String> = found.difference(&known).collect();
    let gone: Vec<&String> = known.difference(&found).collect();
    assert!(
        new.is_empty(),
        "imports against the layer list (ARCHITECTURE.md): {new:#?}"
    );
    assert!(
        gone.is_empty(),
        "fixed, so delete from {}: {gone:#?}",
        known_file.display()
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
    assert_eq!(layer("runtime"), Some(4));
}
