//! Darknet `.cfg` files: `[section]` headers followed by `key=value` lines, `#`/`;` comments.
//! Every section and key remembers its line, so later errors can name it.

use std::collections::BTreeMap;
use std::path::Path;

/// A problem in a cfg file, with the 1-based line it is on.
#[derive(Debug, thiserror::Error)]
#[error("{file}:{line}: {message}")]
pub struct CfgError {
    pub file: String,
    pub line: usize,
    pub message: String,
}

/// One `[section]` of a cfg.
#[derive(Debug, Clone)]
pub struct Section {
    /// The name between brackets, e.g. `convolutional`.
    pub kind: String,
    /// Line of the `[kind]` header.
    pub line: usize,
    /// key → (value, line).
    pub options: BTreeMap<String, (String, usize)>,
}

/// A parsed cfg: the sections in order.
#[derive(Debug, Clone)]
pub struct Cfg {
    pub file: String,
    pub sections: Vec<Section>,
}

impl Cfg {
    /// Read and parse a cfg file.
    pub fn load(path: &Path) -> Result<Cfg, CfgError> {
        let text = std::fs::read_to_string(path).map_err(|e| CfgError {
            file: path.display().to_string(),
            line: 0,
            message: format!("cannot read: {e}"),
        })?;
        Cfg::parse(&path.display().to_string(), &text)
    }

    /// Parse cfg text; `file` names it in errors.
    pub fn parse(file: &str, text: &str) -> Result<Cfg, CfgError> {
        let mut sections: Vec<Section> = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let s = raw.trim();
            if s.is_empty() || s.starts_with('#') || s.starts_with(';') {
                continue;
            }
            let err = |message: String| CfgError {
                file: file.to_string(),
                line,
                message,
            };
            if let Some(rest) = s.strip_prefix('[') {
                let kind = rest
                    .strip_suffix(']')
                    .ok_or_else(|| err(format!("section header `{s}` has no closing `]`")))?;
                sections.push(Section {
                    kind: kind.trim().to_string(),
                    line,
                    options: BTreeMap::new(),
                });
                continue;
            }
            let (k, v) = s
                .split_once('=')
                .ok_or_else(|| err(format!("expected `key=value` or `[section]`, found `{s}`")))?;
            let section = sections
                .last_mut()
                .ok_or_else(|| err(format!("`{s}` comes before any [section]")))?;
            let key = k.trim().to_string();
            if section.options.contains_key(&key) {
                return Err(err(format!("`{key}` is set twice in [{}]", section.kind)));
            }
            section.options.insert(key, (v.trim().to_string(), line));
        }
        if sections.is_empty() {
            return Err(CfgError {
                file: file.to_string(),
                line: 1,
                message: "no sections: is this a darknet cfg?".into(),
            });
        }
        Ok(Cfg {
            file: file.to_string(),
            sections,
        })
    }
}

impl Cfg {
    /// A copy with `[net]` width and height replaced (reduced inputs for parity runs; YOLOv1's
    /// `[connected]` input count follows from the size, so nothing else needs to change).
    pub fn with_input_size(&self, width: usize, height: usize) -> Cfg {
        let mut out = self.clone();
        if let Some(net) = out.sections.first_mut() {
            for (key, value) in [("width", width), ("height", height)] {
                let line = net.options.get(key).map_or(net.line, |(_, l)| *l);
                net.options
                    .insert(key.to_string(), (value.to_string(), line));
            }
        }
        out
    }

    /// The cfg as darknet text (sections in order, keys sorted): what a reference tool reads.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        for sec in &self.sections {
            s.push_str(&format!("[{}]\n", sec.kind));
            for (k, (v, _)) in &sec.options {
                s.push_str(&format!("{k}={v}\n"));
            }
            s.push('\n');
        }
        s
    }

    /// The folder relative paths inside the cfg (`tree=`) are resolved against.
    pub fn dir(&self) -> &Path {
        Path::new(&self.file).parent().unwrap_or(Path::new("."))
    }
}

impl Section {
    fn err(&self, file: &str, key: Option<&str>, message: String) -> CfgError {
        let line = key
            .and_then(|k| self.options.get(k).map(|(_, l)| *l))
            .unwrap_or(self.line);
        CfgError {
            file: file.to_string(),
            line,
            message,
        }
    }

