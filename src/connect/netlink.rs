//! The kernel's routing netlink, read by hand: only the few messages
//! heartline needs (links, addresses, default routes), parsed from bytes
//! with bounds checked everywhere, so a truncated or odd message ends a
//! datagram instead of a panic. A crate for it (neli, netlink-packet-route)
//! would cost more code on the device than this whole file.
//!
//! [`dump`] asks for the state as it is now; [`Network`] keeps that state
//! and applies the kernel's later notifications to it
//! ([`crate::connect::watch`]).

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use rustix::buffer::spare_capacity;
use rustix::fd::OwnedFd;
use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType};

const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_GETLINK: u16 = 18;
const RTM_NEWADDR: u16 = 20;
const RTM_DELADDR: u16 = 21;
const RTM_GETADDR: u16 = 22;
const RTM_NEWROUTE: u16 = 24;
const RTM_DELROUTE: u16 = 25;
const RTM_GETROUTE: u16 = 26;
const IFLA_IFNAME: u16 = 3;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const RTA_OIF: u16 = 4;
const RTA_TABLE: u16 = 15;
/// `IFF_UP | IFF_RUNNING`: up, with a carrier.
const UP_RUNNING: u32 = 0x1 | 0x40;
/// `RT_SCOPE_LINK`.
const SCOPE_LINK: u8 = 253;
/// `RT_TABLE_MAIN`.
const TABLE_MAIN: u32 = 254;
/// `RTN_UNICAST`.
const UNICAST: u8 = 1;
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;

/// A routing netlink socket (`NETLINK_ROUTE`).
pub(crate) fn socket(flags: SocketFlags) -> io::Result<OwnedFd> {
    Ok(rustix::net::socket_with(
        AddressFamily::NETLINK,
        SocketType::RAW,
        flags | SocketFlags::CLOEXEC,
        None, // NETLINK_ROUTE
    )?)
}

/// The device's interfaces, addresses and (with `routes`) default routes
/// as they are now: one dump of each.
pub(crate) fn dump(routes: bool) -> io::Result<Network> {
    let fd = socket(SocketFlags::empty())?;
    let mut net = Network::default();
    // Written by the kernel, never zeroed by us: only the pages an answer
    // fills are touched (a dump is a few KiB; the room is the kernel's
    // largest dump message, 32 KiB).
    let mut buf = Vec::with_capacity(32 << 10);
    let kinds: &[(u16, usize)] = match routes {
        true => &[(RTM_GETLINK, 16), (RTM_GETADDR, 8), (RTM_GETROUTE, 12)],
        false => &[(RTM_GETLINK, 16), (RTM_GETADDR, 8)],
    };
    for &(kind, body_len) in kinds {
        rustix::net::send(&fd, &dump_request(kind, body_len), SendFlags::empty())?;
        'dump: loop {
            buf.clear();
            rustix::net::recv(&fd, spare_capacity(&mut buf), RecvFlags::empty())?;
            let msgs = messages(&buf);
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
                    m => {
                        net.apply(m);
                    }
                }
            }
        }
    }
    Ok(net)
}

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

/// What one netlink message says, reduced to what heartline needs.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Msg {
    Done,
    Error(i32),
    /// A link is there (`gone`: it was removed).
    Link {
        index: u32,
        name: String,
        up: bool,
        gone: bool,
    },
    /// An address of a link (`gone`: it was removed).
    Address {
        index: u32,
        addr: IpAddr,
        /// Not of link scope (`fe80::/10`, `169.254/16`): a server can be
        /// reached from it.
        usable: bool,
        gone: bool,
    },
    /// A default route of the main table, out of link `oif` (0: several).
    Default {
        family: u8,
        oif: u32,
        gone: bool,
    },
    /// Well-formed, but nothing heartline needs (another route, say).
    Other,
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// The messages in one datagram; a truncated or malformed one ends it.
pub(crate) fn messages(mut b: &[u8]) -> Vec<Msg> {
    let mut out = Vec::new();
    while let (Some(len), Some(kind)) = (u32_at(b, 0), u16_at(b, 4)) {
        let len = len as usize;
        let Some(msg) = b.get(16..len.max(16)) else {
            break;
        };
        out.push(message(kind, msg).unwrap_or(Msg::Other));
        // Messages are 4-byte aligned.
        let next = (len + 3) & !3;
        if next == 0 || next > b.len() {
            break;
        }
        b = &b[next..];
    }
    out
}

