//! Heartbeat and dead-link detection. Pure: every method takes `now` and the
//! time of the last inbound frame.
//!
//! The rules, for every ratio of interval to timeout:
//! - a heartbeat goes out `interval` after the last inbound frame (a reply is
//!   an inbound frame), so the cadence is the interval plus the round trip;
//!   with [`Liveness::even_when_busy`], `interval` after the last heartbeat
//!   instead, whatever arrives (and while reading is paused, without
//!   awaiting a reply);
//! - at most one heartbeat is outstanding; when no frame at all arrives
//!   within `timeout` after it, the link is dead. So a link that goes silent
//!   at `L` is declared dead by `L + interval + timeout`.
//!
//! The ticker cannot see a reply arrive (the io thread reads it), so while
//! a heartbeat is outstanding it looks again every `interval` (or at the
//! verdict, if sooner): a reply seen at such a look always schedules the
//! next beat exactly `interval` after the reply. An idle link therefore
//! costs about two wake-ups per heartbeat and never a fixed tick.

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

pub(crate) struct Liveness {
    interval: Duration,
    timeout: Duration,
    /// Beat every `interval` even while frames arrive (see
    /// [`Liveness::even_when_busy`]).
    busy: bool,
    /// When the last heartbeat went out (the open, before the first).
    last_beat: Instant,
    /// The last moment the link was known alive: open, any inbound frame, or
    /// the end of a reading pause.
    alive_at: Instant,
    /// When the unanswered heartbeat was sent.
    awaiting: Option<Instant>,
}

impl Liveness {
    pub(crate) fn new(interval: Duration, timeout: Duration, opened: Instant) -> Self {
        Liveness {
            interval,
            timeout,
            busy: false,
            last_beat: opened,
            alive_at: opened,
            awaiting: None,
        }
    }

    /// With `on`, a heartbeat goes out every `interval` whatever arrives,
    /// also while reading is paused: for servers that drop a client that
    /// has sent nothing for a while however much they send it (a read-idle
    /// timeout on the server's side). Without, any inbound frame postpones
    /// the heartbeat, and a busy stream never needs one.
    pub(crate) fn even_when_busy(mut self, on: bool) -> Self {
        self.busy = on;
        self
    }

    /// The next heartbeat is due at this moment (while none is awaited).
    fn due(&self) -> Instant {
        if self.busy {
            self.last_beat + self.interval
        } else {
            self.alive_at + self.interval
        }
    }

    fn send(&mut self, now: Instant) -> (Beat, Instant) {
        self.awaiting = Some(now);
        self.last_beat = now;
        (Beat::Send, now + self.interval.min(self.timeout))
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
            if !self.busy {
                return (Beat::Wait, now + self.interval);
            }
            // The server is sending all the while, and may still want to
            // hear from the client: beat on, awaiting no reply.
            let due = self.due();
            if now < due {
                return (Beat::Wait, due);
            }
            self.last_beat = now;
            return (Beat::Send, now + self.interval);
        }
        if let Some(sent) = self.awaiting {
            if self.alive_at >= sent {
                self.awaiting = None;
            } else {
                let verdict = sent + self.timeout;
                if now >= verdict {
                    return (Beat::Dead, now);
                }
                // A reply may come at any moment; the next beat is due one
                // interval after it, so look again within an interval.
                return (Beat::Wait, (now + self.interval).min(verdict));
            }
        }
        let due = self.due();
        if now >= due {
            self.send(now)
        } else {
            (Beat::Wait, due)
        }
    }
}

impl Liveness {
    /// The device was suspended for longer than an interval (see
    /// [`SuspendGap`]): the monotonic clock stood still, so the link looks
    /// fresh, but the server may have given up on it long ago. Probe now:
    /// send a heartbeat and let the usual timeout decide.
    pub(crate) fn resumed(&mut self, now: Instant, paused: bool) -> (Beat, Instant) {
        if paused {
            return (Beat::Wait, now + self.interval);
        }
        self.send(now)
    }
}

/// Notices a suspend: `std::time::Instant` (`CLOCK_MONOTONIC`) does not
/// advance while the device sleeps, the boot-time clock
/// (`CLOCK_BOOTTIME`) does. The difference between how far each moved
/// since the last look is the time spent suspended. The wall clock is
/// never involved, so an NTP step changes nothing.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SuspendGap {
    mono: Instant,
    boot: Duration,
}

