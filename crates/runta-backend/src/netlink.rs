//! Just enough rtnetlink (`NETLINK_ROUTE`) to wire a runtime's network in-process:
//! create a veth pair with one end in another namespace, enslave it to a bridge,
//! set links up, add an address and a default route, delete a link. Each request
//! is sent with `NLM_F_ACK` and its acknowledgement read back, so a call returns
//! only when the kernel has applied it (or with the kernel's errno).
//!
//! This replaces two `ip -batch` processes per create (≈10 ms) with a handful of
//! syscalls. Message layouts are those of `<linux/rtnetlink.h>`,
//! `<linux/if_link.h>` and `<linux/veth.h>`.

use std::fs::File;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_EXCL: u16 = 0x200;
/// `NLM_F_ROOT | NLM_F_MATCH`.
const NLM_F_DUMP: u16 = 0x300;
const NLM_F_CREATE: u16 = 0x400;

const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_NEWADDR: u16 = 20;
const RTM_NEWROUTE: u16 = 24;

const IFLA_IFNAME: u16 = 3;
const IFLA_MASTER: u16 = 10;
const IFLA_LINKINFO: u16 = 18;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const VETH_INFO_PEER: u16 = 1;
const IFLA_AF_SPEC: u16 = 26;
const IFLA_NET_NS_FD: u16 = 28;
const IFLA_INET6_ADDR_GEN_MODE: u16 = 8;
const IN6_ADDR_GEN_MODE_NONE: u8 = 1;

const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;

const RTM_DELNEIGH: u16 = 29;
const NDA_DST: u16 = 1;

const RTA_GATEWAY: u16 = 5;
const RT_TABLE_MAIN: u8 = 254;
const RTPROT_BOOT: u8 = 3;
const RT_SCOPE_UNIVERSE: u8 = 0;
const RTN_UNICAST: u8 = 1;

pub(crate) const NLA_F_NESTED: u16 = 1 << 15;
pub(crate) const NLA_F_NET_BYTEORDER: u16 = 1 << 14;

pub(crate) fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// A request body under construction: a fixed header (`ifinfomsg`, …)
/// followed by attributes, some nested.
pub(crate) struct Msg {
    buf: Vec<u8>,
    open: Vec<usize>,
}

impl Msg {
    pub(crate) fn new(header: &[u8]) -> Self {
        let mut m = Msg {
            buf: Vec::with_capacity(256),
            open: Vec::new(),
        };
        m.raw(header);
        m
    }

    pub(crate) fn raw(&mut self, bytes: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(bytes);
        self.buf.resize(align4(self.buf.len()), 0);
        self
    }

    pub(crate) fn attr(&mut self, ty: u16, data: &[u8]) -> &mut Self {
        let len = (4 + data.len()) as u16;
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.raw(data)
    }

    pub(crate) fn attr_str(&mut self, ty: u16, s: &str) -> &mut Self {
        let mut v = s.as_bytes().to_vec();
        v.push(0);
        self.attr(ty, &v)
    }

    pub(crate) fn attr_u32(&mut self, ty: u16, v: u32) -> &mut Self {
        self.attr(ty, &v.to_ne_bytes())
    }

    pub(crate) fn begin(&mut self, ty: u16) -> &mut Self {
        self.open.push(self.buf.len());
        self.buf.extend_from_slice(&[0, 0]);
        self.buf
            .extend_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
        self
    }

    pub(crate) fn end(&mut self) -> &mut Self {
        let start = self.open.pop().expect("end() without begin()");
        let len = (self.buf.len() - start) as u16;
        self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
        self
    }
}

/// `struct ifinfomsg`: family, type, index, flags, change.
fn ifinfomsg(index: i32, flags: u32, change: u32) -> [u8; 16] {
    let mut h = [0u8; 16];
    h[0] = libc::AF_UNSPEC as u8;
    h[4..8].copy_from_slice(&index.to_ne_bytes());
    h[8..12].copy_from_slice(&flags.to_ne_bytes());
    h[12..16].copy_from_slice(&change.to_ne_bytes());
    h
}

