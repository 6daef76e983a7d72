//! Just enough of the kernel's ipset interface (`NETLINK_NETFILTER`,
//! subsystem `NFNL_SUBSYS_IPSET`) to keep `hash:ip` sets of IPv4 addresses:
//! create, flush, destroy, add, delete, and list the members with their
//! packet counters.
//!
//! Why by hand: the host firewall's per-runtime rules are static rules that
//! match a set (`iptables -m set`), so putting a runtime under them is one set
//! member, not a rule change. A member added over netlink costs a few
//! syscalls; the `ipset` tool (or `iptables-restore`) is a process per call
//! (≈5 ms, on create → ready's path) and is not even installed on most hosts.
//! No maintained crate speaks this protocol without linking libipset.
//! Message layouts are those of `<linux/netfilter/ipset/ip_set.h>` and
//! `<linux/netfilter/nfnetlink.h>`.

use std::io;
use std::net::Ipv4Addr;
use std::sync::Mutex;

use crate::netlink::{align4, Msg, Netlink, NLA_F_NESTED, NLA_F_NET_BYTEORDER};

const NFNL_SUBSYS_IPSET: u16 = 6;
/// The oldest protocol version every kernel since 3.x accepts.
const IPSET_PROTOCOL: u8 = 6;

const IPSET_CMD_CREATE: u16 = 2;
const IPSET_CMD_DESTROY: u16 = 3;
const IPSET_CMD_FLUSH: u16 = 4;
const IPSET_CMD_LIST: u16 = 7;
const IPSET_CMD_ADD: u16 = 9;
const IPSET_CMD_DEL: u16 = 10;

const IPSET_ATTR_PROTOCOL: u16 = 1;
const IPSET_ATTR_SETNAME: u16 = 2;
const IPSET_ATTR_TYPENAME: u16 = 3;
const IPSET_ATTR_REVISION: u16 = 4;
const IPSET_ATTR_FAMILY: u16 = 5;
const IPSET_ATTR_DATA: u16 = 7;
const IPSET_ATTR_ADT: u16 = 8;
const IPSET_ATTR_IP: u16 = 1;
const IPSET_ATTR_CADT_FLAGS: u16 = 8;
const IPSET_ATTR_BYTES: u16 = 24;
const IPSET_ATTR_PACKETS: u16 = 25;
const IPSET_ATTR_IPADDR_IPV4: u16 = 1;
const IPSET_FLAG_WITH_COUNTERS: u32 = 1 << 3;
/// `hash:ip` revision 1 is the first with counters; every later kernel
/// still accepts it.
const HASH_IP_REVISION: u8 = 1;
/// ipset's own error numbers start above this one.
const IPSET_ERR_PROTOCOL_BASE: i32 = 4096;

const ATTR_TYPE_MASK: u16 = !(NLA_F_NESTED | NLA_F_NET_BYTEORDER);

/// One member of a set and what its counters saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    pub ip: Ipv4Addr,
    pub packets: u64,
    pub bytes: u64,
}

/// A netlink socket to the host's ipset subsystem (one request at a time).
pub struct IpSets {
    nl: Mutex<Netlink>,
}

/// `struct nfgenmsg`: family, version (`NFNETLINK_V0`), resource id.
fn nfgenmsg() -> [u8; 4] {
    [libc::AF_INET as u8, 0, 0, 0]
}

fn ty(cmd: u16) -> u16 {
    (NFNL_SUBSYS_IPSET << 8) | cmd
}

fn named(name: &str) -> io::Result<Msg> {
    // IPSET_MAXNAMELEN is 32 with the NUL.
    if name.is_empty() || name.len() > 31 || name.contains('\0') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("ipset name {name:?}"),
        ));
    }
    let mut m = Msg::new(&nfgenmsg());
    m.attr(IPSET_ATTR_PROTOCOL, &[IPSET_PROTOCOL])
        .attr_str(IPSET_ATTR_SETNAME, name);
    Ok(m)
}

fn with_ip(mut m: Msg, ip: Ipv4Addr) -> Msg {
    m.begin(IPSET_ATTR_DATA)
        .begin(IPSET_ATTR_IP)
        .attr(IPSET_ATTR_IPADDR_IPV4 | NLA_F_NET_BYTEORDER, &ip.octets())
        .end()
        .end();
    m
}