    /// Error for this section (at its header line) in `file`.
    pub fn error(&self, file: &str, message: String) -> CfgError {
        self.err(file, None, message)
    }

    /// Parse `key` as `T`, or `default` when absent.
    pub fn get<T: std::str::FromStr>(
        &self,
        file: &str,
        key: &str,
        default: T,
    ) -> Result<T, CfgError> {
        match self.options.get(key) {
            None => Ok(default),
            Some((v, _)) => v.parse::<T>().map_err(|_| {
                self.err(
                    file,
                    Some(key),
                    format!(
                        "[{}] {key}={v}: not a valid {}",
                        self.kind,
                        std::any::type_name::<T>()
                    ),
                )
            }),
        }
    }

    /// Parse `key` as `T`; it must be present.
    pub fn require<T: std::str::FromStr>(&self, file: &str, key: &str) -> Result<T, CfgError> {
        let Some((v, _)) = self.options.get(key) else {
            return Err(self.err(file, None, format!("[{}] needs `{key}`", self.kind)));
        };
        v.parse::<T>().map_err(|_| {
            self.err(
                file,
                Some(key),
                format!(
                    "[{}] {key}={v}: not a valid {}",
                    self.kind,
                    std::any::type_name::<T>()
                ),
            )
        })
    }

    /// A comma-separated list of numbers (`layers=-1, 8`), `None` when absent.
    pub fn list<T: std::str::FromStr>(
        &self,
        file: &str,
        key: &str,
    ) -> Result<Option<Vec<T>>, CfgError> {
        let Some((v, _)) = self.options.get(key) else {
            return Ok(None);
        };
        v.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse::<T>().map_err(|_| {
                    self.err(
                        file,
                        Some(key),
                        format!("[{}] {key}: `{s}` is not a valid number", self.kind),
                    )
                })
            })
            .collect::<Result<Vec<T>, _>>()
            .map(Some)
    }

    /// Refuse any key not in `known`, naming its line.
    pub fn check_keys(&self, file: &str, known: &[&str]) -> Result<(), CfgError> {
        for (k, (_, line)) in &self.options {
            if !known.contains(&k.as_str()) {
                return Err(CfgError {
                    file: file.to_string(),
                    line: *line,
                    message: format!("[{}] has no key `{k}` that vigil understands", self.kind),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sections_keys_and_lines() {
        let cfg = Cfg::parse(
            "x.cfg",
            "# c\n[net]\nwidth=416\n\n[convolutional]\nfilters = 16 \n",
        )
        .unwrap();
        assert_eq!(cfg.sections.len(), 2);
        assert_eq!(cfg.sections[1].kind, "convolutional");
        assert_eq!(cfg.sections[1].options["filters"], ("16".to_string(), 6));
        assert_eq!(
            cfg.sections[0].get::<usize>("x.cfg", "width", 0).unwrap(),
            416
        );
    }

    #[test]
    fn bad_lines_name_their_line() {
        let e = Cfg::parse("x.cfg", "[net]\nwidth 416\n").unwrap_err();
        assert_eq!(e.line, 2);
        let e = Cfg::parse("x.cfg", "[net]\nwidth=abc\n").unwrap();
        let e = e.sections[0].get::<usize>("x.cfg", "width", 0).unwrap_err();
        assert_eq!(e.line, 2);
    }

    /// The size override changes only `[net]` width/height, and the text form parses back to it.
    #[test]
    fn input_size_override_round_trips() {
        let cfg = Cfg::parse("x.cfg", "[net]\nwidth=416\nheight=416\n[maxpool]\nsize=2\n").unwrap();
        let small = cfg.with_input_size(96, 64);
        let back = Cfg::parse("y.cfg", &small.to_text()).unwrap();
        assert_eq!(back.sections[0].get::<usize>("y", "width", 0).unwrap(), 96);
        assert_eq!(back.sections[0].get::<usize>("y", "height", 0).unwrap(), 64);
        assert_eq!(back.sections[1].options["size"].0, "2");
    }
}
