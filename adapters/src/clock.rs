//! Clocks: the system's, and a manual one tests move by hand.

use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use application::ports::Clock;
use async_trait::async_trait;
use tokio::sync::Notify;

#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

#[async_trait]
impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }

    async fn sleep(&self, duration: Duration) {
        tokio::time::sleep(duration).await;
    }
}

/// Stands still until told to move: phase timeouts are tested by moving it,
/// and a use case sleeping on it wakes when a move takes it past its time.
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<SystemTime>,
    moved: Notify,
}

impl ManualClock {
    pub fn new(start: SystemTime) -> Self {
        Self {
            now: Mutex::new(start),
            moved: Notify::new(),
        }
    }

    /// A fixed, arbitrary start (2023-11-14) so tests read the same every run.
    pub fn at_epoch_plus(seconds: u64) -> Self {
        Self::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + seconds))
    }

    pub fn advance(&self, by: Duration) {
        let mut now = self.now.lock().unwrap_or_else(|p| p.into_inner());
        *now += by;
        drop(now);
        self.moved.notify_waiters();
    }
}

#[async_trait]
impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        *self.now.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn sleep(&self, duration: Duration) {
        let until = self.now() + duration;
        loop {
            // Registered before the check, so a move in between is not lost.
            let moved = self.moved.notified();
            if self.now() >= until {
                return;
            }
            moved.await;
        }
    }
}
