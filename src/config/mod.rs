//! Pipeline files: YAML → [`spec`] (what the person wrote) → [`plan::Plan`] (validated, resolved).
//! Every problem is collected and reported at once as `file:line:column: message`.

pub mod plan;
pub mod spec;
mod tolerances;
pub use crate::units;

use std::fmt;
use std::path::{Path, PathBuf};

pub use plan::Plan;
pub use tolerances::Tolerances;

/// One problem in a pipeline file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: PathBuf,
    /// 1-based; 0 when the problem has no place (the file cannot be read).
    pub line: u64,
    pub column: u64,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file.display(), self.message)
        } else {
            write!(
                f,
                "{}:{}:{}: {}",
                self.file.display(),
                self.line,
                self.column,
                self.message
            )
        }
    }
}

/// A pipeline file that cannot run, with every problem found.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

/// Nesting deeper than this is refused (a pipeline file needs about 5 levels).
pub const MAX_DEPTH: usize = 32;
/// Parser events (nodes) allowed in one file, aliases expanded: refuses "billion laughs".
pub const MAX_EVENTS: usize = 100_000;

/// Parse options: no snippets in messages (we print `file:line:col`), tight budgets against hostile
/// input, and `${VAR}` / `${VAR:-default}` from the environment (values redacted from errors).
fn options() -> serde_saphyr::Options {
    let budget = serde_saphyr::budget! {
        max_depth: MAX_DEPTH,
        max_events: MAX_EVENTS,
        max_nodes: MAX_EVENTS,
        max_aliases: 1_000,
        max_documents: 1,
        max_total_scalar_bytes: 1 << 20,
        max_property_expansion_depth: 4,
        max_total_property_interpolation_work: 1 << 16,
    };
    serde_saphyr::options! { with_snippet: false, budget: budget }
        .with_properties(std::env::vars().collect())
}

/// Read, parse and validate a pipeline file.
pub fn load(path: &Path) -> Result<Plan, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        problems: vec![Problem {
            file: path.to_path_buf(),
            line: 0,
            column: 0,
            message: format!("cannot read pipeline file: {e}"),
        }],
    })?;
    parse(path, &text)
}

