//! Noticing a network change at once ([`crate::ClientBuilder::watch_network`]):
//! one routing netlink socket per client, subscribed to the kernel's link,
//! address and route notifications.
//!
//! No thread of its own, and no timer: the socket is one more file
//! descriptor in the waits that are there anyway. The io thread waits on it
//! beside the connection's socket and ends the connection when its link or
//! its address goes away ([`Watcher::lost`]); the supervisor waits on it
//! between attempts and makes the next one at once when a link, an address
//! or a default route appears ([`Watcher::read`]). The kernel only speaks
//! when the network changes, so an idle connection is not woken.

use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Mutex;

use rustix::fd::OwnedFd;
use rustix::io::Errno;
use rustix::net::{RecvFlags, SocketFlags};

use crate::connect::netlink::{self, Network};
use crate::error::lock;

/// `RTMGRP_LINK`, `RTMGRP_IPV4_IFADDR`, `RTMGRP_IPV4_ROUTE`,
/// `RTMGRP_IPV6_IFADDR`, `RTMGRP_IPV6_ROUTE`.
const GROUPS: u32 = 0x1 | 0x10 | 0x40 | 0x100 | 0x400;

/// The subscription, and the network as it last told.
pub(crate) struct Watcher {
    fd: OwnedFd,
    net: Mutex<Network>,
}

/// The link and the address one open connection goes out from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Uses {
    index: u32,
    name: String,
    addr: IpAddr,
}

impl Uses {
    /// The interface's name.
    pub(crate) fn interface(&self) -> &str {
        &self.name
    }
}

impl Watcher {
    /// Subscribes, then reads the network as it is. In that order, so no
    /// change falls between the two: one that does is read twice, which
    /// [`Network::apply`] takes as no news.
    pub(crate) fn new() -> io::Result<Watcher> {
        let fd = netlink::socket(SocketFlags::NONBLOCK)?;
        rustix::net::bind(
            &fd,
            &rustix::net::netlink::SocketAddrNetlink::new(0, GROUPS),
        )?;
        let net = netlink::dump(true)?;
        Ok(Watcher {
            fd,
            net: Mutex::new(net),
        })
    }

    /// What a wait registers.
    pub(crate) fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Reads every notification the kernel has queued; `true` when one
    /// brought something that was not there (a link up, a usable address,
    /// a default route). When the kernel had to drop notifications (its
    /// queue for the socket was full), a fresh dump takes their place.
    pub(crate) fn read(&self) -> bool {
        let mut buf = [0u8; 8 << 10];
        let mut net = lock(&self.net);
        let mut appeared = false;
        loop {
            match rustix::net::recv(&self.fd, &mut buf[..], RecvFlags::DONTWAIT) {
                Ok((n, _)) if n > 0 => {
                    for m in netlink::messages(&buf[..n.min(buf.len())]) {
                        appeared |= net.apply(m);
                    }
                }
                Err(Errno::INTR) => {}
                Err(Errno::NOBUFS) => match netlink::dump(true) {
                    Ok(fresh) => appeared |= net.replace(fresh),
                    Err(e) => log::debug!("network changes missed, and no dump: {e}"),
                },
                // Empty for now (or a socket error: the next wait tells).
                _ => return appeared,
            }
        }
    }

    /// The link a connection from `local` goes out on; `None` when no
    /// link has that address (a tunnel the kernel does not list, say):
    /// then its loss is left to the heartbeat.
    pub(crate) fn uses(&self, local: IpAddr) -> Option<Uses> {
        let net = lock(&self.net);
        let (index, name) = net.link_of(local)?;
        Some(Uses {
            index,
            name: name.to_owned(),
            addr: local,
        })
    }

    /// Each interface: up or not, and whether it has a usable address.
    pub(crate) fn links(&self) -> Vec<crate::connect::netlink::Link> {
        lock(&self.net).links()
    }

    /// Why the connection that `uses` can no longer carry on, if so: its
    /// link went down or away, or its address was removed.
    pub(crate) fn lost(&self, uses: &Uses) -> Option<String> {
        lock(&self.net).lost(uses.index, &uses.name, uses.addr)
    }
}

impl std::fmt::Debug for Watcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watcher").field("fd", &self.fd()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loopback_connection_is_on_lo_and_not_lost() {
        let w = Watcher::new().expect("a routing netlink subscription");
        let uses = w.uses("127.0.0.1".parse().unwrap()).expect("lo has it");
        assert_eq!(uses.name, "lo");
        assert_eq!(w.lost(&uses), None);
        assert_eq!(w.uses("192.0.2.1".parse().unwrap()), None, "not ours");
        // Nothing queued: no news, no wait.
        let _ = w.read();
    }
}
