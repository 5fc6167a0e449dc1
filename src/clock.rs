//! The boot-time clock (`CLOCK_BOOTTIME`): like the monotonic clock, but it
//! keeps counting while the device is suspended. Read through rustix (no
//! unsafe code in heartline).

use std::time::Duration;

/// Time since boot, suspended time included.
pub(crate) fn boot_now() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
    Duration::new(
        u64::try_from(t.tv_sec).unwrap_or(0),
        u32::try_from(t.tv_nsec).unwrap_or(0),
    )
}
