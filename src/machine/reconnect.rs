//! The supervisor's policy: when to connect, how long to wait, when to give
//! up. Pure: every method takes `now`.

use std::time::{Duration, Instant};

use super::backoff::{Backoff, Jitter};

/// Why an open connection ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Ended {
    /// The application asked for it.
    Requested,
    /// The server sent a close frame with this code.
    ServerClose(u16),
    /// Anything else: I/O error, heartbeat timeout, oversized message.
    Lost,
}

/// What the supervisor must do next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Wait `delay`, then make attempt `attempt`.
    Retry { attempt: u32, delay: Duration },
    /// Stop: the application asked.
    StopRequested,
    /// Stop: `attempts` consecutive attempts failed.
    GiveUp { attempts: u32 },
    /// Stop: the server closed with a terminal code.
    StopTerminal(u16),
}

pub(crate) struct RetryPolicy {
    backoff: Backoff,
    jitter: Jitter,
    min_uptime: Duration,
    max_attempts: u32,
    terminal_codes: Vec<u16>,
    /// Failures after which messages come by polling (`None`: no polling).
    poll_after: Option<u32>,
    /// After a close with 1012 or 1013: up to this much on top of the
    /// backoff's delay, uniformly spread.
    restart_spread: Duration,
    /// Consecutive failed attempts.
    failures: u32,
    opened_at: Option<Instant>,
}

impl RetryPolicy {
    pub(crate) fn new(
        backoff: Backoff,
        jitter: Jitter,
        min_uptime: Duration,
        max_attempts: u32,
        terminal_codes: Vec<u16>,
        poll_after: Option<u32>,
        restart_spread: Duration,
    ) -> Self {
        RetryPolicy {
            backoff,
            jitter,
            min_uptime,
            max_attempts,
            terminal_codes,
            poll_after,
            restart_spread,
            failures: 0,
            opened_at: None,
        }
    }

    /// The number of the attempt about to be made (1-based).
    pub(crate) fn attempt(&self) -> u32 {
        self.failures.saturating_add(1)
    }

    /// Consecutive failed attempts so far.
    pub(crate) fn failures(&self) -> u32 {
        self.failures
    }

    /// `true` once enough consecutive attempts failed that messages must
    /// come by polling; stays so until a connection stays up `Reconnect::min_uptime`.
    pub(crate) fn degraded(&self) -> bool {
        self.poll_after.is_some_and(|n| self.failures >= n)
    }

    /// An attempt failed before the socket opened.
    pub(crate) fn connect_failed(&mut self) -> Decision {
        self.fail()
    }

    /// The socket opened. The failure count is kept until the connection has
    /// proved itself by staying up `Reconnect::min_uptime`.
    pub(crate) fn opened(&mut self, now: Instant) {
        self.opened_at = Some(now);
    }

    /// The open connection ended.
    pub(crate) fn ended(&mut self, now: Instant, why: Ended) -> Decision {
        let opened = self.opened_at.take();
        match why {
            Ended::Requested => return Decision::StopRequested,
            Ended::ServerClose(code) if self.terminal_codes.contains(&code) => {
                return Decision::StopTerminal(code)
            }
            _ => {}
        }
        let lasted = opened.map(|t| now.saturating_duration_since(t));
        let decision = if lasted.is_some_and(|d| d >= self.min_uptime) {
            self.failures = 0;
            self.retry()
        } else {
            // Dropped before it proved itself: a failed attempt, so a server
            // that accepts and drops at once is retried with growing delays.
            self.fail()
        };
        match (decision, why) {
            // The server restarts (1012) or sheds load (1013): back within
            // the first backoff window, a whole fleet would land on it at
            // once. The backoff's delay gets a uniform spread on top.
            (Decision::Retry { attempt, delay }, Ended::ServerClose(1012 | 1013)) => {
                let extra = self
                    .restart_spread
                    .mul_f64(self.jitter.next_f64().clamp(0.0, 1.0));
                Decision::Retry {
                    attempt,
                    delay: delay + extra,
                }
            }
            (decision, _) => decision,
        }
    }

    fn fail(&mut self) -> Decision {
        self.failures = self.failures.saturating_add(1);
        if self.failures >= self.max_attempts {
            return Decision::GiveUp {
                attempts: self.failures,
            };
        }
        self.retry()
    }

