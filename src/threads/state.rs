//! `heartline-state` (only with `persistence.dir`): writes the ledger to
//! its file, at most once per `persistence.sync_every` and only after a
//! change, so an fsync on slow flash holds up neither the socket nor the
//! application. Started and stopped by the client handle.

use std::time::Instant;

use crossbeam_channel::Receiver;

use crate::durable::Ledger;

/// The thread's loop: one write per `sync_every` at most, only after a
/// change; a last write when `stop` closes.
pub(crate) fn run(ledger: &Ledger, stop: &Receiver<()>) {
    ledger.writer_running(true);
    let mut last: Option<Instant> = None;
    loop {
        crossbeam_channel::select! {
            recv(ledger.changes()) -> _ => {}
            recv(stop) -> _ => break,
        }
        if let Some(due) = last.map(|t| t + ledger.sync_every()) {
            // Wait out the interval; changes meanwhile join this write.
            if crossbeam_channel::select! {
                recv(stop) -> _ => true,
                recv(crossbeam_channel::at(due)) -> _ => false,
            } {
                break;
            }
        }
        ledger.write_now();
        last = Some(Instant::now());
    }
    ledger.writer_running(false);
    ledger.write_now();
}
