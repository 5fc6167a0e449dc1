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
