//! Heartbeat and dead-link detection. Pure: every method takes `now` and the
//! time of the last inbound frame.

use std::time::{Duration, Instant};

/// What the heartbeat thread must do now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Beat {
    /// Nothing; look again at the returned deadline.
    Wait,
    /// Send a heartbeat now.
    Send,
    /// No frame arrived within the timeout after a heartbeat: the link is
    /// dead.
    Dead,
}

pub(crate) struct Heartbeat {
    interval: Duration,
    timeout: Duration,
    /// The last moment the link was known alive: open, any inbound frame, or
    /// the end of a reading pause.
    alive_at: Instant,
    /// When the unanswered heartbeat was sent.
    awaiting: Option<Instant>,
}

impl Heartbeat {
    pub(crate) fn new(interval: Duration, timeout: Duration, opened: Instant) -> Self {
        Heartbeat {
            interval,
            timeout,
            alive_at: opened,
            awaiting: None,
        }
    }

    /// Decides what to do at `now`, given the last inbound frame and whether
    /// the io thread has paused reading (inbound queue full). Returns the
    /// action and when to look again.
    pub(crate) fn poll(
        &mut self,
        now: Instant,
        last_inbound: Instant,
        paused: bool,
    ) -> (Beat, Instant) {
        if last_inbound > self.alive_at {
            self.alive_at = last_inbound;
        }
        if paused {
            // Replies sit unread behind a slow application: silence proves
            // nothing. Suspend the timeout until reading resumes.
            self.alive_at = now;
            self.awaiting = None;
            return (Beat::Wait, now + self.interval);
        }
        if let Some(sent) = self.awaiting {
            if self.alive_at >= sent {
                self.awaiting = None;
            } else if now >= sent + self.timeout {
                return (Beat::Dead, now);
            } else {
                return (Beat::Wait, sent + self.timeout);
            }
        }
        let due = self.alive_at + self.interval;
        if now >= due {
            self.awaiting = Some(now);
            (Beat::Send, now + self.timeout)
        } else {
            (Beat::Wait, due)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn beats_after_an_interval_of_silence_and_declares_dead_after_the_timeout() {
        let t0 = Instant::now();
        let mut h = Heartbeat::new(200 * MS, 100 * MS, t0);
        assert_eq!(h.poll(t0, t0, false), (Beat::Wait, t0 + 200 * MS));
        assert_eq!(
            h.poll(t0 + 200 * MS, t0, false),
            (Beat::Send, t0 + 300 * MS)
        );
        assert_eq!(
            h.poll(t0 + 250 * MS, t0, false),
            (Beat::Wait, t0 + 300 * MS)
        );
        assert_eq!(h.poll(t0 + 300 * MS, t0, false).0, Beat::Dead);
    }

    #[test]
    fn any_inbound_frame_answers_the_heartbeat() {
        let t0 = Instant::now();
        let mut h = Heartbeat::new(200 * MS, 100 * MS, t0);
        h.poll(t0 + 200 * MS, t0, false);
        let reply = t0 + 230 * MS;
        // at the timeout deadline, the reply has been seen: next beat is one
        // interval after it
        assert_eq!(
            h.poll(t0 + 300 * MS, reply, false),
            (Beat::Wait, reply + 200 * MS)
        );
        assert_eq!(h.poll(reply + 200 * MS, reply, false).0, Beat::Send);
    }

    #[test]
    fn a_busy_stream_never_needs_a_heartbeat() {
        let t0 = Instant::now();
        let mut h = Heartbeat::new(200 * MS, 100 * MS, t0);
        for i in 1..50u32 {
            let now = t0 + 150 * MS * i;
            let (beat, next) = h.poll(now, now - 10 * MS, false);
            assert_eq!(beat, Beat::Wait);
            assert!(next > now);
        }
    }

    #[test]
    fn a_paused_reader_is_never_declared_dead() {
        let t0 = Instant::now();
        let mut h = Heartbeat::new(200 * MS, 100 * MS, t0);
        h.poll(t0 + 200 * MS, t0, false); // beat sent
        for i in 3..40u32 {
            assert_eq!(h.poll(t0 + 100 * MS * i, t0, true).0, Beat::Wait);
        }
        // after resuming, a full interval passes before the next beat
        let resumed = t0 + 4000 * MS;
        let (beat, next) = h.poll(resumed, t0, false);
        assert_eq!(beat, Beat::Wait);
        assert!(next > resumed);
    }

    #[test]
    fn dead_link_is_detected_within_interval_plus_timeout_of_the_silence() {
        let t0 = Instant::now();
        let interval = 200 * MS;
        let timeout = 100 * MS;
        let mut h = Heartbeat::new(interval, timeout, t0);
        let silence = t0 + 37 * MS; // last frame ever
        let mut now = t0;
        loop {
            let (beat, next) = h.poll(now, silence, false);
            if beat == Beat::Dead {
                break;
            }
            now = next;
        }
        assert!(
            now <= silence + interval + timeout,
            "dead at {:?}",
            now - silence
        );
    }
}
