//! Which uplink a connection goes out on, for a device with more than one
//! (ethernet and an LTE modem, say): [`crate::ClientBuilder::bind_interface`]
//! (`SO_BINDTODEVICE`; a list in order of preference, each attempt taking
//! the first interface that is up and has an address) and
//! [`crate::ClientBuilder::bind_address`] (the connection's local address).
//!
//! The choice is made at every attempt, so a reconnect after the preferred
//! link went down goes out over the next one, and the one after the
//! preferred link came back goes out over it again.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use socket2::{SockAddr, Socket};

use crate::connect::netlink::Link;
use crate::error::{BindProblem, ConnectionError};

/// What the configuration asks for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Binding {
    /// Interfaces in order of preference; empty: any.
    pub interfaces: Vec<String>,
    /// The local address; `None`: the kernel's choice.
    pub address: Option<IpAddr>,
}

/// What one attempt binds its socket to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Bound {
    /// The interface (`SO_BINDTODEVICE`).
    pub interface: Option<String>,
    /// The local address (`bind`, port 0).
    pub address: Option<IpAddr>,
}

impl Binding {
    /// The longest interface name Linux accepts (`IFNAMSIZ` less the NUL).
    pub(crate) const MAX_NAME: usize = 15;

    /// What this attempt binds to, from the interfaces there are now.
    pub(crate) fn choose(&self) -> Result<Bound, ConnectionError> {
        if self.interfaces.is_empty() {
            return Ok(Bound {
                interface: None,
                address: self.address,
            });
        }
        let links = links().map_err(|e| ConnectionError::Bind {
            to: self.interfaces.join(", "),
            problem: BindProblem::Other,
            reason: format!("cannot list the network interfaces: {e}"),
        })?;
        let interface = pick(&self.interfaces, &links)?;
        Ok(Bound {
            interface: Some(interface),
            address: self.address,
        })
    }
}

/// The first of `wanted` that is up and has an address.
pub(crate) fn pick(wanted: &[String], links: &[Link]) -> Result<String, ConnectionError> {
    let found = |w: &String| links.iter().find(|l| &l.name == w);
    if let Some(name) = wanted
        .iter()
        .find(|w| found(w).is_some_and(|l| l.up && l.addressed))
    {
        return Ok(name.clone());
    }
    let to = wanted.join(", ");
    if wanted.iter().all(|w| found(w).is_none()) {
        return Err(ConnectionError::Bind {
            reason: format!("no network interface named {to} on this device; `ip link` lists them"),
            to,
            problem: BindProblem::NoSuchInterface,
        });
    }
    let states: Vec<String> = wanted
        .iter()
        .map(|w| match found(w) {
            None => format!("{w}: no such interface"),
            Some(l) if !l.up => format!("{w}: down or no carrier"),
            Some(_) => format!("{w}: no address yet"),
        })
        .collect();
    Err(ConnectionError::Bind {
        reason: format!(
            "none of the interfaces is up with an address ({}); the next attempt \
             looks again (reconnect policy)",
            states.join("; ")
        ),
        to,
        problem: BindProblem::NoneUp,
    })
}

impl Bound {
    /// Binds a socket about to connect to `to`.
    pub(crate) fn apply(&self, s: &Socket, to: &SocketAddr) -> Result<(), ConnectionError> {
        if let Some(name) = &self.interface {
            s.bind_device(Some(name.as_bytes()))
                .map_err(|e| device_error(name, &e))?;
        }
        if let Some(ip) = self.address {
            if ip.is_ipv4() == to.is_ipv4() {
                s.bind(&SockAddr::from(SocketAddr::new(ip, 0)))
                    .map_err(|e| address_error(ip, &e))?;
            }
        }
        Ok(())
    }
}

/// When a connection over a less preferred interface moves back to a
/// preferred one that came back: once that one has been up with an address
/// for `after` without a break. A link that flaps does not move the
/// connection back and forth.
#[derive(Debug)]
pub(crate) struct MoveBack {
    /// The interfaces preferred over the one in use, best first.
    better: Vec<String>,
    after: Duration,
    /// The best of them that is up, and since when.
    since: Option<(String, Instant)>,
}

