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

/// One interface as the kernel reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Link {
    pub name: String,
    /// Administratively up and with a carrier (`IFF_UP`, `IFF_RUNNING`).
    pub up: bool,
    /// Has at least one IPv4 or IPv6 address.
    pub addressed: bool,
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
/// address, from the kernel's routing netlink (two dumps: links, then
/// addresses). An address of link scope (`fe80::/10`, `169.254/16`) does
/// not count: no server is reached from it.
pub(crate) fn links() -> io::Result<Vec<Link>> {
    use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType};
    let fd = rustix::net::socket_with(
        AddressFamily::NETLINK,
        SocketType::RAW,
        SocketFlags::CLOEXEC,
        None, // NETLINK_ROUTE
    )?;
    let mut links: Vec<(u32, Link)> = Vec::new();
    let mut buf = vec![0u8; 32 << 10];
    for (kind, body_len) in [(RTM_GETLINK, 16), (RTM_GETADDR, 8)] {
        rustix::net::send(&fd, &dump_request(kind, body_len), SendFlags::empty())?;
        'dump: loop {
            let (n, _) = rustix::net::recv(&fd, &mut buf[..], RecvFlags::empty())?;
            let msgs = messages(&buf[..n.min(buf.len())]);
            if msgs.is_empty() {
                // Nothing readable: waiting for a Done that may never
                // come would hold the attempt.
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "unreadable routing netlink answer",
                ));
            }
            for msg in msgs {
                match msg {
                    Msg::Done => break 'dump,
                    Msg::Error(code) => return Err(io::Error::from_raw_os_error(code)),
                    Msg::Link { index, name, up } => links.push((
                        index,
                        Link {
                            name,
                            up,
                            addressed: false,
                        },
                    )),
                    Msg::Address { index, usable } => {
                        if let Some((_, l)) = links.iter_mut().find(|(i, _)| *i == index) {
                            l.addressed |= usable;
                        }
                    }
                }
            }
        }
    }
    Ok(links.into_iter().map(|(_, l)| l).collect())
}

const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const RTM_NEWLINK: u16 = 16;
const RTM_GETLINK: u16 = 18;
const RTM_NEWADDR: u16 = 20;
const RTM_GETADDR: u16 = 22;
const IFLA_IFNAME: u16 = 3;
/// `IFF_UP | IFF_RUNNING`: up, with a carrier.
const UP_RUNNING: u32 = 0x1 | 0x40;
/// `RT_SCOPE_LINK`.
const SCOPE_LINK: u8 = 253;

/// A dump request: `nlmsghdr` and a zeroed body of `body_len` bytes.
fn dump_request(kind: u16, body_len: usize) -> Vec<u8> {
    let len = 16 + body_len;
    let mut req = Vec::with_capacity(len);
    req.extend((len as u32).to_ne_bytes());
    req.extend(kind.to_ne_bytes());
    // NLM_F_REQUEST | NLM_F_DUMP
    req.extend(0x0301u16.to_ne_bytes());
    req.extend(1u32.to_ne_bytes()); // sequence
    req.extend(0u32.to_ne_bytes()); // port: the kernel answers to ours
    req.resize(len, 0);
    req
}

