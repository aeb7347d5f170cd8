//! The one retry policy: capped exponential backoff with full jitter, a bounded number of
//! attempts and an overall deadline, honouring `Retry-After`.
//!
//! Only transient failures are retried (connection errors, timeouts, HTTP 429 and 5xx); anything
//! else (other 4xx, TLS verification, bad input) fails at once, because repeating it cannot help.
//!
//! Errors and throttling have two schedules. An error (5xx, a reset) waits `base * 2^n` with
//! full jitter and uses up one of `max_attempts`. A throttled answer (429, `ThrottlingException`)
//! means the peer works but serves a fixed rate to everyone: it uses up no attempt, and its wait
//! is decorrelated jitter ([`throttled_delay`]): uniform between `2 * base` and three times the
//! previous throttled wait, up to `4 * cap`, 20 s and what is left of the deadline. The
//! ceiling grows with consecutive throttles (a large fleet spreads out over the time its rate
//! needs), every wait is drawn afresh (no synchronised waves), and no wait is shorter than
//! `2 * base` (a throttled node does not come straight back). A node that is never throttled
//! never waits.
//! `Retry-After` is a floor for both: OpenBao's rate-limit quota sends `Retry-After: 0`, which
//! must not make a fleet retry at once; IAM Roles Anywhere sends none.
//!
//! The schedules are pure functions ([`delay`], [`throttled_delay`]) and the clock is injectable
//! ([`Clock`]), so tests run without sleeping.

use std::cell::Cell;
use std::time::{Duration, Instant};

use crate::error::Classify;

/// How often and how long to retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in total, the first included (>= 1).
    pub max_attempts: u32,
    /// Ceiling of the first delay; doubles each attempt.
    pub base: Duration,
    /// Largest ceiling any delay can have.
    pub cap: Duration,
    /// No attempt starts after this much time since the first one.
    pub deadline: Duration,
}

impl Default for RetryPolicy {
    /// 8 attempts, 0.5 s doubling to 15 s, within 2 minutes: long enough to ride out a Vault
    /// restart or an AWS throttle, short enough for a boot step.
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 8,
            base: Duration::from_millis(500),
            cap: Duration::from_secs(15),
            deadline: Duration::from_secs(120),
        }
    }
}

impl RetryPolicy {
    /// No retries at all.
    pub fn once() -> Self {
        RetryPolicy {
            max_attempts: 1,
            ..Default::default()
        }
    }

    /// The same policy with another overall deadline.
    pub fn with_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }
}

/// An error the retry policy can act on. Whether retrying may help is its class
/// ([`Classify::is_transient`]): one answer decides both the retry and the exit code.
pub trait Retryable: Classify {
    /// The delay the peer asked for (`Retry-After`), if any.
    fn retry_after(&self) -> Option<Duration> {
        None
    }
    /// Whether the peer is throttling (HTTP 429, `ThrottlingException`): it works, and asks us
    /// to come back. Such answers do not use up `max_attempts` (only the deadline bounds
    /// them), so a fleet held back by a rate limit gets through instead of giving up.
    fn is_throttled(&self) -> bool {
        false
    }
}

/// The delay ceiling before retry number `retry` (0 = before the second attempt):
/// `min(cap, base * 2^retry)`.
pub fn ceiling(policy: &RetryPolicy, retry: u32) -> Duration {
    let factor = 1u32.checked_shl(retry.min(31)).unwrap_or(u32::MAX);
    policy.base.saturating_mul(factor).min(policy.cap)
}

/// The delay before retry number `retry` with full jitter: `ceiling * unit`, where `unit` is a
/// uniform random number in `[0, 1)`. A `Retry-After` from the peer is a floor, clamped to the
/// policy's deadline (a peer may send any number; waiting longer than the deadline is never
/// useful).
pub fn delay(
    policy: &RetryPolicy,
    retry: u32,
    unit: f64,
    retry_after: Option<Duration>,
) -> Duration {
    let unit = unit.clamp(0.0, 1.0);
    let jittered = ceiling(policy, retry).mul_f64(unit);
    match retry_after {
        Some(floor) => jittered.max(floor.min(policy.deadline)),
        None => jittered,
    }
}