impl SuspendGap {
    pub(crate) fn new(mono: Instant, boot: Duration) -> Self {
        SuspendGap { mono, boot }
    }

    /// Time spent suspended since the last look; remembers this look.
    pub(crate) fn gap(&mut self, mono: Instant, boot: Duration) -> Duration {
        let real = boot.saturating_sub(self.boot);
        let counted = mono.saturating_duration_since(self.mono);
        self.mono = mono;
        self.boot = boot;
        real.saturating_sub(counted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_suspend_is_the_boot_clock_running_ahead_of_the_monotonic_one() {
        let t0 = Instant::now();
        let b0 = Duration::from_secs(1000);
        let mut g = SuspendGap::new(t0, b0);
        // Awake: both clocks move together (a little jitter either way).
        assert_eq!(g.gap(t0 + 30 * S, b0 + 30 * S), Duration::ZERO);
        assert_eq!(g.gap(t0 + 60 * S, b0 + 60 * S - MS), Duration::ZERO);
        // Asleep for an hour between two looks 10 s apart on the
        // monotonic clock.
        let gap = g.gap(t0 + 70 * S, b0 + 70 * S + 3600 * S - MS);
        assert_eq!(gap, 3600 * S);
        assert_eq!(
            g.gap(t0 + 80 * S, b0 + 80 * S + 3600 * S - MS),
            Duration::ZERO
        );
    }

    #[test]
    fn after_a_suspend_the_link_is_probed_at_once_and_the_timeout_decides() {
        let t0 = Instant::now();
        let mut h = Liveness::new(30 * S, 10 * S, t0);
        // Just heard from the server, by the monotonic clock...
        assert_eq!(h.poll(t0 + 5 * S, t0 + 5 * S, false).0, Beat::Wait);
        // ...but the device slept: probe now, verdict one timeout later.
        assert_eq!(h.resumed(t0 + 6 * S, false), (Beat::Send, t0 + 16 * S));
        assert_eq!(h.poll(t0 + 16 * S, t0 + 5 * S, false).0, Beat::Dead);
        // A reply in time keeps the link.
        let mut h = Liveness::new(30 * S, 10 * S, t0);
        h.resumed(t0 + 6 * S, false);
        assert_eq!(h.poll(t0 + 16 * S, t0 + 7 * S, false).0, Beat::Wait);
        // Reading paused: silence proves nothing, no probe.
        assert_eq!(h.resumed(t0, true).0, Beat::Wait);
    }

    const S: Duration = Duration::from_secs(1);

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn beats_after_an_interval_of_silence_and_declares_dead_after_the_timeout() {
        let t0 = Instant::now();
        let mut h = Liveness::new(200 * MS, 100 * MS, t0);
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
    fn when_busy_a_heartbeat_still_goes_out_every_interval() {
        // Frames arrive every 50 ms. By default that postpones the
        // heartbeat for ever; `even_when_busy` keeps the cadence, for
        // servers that drop a client that has sent nothing for a while.
        let t0 = Instant::now();
        let mut quiet = Liveness::new(200 * MS, 100 * MS, t0);
        let mut busy = Liveness::new(200 * MS, 100 * MS, t0).even_when_busy(true);
        let (mut beats_quiet, mut beats_busy) = (0, 0);
        for i in 1..=20u32 {
            let now = t0 + 50 * MS * i;
            beats_quiet += u32::from(quiet.poll(now, now, false).0 == Beat::Send);
            let (beat, next) = busy.poll(now, now, false);
            assert_ne!(beat, Beat::Dead, "frames keep coming: alive");
            assert!(next <= now + 200 * MS);
            beats_busy += u32::from(beat == Beat::Send);
        }
        assert_eq!(beats_quiet, 0);
        assert_eq!(beats_busy, 5, "one per 200 ms over 1 s");
        // Reading paused (a stalled application): beats go on, no verdict.
        let mut h = Liveness::new(200 * MS, 100 * MS, t0).even_when_busy(true);
        assert_eq!(h.poll(t0 + 100 * MS, t0, true), (Beat::Wait, t0 + 200 * MS));
        assert_eq!(h.poll(t0 + 200 * MS, t0, true).0, Beat::Send);
        assert_eq!(h.poll(t0 + 350 * MS, t0, true).0, Beat::Wait);
        assert_eq!(h.poll(t0 + 400 * MS, t0, true).0, Beat::Send);
        // Silence after a beat is still the dead-link verdict.
        let mut h = Liveness::new(200 * MS, 100 * MS, t0).even_when_busy(true);
        assert_eq!(h.poll(t0 + 200 * MS, t0, false).0, Beat::Send);
        assert_eq!(h.poll(t0 + 300 * MS, t0, false).0, Beat::Dead);
    }

    #[test]
    fn any_inbound_frame_answers_the_heartbeat() {
        let t0 = Instant::now();
        let mut h = Liveness::new(200 * MS, 100 * MS, t0);
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
        let mut h = Liveness::new(200 * MS, 100 * MS, t0);
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
        let mut h = Liveness::new(200 * MS, 100 * MS, t0);
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
        let mut h = Liveness::new(interval, timeout, t0);
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

    /// Drives the machine the way the ticker does (waking only at the
    /// deadlines it returns) against a server that answers every heartbeat
    /// after `rtt`. Returns the times heartbeats went out within `window`.
    fn beats_against_an_echo(
        interval: Duration,
        timeout: Duration,
        rtt: Duration,
        window: Duration,
    ) -> Vec<Duration> {
        let t0 = Instant::now();
        let mut h = Liveness::new(interval, timeout, t0);
        let mut replies: Vec<Instant> = Vec::new();
        let mut sent = Vec::new();
        let mut now = t0;
        while now < t0 + window {
            let last_inbound = replies
                .iter()
                .copied()
                .filter(|r| *r <= now)
                .max()
                .unwrap_or(t0);
            let (beat, next) = h.poll(now, last_inbound, false);
            match beat {
                Beat::Send => {
                    sent.push(now - t0);
                    replies.push(now + rtt);
                }
                Beat::Dead => panic!("an answered link was declared dead at {:?}", now - t0),
                Beat::Wait => {}
            }
            assert!(next > now, "the ticker must sleep between deadlines");
            now = next;
        }
        sent
    }

    /// Each beat goes out one interval after the reply to the previous one.
    fn assert_cadence(interval: Duration, timeout: Duration) {
        let rtt = 5 * MS;
        let sent = beats_against_an_echo(interval, timeout, rtt, 1500 * MS);
        let expected = 1500 / (interval + rtt).as_millis() as usize;
        assert!(
            sent.len() >= expected,
            "interval {interval:?}, timeout {timeout:?}: {} beats, expected {expected}: {sent:?}",
            sent.len()
        );
        for pair in sent.windows(2) {
            assert_eq!(pair[1] - pair[0], interval + rtt, "{sent:?}");
        }
    }

    #[test]
    fn the_cadence_is_the_interval_when_the_timeout_is_longer() {
        // node-ws-echo as seen: 100 ms heartbeat, 1 s reply timeout.
        assert_cadence(100 * MS, 1000 * MS);
    }

    #[test]
    fn the_cadence_is_the_interval_when_interval_and_timeout_are_equal() {
        assert_cadence(100 * MS, 100 * MS);
    }

    #[test]
    fn the_cadence_is_the_interval_when_the_timeout_is_shorter() {
        assert_cadence(100 * MS, 30 * MS);
    }

    #[test]
    fn a_link_that_goes_silent_is_dead_within_interval_plus_timeout_for_every_ratio() {
        for (interval, timeout) in [
            (100 * MS, 1000 * MS),
            (100 * MS, 100 * MS),
            (100 * MS, 30 * MS),
        ] {
            let t0 = Instant::now();
            let mut h = Liveness::new(interval, timeout, t0);
            let silence = t0 + 37 * MS;
            let mut now = t0;
            let mut beats = 0;
            let dead_at = loop {
                let (beat, next) = h.poll(now, silence.min(now), false);
                match beat {
                    Beat::Dead => break now,
                    Beat::Send => beats += 1,
                    Beat::Wait => {}
                }
                now = next;
            };
            assert!(
                dead_at <= silence + interval + timeout,
                "{interval:?}/{timeout:?}: dead {:?} after the silence",
                dead_at - silence
            );
            assert!(
                dead_at >= silence + timeout,
                "{interval:?}/{timeout:?}: declared dead too early"
            );
            assert_eq!(beats, 1, "one unanswered heartbeat, then the verdict");
        }
    }
}
