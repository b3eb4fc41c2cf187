//! Paths a pipeline file names: relative to the file, with `{pipeline}`/`{source}` placeholders,
//! and checked for being creatable before anything runs (`vigil check` finds the problem, not the
//! first frame).

use std::path::{Path, PathBuf};

/// The placeholders output paths, topics and mounts may use.
pub const PLACEHOLDERS: &[&str] = &["pipeline", "source"];

/// Resolve `p` relative to the pipeline file's folder.
pub fn relative_to(base: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

/// Substitute `{pipeline}`/`{source}`; `Err` names an unknown placeholder.
pub fn expand(template: &str, pipeline: &str, source: &str) -> Result<String, String> {
    expand_keeping(template, pipeline, source, &[])
}

/// [`expand`], leaving the placeholders named in `keep` for later (an MQTT topic's `{kind}`,
/// filled per record).
pub fn expand_keeping(
    template: &str,
    pipeline: &str,
    source: &str,
    keep: &[&str],
) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(i) = rest.find('{') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let j = after
            .find('}')
            .ok_or_else(|| format!("`{template}` has a `{{` without `}}`"))?;
        match &after[..j] {
            "pipeline" => out.push_str(pipeline),
            "source" => out.push_str(source),
            kept if keep.contains(&kept) => out.push_str(&format!("{{{kept}}}")),
            other => {
                return Err(format!(
                    "unknown placeholder `{{{other}}}` in `{template}`; known: {}",
                    PLACEHOLDERS
                        .iter()
                        .chain(keep)
                        .map(|p| format!("{{{p}}}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        }
        rest = &after[j + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Why a file at `path` could not be created (a parent is a file, or the path is a folder), if so.
pub fn uncreatable(path: &Path) -> Option<String> {
    if path.is_dir() {
        return Some("it is a folder".into());
    }
    uncreatable_parent(path)
}

/// Why the folder `path` (an MQTT outbox, which vigil creates and keeps across runs) cannot be
/// used, if so: an existing folder is fine when it is writable, a file in its place is not.
pub fn unusable_folder(path: &Path) -> Option<String> {
    match std::fs::metadata(path) {
        Ok(m) if !m.is_dir() => Some("it is a file, not a folder".into()),
        Ok(_) => not_writable(path),
        Err(_) => uncreatable_parent(path),
    }
}

/// Whether this process can create files in the existing folder `dir` (permissions alone do not
/// tell: ACLs, read-only mounts, another owner): a probe file is created and removed.
pub fn not_writable(dir: &Path) -> Option<String> {
    let probe = dir.join(format!(".vigil-check-{}", std::process::id()));
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
    {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            None
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => None,
        Err(e) => Some(format!("the folder is not writable: {e}")),
    }
}

/// Why a placeholder value (`{pipeline}` is the name, `{source}` the id) could escape the folder
/// its output path names, if so: it may not hold a `/` nor be `.` or `..`.
pub fn escapes_folder(value: &str) -> Option<&'static str> {
    if value.contains('/') {
        Some("must not contain `/`")
    } else if value == "." || value == ".." {
        Some("must not be `.` or `..`")
    } else if value.contains('\0') {
        Some("must not contain a NUL character")
    } else {
        None
    }
}

/// The folders above `path` that exist: the nearest must be a folder.
pub fn uncreatable_parent(path: &Path) -> Option<String> {
    let mut dir = path.parent();
    while let Some(d) = dir {
        if d.as_os_str().is_empty() {
            break;
        }
        if d.exists() {
            return (!d.is_dir()).then(|| format!("{} is a file, not a folder", d.display()));
        }
        dir = d.parent();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_expand_and_unknown_ones_are_named() {
        assert_eq!(
            expand("out/{pipeline}-{source}.mp4", "p", "cam").unwrap(),
            "out/p-cam.mp4"
        );
        let e = expand("out/{camera}.mp4", "p", "cam").unwrap_err();
        assert!(e.contains("{camera}"), "{e}");
    }
}
