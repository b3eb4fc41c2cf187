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

#[test]
fn check_config_dir_checks_every_pipeline_file_of_a_folder() {
    let ok = vigil()
        .args(["check", "--config-dir"])
        .arg(root().join("pipelines"))
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );
    let n = String::from_utf8_lossy(&ok.stdout).matches(": ok").count();
    assert!(n >= 5, "{}", String::from_utf8_lossy(&ok.stdout));

    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        root().join("tests/config_corpus/39-per-source-typo.yaml"),
        dir.path().join("bad.yaml"),
    )
    .unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not a pipeline").unwrap();
    let bad = vigil()
        .args(["check", "--config-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&bad.stdout);
    assert_eq!(bad.status.code(), Some(1), "{text}");
    assert!(
        text.contains("bad.yaml:6:7: unknown field `confidense`"),
        "{text}"
    );
    assert!(!text.contains("notes.txt"), "{text}");
}
