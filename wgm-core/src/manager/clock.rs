//! Time as the Manager sees it: a [`Clock`] it is given, so tests control time, and
//! waiting (the commit loop's retry backoff) is the clock's business, not a thread's.

use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use time::OffsetDateTime;

/// A source of the current time, and of waiting.
///
/// The core has no runtime and no timer, so it cannot sleep by itself: a binary that
/// runs the manager on a runtime passes a clock whose [`Clock::sleep`] uses that
/// runtime's timer (with tokio: `Box::pin(tokio::time::sleep(d))`). The clocks here
/// never block a thread.
///
/// ```
/// use std::time::Duration;
/// use wgm_core::manager::{Clock, ManualClock};
/// let c = ManualClock::new(time::OffsetDateTime::UNIX_EPOCH);
/// futures::executor::block_on(c.sleep(Duration::from_secs(2)));
/// assert_eq!(c.now().unix_timestamp(), 2);
/// ```
pub trait Clock: Debug + Send + Sync + 'static {
    /// Now, in UTC.
    fn now(&self) -> OffsetDateTime;

    /// Wait for about `d` (the manager waits between commit retries). The default, for
    /// clocks without a timer, yields to the executor once and returns: other tasks
    /// (the one that won the race, say) get to run, but no time passes.
    fn sleep(&self, d: Duration) -> BoxFuture<'static, ()> {
        let _ = d;
        Box::pin(YieldOnce(false))
    }
}

/// A future that is pending once (waking itself at once) and then ready: lets other
/// tasks on the same executor run, without a timer.
#[derive(Debug)]
struct YieldOnce(bool);

impl Future for YieldOnce {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            Poll::Ready(())
        } else {
            self.0 = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }
}

/// The system's real-time clock. It has no timer: its [`Clock::sleep`] yields once
/// instead of waiting (see [`Clock`] for passing a clock that really sleeps).
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
}

/// A clock that stands still until moved (or slept on: [`Clock::sleep`] moves it); for
/// tests.
///
/// ```
/// use wgm_core::manager::{Clock, ManualClock};
/// let c = ManualClock::new(time::OffsetDateTime::UNIX_EPOCH);
/// c.advance(time::Duration::seconds(30));
/// assert_eq!(c.now().unix_timestamp(), 30);
/// ```
#[derive(Debug)]
pub struct ManualClock(Mutex<OffsetDateTime>);

impl ManualClock {
    /// A clock showing `t`.
    pub fn new(t: OffsetDateTime) -> Self {
        ManualClock(Mutex::new(t))
    }

    /// Move the clock forward by `d`.
    pub fn advance(&self, d: time::Duration) {
        let mut g = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *g += d;
    }

    /// Set the clock to `t`.
    pub fn set(&self, t: OffsetDateTime) {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = t;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> OffsetDateTime {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Moves the clock forward by `d` and returns at once.
    fn sleep(&self, d: Duration) -> BoxFuture<'static, ()> {
        let mut g = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // A wait past the end of representable time leaves the clock where it is.
        if let Some(t) = time::Duration::try_from(d)
            .ok()
            .and_then(|d| g.checked_add(d))
        {
            *g = t;
        }
        Box::pin(std::future::ready(()))
    }
}
