//! The stall watchdog's clock: how long a call has gone without progress.
//!
//! Progress is a `BYTES` or `CHECKPOINT` event. A backend `RETRY` event that announces its wait
//! ("retrying in 45000 ms") pauses the clock for that wait and no longer, so a backend honouring
//! a long Retry-After is not cancelled while it waits, yet one that keeps retrying without moving
//! bytes still runs out of time: the time its requests take is not excused, and all excused time
//! since the last progress is capped. A `RETRY` without an announced wait is not activity.

use std::time::Duration;

/// Idle time of one call. Times are offsets from the start of the call.
#[derive(Debug, Clone)]
pub struct StallClock {
    /// The last progress.
    last_progress: Duration,
    /// Excused time after `last_progress` (announced waits, overlaps merged), including the
    /// part still ahead.
    excused: Duration,
    /// Where the latest announced wait ends.
    until: Duration,
    /// Most excused time between two progress events.
    cap: Duration,
}

impl StallClock {
    /// A clock started at offset 0 that excuses at most `cap` between two progress events.
    pub fn new(cap: Duration) -> Self {
        Self {
            last_progress: Duration::ZERO,
            excused: Duration::ZERO,
            until: Duration::ZERO,
            cap,
        }
    }

    /// Progress at `at` (earlier or repeated times change nothing). A wait announced before and
    /// still running stays excused.
    pub fn progress(&mut self, at: Duration) {
        if at <= self.last_progress {
            return;
        }
        self.last_progress = at;
        self.excused = self.excused.min(self.until.saturating_sub(at));
    }

    /// The backend announced at `at` that it waits `delay` before trying again.
    pub fn retry(&mut self, at: Duration, delay: Duration) {
        let end = at + delay;
        let start = at.max(self.last_progress).max(self.until);
        let add = end
            .saturating_sub(start)
            .min(self.cap.saturating_sub(self.excused));
        if add > Duration::ZERO {
            self.excused += add;
            self.until = start + add;
        }
    }

    /// Time without progress at `now`, announced waits not counted.
    pub fn idle(&self, now: Duration) -> Duration {
        let ahead = self.until.saturating_sub(now);
        let excused_so_far = self.excused.saturating_sub(ahead);
        now.saturating_sub(self.last_progress)
            .saturating_sub(excused_so_far)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(secs: f64) -> Duration {
        Duration::from_secs_f64(secs)
    }

    #[test]
    fn without_retries_idle_is_the_time_since_progress() {
        let mut c = StallClock::new(s(300.0));
        assert_eq!(c.idle(s(5.0)), s(5.0));
        c.progress(s(4.0));
        assert_eq!(c.idle(s(5.0)), s(1.0));
        c.progress(s(2.0));
        assert_eq!(
            c.idle(s(5.0)),
            s(1.0),
            "an older progress time changes nothing"
        );
    }

    #[test]
    fn an_announced_wait_longer_than_the_stall_timeout_is_not_a_stall() {
        let stall = s(30.0);
        let mut c = StallClock::new(s(300.0));
        // 503 with Retry-After 45 s, 0.5 s into the call.
        c.retry(s(0.5), s(45.0));
        for t in [1.0, 10.0, 30.0, 45.5, 50.0] {
            assert!(c.idle(s(t)) < stall, "idle {:?} at {t}s", c.idle(s(t)));
        }
        assert_eq!(
            c.idle(s(45.5)),
            s(0.5),
            "only the request before the wait counts"
        );
        // Nothing after the wait: the normal timeout runs from its end.
        assert_eq!(c.idle(s(75.0)), s(30.0));
    }

    #[test]
    fn a_wait_counts_for_at_most_its_announced_delay() {
        let mut c = StallClock::new(s(300.0));
        c.retry(s(10.0), s(0.2));
        assert_eq!(c.idle(s(10.1)), s(10.0), "the wait so far is excused");
        assert_eq!(c.idle(s(20.0)), s(19.8), "and no more than the delay");
    }

    #[test]
    fn overlapping_waits_are_excused_once() {
        let mut c = StallClock::new(s(300.0));
        // Two ranges of one call wait at once.
        c.retry(s(1.0), s(10.0));
        c.retry(s(2.0), s(10.0));
        assert_eq!(c.idle(s(20.0)), s(9.0), "20 s minus the union 1..12 s");
        c.retry(s(3.0), s(1.0));
        assert_eq!(
            c.idle(s(20.0)),
            s(9.0),
            "a wait inside another adds nothing"
        );
    }

    #[test]
    fn a_backend_that_only_retries_is_still_cancelled() {
        // Each request takes 5 s to fail, then "retrying in 200 ms", forever, no bytes.
        let stall = s(30.0);
        let mut c = StallClock::new(s(300.0));
        let mut t = 0.0;
        let mut stalled_at = None;
        while t < 120.0 {
            t += 5.0;
            if c.idle(s(t)) >= stall {
                stalled_at = Some(t);
                break;
            }
            c.retry(s(t), s(0.2));
            t += 0.2;
        }
        let at = stalled_at.expect("cancelled eventually");
        assert!((30.0..40.0).contains(&at), "stalled at {at}s");
    }

    #[test]
    fn excused_time_between_two_progress_events_is_capped() {
        // A backend announcing long waits back to back never moves bytes.
        let cap = s(60.0);
        let mut c = StallClock::new(cap);
        let mut t = 0.0;
        while t < 200.0 {
            c.retry(s(t), s(45.0));
            t += 45.0;
        }
        assert_eq!(c.idle(s(50.0)), Duration::ZERO);
        assert_eq!(c.idle(s(80.0)), s(20.0), "the budget ran out at 60 s");
        assert_eq!(c.idle(s(200.0)), s(140.0), "at most 60 s of 200 s excused");
        // Progress restores the budget.
        c.progress(s(200.0));
        c.retry(s(200.0), s(45.0));
        assert_eq!(c.idle(s(245.0)), Duration::ZERO);
    }

    #[test]
    fn a_wait_running_across_progress_stays_excused_no_sooner_waits_do() {
        let mut c = StallClock::new(s(300.0));
        c.retry(s(1.0), s(2.0)); // 1..3 s
        c.retry(s(5.0), s(10.0)); // 5..15 s: one range waits while another moves bytes
        c.progress(s(6.0));
        assert_eq!(c.idle(s(15.0)), Duration::ZERO, "6..15 s is still the wait");
        assert_eq!(c.idle(s(20.0)), s(5.0));
        // A retry announced before the last progress is measured from that progress.
        let mut c = StallClock::new(s(300.0));
        c.progress(s(10.0));
        c.retry(s(8.0), s(4.0));
        assert_eq!(c.idle(s(20.0)), s(8.0), "10..12 s excused");
    }
}
