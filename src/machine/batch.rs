//! When a batch is ready. Pure.

use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug)]
pub(crate) struct Window {
    pub window: Duration,
    pub max: usize,
}

impl Window {
    /// `None` when a batch whose first message arrived at `first` and that
    /// holds `len` messages must be handed out now; otherwise the moment it
    /// will be ready unless it fills up first.
    pub(crate) fn ready(&self, now: Instant, first: Instant, len: usize) -> Option<Instant> {
        let due = first + self.window;
        if len >= self.max || now >= due {
            None
        } else {
            Some(due)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_batch_waits_for_its_window_from_the_first_message() {
        let t0 = Instant::now();
        let w = Window {
            window: 50 * MS,
            max: 10,
        };
        assert_eq!(w.ready(t0 + 10 * MS, t0, 1), Some(t0 + 50 * MS));
        assert_eq!(w.ready(t0 + 50 * MS, t0, 1), None);
    }

    #[test]
    fn a_full_batch_is_ready_at_once() {
        let t0 = Instant::now();
        let w = Window {
            window: 50 * MS,
            max: 3,
        };
        assert_eq!(w.ready(t0, t0, 3), None);
    }

    #[test]
    fn a_zero_window_is_always_ready() {
        let t0 = Instant::now();
        let w = Window {
            window: Duration::ZERO,
            max: 3,
        };
        assert_eq!(w.ready(t0, t0, 1), None);
    }

    #[test]
    fn a_message_that_waited_in_the_queue_does_not_wait_again() {
        // a slow consumer comes back late: the window counts from arrival
        let t0 = Instant::now();
        let w = Window {
            window: 50 * MS,
            max: 10,
        };
        assert_eq!(w.ready(t0 + 500 * MS, t0, 1), None);
    }
}
