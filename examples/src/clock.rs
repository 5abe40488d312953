//! The clock the `wgm` binaries build their manager with.
//!
//! `wgm-core` has no timer, so its `SystemClock` cannot wait: its `sleep` only yields.
//! The binaries run on tokio, so they pass [`TokioClock`], whose `sleep` is tokio's
//! timer. The manager's commit loop then really backs off (a jittered 1–50 ms) between
//! retries when another process won the race for a server's head revision.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use time::OffsetDateTime;
use wgm_core::manager::Clock;

/// The system's time, and waiting on tokio's timer. It must be used from inside a tokio
/// runtime (its `sleep` panics otherwise, as `tokio::time::sleep` does).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use std::sync::Arc;
/// use wgm_core::manager::Clock;
/// let clock = wgm_cli::clock::TokioClock;
/// let before = std::time::Instant::now();
/// clock.sleep(std::time::Duration::from_millis(5)).await;
/// assert!(before.elapsed() >= std::time::Duration::from_millis(5));
/// // Build a manager with it: `Manager::builder(store, sealer).clock(Arc::new(TokioClock))`.
/// let _: Arc<dyn Clock> = Arc::new(clock);
/// # }
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct TokioClock;

impl Clock for TokioClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }

    fn sleep(&self, d: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        Box::pin(tokio::time::sleep(d))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The point of this clock: a retry's wait really passes (tokio's timer never fires
    /// early), unlike the core's `SystemClock`, which only yields.
    #[tokio::test(flavor = "current_thread")]
    async fn sleep_waits_at_least_the_duration_and_now_is_the_system_time() {
        let start = std::time::Instant::now();
        TokioClock.sleep(Duration::from_millis(20)).await;
        assert!(start.elapsed() >= Duration::from_millis(20));
        let diff = (TokioClock.now() - OffsetDateTime::now_utc()).abs();
        assert!(diff < time::Duration::seconds(5), "{diff}");
    }
}
