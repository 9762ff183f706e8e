//! Auditing refused consent callbacks (S5) without letting a flood fill the log.
//!
//! `/connect/callback` is unauthenticated: anyone can send it garbage as fast as they like.
//! Every refusal is counted; at most [`MAX_PER_WINDOW`] per [`WINDOW`] become a
//! `consent.callback_refused` event, and the next recorded one carries how many were
//! suppressed since the previous record, so the audit trail says a flood happened and how big
//! it was, while the log grows by at most `MAX_PER_WINDOW` records a minute.

use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// The rate limiter's window.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Refusals recorded per window; the rest are counted.
pub const MAX_PER_WINDOW: u32 = 30;

struct State {
    window_start: Instant,
    recorded: u32,
    /// Refusals not recorded since the last record.
    suppressed: u64,
}

/// Decides which refusals are recorded.
pub struct RefusalLimiter {
    state: Mutex<State>,
    max: u32,
    window: Duration,
}

impl Default for RefusalLimiter {
    fn default() -> Self {
        Self::new(MAX_PER_WINDOW, WINDOW)
    }
}

impl RefusalLimiter {
    pub fn new(max: u32, window: Duration) -> Self {
        Self {
            state: Mutex::new(State {
                window_start: Instant::now(),
                recorded: 0,
                suppressed: 0,
            }),
            max,
            window,
        }
    }

    /// For one refusal: `Some(suppressed)` when it is to be recorded (with the count of those
    /// suppressed since the last record, which starts again from zero), `None` when it is only
    /// counted.
    pub fn admit(&self) -> Option<u64> {
        let mut s = self.state.lock();
        if s.window_start.elapsed() >= self.window {
            s.window_start = Instant::now();
            s.recorded = 0;
        }
        if s.recorded >= self.max {
            s.suppressed = s.suppressed.saturating_add(1);
            return None;
        }
        s.recorded += 1;
        Some(std::mem::take(&mut s.suppressed))
    }

    /// Gives a refusal back whose record could not be written: it counts as suppressed.
    pub fn unrecorded(&self, suppressed: u64) {
        let mut s = self.state.lock();
        s.suppressed = s.suppressed.saturating_add(suppressed).saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_most_max_per_window_then_the_suppressed_count_rides_on_the_next_record() {
        let l = RefusalLimiter::new(3, Duration::from_millis(200));
        assert_eq!(
            (0..10).map(|_| l.admit()).collect::<Vec<_>>(),
            [
                Some(0),
                Some(0),
                Some(0),
                None,
                None,
                None,
                None,
                None,
                None,
                None
            ]
        );
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(
            l.admit(),
            Some(7),
            "the next window's first record says 7 were dropped"
        );
        assert_eq!(l.admit(), Some(0));
    }
}
