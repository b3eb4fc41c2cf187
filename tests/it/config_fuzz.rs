//! Property test over the pipeline loader: thousands of mutated pipeline files (bytes inserted,
//! deleted, replaced, lines duplicated or dropped) never panic — each is a plan or a list of
//! problems, every problem with its place.

use proptest::prelude::*;

use super::common::root;

const CASES: u32 = 3000;

#[derive(Debug, Clone)]
enum Edit {
    Insert(usize, char),
    Delete(usize),
    Replace(usize, char),
    DupLine(usize),
    DropLine(usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    let ch = prop::sample::select(vec![
        ':', '-', ' ', '\t', '\n', '[', ']', '{', '}', '&', '*', '!', '#', '"', '\'', '|', '>',
        '%', '@', '$', 'x', '0', '9', '.',
    ]);
    prop_oneof![
        (any::<usize>(), ch.clone()).prop_map(|(i, c)| Edit::Insert(i, c)),
        any::<usize>().prop_map(Edit::Delete),
        (any::<usize>(), ch).prop_map(|(i, c)| Edit::Replace(i, c)),
        any::<usize>().prop_map(Edit::DupLine),
        any::<usize>().prop_map(Edit::DropLine),
    ]
}

fn apply(text: &str, edits: &[Edit]) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for e in edits {
        let n = chars.len().max(1);
        match *e {
            Edit::Insert(i, c) => chars.insert(i % (chars.len() + 1), c),
            Edit::Delete(i) if !chars.is_empty() => {
                chars.remove(i % n);
            }
            Edit::Replace(i, c) if !chars.is_empty() => chars[i % n] = c,
            Edit::DupLine(i) | Edit::DropLine(i) => {
                let s: String = chars.iter().collect();
                let mut lines: Vec<&str> = s.lines().collect();
                if !lines.is_empty() {
                    let k = i % lines.len();
                    if matches!(e, Edit::DupLine(_)) {
                        lines.insert(k, lines[k]);
                    } else {
                        lines.remove(k);
                    }
                }
                chars = lines.join("\n").chars().collect();
            }
            _ => {}
        }
    }
    chars.into_iter().collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: CASES, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn mutated_pipelines_never_panic(edits in prop::collection::vec(edit(), 1..6)) {
        let path = root().join("pipelines/demo.yaml");
        let base = std::fs::read_to_string(&path).unwrap();
        let text = apply(&base, &edits);
        if let Err(e) = vigil::config::parse(&path, &text) {
            prop_assert!(!e.problems.is_empty());
            for p in &e.problems {
                prop_assert!(!p.message.is_empty());
            }
        }
    }
}