/// How much each throttled wait may grow over the previous one (decorrelated jitter).
pub const THROTTLE_GROWTH: u32 = 3;

/// The longest throttled wait: a throttled node asks again at least this often, so that once
/// the fleet ahead of it is through it is not left sleeping long past the last grant (a fleet
/// of 1,000 at 10/s: 20 s keeps it near its 100 s floor, 60 s took 1.5x).
pub const THROTTLE_CAP: Duration = Duration::from_secs(20);

/// The range of the wait after a throttled answer: `previous` is the wait before the last
/// retry if that was throttled too (`None` for the first throttle of a run, which counts as
/// the low end: a fleet throttled together must not come back together). The low end is
/// `2 * base`; the high end `THROTTLE_GROWTH * previous`, at least the low end, at most
/// `4 * cap`, [`THROTTLE_CAP`] and `left` (the time left of the deadline). When `left` is
/// below the low end, the range is empty (`lo > hi`): there is no room for another throttled
/// attempt.
pub fn throttled_range(
    policy: &RetryPolicy,
    previous: Option<Duration>,
    left: Duration,
) -> (Duration, Duration) {
    let lo = policy.base.saturating_mul(2);
    let grown = previous.unwrap_or(lo).saturating_mul(THROTTLE_GROWTH);
    let hi = grown
        .max(lo)
        .min(policy.cap.saturating_mul(4))
        .min(THROTTLE_CAP)
        .min(left);
    (lo, hi)
}

/// The wait after a throttled answer (decorrelated jitter): `lo + (hi - lo) * unit` over
/// [`throttled_range`], with `Retry-After` as a floor (clamped to the deadline as in [`delay`]).
/// Longer than `left` when no throttled attempt fits any more.
pub fn throttled_delay(
    policy: &RetryPolicy,
    previous: Option<Duration>,
    unit: f64,
    retry_after: Option<Duration>,
    left: Duration,
) -> Duration {
    let (lo, hi) = throttled_range(policy, previous, left);
    let jittered = lo + hi.saturating_sub(lo).mul_f64(unit.clamp(0.0, 1.0));
    match retry_after {
        Some(floor) => jittered.max(floor.min(policy.deadline)),
        None => jittered,
    }
}

/// Time and sleeping, injectable for tests.
pub trait Clock {
    /// Now.
    fn now(&self) -> Instant;
    /// Sleeps for `d`.
    fn sleep(&self, d: Duration);
    /// A uniform random number in `[0, 1)` for jitter.
    fn unit(&self) -> f64;
}

/// The real clock, `std::thread::sleep` and OS randomness.
#[derive(Debug, Clone, Copy, Default)]
pub struct RealClock;

