//! A sleep that keeps the tokio timer's next wake-up near, so that the deadlines a member sets
//! for each request do not wake the runtime's driver.
//!
//! Tokio wakes a parked timer driver (an eventfd write, then one more `epoll_wait`) whenever a
//! sleep is registered earlier than the wake-up the driver parked with; a driver with no sleep
//! pending parks with none, and the next sleep of any length wakes it. Every request sets
//! sleeps that almost never fire: the wait for its answer (the chain's timeout) and, at the
//! gateway, hyper's wait for the next request head. So whenever the one was shorter than the
//! other, or nothing else was pending, each request woke the driver once. A sleep that is
//! always pending and never further away than the shortest of those deadlines puts the
//! driver's wake-up no later than every such deadline, and registering them wakes nothing.
//! Between the anchor's firing and its re-arm a registration still wakes the driver, and the
//! re-arm itself usually does: a few wake-ups per period, idle or not.
//!
//! This leans on how tokio decides to wake its driver, which tokio does not promise; were that
//! to change, the anchor would only stop saving the wake-ups.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

/// The shortest period, so that an anchor never spins its member.
const SHORTEST: Duration = Duration::from_millis(20);

/// The anchor's period for deadlines no shorter than `shortest_deadline`: that deadline
/// itself, as a deadline as far away as the anchor's wakes nothing either. `None` below 20 ms:
/// an anchor slow enough not to spin would come after such deadlines and save nothing.
pub fn period_for(shortest_deadline: Duration) -> Option<Duration> {
    (shortest_deadline >= SHORTEST).then_some(shortest_deadline)
}

/// The anchor, sleeping in a task of its own until dropped.
pub struct TimerAnchor {
    task: JoinHandle<()>,
    fired: Arc<AtomicU64>,
}

impl TimerAnchor {
    /// Starts an anchor on `runtime` that keeps its driver's next wake-up within `period`
    /// (20 ms at least).
    pub fn start(runtime: &tokio::runtime::Handle, period: Duration) -> TimerAnchor {
        let period = period.max(SHORTEST);
        let fired = Arc::new(AtomicU64::new(0));
        let count = fired.clone();
        TimerAnchor {
            task: runtime.spawn(async move {
                let far = |from: tokio::time::Instant| {
                    from.checked_add(period)
                        .unwrap_or(from + Duration::from_secs(86400 * 365))
                };
                let sleep = tokio::time::sleep_until(far(tokio::time::Instant::now()));
                tokio::pin!(sleep);
                loop {
                    sleep.as_mut().await;
                    count.fetch_add(1, Ordering::Relaxed);
                    sleep.as_mut().reset(far(tokio::time::Instant::now()));
                }
            }),
            fired,
        }
    }

    /// Whether the anchor's task has ended (it ends only when aborted or its runtime stops).
    pub fn is_stopped(&self) -> bool {
        self.task.is_finished()
    }

    /// How many periods have ended so far.
    pub fn fired(&self) -> u64 {
        self.fired.load(Ordering::Relaxed)
    }
}

impl Drop for TimerAnchor {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_period_is_the_shortest_deadline_and_none_below_its_floor() {
        let ms = Duration::from_millis;
        assert_eq!(period_for(ms(300)), Some(ms(300)));
        assert_eq!(
            period_for(Duration::from_secs(10)),
            Some(Duration::from_secs(10))
        );
        assert_eq!(period_for(SHORTEST), Some(SHORTEST));
        assert_eq!(period_for(ms(19)), None);
    }

    /// Runs `test` on a runtime with paused time, failing it if it takes over 10 s of real
    /// time (an anchor that spins would stop paused time from moving, and hang the test).
    fn on_paused_time(test: impl std::future::Future<Output = ()> + Send + 'static) {
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .start_paused(true)
                .build()
                .unwrap();
            runtime.block_on(test);
            let _ = done.send(());
        });
        finished
            .recv_timeout(Duration::from_secs(10))
            .expect("the test panicked or did not end within 10 s");
    }

    #[test]
    fn the_anchor_fires_once_a_period_until_dropped() {
        on_paused_time(async {
            let anchor = TimerAnchor::start(
                &tokio::runtime::Handle::current(),
                Duration::from_millis(100),
            );
            // Paused time runs straight through the anchor's first three periods.
            tokio::time::sleep(Duration::from_millis(350)).await;
            assert_eq!(anchor.fired(), 3);
            assert!(!anchor.is_stopped());
            let task = anchor.task.abort_handle();
            drop(anchor);
            tokio::time::timeout(Duration::from_secs(1), async {
                // A sleep, not a yield, so that paused time moves on and the timeout can fire.
                while !task.is_finished() {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            })
            .await
            .expect("the anchor outlived its guard");
        });
    }

    #[test]
    fn a_zero_period_is_raised_to_the_floor() {
        on_paused_time(async {
            let anchor = TimerAnchor::start(&tokio::runtime::Handle::current(), Duration::ZERO);
            tokio::time::sleep(SHORTEST * 5 + SHORTEST / 2).await;
            assert_eq!(anchor.fired(), 5);
        });
    }
}
