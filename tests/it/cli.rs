//! The command line around the pipeline: shell completions, the man page, `--quiet`, and the
//! progress bar of `vigil run` (drawn on a terminal only, never into a pipe or a log).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::common::{asset, generated_video, heavy, model, output_within, records, vigil};

/// Every subcommand, as the completions and the man page must name them.
const SUBCOMMANDS: [&str; 10] = [
    "run",
    "serve",
    "check",
    "detect",
    "synth-weights",
    "regress",
    "bench",
    "track-eval",
    "completions",
    "man",
];

fn stdout_of(cmd: &mut Command) -> String {
    let (out, _) = output_within(cmd, Duration::from_secs(30));
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A pipeline on `video` (its first `max_frames` if given) with one JSONL output.
fn jsonl_pipeline(dir: &Path, video: &Path, max_frames: Option<u64>) -> PathBuf {
    let max = max_frames.map_or_else(String::new, |n| format!("    max_frames: {n}\n"));
    let y = format!(
        "name: cli\nsources:\n  - id: clip\n    uri: file:{}\n{max}detector:\n  model: {}\n\
         outputs:\n  - {{ kind: jsonl, path: \"out/{{source}}.jsonl\" }}\n",
        video.display(),
        model().display()
    );
    let p = dir.join("cli.yaml");
    std::fs::write(&p, y).unwrap();
    p
}

#[test]
fn completions_name_every_subcommand() {
    let bash = stdout_of(vigil().args(["completions", "bash"]));
    for sub in SUBCOMMANDS {
        assert!(bash.contains(sub), "bash completions lack `{sub}`");
    }
    assert!(bash.contains("--quiet"), "bash completions lack --quiet");
    for shell in ["zsh", "fish", "elvish", "powershell"] {
        let script = stdout_of(vigil().args(["completions", shell]));
        assert!(script.contains("serve"), "{shell}: {script}");
    }
    let (out, _) = output_within(
        vigil().args(["completions", "tcsh"]),
        Duration::from_secs(30),
    );
    assert_eq!(out.status.code(), Some(2), "an unknown shell is bad usage");
}

/// A roff man page: its first request is the title (`.TH`), after the roff crate's preamble that
/// defines the apostrophe string (`.ie \n(.g .ds Aq \(aq` / `.el .ds Aq '`).
fn assert_man_page(page: &str, what: &str) {
    let first = page
        .lines()
        .find(|l| !l.starts_with(".ie ") && !l.starts_with(".el "))
        .unwrap_or_default();
    assert!(first.starts_with(".TH "), "{what}: {page}");
}

#[test]
fn man_page_is_roff_naming_the_subcommands() {
    let page = stdout_of(vigil().arg("man"));
    assert_man_page(&page, "vigil man");
    // roff escapes hyphens: `vigil\-synth\-weights(1)`
    let page = page.replace("\\-", "-");
    for sub in SUBCOMMANDS {
        assert!(page.contains(sub), "man page lacks `{sub}`");
    }
    assert!(page.contains("quiet"), "man page lacks --quiet");

    let dir = tempfile::tempdir().unwrap();
    stdout_of(vigil().arg("man").arg("--dir").arg(dir.path()));
    for name in ["vigil", "vigil-run", "vigil-serve", "vigil-man"] {
        let p = dir.path().join(format!("{name}.1"));
        let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        assert_man_page(&text, &p.display().to_string());
    }
}

#[test]
fn quiet_run_prints_nothing_on_stderr() {
    let _heavy = heavy();
    let dir = tempfile::tempdir().unwrap();
    let p = jsonl_pipeline(dir.path(), &asset("vtest.avi"), Some(5));
    for args in [["-q", "run"], ["run", "--quiet"]] {
        let (out, _) = output_within(vigil().args(args).arg(&p), Duration::from_secs(120));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{args:?}: {stderr}");
        assert!(stderr.is_empty(), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?}");
        assert_eq!(records(&dir.path().join("out/clip.jsonl")).len(), 5);
        std::fs::remove_dir_all(dir.path().join("out")).unwrap();
    }
    // errors still show
    let (out, _) = output_within(
        vigil().args(["-q", "run", "no-such-pipeline.yaml"]),
        Duration::from_secs(30),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(!out.stderr.is_empty(), "a failure says why under --quiet");
}

#[test]
fn run_into_a_pipe_draws_no_progress_bar() {
    let _heavy = heavy();
    let dir = tempfile::tempdir().unwrap();
    let p = jsonl_pipeline(dir.path(), &asset("vtest.avi"), Some(5));
    let (out, _) = output_within(vigil().arg("run").arg(&p), Duration::from_secs(120));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("cli: 5 frames in"), "{stderr}");
    assert!(
        !stderr.contains('\r') && !stderr.contains('\x1b'),
        "carriage returns or escapes in a pipe: {stderr:?}"
    );
}

/// On a terminal (a pseudo-terminal from util-linux `script`) the bar shows frames out of the
/// file's duration × frame rate; `--quiet` hides it.
#[test]
fn run_on_a_terminal_draws_a_progress_bar() {
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("skipped: no `script` (util-linux) to give vigil a terminal");
        return;
    }
    let _heavy = heavy();
    let dir = tempfile::tempdir().unwrap();
    // 20 frames at 10 fps: 2 s that the bar must count as 20 frames (no max_frames to go by)
    let video = generated_video(dir.path(), 64, 48, 20);
    let p = jsonl_pipeline(dir.path(), &video, None);
    let on_terminal = |quiet: &str| {
        let line = format!(
            "'{}' {quiet} run '{}'",
            env!("CARGO_BIN_EXE_vigil"),
            p.display()
        );
        let (out, _) = output_within(
            Command::new("script")
                .args(["-qec", &line, "/dev/null"])
                .env("TERM", "xterm")
                .env("RUST_LOG", "info"),
            Duration::from_secs(120),
        );
        let screen = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(out.status.success(), "{line}: {screen}");
        screen
    };
    let screen = on_terminal("");
    assert!(screen.contains("/20 frames"), "{screen}");
    assert!(screen.contains("ETA"), "{screen}");
    assert!(screen.contains("cli: 20 frames in"), "{screen}");
    let screen = on_terminal("--quiet");
    assert!(screen.trim().is_empty(), "{screen:?}");
}