/// A `NETLINK_ROUTE` socket bound to the network namespace of the thread that
/// opened it (it stays there whatever the thread does afterwards).
pub struct Netlink {
    fd: OwnedFd,
    seq: u32,
}

impl Netlink {
    pub fn open() -> io::Result<Self> {
        Self::open_protocol(libc::NETLINK_ROUTE)
    }

    /// A socket of another netlink family (`NETLINK_NETFILTER` for ipset).
    pub(crate) fn open_protocol(protocol: libc::c_int) -> io::Result<Self> {
        // SAFETY: plain socket/bind calls; the fd is owned right after.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                protocol,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: sockaddr_nl is plain data; zeroed = "kernel picks the port id".
        let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        sa.nl_family = libc::AF_NETLINK as u16;
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                &sa as *const _ as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Netlink { fd, seq: 0 })
    }

    /// Sends one request and waits for its acknowledgement.
    pub(crate) fn request(&mut self, ty: u16, flags: u16, body: &Msg) -> io::Result<()> {
        self.send(ty, flags | NLM_F_ACK, body)?;
        self.answers(|_, _| Ok(())).map(|_| ())
    }

    /// Sends a dump request (`NLM_F_DUMP`) and hands each answer's payload
    /// (what follows its `nlmsghdr`) to `each`, until the kernel says done.
    pub(crate) fn dump(
        &mut self,
        ty: u16,
        body: &Msg,
        mut each: impl FnMut(&[u8]) -> io::Result<()>,
    ) -> io::Result<()> {
        self.send(ty, NLM_F_DUMP, body)?;
        self.answers(|mty, payload| {
            if mty == ty {
                each(payload)?;
            }
            Ok(())
        })
        .map(|_| ())
    }

    fn send(&mut self, ty: u16, flags: u16, body: &Msg) -> io::Result<()> {
        self.seq = self.seq.wrapping_add(1);
        let len = 16 + body.buf.len();
        let mut out = Vec::with_capacity(len);
        out.extend_from_slice(&(len as u32).to_ne_bytes());
        out.extend_from_slice(&ty.to_ne_bytes());
        out.extend_from_slice(&(flags | NLM_F_REQUEST).to_ne_bytes());
        out.extend_from_slice(&self.seq.to_ne_bytes());
        out.extend_from_slice(&0u32.to_ne_bytes());
        out.extend_from_slice(&body.buf);
        // SAFETY: out is a valid buffer of `len` bytes.
        let n = unsafe { libc::send(self.fd.as_raw_fd(), out.as_ptr().cast(), out.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Reads the kernel's answers to the last request: every message of its
    /// sequence goes to `each` (type, payload) until the acknowledgement
    /// (`NLMSG_ERROR`, 0 or an errno) or the end of a dump (`NLMSG_DONE`).
    fn answers(&mut self, mut each: impl FnMut(u16, &[u8]) -> io::Result<()>) -> io::Result<()> {
        // Dumps come in datagrams of up to a page or two each.
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            // SAFETY: buf is a valid writable buffer.
            let n =
                unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let mut off = 0usize;
            let n = n as usize;
            while off + 16 <= n {
                let mlen = u32::from_ne_bytes(buf[off..off + 4].try_into().unwrap()) as usize;
                let mty = u16::from_ne_bytes(buf[off + 4..off + 6].try_into().unwrap());
                let mseq = u32::from_ne_bytes(buf[off + 8..off + 12].try_into().unwrap());
                if mlen < 16 || off + mlen > n {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "malformed netlink answer",
                    ));
                }
                if mseq == self.seq {
                    if mty == NLMSG_ERROR && mlen >= 20 {
                        let err = i32::from_ne_bytes(buf[off + 16..off + 20].try_into().unwrap());
                        return if err == 0 {
                            Ok(())
                        } else {
                            Err(io::Error::from_raw_os_error(-err))
                        };
                    }
                    if mty == NLMSG_DONE {
                        return Ok(());
                    }
                    each(mty, &buf[off + 16..off + mlen])?;
                }
                off += align4(mlen);
            }
        }
    }

    /// Creates a veth pair: `host` here, enslaved to `master` (an ifindex),
    /// and `peer` inside the network namespace `peer_ns`.
    pub fn add_veth(
        &mut self,
        host: &str,
        master: u32,
        peer: &str,
        peer_ns: &File,
    ) -> io::Result<()> {
        let mut m = Msg::new(&ifinfomsg(0, 0, 0));
        m.attr_str(IFLA_IFNAME, host)
            .attr_u32(IFLA_MASTER, master)
            .begin(IFLA_LINKINFO)
            .attr_str(IFLA_INFO_KIND, "veth")
            .begin(IFLA_INFO_DATA)
            .begin(VETH_INFO_PEER)
            .raw(&ifinfomsg(0, 0, 0))
            .attr_str(IFLA_IFNAME, peer)
            .attr_u32(IFLA_NET_NS_FD, peer_ns.as_raw_fd() as u32)
            .end()
            .end()
            .end();
        self.request(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, &m)
    }

    /// Sets a link up (`ip link set X up`).
    pub fn link_up(&mut self, index: u32) -> io::Result<()> {
        let up = libc::IFF_UP as u32;
        self.request(RTM_NEWLINK, 0, &Msg::new(&ifinfomsg(index as i32, up, up)))
    }

    /// No IPv6 link-local address on this link (`addrgenmode none`).
    pub fn no_ipv6_addrgen(&mut self, index: u32) -> io::Result<()> {
        let mut m = Msg::new(&ifinfomsg(index as i32, 0, 0));
        m.begin(IFLA_AF_SPEC)
            .begin(libc::AF_INET6 as u16)
            .attr(IFLA_INET6_ADDR_GEN_MODE, &[IN6_ADDR_GEN_MODE_NONE])
            .end()
            .end();
        self.request(RTM_NEWLINK, 0, &m)
    }

    /// Deletes a link by name (the peer of a veth goes with it).
    pub fn del_link(&mut self, name: &str) -> io::Result<()> {
        let mut m = Msg::new(&ifinfomsg(0, 0, 0));
        m.attr_str(IFLA_IFNAME, name);
        self.request(RTM_DELLINK, 0, &m)
    }

    /// `ip addr add <addr>/<prefix> dev <index>`.
    pub fn add_addr(&mut self, index: u32, addr: Ipv4Addr, prefix: u8) -> io::Result<()> {
        let mut h = [0u8; 8];
        h[0] = libc::AF_INET as u8;
        h[1] = prefix;
        h[3] = RT_SCOPE_UNIVERSE;
        h[4..8].copy_from_slice(&index.to_ne_bytes());
        let mut m = Msg::new(&h);
        m.attr(IFA_LOCAL, &addr.octets())
            .attr(IFA_ADDRESS, &addr.octets());
        self.request(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, &m)
    }

    /// Forgets the link-layer address the host cached for `addr` on link
    /// `index` (`ip neigh del`); absent is fine. An address that a deleted
    /// runtime had and a new one gets would otherwise be sent to the old,
    /// gone MAC until the entry expires (tens of seconds).
    pub fn del_neigh(&mut self, index: u32, addr: Ipv4Addr) -> io::Result<()> {
        let mut h = [0u8; 12];
        h[0] = libc::AF_INET as u8;
        h[4..8].copy_from_slice(&(index as i32).to_ne_bytes());
        let mut m = Msg::new(&h);
        m.attr(NDA_DST, &addr.octets());
        match self.request(RTM_DELNEIGH, 0, &m) {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
            r => r,
        }
    }

    /// `ip route add default via <gw>`.
    pub fn add_default_route(&mut self, gw: Ipv4Addr) -> io::Result<()> {
        let h = [
            libc::AF_INET as u8,
            0, // dst_len: default
            0,
            0,
            RT_TABLE_MAIN,
            RTPROT_BOOT,
            RT_SCOPE_UNIVERSE,
            RTN_UNICAST,
            0,
            0,
            0,
            0,
        ];
        let mut m = Msg::new(&h);
        m.attr(RTA_GATEWAY, &gw.octets());
        self.request(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, &m)
    }
}

