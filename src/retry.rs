//! The one retry policy: capped exponential backoff with full jitter, a bounded number of
//! attempts and an overall deadline, honouring `Retry-After`.
//!
//! Only transient failures are retried (connection errors, timeouts, HTTP 429 and 5xx); anything
//! else (other 4xx, TLS verification, bad input) fails at once, because repeating it cannot help.
//! The schedule is a pure function ([`delay`]) and the clock is injectable ([`Clock`]), so tests
//! run without sleeping.

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
/// uniform random number in `[0, 1)`. A `Retry-After` from the peer is a floor.
pub fn delay(
    policy: &RetryPolicy,
    retry: u32,
    unit: f64,
    retry_after: Option<Duration>,
) -> Duration {
    let unit = unit.clamp(0.0, 1.0);
    let jittered = ceiling(policy, retry).mul_f64(unit);
    match retry_after {
        Some(floor) => jittered.max(floor),
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
        self.now.set(self.now.get() + d);
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
    // `attempt` numbers every try (it sets the backoff); `counted` leaves out the throttled
    // answers, which only the deadline bounds.
    let mut attempt = 0;
    let mut counted = 0;
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
        let wait = delay(policy, attempt, clock.unit(), err.retry_after());
        let elapsed = clock.now().saturating_duration_since(start);
        if elapsed + wait > policy.deadline {
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
}