/// The kernel answers ipset errors above 4096 (its own codes); name them.
fn explain(e: io::Error, what: &str) -> io::Error {
    match e.raw_os_error() {
        Some(c) if c > IPSET_ERR_PROTOCOL_BASE => io::Error::other(format!(
            "ipset {what}: kernel ipset error {c} (see <linux/netfilter/ipset/ip_set.h>)"
        )),
        Some(libc::EPROTONOSUPPORT) => io::Error::other(format!(
            "ipset {what}: the kernel has no ipset support (module ip_set)"
        )),
        _ => io::Error::new(e.kind(), format!("ipset {what}: {e}")),
    }
}

impl IpSets {
    pub fn open() -> io::Result<Self> {
        Ok(IpSets {
            nl: Mutex::new(Netlink::open_protocol(libc::NETLINK_NETFILTER)?),
        })
    }

    fn request(&self, cmd: u16, m: &Msg, what: &str) -> io::Result<()> {
        let mut nl = self.nl.lock().unwrap_or_else(|e| e.into_inner());
        // No NLM_F_EXCL: the kernel then treats "already there" (create,
        // add) and "not there" (delete) as done, which is what every caller
        // here wants.
        nl.request(ty(cmd), 0, m).map_err(|e| explain(e, what))
    }

    /// Creates an IPv4 `hash:ip` set with per-member counters; an existing
    /// set of that name and type is kept as it is.
    pub fn create(&self, name: &str) -> io::Result<()> {
        let mut m = named(name)?;
        m.attr_str(IPSET_ATTR_TYPENAME, "hash:ip")
            .attr(IPSET_ATTR_REVISION, &[HASH_IP_REVISION])
            .attr(IPSET_ATTR_FAMILY, &[libc::AF_INET as u8])
            .begin(IPSET_ATTR_DATA)
            .attr(
                IPSET_ATTR_CADT_FLAGS | NLA_F_NET_BYTEORDER,
                &IPSET_FLAG_WITH_COUNTERS.to_be_bytes(),
            )
            .end();
        self.request(IPSET_CMD_CREATE, &m, &format!("create {name}"))
    }

    /// Removes every member.
    pub fn flush(&self, name: &str) -> io::Result<()> {
        self.request(IPSET_CMD_FLUSH, &named(name)?, &format!("flush {name}"))
    }

    /// Removes the set (it must not be referenced by a rule any more).
    pub fn destroy(&self, name: &str) -> io::Result<()> {
        self.request(IPSET_CMD_DESTROY, &named(name)?, &format!("destroy {name}"))
    }

    /// Adds `ip` (already a member: nothing changes, counters kept).
    pub fn add(&self, name: &str, ip: Ipv4Addr) -> io::Result<()> {
        let m = with_ip(named(name)?, ip);
        self.request(IPSET_CMD_ADD, &m, &format!("add {ip} to {name}"))
    }

    /// Removes `ip` (not a member: nothing to do).
    pub fn del(&self, name: &str, ip: Ipv4Addr) -> io::Result<()> {
        let m = with_ip(named(name)?, ip);
        self.request(IPSET_CMD_DEL, &m, &format!("delete {ip} from {name}"))
    }

    /// Every member with its counters.
    pub fn members(&self, name: &str) -> io::Result<Vec<Member>> {
        let m = named(name)?;
        let mut out = Vec::new();
        let mut nl = self.nl.lock().unwrap_or_else(|e| e.into_inner());
        nl.dump(ty(IPSET_CMD_LIST), &m, |payload| {
            // nfgenmsg, then the set's attributes; its members are the
            // DATA entries nested in ADT.
            let attrs = payload.get(4..).unwrap_or_default();
            for (t, v) in Attrs(attrs) {
                if t == IPSET_ATTR_ADT {
                    for (t, entry) in Attrs(v) {
                        if t == IPSET_ATTR_DATA {
                            if let Some(m) = member(entry) {
                                out.push(m);
                            }
                        }
                    }
                }
            }
            Ok(())
        })
        .map_err(|e| explain(e, &format!("list {name}")))?;
        Ok(out)
    }
}