/// Parse and validate pipeline text as if read from `path` (relative paths resolve against its folder).
#[allow(
    clippy::too_many_lines,
    reason = "the schema-error recovery loop (blank a key, parse again) with its five exits side by side"
)]
pub fn parse(path: &Path, text: &str) -> Result<Plan, ConfigError> {
    if text.trim().is_empty() {
        return Err(ConfigError {
            problems: vec![Problem {
                file: path.to_path_buf(),
                line: 1,
                column: 1,
                message: "the file is empty: a pipeline needs `name`, `sources` and `detector`"
                    .into(),
            }],
        });
    }
    // Parse; on a schema error (unknown key, wrong type), note it, blank out the offending key
    // and parse again, so one run reports every such mistake. Line numbers stay those of the file.
    let mut work = text.to_string();
    let mut problems: Vec<Problem> = Vec::new();
    // Keys removed during recovery (and the keys suggested for them): their absence is ours.
    let mut removed: Vec<String> = Vec::new();
    let spec = loop {
        match serde_saphyr::from_str_with_options::<spec::PipelineSpec>(&work, options()) {
            Ok(spec) => break Some(spec),
            Err(e) => {
                let (line, column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
                let raw = strip_location(&e.to_string());
                // A wrong type is reported where the parser stopped reading; a syntax error
                // further on (an unclosed bracket) is the real mistake and recovery would hide it.
                if is_type_mismatch(&raw)
                    && let Some(p) = syntax_problem(path, text)
                {
                    problems.push(p);
                    break None;
                }
                let (line, column, message) = explain(text, line, column, &raw);
                // A block we emptied by blanking its only keys is our doing, not the user's.
                if emptied_by_us(text, &work, line) {
                    match blank_key(&work, line) {
                        Some(next) => {
                            work = next;
                            continue;
                        }
                        None => break None,
                    }
                }
                if raw.starts_with("missing field")
                    && quoted(&raw).is_some_and(|k| removed.iter().any(|r| r == k))
                {
                    break None;
                }
                removed.extend(key_on_line(&work, line));
                removed.extend(
                    message
                        .rsplit_once("did you mean `")
                        .and_then(|(_, k)| k.strip_suffix("`?"))
                        .map(String::from),
                );
                if let Some(k) = quoted(&message).filter(|_| message.contains("must be a list")) {
                    removed.push(k.to_string());
                }
                let problem = Problem {
                    file: path.to_path_buf(),
                    line,
                    column,
                    message,
                };
                if problems.contains(&problem) || problems.len() >= MAX_RECOVERIES {
                    break None;
                }
                problems.push(problem);
                match recoverable(&raw).then(|| blank_key(&work, line)).flatten() {
                    Some(next) => work = next,
                    None => break None,
                }
            }
        }
    };
    match spec {
        Some(spec) => match plan::resolve(path, spec) {
            Ok(plan) if problems.is_empty() => Ok(plan),
            Ok(_) => Err(ConfigError { problems }),
            Err(more) => {
                problems.extend(more.problems);
                problems.sort_by_key(|p| (p.line, p.column));
                Err(ConfigError { problems })
            }
        },
        None => {
            problems.sort_by_key(|p| (p.line, p.column));
            Err(ConfigError { problems })
        }
    }
}

/// Messages about a value of the wrong shape (not about the YAML's syntax).
fn is_type_mismatch(raw: &str) -> bool {
    raw.starts_with("expected string scalar") || raw.starts_with("invalid type")
}

/// The first syntax error of `text` (read without a schema), if it has one.
fn syntax_problem(path: &Path, text: &str) -> Option<Problem> {
    let e = serde_saphyr::from_str_with_options::<serde::de::IgnoredAny>(text, options()).err()?;
    let (line, column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
    let (line, column, message) = explain(text, line, column, &strip_location(&e.to_string()));
    Some(Problem {
        file: path.to_path_buf(),
        line,
        column,
        message,
    })
}

/// Whether `line` is a `key:` whose nested block existed in the original text but was blanked
/// during recovery.
fn emptied_by_us(original: &str, work: &str, line: u64) -> bool {
    let i = (line as usize).saturating_sub(1);
    let (Some(now), Some(was)) = (work.lines().nth(i), original.lines().nth(i)) else {
        return false;
    };
    let ends_open = |l: &str| l.trim_end().ends_with(':');
    let children = |t: &str| {
        t.lines()
            .skip(i + 1)
            .take_while(|l| !l.trim().is_empty())
            .count()
    };
    ends_open(now) && ends_open(was) && children(work) == 0 && children(original) > 0
}

/// The key written on 1-based `line` (`  - kind: mp4` → `kind`).
fn key_on_line(text: &str, line: u64) -> Option<String> {
    let l = text.lines().nth((line as usize).checked_sub(1)?)?;
    let (k, _) = l.trim_start().trim_start_matches("- ").split_once(':')?;
    Some(k.trim().to_string())
}

/// Schema errors a parse can continue past by dropping the key (syntax errors cannot be).
const MAX_RECOVERIES: usize = 50;

fn recoverable(msg: &str) -> bool {
    [
        "unknown field",
        "unknown variant",
        "invalid",
        "expected a",
        "expected sequence",
        "expected string",
        "duplicate mapping key",
    ]
    .iter()
    .any(|p| msg.starts_with(p))
}

/// `text` with the key on 1-based `line` and its nested block replaced by blank lines (a list
/// item's dash is kept so the list stays well-formed). `None` if there is nothing to blank.
fn blank_key(text: &str, line: u64) -> Option<String> {
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    let i = (line as usize).checked_sub(1)?;
    let target = lines.get(i)?.clone();
    let indent = target.len() - target.trim_start().len();
    let body = target.trim_start();
    if body.is_empty() || !body.contains(':') {
        return None;
    }
    lines[i] = match body.strip_prefix("- ") {
        Some(_) => format!("{}-", &target[..indent]),
        None => String::new(),
    };
    let key_indent = if body.starts_with("- ") {
        indent + 2
    } else {
        indent
    };
    for l in lines.iter_mut().skip(i + 1) {
        let ind = l.len() - l.trim_start().len();
        if l.trim().is_empty() || ind > key_indent {
            l.clear();
        } else {
            break;
        }
    }
    let mut out = lines.join("\n");
    out.push('\n');
    (out != text).then_some(out)
}

/// Append "did you mean `x`?" when one of the message's "expected one of" names is a likely typo fix.
fn with_suggestion(msg: &str, word: &str) -> String {
    let Some(list) = msg.split("expected one of ").nth(1) else {
        return msg.to_string();
    };
    let best = list
        .split(',')
        .map(str::trim)
        .map(|c| (strsim::levenshtein(word, c), c))
        .min_by_key(|(d, _)| *d);
    match best {
        Some((d, c)) if d <= 2.max(word.len() / 3) && d > 0 => {
            format!("{msg}: did you mean `{c}`?")
        }
        _ => msg.to_string(),
    }
}

/// The first backquoted word of `msg` (`unknown field `x`` → `x`).
fn quoted(msg: &str) -> Option<&str> {
    let a = msg.find('`')?;
    let b = msg[a + 1..].find('`')?;
    Some(&msg[a + 1..a + 1 + b])
}

/// Make the parser's message say what a person needs: the key it is about, the right place when
/// the parser only knew the enclosing block, and plain words for YAML jargon.
#[allow(
    clippy::too_many_lines,
    reason = "maps every YAML error kind to its message in one match"
)]
fn explain(text: &str, line: u64, column: u64, msg: &str) -> (u64, u64, String) {
    let lines: Vec<&str> = text.lines().collect();
    let key_at = |l: u64| -> Option<&str> {
        let src = lines
            .get((l as usize).checked_sub(1)?)?
            .trim_start()
            .trim_start_matches("- ");
        let (k, _) = src.split_once(':')?;
        let k = k.trim();
        (!k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')).then_some(k)
    };
    // Internally tagged enums (outputs, tracker) report their own start: find the named item below.
    if (msg.starts_with("unknown field") || msg.starts_with("unknown variant"))
        && let Some(word) = quoted(msg)
    {
        for (i, l) in lines
            .iter()
            .enumerate()
            .skip((line as usize).saturating_sub(1))
        {
            if let Some(c) = l
                .find(&format!("{word}:"))
                .or_else(|| l.find(&format!(": {word}")).map(|c| c + 2))
            {
                let at = (i as u64 + 1, c as u64 + 1);
                if at != (line, column) {
                    return (at.0, at.1, with_suggestion(msg, word));
                }
                break;
            }
        }
    }
    // A wrong value inside a tagged enum is reported at the enum: find the value below.
    if let Some(value) = msg
        .strip_prefix("invalid type: string \"")
        .and_then(|m| m.split('"').next())
    {
        for (i, l) in lines
            .iter()
            .enumerate()
            .skip((line as usize).saturating_sub(1))
        {
            if let Some(c) = l.find(&format!(": {value}")) {
                let (l, c) = (i as u64 + 1, c as u64 + 3);
                let key = key_at(l).map(|k| format!("`{k}`: ")).unwrap_or_default();
                return (l, c, format!("{key}{msg}"));
            }
        }
    }
    // A mapping where a list belongs: the list's key is the parent of the line pointed at.
    if msg == "expected sequence start" {
        let indent_at = lines
            .get((line as usize).wrapping_sub(1))
            .map_or(0, |l| l.len() - l.trim_start().len());
        if column as usize == indent_at + 1 {
            let parent = lines[..(line as usize).saturating_sub(1).min(lines.len())]
                .iter()
                .rev()
                .find(|l| l.trim_end().ends_with(':') && l.len() - l.trim_start().len() < indent_at)
                .map(|l| l.trim().trim_end_matches(':').to_string());
            if let Some(p) = parent {
                return (
                    line,
                    column,
                    format!("`{p}` must be a list (`- item` lines or `[a, b]`), not a mapping"),
                );
            }
        }
    }
    if (msg.starts_with("unknown field") || msg.starts_with("unknown variant"))
        && let Some(word) = quoted(msg)
    {
        return (line, column, with_suggestion(msg, word));
    }
    if let Some(name) = msg
        .strip_prefix("missing property `")
        .and_then(|m| m.strip_suffix('`'))
    {
        return (
            line,
            column,
            format!(
                "environment variable `{name}` is not set (write ${{{name}:-default}} to give a default)"
            ),
        );
    }
    if let Some(rest) = msg.strip_prefix("duplicate mapping key: ") {
        let key = rest.split(',').next().unwrap_or(rest).trim();
        return (line, column, format!("`{key}` is set twice"));
    }
    let msg = match msg {
        "expected sequence start" => "expected a list (`- item` lines or `[a, b]`)".to_string(),
        "expected string scalar" => "expected a single value, not a list or a mapping".to_string(),
        "invalid floating point" => "expected a number".to_string(),
        m if m.starts_with("invalid u") || m.starts_with("invalid i") => {
            "expected a whole number".to_string()
        }
        m => m.to_string(),
    };
    match key_at(line) {
        Some(k)
            if !msg.contains(&format!("`{k}`"))
                && !msg.starts_with("unknown")
                && !msg.starts_with("missing") =>
        {
            (line, column, format!("`{k}`: {msg}"))
        }
        _ => (line, column, msg),
    }
}

/// serde-saphyr's message may repeat the place (`… at line 3 column 5`); we print it in front.
fn strip_location(msg: &str) -> String {
    let first = msg.lines().next().unwrap_or(msg).trim();
    let first = first.strip_prefix("error: ").unwrap_or(first);
    match first.rfind(" at line ") {
        Some(i) => first[..i].to_string(),
        None => first.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The budget itself stops an alias bomb, even where no schema would stop it first
    /// (parsed into an untyped value): ten levels of ten-fold aliases would be 10¹⁰ nodes.
    #[test]
    fn alias_bomb_is_stopped_by_the_budget() {
        let mut bomb = String::from("a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
        for i in 1..10 {
            let prev = format!("*a{}", i - 1);
            bomb.push_str(&format!(
                "a{i}: &a{i} [{}]\n",
                [prev.as_str(); 10].join(", ")
            ));
        }
        let started = std::time::Instant::now();
        let r = serde_saphyr::from_str_with_options::<serde_json::Value>(&bomb, options());
        assert!(r.is_err(), "the bomb was expanded");
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
    }

    /// Nesting beyond the budget is refused.
    #[test]
    fn deep_nesting_is_refused() {
        let deep = format!("{}x{}", "[".repeat(10_000), "]".repeat(10_000));
        let e =
            serde_saphyr::from_str_with_options::<serde_json::Value>(&deep, options()).unwrap_err();
        let m = e.to_string().to_lowercase();
        assert!(m.contains("depth") || m.contains("recursion limit"), "{e}");
    }

    #[test]
    fn typo_suggestions() {
        assert_eq!(strsim::levenshtein("confidance", "confidence"), 1);
        let m = with_suggestion(
            "unknown field `sorces`, expected one of name, sources",
            "sorces",
        );
        assert!(m.ends_with("did you mean `sources`?"), "{m}");
        let m = with_suggestion("unknown field `zzz`, expected one of name, sources", "zzz");
        assert!(!m.contains("did you mean"), "{m}");
    }
}
