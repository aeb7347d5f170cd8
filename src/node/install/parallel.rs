//! Independent jobs side by side on a bounded number of threads (the downloads of one install).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::error::Classify;

/// How many artifacts one install downloads at once: enough to fill a link whose single
/// connection is slow to ramp up or is shaped per connection, few enough to stay polite to a
/// mirror that a whole site's appliances hit at once.
pub const DOWNLOADS_AT_ONCE: usize = 4;

/// Runs `op` on every job, at most `width` at a time, and returns the results in the jobs'
/// order. After the first failure no further job starts (those running finish, each within its
/// own limits); the error returned is the first that needs an operator (a digest mismatch, an
/// oversized file), else the first to happen, its class intact.
pub fn bounded<J, T, E>(
    jobs: &[J],
    width: usize,
    op: impl Fn(&J) -> Result<T, E> + Sync,
) -> Result<Vec<T>, E>
where
    J: Sync,
    T: Send,
    E: Send + Classify,
{
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let slots: Vec<Mutex<Option<T>>> = jobs.iter().map(|_| Mutex::new(None)).collect();
    let errors: Mutex<Vec<E>> = Mutex::new(Vec::new());
    let workers = width.clamp(1, jobs.len().max(1));
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                if failed.load(Ordering::SeqCst) {
                    return;
                }
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(job) = jobs.get(i) else { return };
                match op(job) {
                    Ok(v) => *slots[i].lock().unwrap_or_else(|p| p.into_inner()) = Some(v),
                    Err(e) => {
                        failed.store(true, Ordering::SeqCst);
                        errors.lock().unwrap_or_else(|p| p.into_inner()).push(e);
                    }
                }
            });
        }
    });
    let mut errors = errors.into_inner().unwrap_or_else(|p| p.into_inner());
    if !errors.is_empty() {
        let first_operator = errors.iter().position(|e| !e.is_transient()).unwrap_or(0);
        return Err(errors.swap_remove(first_operator));
    }
    Ok(slots
        .into_iter()
        .map(|m| {
            m.into_inner()
                .unwrap_or_else(|p| p.into_inner())
                .expect("without a failure every job ran")
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Class;
    use std::time::Duration;

    #[derive(Debug, PartialEq)]
    struct E(&'static str, bool);
    impl Classify for E {
        fn class(&self) -> Class {
            if self.1 {
                Class::Transient
            } else {
                Class::Operator
            }
        }
    }

    #[test]
    fn results_in_order_at_most_width_at_once() {
        let running = AtomicUsize::new(0);
        let peak = AtomicUsize::new(0);
        let jobs: Vec<u64> = (0..10).collect();
        let out = bounded(&jobs, 3, |j| {
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(20));
            running.fetch_sub(1, Ordering::SeqCst);
            Ok::<_, E>(j * 2)
        })
        .unwrap();
        assert_eq!(out, (0..10).map(|j| j * 2).collect::<Vec<_>>());
        assert!(peak.load(Ordering::SeqCst) <= 3);
    }

    #[test]
    fn an_operator_error_wins_over_an_earlier_transient_one_and_stops_new_jobs() {
        let started = AtomicUsize::new(0);
        let jobs = [0u32, 1, 2, 3, 4, 5];
        let err = bounded(&jobs, 2, |&j| {
            started.fetch_add(1, Ordering::SeqCst);
            match j {
                0 => {
                    // Fails first in time, once job 1 runs too.
                    while started.load(Ordering::SeqCst) < 2 {
                        std::thread::yield_now();
                    }
                    Err(E("reset", true))
                }
                1 => {
                    std::thread::sleep(Duration::from_millis(50));
                    Err(E("mismatch", false))
                }
                _ => Ok(j),
            }
        })
        .unwrap_err();
        assert_eq!(err, E("mismatch", false));
        assert!(started.load(Ordering::SeqCst) < jobs.len());
        let err = bounded(&jobs, 2, |_| Err::<u32, _>(E("reset", true))).unwrap_err();
        assert!(err.is_transient());
    }
}
