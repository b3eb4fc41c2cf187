//! Pipeline files: the shipped ones are valid, and mistakes are reported with file:line:column.

use super::common::{root, vigil};

/// Every pipeline under pipelines/ passes `vigil check`.
#[test]
fn shipped_pipelines_pass_check() {
    let mut files: Vec<_> = std::fs::read_dir(root().join("pipelines"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty());
    let out = vigil().arg("check").args(&files).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// A typo in a key is refused with its place.
#[test]
fn unknown_key_is_an_error_with_its_place() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("typo.yaml");
    let model = root().join("models/yolov3-tiny.yaml");
    std::fs::write(
        &p,
        format!("name: t\nsources:\n  - id: a\n    uri: rtsp://127.0.0.1/x\ndetector:\n  model: {}\n  confidance: 0.3\n", model.display()),
    )
    .unwrap();
    let out = vigil().arg("check").arg(&p).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout.contains("typo.yaml:7:3:") && stdout.contains("confidance"),
        "{stdout}"
    );
}
