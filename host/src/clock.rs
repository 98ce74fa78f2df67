//! Time and chance as the host's policies see them (the policies themselves
//! take both as arguments). Production uses the system clock;
//! tests use [`TestClock`], which records every sleep and advances at once.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Milliseconds since the epoch as of the engine's last epoch tick (every
/// 10 ms); 0 until the first tick.
static COARSE_NOW_MS: AtomicU64 = AtomicU64::new(0);

/// Advances the coarse clock; the engine's epoch ticker calls it every tick.
pub fn tick_coarse() {
    COARSE_NOW_MS.store(crate::model::now_ms(), Ordering::Relaxed);
}

/// Wall-clock milliseconds, at most a few ticks old, without a clock read:
/// for decisions measured in seconds (pool TTLs, re-checking files).
pub fn coarse_now_ms() -> u64 {
    match COARSE_NOW_MS.load(Ordering::Relaxed) {
        0 => crate::model::now_ms(),
        now => now,
    }
}

/// A uniform number in [0, 1) from the OS's randomness, for jitter.
pub fn random_unit() -> f64 {
    let bytes = *uuid::Uuid::new_v4().as_bytes();
    let word = u64::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3], bytes[4], bytes[5], bytes[6], bytes[7]]);
    (word >> 11) as f64 / (1u64 << 53) as f64
}

/// A source of time and of waiting.
#[async_trait::async_trait]
pub trait Clock: Send + Sync {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;
    /// [`Clock::now_ms`] where ticks of about 10 ms are precise enough; cheaper.
    fn coarse_now_ms(&self) -> u64 {
        self.now_ms()
    }
    /// Waits for `duration`.
    async fn sleep(&self, duration: Duration);
}

/// The real clock.
pub struct SystemClock;

#[async_trait::async_trait]
impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        crate::model::now_ms()
    }

    fn coarse_now_ms(&self) -> u64 {
        coarse_now_ms()
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

#[cfg(test)]
mod tests {
    #[test]
    fn random_units_are_in_the_unit_interval() {
        for _ in 0..100 {
            let u = super::random_unit();
            assert!((0.0..1.0).contains(&u));
        }
    }
}
