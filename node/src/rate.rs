//! Byte rates: parsing what users type (`2MiB`, `500k`, `unlimited`) and a token bucket that
//! paces transfers to a rate that can change while the node runs.
//!
//! One [`RateLimiter`] serves every transfer in one direction, so the limit is global, as users
//! of a desktop node expect; `None` means unlimited and costs one atomic load per call.

use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// A rate in bytes per second, parsed from text such as `2MiB`, `1.5MB`, `800k` or `12345`
/// (a bare number is bytes per second; an optional `/s` is accepted). Binary units (`KiB`,
/// `MiB`, `GiB`, `TiB`) are powers of 1024, decimal ones (`k`/`KB`, `M`/`MB`, `G`/`GB`, `T`/`TB`)
/// of 1000.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Rate(pub u64);

/// Why a rate did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{text}` is not a rate: {why}; write bytes per second such as 2MiB, 500KiB, 1.5MB or 800000"
)]
pub struct RateError {
    text: String,
    why: &'static str,
}

impl FromStr for Rate {
    type Err = RateError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let error = |why| RateError {
            text: text.to_owned(),
            why,
        };
        let trimmed = text.trim();
        let trimmed = trimmed
            .strip_suffix("/s")
            .or_else(|| trimmed.strip_suffix("ps"))
            .unwrap_or(trimmed)
            .trim();
        let split = trimmed
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(trimmed.len());
        let (number, unit) = trimmed.split_at(split);
        if number.is_empty() {
            return Err(error("it does not start with a number"));
        }
        let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" => 1_000,
            "ki" | "kib" => 1 << 10,
            "m" | "mb" => 1_000_000,
            "mi" | "mib" => 1 << 20,
            "g" | "gb" => 1_000_000_000,
            "gi" | "gib" => 1 << 30,
            "t" | "tb" => 1_000_000_000_000,
            "ti" | "tib" => 1 << 40,
            _ => return Err(error("the unit is unknown")),
        };
        let value: f64 = number
            .parse()
            .map_err(|_| error("the number is malformed"))?;
        let bytes = value * factor as f64;
        if !bytes.is_finite() || bytes < 1.0 || bytes > u64::MAX as f64 {
            return Err(error("it must be at least 1 byte per second"));
        }
        Ok(Rate(bytes as u64))
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let units = [(1u64 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
        for (size, name) in units {
            if self.0 >= size && self.0.is_multiple_of((size / 1024).max(1)) {
                let value = self.0 as f64 / size as f64;
                return if value.fract() == 0.0 {
                    write!(f, "{value:.0}{name}/s")
                } else {
                    write!(f, "{value:.2}{name}/s")
                };
            }
        }
        write!(f, "{}B/s", self.0)
    }
}

/// Parses an optional limit: `unlimited`, `none`, `off` or `0` mean no limit.
pub fn parse_limit(text: &str) -> Result<Option<Rate>, RateError> {
    match text.trim().to_ascii_lowercase().as_str() {
        "unlimited" | "none" | "off" | "0" => Ok(None),
        _ => text.parse().map(Some),
    }
}

/// A token bucket shared by every transfer in one direction. The rate can change at any time;
/// a burst of at most a tenth of a second (and at least `min_burst` bytes, so one chunk always
/// fits) accumulates while idle.
#[derive(Debug)]
pub struct RateLimiter {
    /// Bytes per second; 0 means unlimited.
    rate: AtomicU64,
    min_burst: u64,
    bucket: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    /// May go negative: a large request is admitted at once and repaid by later callers.
    tokens: f64,
    refilled: Instant,
}

impl RateLimiter {
    /// A limiter at `rate` (`None` = unlimited) whose burst holds at least `min_burst` bytes.
    pub fn new(rate: Option<Rate>, min_burst: u64) -> Self {
        Self {
            rate: AtomicU64::new(rate.map_or(0, |r| r.0)),
            min_burst,
            bucket: Mutex::new(Bucket {
                tokens: 0.0,
                refilled: Instant::now(),
            }),
        }
    }

    /// The current limit.
    pub fn rate(&self) -> Option<Rate> {
        match self.rate.load(Ordering::Relaxed) {
            0 => None,
            rate => Some(Rate(rate)),
        }
    }

    /// Changes the limit; waiting callers see it on their next wake-up.
    pub fn set_rate(&self, rate: Option<Rate>) {
        self.rate.store(rate.map_or(0, |r| r.0), Ordering::Relaxed);
    }