impl MoveBack {
    /// For a connection over `current`; `None` when no interface of
    /// `list` is preferred over it.
    pub(crate) fn new(list: &[String], current: &str, after: Duration) -> Option<MoveBack> {
        let at = list.iter().position(|n| n == current)?;
        (at > 0).then(|| MoveBack {
            better: list[..at].to_vec(),
            after,
            since: None,
        })
    }

    /// The interfaces as they are at `now`.
    pub(crate) fn seen(&mut self, links: &[Link], now: Instant) {
        let usable = |n: &&String| links.iter().any(|l| &l.name == *n && l.up && l.addressed);
        let best = self.better.iter().find(usable);
        self.since = match (best, self.since.take()) {
            (Some(n), Some((was, t))) if *n == was => Some((was, t)),
            (Some(n), _) => Some((n.clone(), now)),
            (None, _) => None,
        };
    }

    /// When [`MoveBack::ready`] may say yes.
    pub(crate) fn due(&self) -> Option<Instant> {
        self.since.as_ref().map(|(_, t)| *t + self.after)
    }

    /// Why to move now, if it is time.
    pub(crate) fn ready(&self, now: Instant) -> Option<String> {
        let (name, since) = self.since.as_ref()?;
        (now >= *since + self.after).then(|| {
            format!(
                "moving back to {name}, preferred, up for {:?}",
                now - *since
            )
        })
    }
}

/// `SO_BINDTODEVICE` failed on `name`: what it means and what to do.
pub(crate) fn device_error(name: &str, e: &io::Error) -> ConnectionError {
    let (problem, reason) = match e.raw_os_error() {
        Some(e)
            if e == rustix::io::Errno::PERM.raw_os_error()
                || e == rustix::io::Errno::ACCESS.raw_os_error() =>
        {
            (
                BindProblem::NotPermitted,
                format!(
                    "binding to an interface needs CAP_NET_RAW ({e}): give it to the binary \
                 (`setcap cap_net_raw+ep /path/to/app`) or to the service \
                 (systemd: `AmbientCapabilities=CAP_NET_RAW`), or bind to an address \
                 (`bind_address`), which needs no privilege"
                ),
            )
        }
        Some(e) if e == rustix::io::Errno::NODEV.raw_os_error() => (
            BindProblem::NoSuchInterface,
            format!("no network interface named {name} ({e}); `ip link` lists them"),
        ),
        _ => (BindProblem::Other, format!("SO_BINDTODEVICE failed: {e}")),
    };
    ConnectionError::Bind {
        to: name.to_owned(),
        problem,
        reason,
    }
}

/// `bind` to `ip` failed: what it means and what to do.
pub(crate) fn address_error(ip: IpAddr, e: &io::Error) -> ConnectionError {
    let (problem, reason) = match e.raw_os_error() {
        Some(e) if e == rustix::io::Errno::ADDRNOTAVAIL.raw_os_error() => (
            BindProblem::AddressNotLocal,
            format!(
                "{ip} is not an address of this device ({e}); `ip addr` lists them. An \
                 address a DHCP server hands out can change: `bind_interface` follows it"
            ),
        ),
        _ => (BindProblem::Other, format!("bind failed: {e}")),
    };
    ConnectionError::Bind {
        to: ip.to_string(),
        problem,
        reason,
    }
}

