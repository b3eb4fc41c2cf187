//! The load governor: keeps live sources within their latency budget when the detector cannot
//! keep up with all of them, by detecting fewer frames of the least important ones.
//!
//! Every [`TICK`] it reads each governed source's oldest frame age at the detector since the
//! last look (`sources[].detector.latency_budget`) and decides one step at most:
//! - **degrade** when a running source's frames waited longer than 80% of its budget (the
//!   rest is headroom for the stages after the detector and for the governor's reaction): the
//!   lowest-`priority` source that can still give (ties: the one detected most often) detects
//!   every 2nd frame instead of every frame, then every 4th, … up to [`MAX_EVERY`]; the tracker
//!   predicts its tracks on the frames between;
//! - **restore** when every running source stayed under half its budget for the restore delay:
//!   the highest-priority degraded source halves its interval, back to its configured `every`.
//!
//! After a change it waits [`COOLDOWN`] to see the effect. A degrade that follows a restore
//! within [`RELAPSE`] doubles the restore delay (up to [`MAX_RESTORE_AFTER`]): at the edge of
//! capacity it settles instead of flapping; the delay starts over when sources stop or start
//! (the load changed). A source that no longer runs (ended, failed, paused) gets its configured
//! interval back at once: it costs the detector nothing. Each decision is logged and counted
//! (`vigil_governor_degradations_total`, `vigil_governor_restorations_total`,
//! `vigil_source_detect_every`, `vigil_source_detector_age_frames`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::ingest::supervisor::SourceState;
use crate::runtime::metrics::{PipelineMetrics, SourceMetrics};

/// The most a source is thinned: every 16th frame detected.
pub const MAX_EVERY: u32 = 16;
pub const TICK: Duration = Duration::from_millis(250);
pub const COOLDOWN: Duration = Duration::from_secs(1);
pub const RESTORE_AFTER: Duration = Duration::from_millis(1500);
pub const MAX_RESTORE_AFTER: Duration = Duration::from_secs(30);
pub const RELAPSE: Duration = Duration::from_secs(5);

/// One governed source as the policy sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct View {
    /// Oldest frame age at the detector since the last look.
    pub age: Duration,
    pub budget: Duration,
    pub priority: i32,
    pub every: u32,
    /// The configured `every` (never restored past it).
    pub base: u32,
    /// Still running (ended and failed sources are left alone).
    pub running: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Hold,
    /// Double this source's interval.
    Degrade(usize),
    /// Halve this source's interval.
    Restore(usize),
}

/// The policy, pure: `healthy_for` is how long every running source has stayed under half
/// its budget, `restore_after` the current restore delay.
pub fn decide(views: &[View], healthy_for: Duration, restore_after: Duration) -> Decision {
    let running = || views.iter().enumerate().filter(|(_, v)| v.running);
    if running().any(|(_, v)| v.age > v.budget * 4 / 5) {
        return running()
            .filter(|(_, v)| v.every < MAX_EVERY)
            .min_by_key(|(i, v)| (v.priority, v.every, *i))
            .map_or(Decision::Hold, |(i, _)| Decision::Degrade(i));
    }
    if healthy_for < restore_after {
        return Decision::Hold;
    }
    running()
        .filter(|(_, v)| v.every > v.base)
        .max_by_key(|(i, v)| (v.priority, std::cmp::Reverse(*i)))
        .map_or(Decision::Hold, |(i, _)| Decision::Restore(i))
}

/// The governed sources of a pipeline: `(metrics, budget, priority, configured every)`.
pub type GovernedSources = Vec<(Arc<SourceMetrics>, Duration, i32, u32)>;

/// What the governor carries from one tick to the next.
struct Memory {
    healthy_since: Instant,
    last_change: Instant,
    last_restore: Option<Instant>,
    restore_after: Duration,
    /// Which sources ran at the last look.
    running: Vec<bool>,
}

/// Run the governor of `pipeline` until `done`.
pub fn run(pipeline: &str, sources: &GovernedSources, done: &AtomicBool) {
    let now = Instant::now();
    let mut mem = Memory {
        healthy_since: now,
        last_change: now,
        last_restore: None,
        restore_after: RESTORE_AFTER,
        running: Vec::new(),
    };
    while !done.load(Ordering::Relaxed) {
        std::thread::sleep(TICK);
        let views = look(sources);
        let running: Vec<bool> = views.iter().map(|v| v.running).collect();
        if running != mem.running {
            mem.restore_after = RESTORE_AFTER;
            mem.running = running;
        }
        give_back_idle(pipeline, sources, &views);
        let healthy = views
            .iter()
            .filter(|v| v.running)
            .all(|v| v.age <= v.budget / 2);
        if !healthy {
            mem.healthy_since = Instant::now();
        }
        if mem.last_change.elapsed() < COOLDOWN {
            continue;
        }
        let decision = decide(&views, mem.healthy_since.elapsed(), mem.restore_after);
        act(pipeline, sources, &views, decision, &mut mem);
    }
}