/// What a netlink message of a dump says, reduced to what binding needs.
#[derive(Debug, PartialEq, Eq)]
enum Msg {
    Done,
    Error(i32),
    Link { index: u32, name: String, up: bool },
    Address { index: u32, usable: bool },
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// The messages in one datagram; a truncated or malformed one ends it.
fn messages(mut b: &[u8]) -> Vec<Msg> {
    let mut out = Vec::new();
    while let (Some(len), Some(kind)) = (u32_at(b, 0), u16_at(b, 4)) {
        let len = len as usize;
        let Some(msg) = b.get(16..len.max(16)) else {
            break;
        };
        match kind {
            NLMSG_DONE => out.push(Msg::Done),
            NLMSG_ERROR => {
                let code = u32_at(msg, 0).map_or(0, |c| c as i32);
                out.push(if code == 0 {
                    Msg::Done
                } else {
                    Msg::Error(-code)
                });
            }
            RTM_NEWLINK => {
                // ifinfomsg: family, pad, type (u16), index (i32), flags (u32),
                // change (u32); then attributes.
                if let (Some(index), Some(flags)) = (u32_at(msg, 4), u32_at(msg, 8)) {
                    let name = attribute(msg.get(16..).unwrap_or(&[]), IFLA_IFNAME).map(|v| {
                        String::from_utf8_lossy(v.split(|&c| c == 0).next().unwrap_or(v))
                            .into_owned()
                    });
                    if let Some(name) = name {
                        out.push(Msg::Link {
                            index,
                            name,
                            up: flags & UP_RUNNING == UP_RUNNING,
                        });
                    }
                }
            }
            RTM_NEWADDR => {
                // ifaddrmsg: family, prefix length, flags, scope (u8 each),
                // index (u32).
                if let (Some(&scope), Some(index)) = (msg.get(3), u32_at(msg, 4)) {
                    out.push(Msg::Address {
                        index,
                        usable: scope != SCOPE_LINK,
                    });
                }
            }
            _ => {}
        }
        // Messages are 4-byte aligned.
        let next = (len + 3) & !3;
        if next == 0 || next > b.len() {
            break;
        }
        b = &b[next..];
    }
    out
}

/// The value of the first attribute of type `kind` in `attrs` (`rtattr`:
/// length u16, type u16, value, 4-byte aligned).
fn attribute(mut attrs: &[u8], kind: u16) -> Option<&[u8]> {
    while let (Some(len), Some(t)) = (u16_at(attrs, 0), u16_at(attrs, 2)) {
        let len = len as usize;
        if len < 4 {
            return None;
        }
        if t == kind {
            return attrs.get(4..len);
        }
        attrs = attrs.get((len + 3) & !3..)?;
    }
    None
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

    /// One `nlmsghdr` of `kind` around `body`, padded to 4 bytes.
    fn nl(kind: u16, body: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend(((16 + body.len()) as u32).to_ne_bytes());
        m.extend(kind.to_ne_bytes());
        m.extend([0; 10]);
        m.extend(body);
        while m.len() % 4 != 0 {
            m.push(0);
        }
        m
    }

    #[test]
    fn links_and_addresses_are_read_from_a_dump_and_junk_ends_it() {
        let mut link = Vec::new();
        link.extend([0, 0, 0, 0]); // family, pad, type
        link.extend(7u32.to_ne_bytes()); // index
        link.extend((0x1u32 | 0x40).to_ne_bytes()); // up, running
        link.extend(0u32.to_ne_bytes());
        link.extend(10u16.to_ne_bytes()); // rtattr: len 10 (4 + "wan0\0" + pad)
        link.extend(IFLA_IFNAME.to_ne_bytes());
        link.extend(b"wan0\0\0\0\0");
        let mut addr = vec![10, 64, 0, SCOPE_LINK];
        addr.extend(7u32.to_ne_bytes());
        let mut dgram = nl(RTM_NEWLINK, &link);
        dgram.extend(nl(RTM_NEWADDR, &addr));
        dgram.extend(nl(NLMSG_DONE, &[0; 4]));
        assert_eq!(
            messages(&dgram),
            [
                Msg::Link {
                    index: 7,
                    name: "wan0".into(),
                    up: true
                },
                Msg::Address {
                    index: 7,
                    usable: false
                },
                Msg::Done
            ]
        );
        // A length past the end, or too short to hold a header: no panic,
        // and nothing after it.
        let mut bad = nl(RTM_NEWADDR, &addr);
        bad[0] = 200;
        assert!(messages(&bad).is_empty());
        assert!(messages(&[1, 2, 3]).is_empty());
        let mut err = nl(NLMSG_ERROR, &(-1i32).to_ne_bytes());
        err.extend(nl(NLMSG_DONE, &[]));
        assert_eq!(messages(&err)[0], Msg::Error(1));
    }

    #[test]
    fn the_loopback_interface_is_listed_as_up_with_an_address() {
        let links = links().expect("getifaddrs");
        assert!(
            links.iter().any(|l| l.name == "lo" && l.up && l.addressed),
            "{links:?}"
        );
    }
}