/// One message's body, by its type.
fn message(kind: u16, msg: &[u8]) -> Option<Msg> {
    match kind {
        NLMSG_DONE => Some(Msg::Done),
        NLMSG_ERROR => Some(match u32_at(msg, 0).map_or(0, |c| c as i32) {
            0 => Msg::Done,
            code => Msg::Error(-code),
        }),
        RTM_NEWLINK | RTM_DELLINK => {
            // ifinfomsg: family, pad, type (u16), index (i32), flags (u32),
            // change (u32); then attributes.
            let (index, flags) = (u32_at(msg, 4)?, u32_at(msg, 8)?);
            let name = attribute(msg.get(16..)?, IFLA_IFNAME)?;
            let name = name.split(|&c| c == 0).next().unwrap_or(name);
            Some(Msg::Link {
                index,
                name: String::from_utf8_lossy(name).into_owned(),
                up: flags & UP_RUNNING == UP_RUNNING,
                gone: kind == RTM_DELLINK,
            })
        }
        RTM_NEWADDR | RTM_DELADDR => {
            // ifaddrmsg: family, prefix length, flags, scope (u8 each),
            // index (u32); then attributes. IFA_LOCAL is the device's own
            // address where it differs from IFA_ADDRESS (a point-to-point
            // link's peer, as on many LTE modems).
            let (family, scope, index) = (*msg.first()?, *msg.get(3)?, u32_at(msg, 4)?);
            let attrs = msg.get(8..)?;
            let raw = attribute(attrs, IFA_LOCAL).or_else(|| attribute(attrs, IFA_ADDRESS))?;
            Some(Msg::Address {
                index,
                addr: ip(family, raw)?,
                usable: scope != SCOPE_LINK,
                gone: kind == RTM_DELADDR,
            })
        }
        RTM_NEWROUTE | RTM_DELROUTE => {
            // rtmsg: family, dst_len, src_len, tos, table, protocol, scope,
            // type (u8 each), flags (u32); then attributes.
            let (family, dst_len, table, kind8) =
                (*msg.first()?, *msg.get(1)?, *msg.get(4)?, *msg.get(7)?);
            let attrs = msg.get(12..)?;
            let table = attribute(attrs, RTA_TABLE)
                .and_then(|t| u32_at(t, 0))
                .unwrap_or(u32::from(table));
            if dst_len != 0 || table != TABLE_MAIN || kind8 != UNICAST {
                return None;
            }
            Some(Msg::Default {
                family,
                oif: attribute(attrs, RTA_OIF)
                    .and_then(|o| u32_at(o, 0))
                    .unwrap_or(0),
                gone: kind == RTM_DELROUTE,
            })
        }
        _ => None,
    }
}

/// An address attribute's bytes, by family.
fn ip(family: u8, raw: &[u8]) -> Option<IpAddr> {
    match family {
        AF_INET => Some(IpAddr::V4(Ipv4Addr::from(
            <[u8; 4]>::try_from(raw.get(..4)?).ok()?,
        ))),
        AF_INET6 => Some(IpAddr::V6(Ipv6Addr::from(
            <[u8; 16]>::try_from(raw.get(..16)?).ok()?,
        ))),
        _ => None,
    }
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

/// One interface as the kernel reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Link {
    pub name: String,
    /// Administratively up and with a carrier (`IFF_UP`, `IFF_RUNNING`).
    pub up: bool,
    /// Has at least one IPv4 or IPv6 address.
    pub addressed: bool,
}

/// The device's network as the kernel last told it: links, addresses,
/// default routes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Network {
    /// Index, name, up (with a carrier).
    links: Vec<(u32, String, bool)>,
    /// Link index, address, usable (not of link scope).
    addrs: Vec<(u32, IpAddr, bool)>,
    /// Family and output link of each default route.
    defaults: Vec<(u8, u32)>,
}

impl Network {
    /// Takes in one message; `true` when it brought something a connection
    /// could use that was not there: a link came up, a usable address or a
    /// default route was added. A notification that repeats what is known
    /// (wifi drivers send link messages all the time; router advertisements
    /// refresh addresses and routes) brings nothing.
    pub(crate) fn apply(&mut self, m: Msg) -> bool {
        match m {
            Msg::Link {
                index,
                name,
                up,
                gone,
            } => {
                let was = self.links.iter().position(|l| l.0 == index);
                let was_up = was.is_some_and(|i| self.links[i].2);
                if let Some(i) = was {
                    self.links.swap_remove(i);
                }
                if gone {
                    self.addrs.retain(|a| a.0 != index);
                    return false;
                }
                self.links.push((index, name, up));
                up && !was_up
            }
            Msg::Address {
                index,
                addr,
                usable,
                gone,
            } => {
                let known = self.addrs.iter().any(|a| a.0 == index && a.1 == addr);
                self.addrs.retain(|a| !(a.0 == index && a.1 == addr));
                if gone {
                    return false;
                }
                self.addrs.push((index, addr, usable));
                usable && !known
            }
            Msg::Default { family, oif, gone } => {
                let known = self.defaults.contains(&(family, oif));
                self.defaults.retain(|d| *d != (family, oif));
                if gone {
                    return false;
                }
                self.defaults.push((family, oif));
                !known
            }
            Msg::Done | Msg::Error(_) | Msg::Other => false,
        }
    }