/// The device's interfaces, whether each is up, and whether it has an
/// address (of more than link scope: `fe80::/10` and `169.254/16` reach no
/// server), from the kernel's routing netlink.
pub(crate) fn links() -> io::Result<Vec<Link>> {
    Ok(crate::connect::netlink::dump(false)?.links())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(name: &str, up: bool, addressed: bool) -> Link {
        Link {
            name: name.into(),
            up,
            addressed,
        }
    }

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn the_first_interface_that_is_up_with_an_address_is_taken() {
        let links = [
            link("eth0", false, true),
            link("wwan0", true, false),
            link("wlan0", true, true),
        ];
        let got = pick(&names(&["eth0", "wwan0", "wlan0"]), &links);
        assert_eq!(got.ok().as_deref(), Some("wlan0"));
        let links = [link("eth0", true, true), link("wlan0", true, true)];
        let got = pick(&names(&["eth0", "wlan0"]), &links);
        assert_eq!(got.ok().as_deref(), Some("eth0"), "the preferred one");
    }

    #[test]
    fn a_preferred_interface_is_moved_back_to_once_it_stayed_up() {
        let list = names(&["eth0", "wwan0", "wlan0"]);
        let s = Duration::from_secs(1);
        let t0 = Instant::now();
        assert!(
            MoveBack::new(&list, "eth0", s).is_none(),
            "already the best"
        );
        assert!(MoveBack::new(&list, "usb0", s).is_none(), "not in the list");
        let mut m = MoveBack::new(&list, "wlan0", s).unwrap();
        m.seen(&[link("eth0", false, true), link("wlan0", true, true)], t0);
        assert_eq!((m.due(), m.ready(t0 + 10 * s)), (None, None));
        // wwan0 comes up: due after the hysteresis, not before.
        m.seen(&[link("wwan0", true, true)], t0 + s);
        assert_eq!(m.due(), Some(t0 + 2 * s));
        assert!(m.ready(t0 + s + s / 2).is_none());
        // The same news again does not restart the clock.
        m.seen(&[link("wwan0", true, true)], t0 + s + s / 2);
        assert!(m.ready(t0 + 2 * s).unwrap().contains("wwan0"));
        // It flaps: the clock starts again when it is back.
        m.seen(&[link("wwan0", false, true)], t0 + 2 * s);
        assert_eq!(m.due(), None);
        m.seen(&[link("wwan0", true, true)], t0 + 3 * s);
        assert!(m.ready(t0 + 3 * s).is_none());
        // An address is needed too; and the best one up is the one timed.
        m.seen(
            &[link("eth0", true, false), link("wwan0", true, true)],
            t0 + 3 * s,
        );
        assert_eq!(m.due(), Some(t0 + 4 * s));
        m.seen(
            &[link("eth0", true, true), link("wwan0", true, true)],
            t0 + 4 * s,
        );
        assert!(m.ready(t0 + 5 * s).unwrap().contains("eth0"));
    }

    #[test]
    fn none_up_and_none_there_are_different_errors() {
        let links = [link("eth0", false, true), link("wwan0", true, false)];
        match pick(&names(&["eth0", "wwan0", "nope"]), &links) {
            Err(ConnectionError::Bind {
                problem: BindProblem::NoneUp,
                reason,
                ..
            }) => {
                assert!(reason.contains("eth0: down or no carrier"), "{reason}");
                assert!(reason.contains("wwan0: no address yet"), "{reason}");
                assert!(reason.contains("nope: no such interface"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            pick(&names(&["nope"]), &links),
            Err(ConnectionError::Bind {
                problem: BindProblem::NoSuchInterface,
                ..
            })
        ));
    }

    #[test]
    fn a_refused_bind_says_what_to_do() {
        let e = device_error(
            "wwan0",
            &io::Error::from_raw_os_error(rustix::io::Errno::PERM.raw_os_error()),
        );
        assert!(matches!(
            &e,
            ConnectionError::Bind { problem: BindProblem::NotPermitted, to, .. } if to == "wwan0"
        ));
        assert!(e.to_string().contains("CAP_NET_RAW"), "{e}");
        let e = device_error(
            "nope",
            &io::Error::from_raw_os_error(rustix::io::Errno::NODEV.raw_os_error()),
        );
        assert!(matches!(
            e,
            ConnectionError::Bind {
                problem: BindProblem::NoSuchInterface,
                ..
            }
        ));
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let e = address_error(
            ip,
            &io::Error::from_raw_os_error(rustix::io::Errno::ADDRNOTAVAIL.raw_os_error()),
        );
        assert!(matches!(
            e,
            ConnectionError::Bind {
                problem: BindProblem::AddressNotLocal,
                ..
            }
        ));
    }
}