impl Clock for RealClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
    fn sleep(&self, d: Duration) {
        std::thread::sleep(d)
    }
    fn unit(&self) -> f64 {
        use rand_core::RngCore;
        (rand_core::OsRng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A clock that advances only when slept on, recording the sleeps (for tests).
#[derive(Debug)]
pub struct FakeClock {
    now: Cell<Instant>,
    unit: f64,
    /// Every sleep, in order.
    pub sleeps: std::cell::RefCell<Vec<Duration>>,
}

impl FakeClock {
    /// A fake clock whose jitter draws are always `unit`.
    pub fn new(unit: f64) -> Self {
        FakeClock {
            now: Cell::new(Instant::now()),
            unit,
            sleeps: Default::default(),
        }
    }
}

impl Clock for FakeClock {
    fn now(&self) -> Instant {
        self.now.get()
    }
    fn sleep(&self, d: Duration) {
        self.sleeps.borrow_mut().push(d);
        self.now.set(crate::time::instant_after(self.now.get(), d));
    }
    fn unit(&self) -> f64 {
        self.unit
    }
}

/// Runs `op` until it succeeds, fails permanently, runs out of attempts, or the next attempt
/// would start after the deadline. `op` gets the attempt number (0-based). The last error is
/// returned.
pub fn run<T, E: Retryable + std::fmt::Display>(
    policy: &RetryPolicy,
    clock: &dyn Clock,
    op: impl FnMut(u32) -> Result<T, E>,
) -> Result<T, E> {
    run_if(policy, clock, |e: &E| e.is_transient(), op)
}

/// Like [`run`], with the caller deciding which errors to retry (for non-idempotent requests
/// that may only be repeated when they certainly never arrived).
pub fn run_if<T, E: Retryable + std::fmt::Display>(
    policy: &RetryPolicy,
    clock: &dyn Clock,
    should_retry: impl Fn(&E) -> bool,
    mut op: impl FnMut(u32) -> Result<T, E>,
) -> Result<T, E> {
    let start = clock.now();
    // `attempt` numbers every try; `counted` leaves out the throttled answers, which only the
    // deadline bounds; `throttled` is the last wait if it followed a throttled answer.
    let mut attempt = 0;
    let mut counted = 0;
    let mut throttled: Option<Duration> = None;
    loop {
        let err = match op(attempt) {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        if !err.is_throttled() {
            counted += 1;
        }
        if !should_retry(&err) || counted >= policy.max_attempts.max(1) {
            return Err(err);
        }
        let elapsed = clock.now().saturating_duration_since(start);
        let left = policy.deadline.saturating_sub(elapsed);
        let wait = if err.is_throttled() {
            let w = throttled_delay(policy, throttled, clock.unit(), err.retry_after(), left);
            throttled = Some(w);
            w
        } else {
            throttled = None;
            delay(policy, counted - 1, clock.unit(), err.retry_after())
        };
        // A peer that asks for more time than is left will not be ready in time.
        if wait > left || err.retry_after().is_some_and(|after| after > left) {
            return Err(err);
        }
        // The cause and the backoff, so that a slow first boot says what it is waiting for.
        log::info!(
            "attempt {} failed: {err}; retrying in {}",
            attempt + 1,
            if wait < Duration::from_secs(1) {
                format!("{} ms", wait.as_millis())
            } else {
                crate::time::format_duration(wait)
            }
        );
        clock.sleep(wait);
        attempt += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Class;

    #[derive(Debug)]
    struct E {
        transient: bool,
        after: Option<Duration>,
    }
    impl std::fmt::Display for E {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "test error (transient: {})", self.transient)
        }
    }
    impl Classify for E {
        fn class(&self) -> Class {
            if self.transient {
                Class::Transient
            } else {
                Class::Operator
            }
        }
    }
    impl Retryable for E {
        fn retry_after(&self) -> Option<Duration> {
            self.after
        }
    }

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 10,
            base: Duration::from_millis(100),
            cap: Duration::from_secs(2),
            deadline: Duration::from_secs(60),
        }
    }

    #[test]
    fn schedule_doubles_up_to_the_cap_and_is_jittered() {
        let p = policy();
        let ceilings: Vec<u128> = (0..8).map(|r| ceiling(&p, r).as_millis()).collect();
        assert_eq!(ceilings, [100, 200, 400, 800, 1600, 2000, 2000, 2000]);
        assert_eq!(ceiling(&p, 1000), p.cap);
        for r in 0..40 {
            for unit in [0.0, 0.25, 0.999_999] {
                let d = delay(&p, r, unit, None);
                assert!(d <= ceiling(&p, r) && d <= p.cap);
            }
        }
        assert_eq!(delay(&p, 3, 0.5, None), Duration::from_millis(400));
        assert_eq!(delay(&p, 3, 0.0, None), Duration::ZERO);
        // Real draws spread over the range rather than sticking to one value.
        let draws: Vec<Duration> = (0..64)
            .map(|_| delay(&p, 5, RealClock.unit(), None))
            .collect();
        assert!(draws.iter().all(|d| *d < p.cap));
        let distinct: std::collections::BTreeSet<_> = draws.iter().collect();
        assert!(distinct.len() > 32);
    }

    #[test]
    fn retry_after_is_a_floor() {
        let p = policy();
        assert_eq!(
            delay(&p, 0, 0.5, Some(Duration::from_secs(7))),
            Duration::from_secs(7)
        );
    }

    #[test]
    fn transient_errors_are_retried_until_success() {
        let clock = FakeClock::new(0.5);
        let mut calls = 0;
        let r = run(&policy(), &clock, |attempt| {
            calls += 1;
            assert_eq!(attempt, calls - 1);
            if calls < 4 {
                Err(E {
                    transient: true,
                    after: None,
                })
            } else {
                Ok(calls)
            }
        });
        assert_eq!(r.unwrap(), 4);
        let sleeps: Vec<u128> = clock
            .sleeps
            .borrow()
            .iter()
            .map(|d| d.as_millis())
            .collect();
        assert_eq!(sleeps, [50, 100, 200]);
    }

    /// Throttled answers (a working peer's rate limit) do not use up attempts: with 3 attempts
    /// allowed, 10 throttled answers then success still succeed; the deadline still ends them.
    #[test]
    fn throttled_answers_are_bounded_by_the_deadline_only() {
        #[derive(Debug)]
        struct Throttled;
        impl std::fmt::Display for Throttled {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("throttled")
            }
        }
        impl Classify for Throttled {
            fn class(&self) -> Class {
                Class::Transient
            }
        }
        impl Retryable for Throttled {
            fn is_throttled(&self) -> bool {
                true
            }
        }
        let mut p = policy();
        p.max_attempts = 3;
        let clock = FakeClock::new(0.5);
        let mut calls = 0;
        let r = run(&p, &clock, |_| {
            calls += 1;
            if calls <= 10 {
                Err(Throttled)
            } else {
                Ok(calls)
            }
        });
        assert_eq!(r.unwrap(), 11);

        p.deadline = Duration::from_secs(5);
        let clock = FakeClock::new(0.99);
        let start = clock.now();
        let mut calls = 0;
        let r: Result<(), Throttled> = run(&p, &clock, |_| {
            calls += 1;
            Err(Throttled)
        });
        assert!(r.is_err());
        assert!(calls > 3, "{calls}");
        assert!(clock.now() - start <= p.deadline);
    }

    #[derive(Debug)]
    struct Throttle {
        after: Option<Duration>,
    }
    impl std::fmt::Display for Throttle {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("throttled")
        }
    }
    impl Classify for Throttle {
        fn class(&self) -> Class {
            Class::Transient
        }
    }
    impl Retryable for Throttle {
        fn is_throttled(&self) -> bool {
            true
        }
        fn retry_after(&self) -> Option<Duration> {
            self.after
        }
    }

    /// The throttled schedule: at least `2 * base`, the ceiling three times the previous wait,
    /// at most `4 * cap` and the time left; every draw spreads over the whole range.
    #[test]
    fn throttled_waits_grow_with_consecutive_throttles_within_their_caps() {
        let p = policy(); // base 100 ms, cap 2 s
        let long = Duration::from_secs(3600);
        let ms = |d: Duration| d.as_millis();
        // The first throttle: no previous wait, it counts as the floor.
        assert_eq!(throttled_range(&p, None, long), (ms_(200), ms_(600)));
        // Always at the top of the range: 600, 1800, 5400, then the 8 s cap.
        let mut prev = None;
        let mut tops = vec![];
        for _ in 0..6 {
            let w = throttled_delay(&p, prev, 1.0, None, long);
            tops.push(ms(w));
            prev = Some(w);
        }
        assert_eq!(tops, [600, 1800, 5400, 8000, 8000, 8000]);
        // Always at the bottom: never below 2 * base, however long the run of throttles.
        assert_eq!(
            throttled_delay(&p, Some(Duration::from_secs(8)), 0.0, None, long),
            ms_(200)
        );
        // Decorrelated: the next range depends on the wait actually drawn.
        assert_eq!(
            throttled_range(&p, Some(ms_(300)), long),
            (ms_(200), ms_(900))
        );
        // The default policy (cap 15 s): at most THROTTLE_CAP, not 4 * 15 s.
        let d = RetryPolicy::default();
        assert_eq!(
            throttled_range(&d, Some(Duration::from_secs(60)), long),
            (Duration::from_secs(1), THROTTLE_CAP)
        );
        // The time left caps the range; below the floor there is no room for another try.
        assert_eq!(
            throttled_range(&p, Some(Duration::from_secs(8)), ms_(700)),
            (ms_(200), ms_(700))
        );
        let (lo, hi) = throttled_range(&p, Some(Duration::from_secs(8)), ms_(150));
        assert!(lo > hi);
        assert!(throttled_delay(&p, None, 0.5, None, ms_(150)) > ms_(150));
        // Real draws spread over the range.
        let draws: std::collections::BTreeSet<Duration> = (0..64)
            .map(|_| {
                throttled_delay(
                    &p,
                    Some(Duration::from_secs(2)),
                    RealClock.unit(),
                    None,
                    long,
                )
            })
            .collect();
        assert!(draws.len() > 32);
        assert!(draws
            .iter()
            .all(|d| *d >= ms_(200) && *d <= Duration::from_secs(6)));
    }

    fn ms_(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// OpenBao's rate-limit quota answers `Retry-After: 0` (with its response headers on): a
    /// floor of nothing, so the throttled backoff stands; a real `Retry-After` still wins.
    #[test]
    fn a_zero_retry_after_does_not_cut_the_throttled_backoff() {
        let p = policy();
        let long = Duration::from_secs(3600);
        let prev = Some(Duration::from_secs(1));
        assert_eq!(
            throttled_delay(&p, prev, 0.5, Some(Duration::ZERO), long),
            throttled_delay(&p, prev, 0.5, None, long)
        );
        assert_eq!(
            throttled_delay(&p, prev, 0.5, Some(Duration::from_secs(30)), long),
            Duration::from_secs(30)
        );
        let clock = FakeClock::new(0.5);
        let mut calls = 0;
        let r = run(&p, &clock, |_| {
            calls += 1;
            if calls <= 3 {
                Err(Throttle {
                    after: Some(Duration::ZERO),
                })
            } else {
                Ok(())
            }
        });
        assert!(r.is_ok());
        let sleeps: Vec<u128> = clock
            .sleeps
            .borrow()
            .iter()
            .map(|d| d.as_millis())
            .collect();
        // [200, 600] -> 400; then [200, 1200] -> 700; then [200, 2100] -> 1150.
        assert_eq!(sleeps, [400, 700, 1150]);
    }

    /// An error between throttles starts the throttled run over, and the errors' own backoff
    /// counts errors only: throttles before them do not lengthen it.
    #[test]
    fn errors_and_throttles_keep_their_own_schedules() {
        #[derive(Debug)]
        enum Mixed {
            Throttled,
            Error,
        }
        impl std::fmt::Display for Mixed {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "{self:?}")
            }
        }
        impl Classify for Mixed {
            fn class(&self) -> Class {
                Class::Transient
            }
        }
        impl Retryable for Mixed {
            fn is_throttled(&self) -> bool {
                matches!(self, Mixed::Throttled)
            }
        }
        use Mixed::*;
        let script = [Throttled, Throttled, Throttled, Error, Throttled, Error];
        let clock = FakeClock::new(1.0);
        let mut i = 0;
        let r = run(&policy(), &clock, |_| {
            i += 1;
            match script.get(i - 1) {
                Some(Throttled) => Err(Throttled),
                Some(Error) => Err(Error),
                None => Ok(()),
            }
        });
        assert!(r.is_ok());
        let sleeps: Vec<u128> = clock
            .sleeps
            .borrow()
            .iter()
            .map(|d| d.as_millis())
            .collect();
        // Throttles 600, 1800, 5400; the first error 100 (base); a throttle from the start
        // again 600; the second error 200 (base * 2).
        assert_eq!(sleeps, [600, 1800, 5400, 100, 600, 200]);
    }

    /// A throttled fleet uses its whole deadline and then stops, without spinning: the last
    /// waits shrink to what is left, and a wait that no longer fits ends the retries.
    #[test]
    fn throttled_retries_use_the_deadline_without_spinning() {
        let mut p = policy();
        p.deadline = Duration::from_secs(20);
        let clock = FakeClock::new(0.99);
        let start = clock.now();
        let mut calls = 0;
        let r: Result<(), Throttle> = run(&p, &clock, |_| {
            calls += 1;
            Err(Throttle { after: None })
        });
        assert!(r.is_err());
        let used = clock.now() - start;
        assert!(used <= p.deadline, "{used:?}");
        assert!(p.deadline - used < ms_(200), "stopped early: {used:?}");
        assert!(calls < 20, "{calls}");
        assert!(clock.sleeps.borrow().iter().all(|d| *d >= ms_(200)));
    }

    /// No synchronised waves: 1,000 nodes throttled together at t = 0 (each with its own
    /// draws, here from a fixed pseudo-random sequence) spread their next three retries so
    /// that no 100 ms after the first second holds more than 10 % of the fleet (a schedule
    /// without jitter, or one whose first wait is fixed, puts all of them into one), while
    /// they all come back within the growing ceilings.
    #[test]
    fn a_throttled_fleet_spreads_its_retries() {
        let p = RetryPolicy {
            max_attempts: 4,
            base: Duration::from_millis(500),
            cap: Duration::from_secs(5),
            deadline: Duration::from_secs(600),
        };
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        let mut unit = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 11) as f64 / (1u64 << 53) as f64
        };
        let mut bins = std::collections::BTreeMap::<u128, usize>::new();
        for _ in 0..1000 {
            let (mut t, mut prev) = (Duration::ZERO, None);
            for _ in 0..3 {
                let w = throttled_delay(&p, prev, unit(), None, p.deadline);
                prev = Some(w);
                t += w;
                *bins.entry(t.as_millis() / 100).or_default() += 1;
            }
            // Ceilings 3 s, 9 s, then the 20 s cap (4 * cap).
            assert!(t <= Duration::from_secs(3 + 9 + 20));
        }
        let worst = bins
            .iter()
            .filter(|(b, _)| **b >= 10)
            .map(|(_, n)| *n)
            .max()
            .unwrap();
        assert!(
            worst <= 100,
            "{worst} of 1000 retries in one 100 ms: a wave"
        );
    }

    #[test]
    fn permanent_errors_are_not_retried() {
        let clock = FakeClock::new(0.5);
        let mut calls = 0;
        let r: Result<(), E> = run(&policy(), &clock, |_| {
            calls += 1;
            Err(E {
                transient: false,
                after: None,
            })
        });
        assert!(r.is_err());
        assert_eq!(calls, 1);
        assert!(clock.sleeps.borrow().is_empty());
    }

    #[test]
    fn attempts_and_deadline_bound_the_retries() {
        let clock = FakeClock::new(0.99);
        let mut p = policy();
        p.max_attempts = 3;
        let mut calls = 0;
        let _ = run(&p, &clock, |_| -> Result<(), E> {
            calls += 1;
            Err(E {
                transient: true,
                after: None,
            })
        });
        assert_eq!(calls, 3);

        // Deadline: 2 s cap per wait, 5 s deadline -> stops before exceeding it.
        let clock = FakeClock::new(0.99);
        let mut p = policy();
        p.max_attempts = 100;
        p.deadline = Duration::from_secs(5);
        let start = clock.now();
        let mut calls = 0;
        let _ = run(&p, &clock, |_| -> Result<(), E> {
            calls += 1;
            Err(E {
                transient: true,
                after: None,
            })
        });
        assert!(clock.now() - start <= p.deadline);
        assert!(calls > 3 && calls < 100, "{calls}");

        // A Retry-After beyond the deadline ends the retries at once.
        let clock = FakeClock::new(0.5);
        let mut calls = 0;
        let _ = run(&p, &clock, |_| -> Result<(), E> {
            calls += 1;
            Err(E {
                transient: true,
                after: Some(Duration::from_secs(3600)),
            })
        });
        assert_eq!(calls, 1);
        assert!(clock.sleeps.borrow().is_empty());
    }

    /// A peer may send any `Retry-After`: the largest number is clamped to the deadline and
    /// ends the retries, never overflowing the arithmetic.
    #[test]
    fn an_absurd_retry_after_ends_the_retries_without_overflow() {
        let p = policy();
        assert_eq!(delay(&p, 0, 0.5, Some(Duration::MAX)), p.deadline);
        let clock = FakeClock::new(0.5);
        // Some time has passed before the peer answers.
        clock.sleep(Duration::from_millis(1));
        let mut calls = 0;
        let r: Result<(), E> = run(&p, &clock, |_| {
            calls += 1;
            Err(E {
                transient: true,
                after: Some(Duration::from_secs(u64::MAX)),
            })
        });
        assert!(r.is_err());
        assert_eq!(calls, 1);
        assert_eq!(clock.sleeps.borrow().len(), 1, "only the set-up sleep");
    }
}