    /// Takes in a fresh dump (after missed notifications); `true` when it
    /// has something usable this one did not.
    pub(crate) fn replace(&mut self, fresh: Network) -> bool {
        let new = fresh.links.iter().any(|l| l.2 && !self.up(l.0))
            || fresh
                .addrs
                .iter()
                .any(|a| a.2 && !self.addrs.iter().any(|b| (b.0, b.1) == (a.0, a.1)))
            || fresh.defaults.iter().any(|d| !self.defaults.contains(d));
        *self = fresh;
        new
    }

    fn up(&self, index: u32) -> bool {
        self.links.iter().any(|l| l.0 == index && l.2)
    }

    /// The link an address is on, and its name.
    pub(crate) fn link_of(&self, addr: IpAddr) -> Option<(u32, &str)> {
        let index = self.addrs.iter().find(|a| a.1 == addr)?.0;
        let name = self.links.iter().find(|l| l.0 == index)?.1.as_str();
        Some((index, name))
    }

    /// Why a connection from `addr` on link `index` cannot carry on, if
    /// it cannot: the link went down or away, or the address was removed.
    pub(crate) fn lost(&self, index: u32, name: &str, addr: IpAddr) -> Option<String> {
        if !self.up(index) {
            return Some(format!("interface {name} went down (or lost its carrier)"));
        }
        if !self.addrs.iter().any(|a| a.0 == index && a.1 == addr) {
            return Some(format!("address {addr} was removed from {name}"));
        }
        None
    }

