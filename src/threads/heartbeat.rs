//! The heartbeat ticker: one thread per open connection. It sleeps until
//! the next deadline the heartbeat machine gives (no fixed tick), so an idle
//! link costs one wake-up per heartbeat and one per timeout check.

use std::time::Instant;

use crossbeam_channel::{Receiver, RecvTimeoutError};
use log::{debug, warn};

use crate::clock::boot_now;
use crate::config::sections::Heartbeat;
use crate::delivery::inbox::Inflow;
use crate::machine::connection::Command;
use crate::machine::heartbeat::{Beat, Liveness, SuspendGap};
use crate::threads::Link;

pub(crate) fn run(hb: &Heartbeat, link: &Link, inflow: &Inflow, stop: &Receiver<()>) {
    let opened = link.opened();
    let mut machine =
        Liveness::new(hb.interval, hb.server_timeout, opened).even_when_busy(hb.even_when_busy);
    let mut next = opened + hb.interval;
    let mut suspend = SuspendGap::new(Instant::now(), boot_now());
    loop {
        match stop.recv_deadline(next) {
            Err(RecvTimeoutError::Timeout) => {}
            // Stop signal or the supervisor dropped the sender.
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
        }
        let now = Instant::now();
        let paused = inflow.is_paused();
        let gap = suspend.gap(now, boot_now());
        let (beat, at) = if gap > hb.interval {
            debug!("the device was suspended for {gap:?}: probing the link now");
            machine.resumed(now, paused)
        } else {
            machine.poll(now, link.last_inbound(), paused)
        };
        match beat {
            Beat::Wait => {}
            Beat::Send => {
                debug!("sending heartbeat");
                link.command(Command::Beat);
            }
            Beat::Dead => {
                warn!(
                    "no frame within {:?} after the heartbeat: link is dead (half-open)",
                    hb.server_timeout
                );
                link.command(Command::Dead);
                return;
            }
        }
        next = at;
    }
}
