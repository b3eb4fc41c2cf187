//! Helpers shared by the integration tests.

use std::path::{Path, PathBuf};
use std::process::Command;

use vigil::ingest::SourceSettings;

/// Held by every test that runs the detector for long or measures timing: on a 2-core machine
/// two of them at once starve each other (and timing assertions measure the neighbour, not vigil).
static HEAVY: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Run one CPU-heavy test at a time (light tests still run alongside).
pub fn heavy() -> std::sync::MutexGuard<'static, ()> {
    HEAVY.lock().unwrap_or_else(|e| e.into_inner())
}

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The fetched assets (`VIGIL_ASSETS_DIR` or `assets/`).
pub fn asset(rel: &str) -> PathBuf {
    let dir =
        std::env::var_os("VIGIL_ASSETS_DIR").map_or_else(|| root().join("assets"), PathBuf::from);
    let p = dir.join(rel);
    assert!(
        p.is_file(),
        "{} missing: run scripts/fetch-assets",
        p.display()
    );
    p
}

pub fn model() -> PathBuf {
    root().join("models/yolov3-tiny.yaml")
}

pub fn vigil() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_vigil"));
    c.env("RUST_LOG", "info");
    c
}

/// A pipeline file in `dir` running `sources` (`(id, path)`) through YOLOv3-tiny to MP4 + JSONL
/// under `dir/out/`.
pub fn pipeline(dir: &Path, sources: &[(&str, &Path)], extra: &str) -> PathBuf {
    let mut y = String::from("name: test\nsources:\n");
    for (id, path) in sources {
        y.push_str(&format!("  - id: {id}\n    uri: file:{}\n", path.display()));
    }
    y.push_str(&format!(
        "detector:\n  model: {}\n  confidence: 0.25\n{extra}outputs:\n  - kind: mp4\n    path: out/{{source}}.mp4\n  - kind: jsonl\n    path: out/{{source}}.jsonl\n",
        model().display()
    ));
    let p = dir.join("pipeline.yaml");
    std::fs::write(&p, y).unwrap();
    p
}

/// Decode a video file with vigil's own ingest; returns (frames, width, height).
pub fn decode_count(path: &Path) -> (u64, u32, u32) {
    vigil::ingest::init().unwrap();
    let uri = gstreamer::glib::filename_to_uri(std::path::absolute(path).unwrap(), None).unwrap();
    let mut src = SourceSettings::file("check", uri.as_str());
    src.stall = None;
    let (mut n, mut size) = (0, (0, 0));
    let report = vigil::ingest::decode_each(&src, |f| {
        n += 1;
        size = (f.image.width, f.image.height);
    });
    assert!(
        report.error.is_none(),
        "{} does not decode: {:?}",
        path.display(),
        report.error
    );
    (n, size.0, size.1)
}

/// Parse every line of a JSONL file as a metadata record; panics on a partial line.
pub fn records(path: &Path) -> Vec<vigil::output::record::Record> {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "{} ends with a partial line",
        path.display()
    );
    text.lines()
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("{}:{}: {e}: {l}", path.display(), i + 1))
        })
        .collect()
}