    fn retry(&mut self) -> Decision {
        // delay(n) for n consecutive failures: a lost connection is retried
        // after delay(0), each failure after it waits one step longer
        // (for example 0, 30 s, 60 s).
        let delay = self.backoff.delay(self.failures, self.jitter.next_f64());
        Decision::Retry {
            attempt: self.attempt(),
            delay,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn fixed(max_attempts: u32) -> RetryPolicy {
        RetryPolicy::new(
            Backoff::Linear {
                initial: 10 * MS,
                step: 10 * MS,
                max: 100 * MS,
            },
            Jitter::new(1),
            Duration::from_secs(1),
            max_attempts,
            vec![4000],
            Some(3),
            Duration::from_secs(10),
        )
    }

    #[test]
    fn three_failures_degrade_to_polling_until_a_connection_stays_up() {
        let t0 = Instant::now();
        let mut r = fixed(u32::MAX);
        r.connect_failed();
        r.connect_failed();
        assert!(!r.degraded());
        r.connect_failed();
        assert!(r.degraded());
        // a connection that drops early keeps polling going
        r.opened(t0);
        r.ended(t0 + 5 * MS, Ended::Lost);
        assert!(r.degraded());
        // one that stayed up ends it
        r.opened(t0);
        r.ended(t0 + Duration::from_secs(2), Ended::Lost);
        assert!(!r.degraded());
    }

    #[test]
    fn failed_attempts_grow_the_delay_and_count_up() {
        let mut r = fixed(u32::MAX);
        assert_eq!(r.attempt(), 1);
        assert_eq!(
            r.connect_failed(),
            Decision::Retry {
                attempt: 2,
                delay: 20 * MS
            }
        );
        assert_eq!(
            r.connect_failed(),
            Decision::Retry {
                attempt: 3,
                delay: 30 * MS
            }
        );
        assert_eq!(
            r.connect_failed(),
            Decision::Retry {
                attempt: 4,
                delay: 40 * MS
            }
        );
    }

    #[test]
    fn gives_up_after_max_attempts() {
        let mut r = fixed(2);
        assert!(matches!(r.connect_failed(), Decision::Retry { .. }));
        assert_eq!(r.connect_failed(), Decision::GiveUp { attempts: 2 });
    }

    #[test]
    fn a_connection_that_stayed_up_resets_the_count() {
        let t0 = Instant::now();
        let mut r = fixed(3);
        r.connect_failed();
        r.connect_failed();
        r.opened(t0);
        let d = r.ended(t0 + Duration::from_secs(2), Ended::Lost);
        assert_eq!(
            d,
            Decision::Retry {
                attempt: 1,
                delay: 10 * MS
            }
        );
        assert_eq!(r.failures(), 0);
    }

    #[test]
    fn a_connection_that_drops_before_min_uptime_is_a_failed_attempt() {
        let t0 = Instant::now();
        let mut r = fixed(3);
        for _ in 0..2 {
            r.opened(t0);
            assert!(matches!(
                r.ended(t0 + 5 * MS, Ended::Lost),
                Decision::Retry { .. }
            ));
        }
        r.opened(t0);
        assert_eq!(
            r.ended(t0 + 5 * MS, Ended::Lost),
            Decision::GiveUp { attempts: 3 }
        );
    }

    #[test]
    fn a_requested_close_never_reconnects() {
        let t0 = Instant::now();
        let mut r = fixed(u32::MAX);
        r.opened(t0);
        assert_eq!(r.ended(t0, Ended::Requested), Decision::StopRequested);
    }

    #[test]
    fn terminal_codes_stop_and_others_reconnect() {
        let t0 = Instant::now();
        let mut r = fixed(u32::MAX);
        r.opened(t0);
        assert_eq!(
            r.ended(t0, Ended::ServerClose(4000)),
            Decision::StopTerminal(4000)
        );
        r.opened(t0);
        assert!(matches!(
            r.ended(t0 + Duration::from_secs(5), Ended::ServerClose(1001)),
            Decision::Retry { attempt: 1, .. }
        ));
    }

    #[test]
    fn a_server_that_restarts_or_sheds_load_is_given_the_spread_on_top_of_the_backoff() {
        // 1012 (Service Restart) and 1013 (Try Again Later) after a long,
        // healthy connection: without the hint, a whole fleet would be back
        // within the first backoff window (10 ms here) on a server that
        // just said it cannot take them.
        let t0 = Instant::now();
        let mut r = fixed(u32::MAX);
        let mut waits = Vec::new();
        for i in 0..200u64 {
            let code = if i % 2 == 0 { 1012 } else { 1013 };
            r.opened(t0);
            match r.ended(t0 + Duration::from_secs(60), Ended::ServerClose(code)) {
                Decision::Retry { attempt: 1, delay } => waits.push(delay),
                other => panic!("{code}: {other:?}"),
            }
        }
        // The backoff's first delay (10 ms) plus up to the spread (10 s).
        let (lo, hi) = (10 * MS, 10 * MS + Duration::from_secs(10));
        assert!(waits.iter().all(|w| (lo..=hi).contains(w)), "{waits:?}");
        // Spread over the range, not bunched: a ramp for the server.
        assert!(waits.iter().any(|w| *w < Duration::from_secs(2)));
        assert!(waits.iter().any(|w| *w > Duration::from_secs(8)));
        // Any other code keeps the backoff.
        r.opened(t0);
        assert!(matches!(
            r.ended(t0 + Duration::from_secs(60), Ended::ServerClose(1011)),
            Decision::Retry { delay, .. } if delay <= 100 * MS
        ));
    }
}
