//! Per-token upload rate limiting: a token bucket per worker name.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Buckets of `per_minute` uploads, refilled continuously.
pub struct RateLimiter {
    per_minute: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimiter {
    /// A limiter allowing `per_minute` uploads per name (0 = no limit).
    pub fn new(per_minute: u32) -> RateLimiter {
        RateLimiter { per_minute: per_minute as f64, buckets: Mutex::new(HashMap::new()) }
    }

    /// Takes one upload from `name`'s bucket, or says how long until one is available.
    pub fn check(&self, name: &str) -> Result<(), Duration> {
        if self.per_minute <= 0.0 {
            return Ok(());
        }
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let (tokens, last) = buckets.entry(name.to_string()).or_insert((self.per_minute, now));
        *tokens =
            (*tokens + now.duration_since(*last).as_secs_f64() * self.per_minute / 60.0).min(self.per_minute);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - *tokens) * 60.0 / self.per_minute))
        }
    }
}