/// Run `cmd` to its end, or kill it and fail the test after `limit`: a hang fails, never blocks CI.
/// Returns its output and how long it ran.
pub fn output_within(
    cmd: &mut Command,
    limit: std::time::Duration,
) -> (std::process::Output, std::time::Duration) {
    use std::process::Stdio;
    let started = std::time::Instant::now();
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => (out.unwrap(), started.elapsed()),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            let out = rx.recv().unwrap().unwrap();
            panic!(
                "still running after {limit:?}: killed. stderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// A short H.264 MP4 of `frames` frames of `width × height` from GStreamer's test source (a moving
/// ball, so the detector has something to look at), or raw I420 in Matroska where x264 cannot
/// take the size (under 16 pixels on an axis).
pub fn generated_video(dir: &Path, width: u32, height: u32, frames: u32) -> PathBuf {
    let raw = width < 16 || height < 16;
    let path = dir.join(format!(
        "gen-{width}x{height}.{}",
        if raw { "mkv" } else { "mp4" }
    ));
    // x264 takes odd sizes only without chroma subsampling: it negotiates 4:4:4 by itself
    let (format, tail) = if raw {
        ("format=I420,", "! matroskamux")
    } else {
        ("", "! x264enc speed-preset=ultrafast ! mp4mux")
    };
    let line = format!(
        "gst-launch-1.0 -q videotestsrc pattern=ball num-buffers={frames} ! video/x-raw,{format}width={width},height={height},framerate=10/1 {tail} ! filesink location={}",
        path.display()
    );
    let (out, _) = output_within(
        Command::new("sh").arg("-c").arg(&line),
        std::time::Duration::from_secs(120),
    );
    assert!(
        out.status.success(),
        "{line}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    path
}

/// Wait for `child` to exit, at most `limit`; kill it and fail the test otherwise.
pub fn wait_exit(
    child: &mut std::process::Child,
    limit: std::time::Duration,
) -> std::process::ExitStatus {
    let until = std::time::Instant::now() + limit;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if std::time::Instant::now() > until {
            let _ = child.kill();
            panic!("vigil still running after {limit:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// A torchvision export the reference scripts made (too large for git) with its committed golden
/// `tests/golden/onnx/{kind}/{name}.json`: the golden, the model loaded at its input size, and
/// the scripts' input pattern (element i is ((i · 2654435761) mod 2^32) / 2^32) in `shape`
/// with the size filled in. `Ok(None)` when the ONNX file was not generated here; an error when
/// it is not the file the golden was made from.
pub fn torchvision_fixture(
    kind: &str,
    name: &str,
    shape: impl Fn(usize) -> Vec<usize>,
) -> Result<
    Option<(
        serde_json::Value,
        vigil::detect::onnx::OnnxModel,
        candle_core::Tensor,
    )>,
    String,
> {
    use sha2::Digest;
    let golden = root().join(format!("tests/golden/onnx/{kind}/{name}.json"));
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(golden).unwrap()).unwrap();
    let path = root().join(meta["onnx"].as_str().unwrap());
    let Ok(bytes) = std::fs::read(&path) else {
        return Ok(None);
    };
    if vigil::hash::hex(&sha2::Sha256::digest(&bytes)) != meta["sha256"].as_str().unwrap() {
        return Err(format!(
            "{name}: {} is not the file the golden was made from (regenerate both with scripts/reference/export-{kind}.py)",
            path.display()
        ));
    }
    drop(bytes);
    let size = meta["input_size"].as_u64().unwrap() as usize;
    let device = candle_core::Device::Cpu;
    let model =
        vigil::detect::onnx::OnnxModel::load(&path, 1, Some((size as u32, size as u32)), &device)
            .map_err(|e| format!("{name}: load: {e}"))?;
    let dims = shape(size);
    let v: Vec<f32> = (0..dims.iter().product::<usize>() as u64)
        .map(|i| (((i * 2_654_435_761) % (1 << 32)) as f64 / (1u64 << 32) as f64) as f32)
        .collect();
    let input = candle_core::Tensor::from_vec(v, dims, &device).unwrap();
    Ok(Some((meta, model, input)))
}

/// `vigil detect --json` with `args`: the first record it prints.
pub fn detect_first_record(args: &[&std::ffi::OsStr]) -> vigil::output::record::Record {
    let out = vigil()
        .arg("detect")
        .arg("--json")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    serde_json::from_str(text.lines().next().expect("a record")).unwrap()
}

/// Run `check` on each fixture `name`, printing its line or that it was skipped (its file not
/// generated here); fails with every error together.
pub fn check_fixtures(
    what: &str,
    names: &[&str],
    check: impl Fn(&str) -> Result<Option<String>, String>,
) {
    let _heavy = heavy();
    let (mut ran, mut failures) = (0, Vec::new());
    for name in names {
        match check(name) {
            Ok(Some(line)) => {
                eprintln!("{line}");
                ran += 1;
            }
            Ok(None) => {
                eprintln!("{name}: skipped, its ONNX file is missing (run `make onnx-fixtures`)")
            }
            Err(e) => failures.push(e),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    eprintln!("{ran} of {} {what} ran", names.len());
}

/// A TCP and UDP port on 127.0.0.1 that nothing has bound, below the kernel's ephemeral range
/// (32768–60999). Ports from `bind(:0)` come from that range, and so do the local ends of every
/// outgoing connection the other tests make: a port taken that way could be reused by a client
/// before the server under test bound it (a CI failure: "Failed to attach main context to RTSP
/// server"). Each call takes the next port of a per-process counter, so no two tests share one.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let _ = NEXT.compare_exchange(
        0,
        20_000 + (std::process::id() % 500) as u16 * 20,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    loop {
        let port = NEXT.fetch_add(1, Ordering::SeqCst);
        assert!(port < 32_000, "no free port left below the ephemeral range");
        let tcp = std::net::TcpListener::bind(("127.0.0.1", port));
        let udp = std::net::UdpSocket::bind(("127.0.0.1", port));
        if tcp.is_ok() && udp.is_ok() {
            return port;
        }
    }
}
