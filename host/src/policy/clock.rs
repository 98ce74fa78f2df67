//! Time as the host's policies see it. Production uses the system clock;
//! tests use [`TestClock`], which records every sleep and advances at once.

use std::sync::Mutex;
use std::time::Duration;

/// A source of time and of waiting.
#[async_trait::async_trait]
pub trait Clock: Send + Sync {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;
    /// Waits for `duration`.
    async fn sleep(&self, duration: Duration);
}

/// The real clock.
pub struct SystemClock;

#[async_trait::async_trait]
impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        crate::store::now_ms()
    }

    async fn sleep(&self, duration: Duration) {
        tokio::time::sleep(duration).await;
    }
}

/// A virtual clock: `sleep` returns at once after moving time forward.
pub struct TestClock {
    state: Mutex<(u64, Vec<Duration>)>,
}

impl TestClock {
    /// A clock reading `now_ms`.
    pub fn new(now_ms: u64) -> Self {
        TestClock { state: Mutex::new((now_ms, Vec::new())) }
    }

    /// Moves time forward.
    pub fn advance(&self, by: Duration) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).0 += by.as_millis() as u64;
    }

    /// Every sleep asked for so far, in order.
    pub fn sleeps(&self) -> Vec<Duration> {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).1.clone()
    }
}

#[async_trait::async_trait]
impl Clock for TestClock {
    fn now_ms(&self) -> u64 {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).0
    }

    async fn sleep(&self, duration: Duration) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.0 += duration.as_millis() as u64;
        state.1.push(duration);
    }
}