    /// Waits until `bytes` may pass. Requests are admitted in the order they take tokens; a
    /// request larger than the burst passes once the bucket is full, and drives it negative.
    pub async fn acquire(&self, bytes: u64) {
        loop {
            let rate = self.rate.load(Ordering::Relaxed);
            if rate == 0 {
                return;
            }
            let wait = self.try_take(rate, bytes);
            match wait {
                None => return,
                // Re-read the rate after a bounded wait, so a raised limit takes effect soon.
                Some(wait) => tokio::time::sleep(wait.min(Duration::from_millis(100))).await,
            }
        }
    }

    /// Gives back `bytes` taken for a transfer that did not happen (a turn refused after it
    /// was granted), up to a full burst.
    pub fn refund(&self, bytes: u64) {
        let rate = self.rate.load(Ordering::Relaxed);
        if rate == 0 {
            return;
        }
        let burst = (rate as f64 / 10.0).max(self.min_burst as f64);
        let mut bucket = self
            .bucket
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        bucket.tokens = (bucket.tokens + bytes as f64).min(burst);
    }

    /// Takes `bytes` if the bucket allows, else says how long until it would.
    fn try_take(&self, rate: u64, bytes: u64) -> Option<Duration> {
        let burst = (rate as f64 / 10.0).max(self.min_burst as f64);
        let now = Instant::now();
        // A poisoned lock only means another task panicked mid-update of two numbers; the
        // numbers are still usable.
        let mut bucket = self
            .bucket
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let elapsed = now.saturating_duration_since(bucket.refilled).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate as f64).min(burst);
        bucket.refilled = now;
        let needed = (bytes as f64).min(burst);
        if bucket.tokens >= needed {
            bucket.tokens -= bytes as f64;
            None
        } else {
            Some(Duration::from_secs_f64(
                (needed - bucket.tokens) / rate as f64,
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refund_gives_tokens_back_up_to_a_burst() {
        let limiter = RateLimiter::new(Some(Rate(1_000_000)), 1);
        // The bucket starts empty: 100 kB (the burst) is not there yet.
        assert!(limiter.try_take(1_000_000, 100_000).is_some());
        limiter.refund(100_000);
        assert!(limiter.try_take(1_000_000, 100_000).is_none());
        // More than a burst back is a burst.
        limiter.refund(10_000_000);
        assert!(limiter.try_take(1_000_000, 100_000).is_none());
        assert!(limiter.try_take(1_000_000, 100_000).is_some());
    }

    #[test]
    fn rates_parse_in_binary_and_decimal_units() {
        assert_eq!("2MiB".parse(), Ok(Rate(2 << 20)));
        assert_eq!("2 MiB/s".parse(), Ok(Rate(2 << 20)));
        assert_eq!("1.5MB".parse(), Ok(Rate(1_500_000)));
        assert_eq!("800k".parse(), Ok(Rate(800_000)));
        assert_eq!("512KiB".parse(), Ok(Rate(512 << 10)));
        assert_eq!("12345".parse(), Ok(Rate(12345)));
        assert_eq!("1GiB".parse(), Ok(Rate(1 << 30)));
        assert_eq!(parse_limit("unlimited"), Ok(None));
        assert_eq!(parse_limit("0"), Ok(None));
        for bad in ["", "MiB", "2 parsecs", "-1MiB", "0.1", "1e400", "1.2.3k"] {
            let err = bad.parse::<Rate>().unwrap_err().to_string();
            assert!(err.contains("2MiB"), "{bad}: {err}");
        }
    }

    #[test]
    fn rates_display_readably_and_round_trip() {
        for rate in [
            Rate(2 << 20),
            Rate(1 << 30),
            Rate(512 << 10),
            Rate(1000),
            Rate(1536 << 10),
        ] {
            let text = rate.to_string();
            assert_eq!(text.parse::<Rate>(), Ok(rate), "{text}");
        }
        assert_eq!(Rate(2 << 20).to_string(), "2MiB/s");
    }

    #[tokio::test(start_paused = true)]
    async fn the_bucket_paces_to_the_rate_and_follows_changes() {
        let limiter = RateLimiter::new(Some(Rate(1 << 20)), 64 << 10);
        let start = Instant::now();
        // 4 MiB at 1 MiB/s, after an empty bucket: about 4 s of (virtual) time.
        for _ in 0..64 {
            limiter.acquire(64 << 10).await;
        }
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(3_800) && took <= Duration::from_millis(4_300),
            "{took:?}"
        );
        limiter.set_rate(Some(Rate(4 << 20)));
        let start = Instant::now();
        for _ in 0..64 {
            limiter.acquire(64 << 10).await;
        }
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(850) && took <= Duration::from_millis(1_200),
            "{took:?}"
        );
        limiter.set_rate(None);
        let start = Instant::now();
        limiter.acquire(1 << 30).await;
        assert_eq!(start.elapsed(), Duration::ZERO);
    }
}
