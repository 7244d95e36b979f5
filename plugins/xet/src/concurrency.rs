//! Adaptive concurrency: how many xorb ranges the plugin keeps in flight.
//!
//! xet-core adapts its download concurrency to the link instead of opening a fixed number of
//! connections; so does this plugin. Decisions:
//! - **One controller per plugin**, shared by every call of the host (one per large file), so
//!   the connections, feed buffers and decoded chunks in flight are bounded over the whole run.
//! - **Start small, grow while throughput grows.** The limit starts at [`START`] (or
//!   `parallel_segments` when that is smaller). Throughput is judged per [`PERIOD`]: a period in
//!   which ranges waited for a permit (the limit, not the work, bounded the transfer) earns one
//!   more permit when its throughput beat the previous step's by [`GAIN`]; a step that did not
//!   pay off is taken back, and growth is tried again [`REPROBE`] later (links change).
//! - **Back off on errors and 429s**: the limit halves (never below 1) and growth waits for the
//!   next probe.
//! - **The last ranges start with the ones in flight**, not in a round of their own after
//!   them: when what is left to start is no more than the limit (and no trouble is being
//!   waited out), the ranges waiting are let in at once (at most twice the limit in flight,
//!   never above `parallel_segments`). A whole-xorb range is tens of MB and
//!   cannot be split (the reconstruction gives no chunk boundaries inside it), so a last round
//!   of one range would run on one connection while the link idles; started early, it shares
//!   the link with the others and everything ends together.
//! - **Never above `parallel_segments`**, the config key that bounds connections and memory.
//! - The limit is a semaphore's permits: growing adds one; shrinking forgets free permits and,
//!   for those in use, the next ones given back (a debt), so nothing in flight is interrupted.
//!
//! The controller holds no clock of its own: [`Concurrency::tick`] is called with the time by
//! the fetch loop's progress ticker (and by the unit tests with a made-up one).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The limit a run starts with.
pub const START: usize = 4;

/// How long throughput is measured before the limit moves.
pub const PERIOD: Duration = Duration::from_millis(400);

/// How much better a period must be than the one before the last step for the limit to grow
/// again (a ratio).
pub const GAIN: f64 = 1.05;

/// How long a plateau (or a back-off) holds before growth is tried again.
pub const REPROBE: Duration = Duration::from_secs(5);

/// The plugin's limit on xorb ranges in flight; see the module doc.
#[derive(Debug)]
pub struct Concurrency {
    permits: std::sync::Arc<Semaphore>,
    max: usize,
    /// File bytes (decoded) and wire bytes are both progress; the wire is what the link moves.
    wire: AtomicU64,
    /// Ranges waiting for a permit right now.
    waiting: AtomicUsize,
    /// Ranges planned and not started yet (see [`Concurrency::enqueue`]).
    queued: AtomicUsize,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    limit: usize,
    /// Permits to forget as they come back (a shrink while they were in use).
    debt: usize,
    period_start: Option<Instant>,
    period_wire: u64,
    /// Whether a range waited for a permit during the period.
    contended: bool,
    /// Throughput of the last period before the last step up (bytes/s).
    before_step: Option<f64>,
    /// No growth before this instant.
    hold_until: Option<Instant>,
    /// The last back-off's hold: no tail admission before this instant.
    trouble_until: Option<Instant>,
}

/// A range planned and not started yet; counted until dropped.
#[derive(Debug)]
pub struct Queued<'a> {
    owner: &'a Concurrency,
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.owner.queued.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A permit to have one range in flight.
#[derive(Debug)]
pub struct Permit<'a> {
    permit: Option<OwnedSemaphorePermit>,
    owner: &'a Concurrency,
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        let Some(permit) = self.permit.take() else {
            return;
        };
        let mut state = self.owner.lock();
        if state.debt > 0 {
            state.debt -= 1;
            permit.forget();
        }
    }
}

