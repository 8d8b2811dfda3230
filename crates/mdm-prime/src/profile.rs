//! Wall-clock time by phase (embedding, attention, MLP, head, filter, loss, backward, optimiser,
//! EMA), for `mdm-prime bench --profile`. Off unless [`enable`] was called on this thread; a span
//! then costs one `Instant::now()` at each end. The flex backend runs operations eagerly, so a
//! span measures the work of the operations inside it.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::time::Instant;

thread_local! {
    static PHASES: RefCell<Option<BTreeMap<&'static str, f64>>> = const { RefCell::new(None) };
}

/// Starts recording on this thread (clearing what was recorded).
pub fn enable() {
    PHASES.with(|p| *p.borrow_mut() = Some(BTreeMap::new()));
}

/// Seconds per phase recorded since [`enable`], and stops recording.
pub fn take() -> BTreeMap<&'static str, f64> {
    PHASES.with(|p| p.borrow_mut().take().unwrap_or_default())
}

/// Adds the time until it is dropped to `phase` (when recording).
pub struct Span {
    phase: &'static str,
    start: Instant,
}

/// A span for `phase`, or `None` when not recording.
pub fn span(phase: &'static str) -> Option<Span> {
    PHASES.with(|p| p.borrow().is_some()).then(|| Span {
        phase,
        start: Instant::now(),
    })
}

impl Drop for Span {
    fn drop(&mut self) {
        let dt = self.start.elapsed().as_secs_f64();
        PHASES.with(|p| {
            if let Some(map) = p.borrow_mut().as_mut() {
                *map.entry(self.phase).or_insert(0.0) += dt;
            }
        });
    }
}
