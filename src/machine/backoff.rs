//! Reconnect delay policies.

use std::time::Duration;

use crate::error::{Error, Result};

/// How long to wait before reconnect attempt `n` (0 = the first attempt
/// after a connection was lost or at start).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Backoff {
    /// The same delay every time.
    Fixed(Duration),
    /// `initial + step × n`, at most `max` (for example: at once, then
    /// 30 s more after each failure).
    Linear {
        /// Delay before the first attempt.
        initial: Duration,
        /// Added per consecutive failure.
        step: Duration,
        /// Upper bound.
        max: Duration,
    },
    /// `min(max, initial × 2ⁿ)`, then full jitter: a uniform random delay
    /// between zero and that value. The jitter is applied *after* the cap,
    /// so devices that have all reached the cap still spread out instead of
    /// retrying in lockstep. The default: 500 ms to 30 s.
    Exponential {
        /// Base delay.
        initial: Duration,
        /// Cap before jitter.
        max: Duration,
    },
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::Exponential {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(30),
        }
    }
}

impl Backoff {
    /// The delay before attempt `n` (`n` = consecutive failures so far);
    /// `random` is a uniform value in `[0, 1)`, used only by
    /// [`Backoff::Exponential`].
    pub fn delay(&self, n: u32, random: f64) -> Duration {
        match *self {
            Backoff::Fixed(d) => d,
            Backoff::Linear { initial, step, max } => {
                initial.saturating_add(step.saturating_mul(n)).min(max)
            }
            Backoff::Exponential { initial, max } => {
                let factor = 2u32.saturating_pow(n.min(31));
                let capped = initial.saturating_mul(factor).min(max);
                capped.mul_f64(random.clamp(0.0, 1.0))
            }
        }
    }

    pub(crate) fn validate(&self) -> Result<()> {
        match *self {
            Backoff::Fixed(_) => Ok(()),
            Backoff::Linear { initial, max, .. } if max < initial => Err(Error::config(
                "reconnect.backoff",
                "linear max must not be smaller than initial",
            )),
            Backoff::Exponential { initial, max } if initial.is_zero() || max < initial => {
                Err(Error::config(
                    "reconnect.backoff",
                    "exponential initial must be > 0 and max >= initial",
                ))
            }
            _ => Ok(()),
        }
    }
}

/// A small xorshift generator for jitter: no extra crate, and seeded per
/// client so a fleet started at the same second still spreads out.
#[derive(Clone, Debug)]
pub(crate) struct Jitter(u64);

impl Jitter {
    pub(crate) fn new(seed: u64) -> Self {
        Jitter(seed | 1)
    }

    pub(crate) fn from_entropy() -> Self {
        use std::hash::{BuildHasher, Hasher};
        // RandomState is seeded from the OS per process; mix in the time so
        // two clients in one process differ too.
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0),
        );
        Jitter::new(h.finish())
    }

    /// Uniform in `[0, 1)`.
    pub(crate) fn next_f64(&mut self) -> f64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        (x >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn linear_steps_by_thirty_seconds() {
        let b = Backoff::Linear {
            initial: Duration::ZERO,
            step: Duration::from_secs(30),
            max: Duration::from_secs(300),
        };
        assert_eq!(b.delay(0, 0.5), Duration::ZERO);
        assert_eq!(b.delay(1, 0.5), Duration::from_secs(30));
        assert_eq!(b.delay(2, 0.5), Duration::from_secs(60));
        assert_eq!(b.delay(100, 0.5), Duration::from_secs(300));
    }

    #[test]
    fn exponential_doubles_then_caps() {
        let b = Backoff::Exponential {
            initial: 100 * MS,
            max: 1000 * MS,
        };
        // random just below 1 gives (almost) the capped value
        let top = |n| b.delay(n, 0.999_999);
        assert!(top(0) > 99 * MS && top(0) <= 100 * MS);
        assert!(top(1) > 199 * MS && top(1) <= 200 * MS);
        assert!(top(3) > 799 * MS && top(3) <= 800 * MS);
        assert!(top(4) > 999 * MS && top(4) <= 1000 * MS);
        assert!(top(u32::MAX) <= 1000 * MS);
    }

    #[test]
    fn jitter_does_not_collapse_at_the_cap() {
        let b = Backoff::default();
        let mut j = Jitter::new(42);
        let delays: Vec<Duration> = (0..200).map(|_| b.delay(20, j.next_f64())).collect();
        let min = delays.iter().min().copied().unwrap_or_default();
        let max = delays.iter().max().copied().unwrap_or_default();
        assert!(max <= Duration::from_secs(30));
        // spread over most of [0, cap]: not every device at the cap
        assert!(min < Duration::from_secs(3), "min {min:?}");
        assert!(max > Duration::from_secs(27), "max {max:?}");
    }

    #[test]
    fn jitter_stays_in_unit_interval() {
        let mut j = Jitter::new(7);
        for _ in 0..10_000 {
            let x = j.next_f64();
            assert!((0.0..1.0).contains(&x));
        }
    }

    #[test]
    fn bad_exponential_is_a_config_error() {
        let b = Backoff::Exponential {
            initial: Duration::ZERO,
            max: Duration::from_secs(1),
        };
        assert!(matches!(
            b.validate(),
            Err(Error::Config {
                field: "reconnect.backoff",
                ..
            })
        ));
    }
}
