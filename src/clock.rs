//! The clocks besides `Instant`: the boot-time clock (`CLOCK_BOOTTIME`),
//! like the monotonic clock but counting while the device is suspended
//! (read through rustix: no unsafe code in heartline), and the wall clock,
//! read only for a `Retry-After` date.

use std::time::Duration;

/// Time since boot, suspended time included.
pub(crate) fn boot_now() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
    Duration::new(
        u64::try_from(t.tv_sec).unwrap_or(0),
        u32::try_from(t.tv_nsec).unwrap_or(0),
    )
}

/// Wall-clock seconds, read only to turn a `Retry-After` date into a wait.
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
