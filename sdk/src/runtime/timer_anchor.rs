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
//! driver's wake-up no later than every such deadline, and registering them wakes nothing. It
//! costs a wake-up or two per period, idle or not.
//!
//! This leans on how tokio decides to wake its driver, which tokio does not promise; were that
//! to change, the anchor would only stop saving the wake-ups.

use std::time::Duration;
use tokio::task::JoinHandle;

/// The shortest period, so that a chain with a tiny timeout does not spin its members; its
/// deadlines, shorter than this, wake the driver as before.
const SHORTEST: Duration = Duration::from_millis(20);

/// The anchor's period for deadlines no shorter than `shortest_deadline`: that deadline
/// itself, as a deadline as far away as the anchor's wakes nothing either.
pub fn period_for(shortest_deadline: Duration) -> Duration {
    shortest_deadline.max(SHORTEST)
}

/// The anchor, sleeping in a task of its own until dropped.
pub struct TimerAnchor {
    task: JoinHandle<()>,
}

impl TimerAnchor {
    /// Starts an anchor on `runtime` that keeps its driver's next wake-up within `period`.
    pub fn start(runtime: &tokio::runtime::Handle, period: Duration) -> TimerAnchor {
        TimerAnchor {
            task: runtime.spawn(async move {
                let sleep = tokio::time::sleep(period);
                tokio::pin!(sleep);
                loop {
                    sleep.as_mut().await;
                    sleep.as_mut().reset(tokio::time::Instant::now() + period);
                }
            }),
        }
    }
}

impl TimerAnchor {
    /// Whether the anchor's task has ended (it ends only when aborted or its runtime stops).
    pub fn is_stopped(&self) -> bool {
        self.task.is_finished()
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
    fn the_period_is_the_shortest_deadline_but_not_below_its_floor() {
        assert_eq!(
            period_for(Duration::from_millis(300)),
            Duration::from_millis(300)
        );
        assert_eq!(period_for(Duration::from_secs(10)), Duration::from_secs(10));
        assert_eq!(period_for(Duration::from_millis(1)), SHORTEST);
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn the_anchor_sleeps_again_after_each_period_until_dropped() {
        let anchor = TimerAnchor::start(
            &tokio::runtime::Handle::current(),
            Duration::from_millis(100),
        );
        // Paused time runs straight through the anchor's first three periods.
        tokio::time::sleep(Duration::from_millis(350)).await;
        assert!(
            !anchor.task.is_finished(),
            "the anchor stopped after a period"
        );
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
    }
}
