//! The repair bandwidth limit: one token bucket per node, shared by every
//! anti-entropy exchange and hand-off the node runs, so background repair
//! cannot crowd foreground traffic off the network or the disk. The rate is
//! the schedule's `max_bytes_per_sec` (0: unlimited), set cluster-wide.
//!
//! [`Bucket`] is the pure core (time comes in as an argument); [`Throttle`]
//! drives it with tokio's clock.

use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// A token bucket counted in bytes. It holds at most one second of tokens,
/// so an idle node can send a burst of one second's worth at once. A take
/// larger than what is there goes into debt and the caller waits until it
/// is paid, so a record batch bigger than the bucket is never stuck.
#[derive(Debug, Clone, PartialEq)]
pub struct Bucket {
    rate: u64,
    tokens: f64,
    last_ms: u64,
}

impl Bucket {
    /// A full bucket at `now_ms`; `rate` 0 is unlimited.
    pub fn new(rate: u64, now_ms: u64) -> Bucket {
        Bucket { rate, tokens: rate as f64, last_ms: now_ms }
    }

    pub fn rate(&self) -> u64 {
        self.rate
    }

    /// Changes the rate. The tokens held stay, capped at the new capacity;
    /// a bucket that was unlimited starts full.
    pub fn set_rate(&mut self, rate: u64, now_ms: u64) {
        let was_unlimited = self.rate == 0;
        self.refill(now_ms);
        self.rate = rate;
        self.tokens = if was_unlimited { rate as f64 } else { self.tokens.min(rate as f64) };
    }

    fn refill(&mut self, now_ms: u64) {
        let elapsed = now_ms.saturating_sub(self.last_ms) as f64 / 1000.0;
        self.last_ms = self.last_ms.max(now_ms);
        self.tokens = (self.tokens + elapsed * self.rate as f64).min(self.rate as f64);
    }

    /// Takes `bytes` at `now_ms`; how long the caller must wait before
    /// sending them.
    pub fn take(&mut self, bytes: u64, now_ms: u64) -> Duration {
        if self.rate == 0 {
            return Duration::ZERO;
        }
        self.refill(now_ms);
        self.tokens -= bytes as f64;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate as f64)
        }
    }
}

/// The node's bucket on tokio's clock.
pub struct Throttle {
    start: Instant,
    bucket: Mutex<Bucket>,
}

impl Throttle {
    pub fn new(rate: u64) -> Throttle {
        Throttle { start: Instant::now(), bucket: Mutex::new(Bucket::new(rate, 0)) }
    }

    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    pub fn rate(&self) -> u64 {
        self.bucket.lock().expect("throttle lock").rate()
    }

    pub fn set_rate(&self, rate: u64) {
        let now = self.now_ms();
        self.bucket.lock().expect("throttle lock").set_rate(rate, now);
    }

    /// Waits until `bytes` more may be moved; how long it waited.
    pub async fn take(&self, bytes: u64) -> Duration {
        let now = self.now_ms();
        let wait = self.bucket.lock().expect("throttle lock").take(bytes, now);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unlimited_never_waits() {
        let mut b = Bucket::new(0, 0);
        assert_eq!(b.take(u64::MAX, 0), Duration::ZERO);
    }

    #[test]
    fn a_full_bucket_lets_one_second_through_then_paces_at_the_rate() {
        let mut b = Bucket::new(1000, 0);
        assert_eq!(b.take(1000, 0), Duration::ZERO);
        assert_eq!(b.take(500, 0), Duration::from_millis(500));
        // 500 ms later the debt is paid; the next 1000 bytes wait a second.
        assert_eq!(b.take(1000, 500), Duration::from_secs(1));
    }

    #[test]
    fn an_idle_bucket_holds_at_most_one_second() {
        let mut b = Bucket::new(1000, 0);
        assert_eq!(b.take(1000, 0), Duration::ZERO);
        assert_eq!(b.take(3000, 60_000), Duration::from_secs(2));
    }

    #[test]
    fn over_any_span_the_bytes_let_through_stay_within_rate_times_time_plus_one_second() {
        let rate = 4096;
        let mut b = Bucket::new(rate, 0);
        let (mut now, mut sent) = (0u64, 0u64);
        for i in 0..1000u64 {
            let bytes = 1 + (i * 7919) % 3000;
            now += b.take(bytes, now).as_millis() as u64 + 1;
            sent += bytes;
            assert!(sent as f64 <= rate as f64 * (now as f64 / 1000.0 + 1.0) + 3000.0, "{sent} bytes by {now} ms");
        }
    }

    #[test]
    fn lowering_the_rate_caps_the_tokens_held() {
        let mut b = Bucket::new(10_000, 0);
        b.set_rate(100, 0);
        assert_eq!(b.take(100, 0), Duration::ZERO);
        assert_eq!(b.take(100, 0), Duration::from_secs(1));
        b.set_rate(0, 0);
        assert_eq!(b.take(1 << 30, 0), Duration::ZERO);
        b.set_rate(100, 0);
        assert_eq!(b.take(100, 0), Duration::ZERO, "a bucket that was unlimited starts full");
    }
}