    /// Each link: up or not, and whether it has a usable address.
    pub(crate) fn links(&self) -> Vec<Link> {
        self.links
            .iter()
            .map(|(index, name, up)| Link {
                name: name.clone(),
                up: *up,
                addressed: self.addrs.iter().any(|a| a.0 == *index && a.2),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    fn rtattr(kind: u16, value: &[u8]) -> Vec<u8> {
        let mut a = Vec::new();
        a.extend(((4 + value.len()) as u16).to_ne_bytes());
        a.extend(kind.to_ne_bytes());
        a.extend(value);
        while a.len() % 4 != 0 {
            a.push(0);
        }
        a
    }

    fn link_body(index: u32, flags: u32, name: &str) -> Vec<u8> {
        let mut b = vec![0, 0, 0, 0]; // family, pad, type
        b.extend(index.to_ne_bytes());
        b.extend(flags.to_ne_bytes());
        b.extend(0u32.to_ne_bytes());
        b.extend(rtattr(IFLA_IFNAME, format!("{name}\0").as_bytes()));
        b
    }

    fn addr_body(index: u32, scope: u8, ip: [u8; 4]) -> Vec<u8> {
        let mut b = vec![AF_INET, 24, 0, scope];
        b.extend(index.to_ne_bytes());
        b.extend(rtattr(IFA_ADDRESS, &[10, 0, 0, 255]));
        b.extend(rtattr(IFA_LOCAL, &ip));
        b
    }

    fn route_body(dst_len: u8, table: u8, oif: u32) -> Vec<u8> {
        let mut b = vec![AF_INET, dst_len, 0, 0, table, 3, 0, UNICAST];
        b.extend(0u32.to_ne_bytes());
        b.extend(rtattr(RTA_OIF, &oif.to_ne_bytes()));
        b
    }

    #[test]
    fn links_addresses_and_default_routes_are_read_and_junk_ends_it() {
        let mut dgram = nl(RTM_NEWLINK, &link_body(7, UP_RUNNING, "wan0"));
        dgram.extend(nl(RTM_NEWADDR, &addr_body(7, 0, [10, 0, 0, 2])));
        dgram.extend(nl(RTM_DELADDR, &addr_body(7, SCOPE_LINK, [169, 254, 1, 1])));
        dgram.extend(nl(RTM_NEWROUTE, &route_body(0, 254, 7)));
        // Not a default route, and not the main table: skipped.
        dgram.extend(nl(RTM_NEWROUTE, &route_body(24, 254, 7)));
        dgram.extend(nl(RTM_NEWROUTE, &route_body(0, 255, 7)));
        dgram.extend(nl(NLMSG_DONE, &[0; 4]));
        assert_eq!(
            messages(&dgram),
            [
                Msg::Link {
                    index: 7,
                    name: "wan0".into(),
                    up: true,
                    gone: false
                },
                Msg::Address {
                    index: 7,
                    addr: "10.0.0.2".parse().unwrap(),
                    usable: true,
                    gone: false
                },
                Msg::Address {
                    index: 7,
                    addr: "169.254.1.1".parse().unwrap(),
                    usable: false,
                    gone: true
                },
                Msg::Default {
                    family: AF_INET,
                    oif: 7,
                    gone: false
                },
                Msg::Other,
                Msg::Other,
                Msg::Done
            ]
        );
        // A length past the end, or too short to hold a header: no panic,
        // and nothing after it.
        let mut bad = nl(RTM_NEWADDR, &addr_body(7, 0, [10, 0, 0, 2]));
        bad[0] = 200;
        assert!(messages(&bad).is_empty());
        assert!(messages(&[1, 2, 3]).is_empty());
        // A body cut short: not misread.
        let short = nl(RTM_NEWADDR, &addr_body(7, 0, [10, 0, 0, 2])[..10]);
        assert_eq!(messages(&short), [Msg::Other]);
        let mut err = nl(NLMSG_ERROR, &(-1i32).to_ne_bytes());
        err.extend(nl(NLMSG_DONE, &[]));
        assert_eq!(messages(&err)[0], Msg::Error(1));
    }

    fn link(index: u32, up: bool, gone: bool) -> Msg {
        Msg::Link {
            index,
            name: format!("if{index}"),
            up,
            gone,
        }
    }

    fn addr(index: u32, ip: &str, gone: bool) -> Msg {
        Msg::Address {
            index,
            addr: ip.parse().unwrap(),
            usable: true,
            gone,
        }
    }

    #[test]
    fn only_what_was_not_there_counts_as_appeared() {
        let mut n = Network::default();
        assert!(n.apply(link(2, true, false)), "a new link, up");
        assert!(
            !n.apply(link(2, true, false)),
            "the same again (wifi chatter)"
        );
        assert!(!n.apply(link(3, false, false)), "a link that is down");
        assert!(n.apply(link(3, true, false)), "it came up");
        assert!(n.apply(addr(2, "10.0.0.2", false)));
        assert!(!n.apply(addr(2, "10.0.0.2", false)), "a lifetime refresh");
        let ll = Msg::Address {
            index: 2,
            addr: "fe80::1".parse().unwrap(),
            usable: false,
            gone: false,
        };
        assert!(!n.apply(ll), "link scope reaches no server");
        let default = |gone| Msg::Default {
            family: AF_INET,
            oif: 2,
            gone,
        };
        assert!(n.apply(default(false)));
        assert!(!n.apply(default(false)));
        assert!(!n.apply(default(true)), "a route going is not news");
        assert!(n.apply(default(false)), "and coming back is");
    }

    #[test]
    fn a_connection_is_lost_with_its_link_or_its_address() {
        let mut n = Network::default();
        n.apply(link(2, true, false));
        n.apply(addr(2, "10.0.0.2", false));
        n.apply(link(3, true, false));
        n.apply(addr(3, "10.1.0.2", false));
        let ip = "10.0.0.2".parse().unwrap();
        assert_eq!(n.link_of(ip), Some((2, "if2")));
        assert_eq!(n.lost(2, "if2", ip), None);
        n.apply(addr(3, "10.1.0.2", true));
        assert_eq!(n.lost(2, "if2", ip), None, "another link's address");
        n.apply(link(2, false, false));
        assert!(n.lost(2, "if2", ip).unwrap().contains("if2 went down"));
        n.apply(link(2, true, false));
        assert_eq!(n.lost(2, "if2", ip), None);
        n.apply(addr(2, "10.0.0.2", true));
        assert!(n
            .lost(2, "if2", ip)
            .unwrap()
            .contains("10.0.0.2 was removed"));
        n.apply(addr(2, "10.0.0.2", false));
        n.apply(link(2, false, true));
        assert!(n.lost(2, "if2", ip).is_some(), "the link was deleted");
        assert_eq!(n.link_of(ip), None, "and its addresses with it");
    }

    #[test]
    fn a_fresh_dump_tells_what_was_missed() {
        let mut n = Network::default();
        n.apply(link(2, true, false));
        let mut fresh = n.clone();
        assert!(!n.replace(fresh.clone()));
        fresh.apply(addr(2, "10.0.0.2", false));
        assert!(n.replace(fresh.clone()));
        fresh.apply(link(2, false, false));
        assert!(!n.replace(fresh), "only losses");
    }

    #[test]
    fn the_loopback_interface_is_listed_as_up_with_an_address() {
        let net = dump(true).expect("a routing netlink dump");
        assert!(
            net.links()
                .iter()
                .any(|l| l.name == "lo" && l.up && l.addressed),
            "{net:?}"
        );
        assert_eq!(
            net.link_of("127.0.0.1".parse().unwrap()).map(|l| l.1),
            Some("lo")
        );
    }
}