/// The index of a link in the calling thread's network namespace.
pub fn ifindex(name: &str) -> io::Result<u32> {
    let c = std::ffi::CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "interface name"))?;
    // SAFETY: c is a valid NUL-terminated string.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if i == 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(i)
    }
}

/// Makes `dir` (normally `/run/netns`) a shared mount point, as `ip netns`
/// does, so namespaces pinned there later show up in every mount namespace
/// made from this one.
pub fn ensure_netns_dir(dir: &Path) -> io::Result<()> {
    use nix::mount::{mount, MsFlags};
    std::fs::create_dir_all(dir)?;
    let shared = |d: &Path| {
        mount(
            None::<&str>,
            d,
            None::<&str>,
            MsFlags::MS_SHARED | MsFlags::MS_REC,
            None::<&str>,
        )
    };
    if shared(dir).is_ok() {
        return Ok(());
    }
    // Not a mount point yet: bind it onto itself, then share it.
    mount(
        Some(dir),
        dir,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(io::Error::from)?;
    shared(dir).map_err(io::Error::from)
}

/// What [`with_new_netns`] hands its closure: netlink sockets of the host and of
/// the new namespace, the new namespace itself, and a way to move the thread
/// into it (the closure starts in the host namespace, where names such as
/// `/proc/sys/net/...` and interface names resolve to the host's).
pub struct NetnsSetup {
    pub host: Netlink,
    pub inside: Netlink,
    pub ns: File,
}

impl NetnsSetup {
    /// Moves the calling thread (the setup thread) into the new namespace.
    pub fn enter(&self) -> io::Result<()> {
        nix::sched::setns(&self.ns, nix::sched::CloneFlags::CLONE_NEWNET).map_err(io::Error::from)
    }
}

/// Creates a network namespace pinned at `path` (`ip netns add`) and runs `f`
/// with a [`NetnsSetup`]. Runs on a thread of its own that ends afterwards, so
/// no thread of the caller ever changes namespace. On failure the pin is removed.
pub fn with_new_netns<T: Send + 'static>(
    path: &Path,
    f: impl FnOnce(&mut NetnsSetup) -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    let path = path.to_path_buf();
    std::thread::Builder::new()
        .name("runta-netns".into())
        .spawn(move || {
            let host_ns = File::open("/proc/thread-self/ns/net")?;
            let host = Netlink::open()?;
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)?;
            let made = (|| {
                nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(io::Error::from)?;
                nix::mount::mount(
                    Some("/proc/thread-self/ns/net"),
                    &path,
                    None::<&str>,
                    nix::mount::MsFlags::MS_BIND,
                    None::<&str>,
                )
                .map_err(io::Error::from)?;
                let ns = File::open("/proc/thread-self/ns/net")?;
                let inside = Netlink::open()?;
                nix::sched::setns(&host_ns, nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(io::Error::from)?;
                f(&mut NetnsSetup { host, inside, ns })
            })();
            if made.is_err() {
                remove_netns(&path);
            }
            made
        })?
        .join()
        .map_err(|_| io::Error::other("the network namespace thread panicked"))?
}

/// Unpins and removes a network namespace made by [`with_new_netns`]
/// (`ip netns del`); missing is fine.
pub fn remove_netns(path: &Path) {
    let _ = nix::mount::umount2(path, nix::mount::MntFlags::MNT_DETACH);
    let _ = std::fs::remove_file(path);
}