/// One DATA entry of a listing: its address and counters.
fn member(entry: &[u8]) -> Option<Member> {
    let (mut ip, mut packets, mut bytes) = (None, 0, 0);
    let be64 = |v: &[u8]| v.try_into().ok().map(u64::from_be_bytes);
    for (t, v) in Attrs(entry) {
        match t {
            IPSET_ATTR_IP => {
                for (t, a) in Attrs(v) {
                    if t == IPSET_ATTR_IPADDR_IPV4 {
                        let o: [u8; 4] = a.try_into().ok()?;
                        ip = Some(Ipv4Addr::from(o));
                    }
                }
            }
            IPSET_ATTR_PACKETS => packets = be64(v)?,
            IPSET_ATTR_BYTES => bytes = be64(v)?,
            _ => {}
        }
    }
    Some(Member {
        ip: ip?,
        packets,
        bytes,
    })
}

/// The attributes in a buffer: (type without its flag bits, payload).
/// Stops at the first malformed length instead of reading past it.
struct Attrs<'a>(&'a [u8]);

impl<'a> Iterator for Attrs<'a> {
    type Item = (u16, &'a [u8]);
    fn next(&mut self) -> Option<Self::Item> {
        let b = self.0;
        if b.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([b[0], b[1]]) as usize;
        let ty = u16::from_ne_bytes([b[2], b[3]]) & ATTR_TYPE_MASK;
        if len < 4 || len > b.len() {
            self.0 = &[];
            return None;
        }
        let v = &b[4..len];
        self.0 = b.get(align4(len)..).unwrap_or_default();
        Some((ty, v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(ty: u16, v: &[u8]) -> Vec<u8> {
        let mut out = ((4 + v.len()) as u16).to_ne_bytes().to_vec();
        out.extend_from_slice(&ty.to_ne_bytes());
        out.extend_from_slice(v);
        out.resize(align4(out.len()), 0);
        out
    }

    #[test]
    fn a_listed_member_is_read_with_its_counters() {
        let ip = attr(
            IPSET_ATTR_IP | NLA_F_NESTED,
            &attr(IPSET_ATTR_IPADDR_IPV4 | NLA_F_NET_BYTEORDER, &[10, 1, 2, 3]),
        );
        let mut e = ip;
        e.extend(attr(
            IPSET_ATTR_PACKETS | NLA_F_NET_BYTEORDER,
            &7u64.to_be_bytes(),
        ));
        e.extend(attr(
            IPSET_ATTR_BYTES | NLA_F_NET_BYTEORDER,
            &420u64.to_be_bytes(),
        ));
        assert_eq!(
            member(&e),
            Some(Member {
                ip: Ipv4Addr::new(10, 1, 2, 3),
                packets: 7,
                bytes: 420
            })
        );
    }

    #[test]
    fn malformed_attributes_end_the_walk() {
        // A length past the buffer, and one shorter than the header.
        assert_eq!(Attrs(&[200, 0, 1, 0, 9, 9]).count(), 0);
        assert_eq!(Attrs(&[2, 0, 1, 0]).count(), 0);
        assert!(member(&attr(IPSET_ATTR_PACKETS, &[1, 2])).is_none());
    }

    #[test]
    fn long_names_are_refused_before_the_kernel_sees_them() {
        assert!(named(&"x".repeat(32)).is_err());
        assert!(named("").is_err());
        assert!(named("RT-abcdef-eg").is_ok());
    }

    /// Against the host kernel (root only): a set made, a member added,
    /// listed with counters, added again unchanged, removed, the set gone.
    #[test]
    fn a_set_round_trips_through_the_kernel() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("SKIPPED: needs root for ipset");
            return;
        }
        let sets = IpSets::open().expect("netlink");
        let name = format!("rt-unit-{}", std::process::id());
        sets.create(&name).expect("create");
        sets.create(&name).expect("create again keeps it");
        let ip = Ipv4Addr::new(198, 18, 250, 7);
        sets.add(&name, ip).unwrap();
        sets.add(&name, ip).unwrap();
        let m = sets.members(&name).unwrap();
        assert_eq!(
            m,
            vec![Member {
                ip,
                packets: 0,
                bytes: 0
            }]
        );
        sets.del(&name, ip).unwrap();
        sets.del(&name, ip)
            .expect("deleting an absent member is fine");
        assert!(sets.members(&name).unwrap().is_empty());
        sets.add(&name, ip).unwrap();
        sets.flush(&name).unwrap();
        assert!(sets.members(&name).unwrap().is_empty());
        sets.destroy(&name).unwrap();
        assert!(sets.members(&name).is_err(), "destroyed");
    }
}