impl Concurrency {
    /// A controller allowing at most `max` ranges in flight, starting at [`START`].
    pub fn new(max: usize) -> Self {
        let max = max.max(1);
        let limit = START.min(max);
        Self {
            permits: std::sync::Arc::new(Semaphore::new(limit)),
            max,
            wire: AtomicU64::new(0),
            waiting: AtomicUsize::new(0),
            queued: AtomicUsize::new(0),
            state: Mutex::new(State {
                limit,
                debt: 0,
                period_start: None,
                period_wire: 0,
                contended: false,
                before_step: None,
                hold_until: None,
                trouble_until: None,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The most ranges the controller will ever allow (`parallel_segments`).
    pub fn max(&self) -> usize {
        self.max
    }

    /// The ranges allowed in flight now.
    pub fn limit(&self) -> usize {
        self.lock().limit
    }

    /// Waits for a permit to fetch one range.
    pub async fn acquire(&self) -> Result<Permit<'_>, tokio::sync::AcquireError> {
        let waiting = self.waiting.fetch_add(1, Ordering::SeqCst) + 1;
        if self.permits.available_permits() == 0 {
            let mut state = self.lock();
            state.contended = true;
            // The tail is let in as it arrives, not a tick later.
            self.admit_the_tail(&mut state, waiting, Instant::now());
        }
        let permit = self.permits.clone().acquire_owned().await;
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        Ok(Permit {
            permit: Some(permit?),
            owner: self,
        })
    }

    /// Counts one range planned and not started; drop the ticket once it has its permit (or
    /// will never start).
    pub fn enqueue(&self) -> Queued<'_> {
        self.queued.fetch_add(1, Ordering::SeqCst);
        Queued { owner: self }
    }

    /// Counts bytes received from the CAS.
    pub fn on_bytes(&self, n: u64) {
        self.wire.fetch_add(n, Ordering::Relaxed);
    }

    /// An error or a 429 on a range: halves the limit and holds growth until the next probe.
    pub fn on_trouble(&self, now: Instant) {
        let mut state = self.lock();
        let target = (state.limit / 2).max(1);
        let cut = state.limit - target;
        if cut > 0 {
            let forgotten = self.permits.forget_permits(cut);
            state.debt += cut - forgotten;
            state.limit = target;
            log::debug!("xet: backing off to {target} ranges in flight");
        }
        state.before_step = None;
        state.hold_until = Some(now + REPROBE);
        state.trouble_until = Some(now + REPROBE);
    }

    /// Called every progress tick with the time: ends a measuring period when one is due and
    /// moves the limit as the module doc says.
    pub fn tick(&self, now: Instant) {
        let wire = self.wire.load(Ordering::Relaxed);
        let mut state = self.lock();
        let waiting = self.waiting.load(Ordering::SeqCst);
        if waiting > 0 {
            state.contended = true;
            self.admit_the_tail(&mut state, waiting, now);
        }
        let Some(start) = state.period_start else {
            state.period_start = Some(now);
            state.period_wire = wire;
            state.contended = false;
            return;
        };
        let elapsed = now.saturating_duration_since(start);
        if elapsed < PERIOD {
            return;
        }
        let rate = (wire - state.period_wire) as f64 / elapsed.as_secs_f64();
        let contended = state.contended;
        state.period_start = Some(now);
        state.period_wire = wire;
        state.contended = false;
        if !contended || state.limit >= self.max {
            return;
        }
        if state.hold_until.is_some_and(|t| now < t) {
            return;
        }
        state.hold_until = None;
        match state.before_step {
            Some(before) if rate < before * GAIN => {
                // The last step did not pay off: take it back and hold for a while.
                state.before_step = None;
                state.hold_until = Some(now + REPROBE);
                state.limit -= 1;
                if self.permits.forget_permits(1) == 0 {
                    state.debt += 1;
                }
            }
            _ => {
                state.before_step = Some(rate);
                if state.debt > 0 {
                    state.debt -= 1;
                } else {
                    self.permits.add_permits(1);
                }
                state.limit += 1;
                log::debug!(
                    "xet: {} ranges in flight ({:.1} MB/s)",
                    state.limit,
                    rate / 1e6
                );
            }
        }
    }

    /// Lets the ranges waiting in at once when they are the last few (see the module doc).
    /// The extra permits are a debt: they are forgotten as they come back.
    fn admit_the_tail(&self, state: &mut State, waiting: usize, now: Instant) {
        let queued = self.queued.load(Ordering::SeqCst);
        if queued == 0 || queued > state.limit || state.trouble_until.is_some_and(|t| now < t) {
            return;
        }
        // Permits already free are on their way to waiting ranges; the permits in existence
        // (the limit and those owed back) stay within `parallel_segments`.
        let extra = waiting
            .saturating_sub(self.permits.available_permits())
            .min(self.max.saturating_sub(state.limit + state.debt));
        if extra > 0 {
            self.permits.add_permits(extra);
            state.debt += extra;
            log::debug!("xet: the last {extra} range(s) start now");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Drives `c` for `periods` periods from `*now`, moving `rate(limit)` bytes/s while `busy`
    /// ranges wait for a permit.
    fn run(c: &Concurrency, now: &mut Instant, periods: u32, rate: impl Fn(usize) -> f64) {
        for _ in 0..periods {
            c.tick(*now);
            let limit = c.limit();
            c.lock().contended = true;
            c.on_bytes((rate(limit) * PERIOD.as_secs_f64()) as u64);
            *now += PERIOD;
            c.tick(*now);
        }
    }

    #[test]
    fn it_starts_small_and_grows_while_throughput_grows() {
        let c = Concurrency::new(12);
        assert_eq!(c.limit(), START);
        let mut now = Instant::now();
        // Each range moves 40 MB/s (a link capped per connection), the link 1 GB/s.
        run(&c, &mut now, 20, |n| (n as f64 * 40e6).min(1e9));
        assert_eq!(c.limit(), 12, "bounded by parallel_segments");
    }

    #[test]
    fn it_stops_growing_where_throughput_stops_growing() {
        let c = Concurrency::new(32);
        let mut now = Instant::now();
        // 40 MB/s per range, 200 MB/s in total: five ranges fill the link.
        run(&c, &mut now, 20, |n| (n as f64 * 40e6).min(200e6));
        assert_eq!(
            c.limit(),
            5,
            "the step past the link's capacity is taken back"
        );
        // A plateau is probed again later, one step at a time, and the probe taken back.
        for _ in 0..40 {
            run(&c, &mut now, 1, |n| (n as f64 * 40e6).min(200e6));
            assert!((5..=6).contains(&c.limit()), "{}", c.limit());
        }
    }

    #[test]
    fn it_does_not_grow_when_ranges_do_not_wait() {
        let c = Concurrency::new(12);
        let mut now = Instant::now();
        for _ in 0..20 {
            c.tick(now);
            c.on_bytes(40_000_000);
            now += PERIOD;
            c.tick(now);
        }
        assert_eq!(c.limit(), START);
    }

    #[test]
    fn trouble_halves_the_limit_and_holds_growth() {
        let c = Concurrency::new(12);
        let mut now = Instant::now();
        run(&c, &mut now, 20, |n| n as f64 * 40e6);
        assert_eq!(c.limit(), 12);
        c.on_trouble(now);
        assert_eq!(c.limit(), 6);
        assert_eq!(c.permits.available_permits(), 6, "free permits forgotten");
        run(&c, &mut now, 5, |n| n as f64 * 40e6);
        assert_eq!(c.limit(), 6, "no growth during the hold");
        for _ in 0..4 {
            c.on_trouble(now);
        }
        assert_eq!(c.limit(), 1, "never below one");
    }

    #[test]
    fn the_last_ranges_start_with_the_ones_in_flight() {
        use futures_util::FutureExt;
        let c = Concurrency::new(12);
        let tickets: Vec<Queued<'_>> = (0..8).map(|_| c.enqueue()).collect();
        let mut tickets = tickets.into_iter();
        // Four ranges in flight (the limit), four planned behind them.
        let held: Vec<Permit<'_>> = (0..4)
            .map(|_| {
                drop(tickets.next());
                c.acquire().now_or_never().unwrap().unwrap()
            })
            .collect();
        // Asked for together, they are let in as they ask.
        let last = futures_util::future::join_all((0..4).map(|_| c.acquire()))
            .now_or_never()
            .expect("let in with the others");
        drop(tickets);
        // The extra permits are forgotten as they come back: the limit is unchanged.
        drop((last, held));
        assert_eq!(c.limit(), START);
        assert_eq!(c.permits.available_permits(), START);
    }

    #[test]
    fn the_tail_never_takes_the_ranges_in_flight_past_parallel_segments() {
        use futures_util::FutureExt;
        let c = Concurrency::new(6);
        let _tickets: Vec<Queued<'_>> = (0..4).map(|_| c.enqueue()).collect();
        let _held: Vec<Permit<'_>> = (0..4)
            .map(|_| c.acquire().now_or_never().unwrap().unwrap())
            .collect();
        // Four left, a limit of four, room for two more: two start, two wait, whether they
        // ask together or one after the other.
        let mut first = Box::pin(futures_util::future::join_all((0..3).map(|_| c.acquire())));
        assert!((&mut first).now_or_never().is_none());
        let mut last = Box::pin(c.acquire());
        assert!((&mut last).now_or_never().is_none());
        c.tick(Instant::now());
        assert!((&mut last).now_or_never().is_none());
        assert_eq!(c.permits.available_permits(), 0);
    }

    #[test]
    fn ranges_wait_their_turn_while_many_are_left() {
        use futures_util::FutureExt;
        let c = Concurrency::new(12);
        let _held: Vec<Permit<'_>> = (0..4)
            .map(|_| c.acquire().now_or_never().unwrap().unwrap())
            .collect();
        // Five left to start with a limit of four: more than the limit.
        let _tickets: Vec<Queued<'_>> = (0..5).map(|_| c.enqueue()).collect();
        let mut next = Box::pin(c.acquire());
        assert!((&mut next).now_or_never().is_none());
        c.tick(Instant::now());
        assert!((&mut next).now_or_never().is_none(), "many left: it waits");
    }

    #[test]
    fn the_tail_is_not_let_in_while_a_back_off_is_waited_out() {
        use futures_util::FutureExt;
        let c = Concurrency::new(12);
        let now = Instant::now();
        c.on_trouble(now);
        assert_eq!(c.limit(), 2);
        let _held: Vec<Permit<'_>> = (0..2)
            .map(|_| c.acquire().now_or_never().unwrap().unwrap())
            .collect();
        let _ticket = c.enqueue();
        let mut next = Box::pin(c.acquire());
        assert!((&mut next).now_or_never().is_none());
        // (Ticks a millisecond apart: no measuring period ends, so the limit does not grow.)
        c.tick(now + REPROBE - Duration::from_millis(1));
        assert!(
            (&mut next).now_or_never().is_none(),
            "after trouble: it waits"
        );
        c.tick(now + REPROBE);
        assert!(
            (&mut next).now_or_never().is_some(),
            "then the tail is let in"
        );
        assert_eq!(c.limit(), 2);
    }

    #[tokio::test]
    async fn a_shrink_while_permits_are_in_use_takes_them_as_they_come_back() {
        let c = Concurrency::new(4);
        let held: Vec<Permit<'_>> = futures_util::future::join_all((0..4).map(|_| c.acquire()))
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        c.on_trouble(Instant::now());
        assert_eq!(c.limit(), 2);
        drop(held);
        assert_eq!(c.permits.available_permits(), 2);
    }
}