/// Each source's view, taking (and clearing) the ages the detector recorded since last time.
fn look(sources: &GovernedSources) -> Vec<View> {
    sources
        .iter()
        .map(|(m, budget, priority, base)| {
            let g = &m.governed;
            View {
                age: Duration::from_micros(g.age_us.swap(0, Ordering::Relaxed)),
                budget: *budget,
                priority: *priority,
                every: g.every.load(Ordering::Relaxed),
                base: *base,
                running: !m.paused.load(Ordering::Relaxed)
                    && matches!(
                        m.state.get(),
                        SourceState::Running | SourceState::Connecting
                    ),
            }
        })
        .collect()
}

/// Sources that no longer run get their configured interval back at once.
fn give_back_idle(pipeline: &str, sources: &GovernedSources, views: &[View]) {
    for ((m, ..), v) in sources.iter().zip(views) {
        if !v.running && v.every > v.base {
            m.governed.every.store(v.base, Ordering::Relaxed);
            m.governed.restorations.fetch_add(1, Ordering::Relaxed);
            tracing::info!(pipeline, source = %m.id, every = v.base, "governor: the source no longer runs: its detection interval is back to the configured one");
        }
    }
}

fn act(
    pipeline: &str,
    sources: &GovernedSources,
    views: &[View],
    decision: Decision,
    mem: &mut Memory,
) {
    let (i, every) = match decision {
        Decision::Hold => return,
        Decision::Degrade(i) => (i, (views[i].every * 2).min(MAX_EVERY)),
        Decision::Restore(i) => (i, (views[i].every / 2).max(views[i].base)),
    };
    let (m, budget, ..) = &sources[i];
    m.governed.every.store(every, Ordering::Relaxed);
    mem.last_change = Instant::now();
    let age_ms = views.iter().map(|v| v.age.as_millis()).max().unwrap_or(0);
    if let Decision::Degrade(_) = decision {
        m.governed.degradations.fetch_add(1, Ordering::Relaxed);
        if mem.last_restore.is_some_and(|t| t.elapsed() < RELAPSE) {
            mem.restore_after = (mem.restore_after * 2).min(MAX_RESTORE_AFTER);
        }
        tracing::warn!(pipeline, source = %m.id, every, oldest_age_ms = age_ms as u64, budget_ms = budget.as_millis() as u64,
            "governor: the detector cannot keep up: detecting every {every} frames of this source");
    } else {
        m.governed.restorations.fetch_add(1, Ordering::Relaxed);
        mem.last_restore = Some(Instant::now());
        mem.healthy_since = Instant::now();
        tracing::info!(pipeline, source = %m.id, every, "governor: load fell: detecting every {every} frames of this source");
    }
    if mem.last_restore.is_some_and(|t| t.elapsed() > RELAPSE * 2) {
        mem.restore_after = RESTORE_AFTER;
    }
}

/// The sources of `metrics` that have a budget in `plan`.
pub fn governed(plan: &crate::config::Plan, metrics: &PipelineMetrics) -> GovernedSources {
    plan.source_detect
        .iter()
        .zip(&metrics.sources)
        .filter_map(|(d, m)| {
            d.latency_budget
                .map(|b| (m.clone(), b, d.priority, d.every))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(age_ms: u64, priority: i32, every: u32) -> View {
        View {
            age: Duration::from_millis(age_ms),
            budget: Duration::from_millis(500),
            priority,
            every,
            base: 1,
            running: true,
        }
    }

    #[test]
    fn degrades_the_least_important_first_and_restores_the_most_important_first() {
        let long = Duration::from_secs(10);
        let views = [v(900, 5, 1), v(100, 0, 1), v(100, 0, 2)];
        assert_eq!(
            decide(&views, Duration::ZERO, RESTORE_AFTER),
            Decision::Degrade(1)
        );
        let all_max = [v(900, 0, MAX_EVERY), v(900, 1, MAX_EVERY)];
        assert_eq!(
            decide(&all_max, Duration::ZERO, RESTORE_AFTER),
            Decision::Hold
        );
        let calm = [v(100, 0, 4), v(100, 3, 2), v(100, 1, 1)];
        assert_eq!(decide(&calm, long, RESTORE_AFTER), Decision::Restore(1));
        assert_eq!(
            decide(&calm, Duration::from_millis(500), RESTORE_AFTER),
            Decision::Hold
        );
        let over_half = [v(300, 0, 4)];
        assert_eq!(
            decide(&over_half, Duration::ZERO, RESTORE_AFTER),
            Decision::Hold
        );
    }

    #[test]
    fn ended_sources_do_not_count_as_load() {
        let mut ended = v(5000, 0, 8);
        ended.running = false;
        let views = [ended, v(100, 1, 2)];
        assert_eq!(
            decide(&views, Duration::from_secs(5), RESTORE_AFTER),
            Decision::Restore(1)
        );
        assert_eq!(
            decide(&views, Duration::ZERO, RESTORE_AFTER),
            Decision::Hold
        );
    }
}
