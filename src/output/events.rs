//! The `events` output: zone and line events (enter, exit, dwell, cross, count) as JSON lines, one
//! [`EventRecord`] per line, written whole; frames without events write nothing.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::jsonl::JsonlWriter;
use super::record::EventRecord;
use super::{Output, OutputContext, OutputError, Resolve};
use crate::frame::Frame;

/// `kind: events`: the zone and line events of each source as JSON lines (schema in
/// ARCHITECTURE.md, "Event records").
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsSpec {
    /// File to write (its folder is created); may use `{pipeline}` and `{source}`.
    pub path: String,
}

/// An events output resolved for one source.
#[derive(Debug, Clone, PartialEq)]
pub struct EventsSettings {
    pub path: PathBuf,
}

/// Writes each frame's events.
pub struct EventsWriter {
    lines: JsonlWriter,
    events: u64,
}

impl Output for EventsWriter {
    type Spec = EventsSpec;
    type Settings = EventsSettings;

    fn resolve(spec: &EventsSpec, cx: &mut Resolve) -> Option<EventsSettings> {
        let path = cx.path(&spec.path, "events path", false)?;
        Some(EventsSettings { path })
    }

    fn describe(settings: &EventsSettings) -> String {
        format!("events {}", settings.path.display())
    }

    fn start(settings: EventsSettings, cx: &OutputContext) -> Result<Self, OutputError> {
        Ok(Self {
            lines: JsonlWriter::create(&settings.path, cx.keep_existing)?,
            events: 0,
        })
    }

    fn write(&mut self, frame: &Frame, cx: &OutputContext) -> Result<(), OutputError> {
        for record in EventRecord::of(frame, &cx.pipeline, &cx.classes, !cx.deterministic) {
            self.lines.write_record(&record)?;
            self.events += 1;
        }
        Ok(())
    }

    /// Returns the events written.
    fn finish(self, _deadline: Option<std::time::Instant>) -> Result<u64, OutputError> {
        self.lines.close()?;
        Ok(self.events)
    }

    fn file(&self) -> Option<&Path> {
        Output::file(&self.lines)
    }
}
