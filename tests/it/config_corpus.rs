//! A corpus of broken pipeline files, each a mistake people make: every one is refused with the
//! exact `file:line:column: message` in tests/config_corpus/EXPECTED.txt, and none panics.

use super::common::{root, vigil};

#[test]
fn every_broken_file_gets_its_exact_message() {
    let dir = root().join("tests/config_corpus");
    let expected = std::fs::read_to_string(dir.join("EXPECTED.txt")).unwrap();
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 30, "only {} corpus files", files.len());
    let mut got = String::new();
    for f in &files {
        let rel = format!("tests/config_corpus/{f}");
        let out = vigil()
            .current_dir(root())
            .arg("check")
            .arg(&rel)
            .env_remove("VIGIL_TEST_UNSET_PASSWORD")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{f} was accepted: {stdout}");
        assert!(!stderr.contains("panicked"), "{f}: {stderr}");
        for line in stdout.lines() {
            assert!(
                line.starts_with(&format!("{rel}:")),
                "{f}: problem without its place: {line}"
            );
        }
        got.push_str(&stdout);
    }
    for (g, e) in got.lines().zip(expected.lines()) {
        assert_eq!(g, e);
    }
    assert_eq!(got.lines().count(), expected.lines().count());
}

/// Five independent mistakes in one file are all reported in one run.
#[test]
fn five_mistakes_reported_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("five.yaml");
    let model = root().join("models/yolov3-tiny.yaml");
    std::fs::write(
        &p,
        format!(
            "name: lobby\nsources:\n  - id: cam1\n    uri: rtsp://127.0.0.1/a\n  - id: cam1\n    uri: rtsp://127.0.0.1/b\n\
             detector:\n  model: {}\n  confidence: 2\n  classes: [person, unicorn]\n  device: tpu\n\
             outputs:\n  - kind: jsonl\n    path: out/{{camera}}.jsonl\n",
            model.display()
        ),
    )
    .unwrap();
    let out = vigil().arg("check").arg(&p).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 5, "{stdout}");
    for (want, place) in [
        ("duplicate source id `cam1`", ":5:9:"),
        ("confidence must be between 0 and 1", ":9:15:"),
        ("no class `unicorn`", ":10:21:"),
        ("device `tpu`", ":11:11:"),
        ("unknown placeholder `{camera}`", ":13:5:"),
    ] {
        assert!(
            lines.iter().any(|l| l.contains(want) && l.contains(place)),
            "missing {want} at {place}: {stdout}"
        );
    }
}

/// Hostile YAML is refused quickly and cheaply: a billion-laughs alias bomb and 10 000-deep nesting.
#[test]
fn alias_bomb_and_deep_nesting_are_refused_fast() {
    let dir = tempfile::tempdir().unwrap();
    let mut bomb = String::from("a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for i in 1..10 {
        let prev = format!("*a{}", i - 1);
        bomb.push_str(&format!(
            "a{i}: &a{i} [{}]\n",
            [prev.as_str(); 10].join(", ")
        ));
    }
    bomb.push_str("name: *a9\n");
    let deep = format!("name: {}x{}\n", "[".repeat(10_000), "]".repeat(10_000));
    for (name, text) in [("bomb.yaml", bomb), ("deep.yaml", deep)] {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        let started = std::time::Instant::now();
        let out = std::process::Command::new("/usr/bin/env")
            .args(["bash", "-c", "ulimit -v 1000000; exec \"$0\" check \"$1\""])
            .arg(env!("CARGO_BIN_EXE_vigil"))
            .arg(&p)
            .output()
            .unwrap();
        let took = started.elapsed();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{name}: {stdout} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains(&format!("{name}:")), "{name}: {stdout}");
        assert!(
            took < std::time::Duration::from_secs(1),
            "{name} took {took:?}"
        );
    }
}

/// `${VAR}` comes from the environment; the secret never shows in `check --print-plan` output.
#[test]
fn secrets_come_from_the_environment_and_stay_hidden() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("cam.yaml");
    std::fs::write(
        &p,
        format!(
            "name: lobby\nsources:\n  - id: cam1\n    uri: rtsp://viewer:${{VIGIL_TEST_CAM_PASSWORD}}@127.0.0.1:8554/lobby\n\
             detector:\n  model: {}\n  confidence: ${{VIGIL_TEST_CONF:-0.4}}\n",
            root().join("models/yolov3-tiny.yaml").display()
        ),
    )
    .unwrap();
    let out = vigil()
        .args(["check", "--print-plan"])
        .arg(&p)
        .env("VIGIL_TEST_CAM_PASSWORD", "hunter2-secret")
        .output()
        .unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{all}");
    assert!(!all.contains("hunter2-secret"), "secret leaked: {all}");
    assert!(all.contains("rtsp://***@127.0.0.1:8554/lobby"), "{all}");
    assert!(
        all.contains("confidence: 0.4"),
        "default not applied: {all}"
    );
}

/// Schema mistakes (unknown keys, bad values, wrong types — each stopping serde on its own) and
/// semantic ones are all reported in one run, in file order.
#[test]
fn schema_and_semantic_mistakes_reported_together() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("many.yaml");
    let text = "name: lobby\nsorces: oops\nsources:\n  - id: cam1\n    uri: rtsp://127.0.0.1:8554/lobby\n    pace: fast\n\
                detector:\n  model: MODEL\n  confidance: 0.3\n  confidence: high\n  classes: [person, unicorn]\n\
                tracker:\n  kind: bytetrack\n  match_iou: 0.8\nqueues:\n  capacity: lots\n\
                outputs:\n  - kind: mp4\n    path: out/{camera}.mp4\n    bitrate_kbps: fast\n";
    std::fs::write(
        &p,
        text.replace(
            "MODEL",
            &root().join("models/yolov3-tiny.yaml").display().to_string(),
        ),
    )
    .unwrap();
    let out = vigil().arg("check").arg(&p).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let places: Vec<&str> = stdout
        .lines()
        .map(|l| l.split(": ").next().unwrap_or(""))
        .collect();
    let want: Vec<String> = [
        "2:1", "6:11", "9:3", "10:15", "11:21", "14:3", "16:13", "18:5", "20:19",
    ]
    .iter()
    .map(|lc| format!("{}:{lc}", p.display()))
    .collect();
    assert_eq!(places, want, "{stdout}");
    assert!(
        stdout.contains("did you mean `sources`?") && stdout.contains("no class `unicorn`"),
        "{stdout}"
    );
}
