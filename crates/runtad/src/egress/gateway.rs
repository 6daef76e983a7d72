//! The TCP side of the egress gateway: every new TCP connection of a policy
//! runtime arrives here (iptables REDIRECT), is named from its first bytes,
//! checked, and spliced to an address the gateway resolved itself.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use runta_api::{
    EgressAction, EgressAuditKind, EgressAuditPayload, EgressHttpRequestAudit, EgressMode,
    EgressPolicy, EgressTcpConnectionAudit,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

use super::resolve::Source;
use super::{Egress, Guarded};

/// How long a program has to send its first bytes before the connection is
/// judged by its address alone (protocols where the server speaks first).
const FIRST_BYTES_WAIT: Duration = Duration::from_millis(1500);
/// The most read before deciding: a ClientHello or request head larger than
/// this is judged without a name.
const MAX_PEEK: usize = 16 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Each connection holds two of the daemon's descriptors: a program opening
/// sockets in a loop must not starve the API of them.
pub const MAX_CONNS_PER_RUNTIME: usize = 512;

/// Gateway connections held at once, against three caps: per runtime
/// ([`MAX_CONNS_PER_RUNTIME`]), per tenant, and in total. Each connection
/// holds two of the daemon's descriptors, so without the total and tenant
/// caps one tenant's runtimes holding connections to a server that never
/// answers would use up the daemon's `RLIMIT_NOFILE` and every other
/// tenant's API calls and runtimes with it.
pub(super) struct Admission {
    total: usize,
    per_tenant: usize,
    per_runtime: usize,
    open: Mutex<Open>,
}

#[derive(Default)]
struct Open {
    total: usize,
    tenants: HashMap<Arc<str>, usize>,
    runtimes: HashMap<uuid::Uuid, usize>,
}

impl Admission {
    /// Caps for a daemon with `nofile` descriptors: the gateway's connections
    /// may use half of them (a quarter of `nofile` connections), one tenant a
    /// quarter of that, one runtime at most [`MAX_CONNS_PER_RUNTIME`].
    pub(super) fn for_nofile(nofile: u64) -> Self {
        let total = (nofile / 4).clamp(64, 65_536) as usize;
        let per_tenant = (total / 4).max(16);
        Admission {
            total,
            per_tenant,
            per_runtime: MAX_CONNS_PER_RUNTIME.min(per_tenant),
            open: Mutex::new(Open::default()),
        }
    }

    /// Takes one connection for runtime `id` of `tenant`, or says which cap
    /// refused it.
    fn admit(&self, tenant: &Arc<str>, id: uuid::Uuid) -> Result<(), String> {
        let mut o = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let rt = o.runtimes.get(&id).copied().unwrap_or(0);
        let tn = o.tenants.get(tenant).copied().unwrap_or(0);
        if rt >= self.per_runtime {
            return Err(format!(
                "the runtime holds {} gateway connections, its most",
                self.per_runtime
            ));
        }
        if tn >= self.per_tenant {
            return Err(format!(
                "the tenant's runtimes hold {} gateway connections, its most",
                self.per_tenant
            ));
        }
        if o.total >= self.total {
            return Err(format!(
                "the egress gateway holds {} connections, its most",
                self.total
            ));
        }
        o.total += 1;
        *o.tenants.entry(tenant.clone()).or_default() += 1;
        *o.runtimes.entry(id).or_default() += 1;
        Ok(())
    }

    fn release(&self, tenant: &Arc<str>, id: uuid::Uuid) {
        let mut o = self.open.lock().unwrap_or_else(|e| e.into_inner());
        o.total = o.total.saturating_sub(1);
        fn down<K: std::hash::Hash + Eq>(m: &mut HashMap<K, usize>, k: &K) {
            if let Some(n) = m.get_mut(k) {
                *n -= 1;
                if *n == 0 {
                    m.remove(k);
                }
            }
        }
        down(&mut o.tenants, tenant);
        down(&mut o.runtimes, &id);
    }
}

/// One admitted connection, given back on drop.
struct Slot(Arc<Egress>, Arc<Guarded>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.admission.release(&self.1.tenant, self.1.id);
    }
}

/// Connections of one runtime refused at a cap since the last audit of
/// them: a program opening sockets in a loop past its cap gets one audit row
/// per [`REFUSALS_EVERY`] (with the count), not one per attempt, so it
/// cannot flush the runtime's bounded history with refusals.
#[derive(Default)]
pub(super) struct Refusals {
    count: u64,
    written: Option<Instant>,
    /// The latest refused: (source, original destination, which cap).
    last: Option<(SocketAddr, SocketAddrV4, String)>,
}

const REFUSALS_EVERY: Duration = Duration::from_secs(10);

impl Refusals {
    /// The aggregated row, when one is due: some refusal is counted and
    /// the last row is [`REFUSALS_EVERY`] old (or there was none).
    fn take(&mut self) -> Option<EgressAuditPayload> {
        if self.count == 0 || self.written.is_some_and(|t| t.elapsed() < REFUSALS_EVERY) {
            return None;
        }
        let (peer, orig, why) = self.last.take()?;
        let n = std::mem::take(&mut self.count);
        self.written = Some(Instant::now());
        Some(EgressAuditPayload {
            kind: EgressAuditKind::TcpConnection,
            tcp_connection: Some(EgressTcpConnectionAudit {
                src_addr: peer.to_string(),
                dst_addr: orig.to_string(),
                host: String::new(),
                transport: "tcp".into(),
                plugin: "admission".into(),
                bytes_up: 0,
                bytes_down: 0,
                duration_ms: 0,
                action: EgressAction::Deny,
                outcome: "refused".into(),
                reason: format!("{n} connection(s) refused (reset at once): {why}"),
                error: String::new(),
            }),
            http_request: None,
            icmp_drop: None,
            dns_query: None,
        })
    }
}

/// Counts a connection refused at a cap; writes the aggregated row when due.
fn refused(eg: &Egress, g: &Guarded, peer: SocketAddr, orig: SocketAddrV4, why: String) {
    let row = {
        let mut r = g.refusals.lock().unwrap_or_else(|e| e.into_inner());
        r.count += 1;
        r.last = Some((peer, orig, why));
        r.take()
    };
    if let Some(p) = row {
        eg.audits.record(g.id, p);
    }
}

/// Writes runtime `g`'s refusals counted since its last row, when due (the
/// drop-audit loop calls this every 2 s, so the last of a burst is written).
pub(super) fn flush_refusals(eg: &Egress, g: &Guarded) {
    let row = g.refusals.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(p) = row {
        eg.audits.record(g.id, p);
    }
}

static CONN_SEQ: AtomicU64 = AtomicU64::new(1);

pub(super) fn next_conn_id() -> u64 {
    CONN_SEQ.fetch_add(1, Ordering::Relaxed)
}

/// An open, allowed connection, re-checked when the policy changes.
pub(crate) struct Live {
    host: Option<String>,
    addr: IpAddr,
    pub abort: AbortHandle,
}

impl Live {
    pub(super) fn new(host: Option<String>, addr: IpAddr, abort: AbortHandle) -> Self {
        Live { host, addr, abort }
    }

    pub fn still_allowed(&self, p: &EgressPolicy) -> bool {
        match &self.host {
            Some(h) => p.allows_name(h).is_ok() && p.allows_ip(self.addr, true).is_ok(),
            None => p.allows_ip(self.addr, false).is_ok(),
        }
    }
}

pub fn spawn(eg: Arc<Egress>, l: TcpListener) {
    tokio::spawn(async move {
        loop {
            match l.accept().await {
                Ok((s, peer)) => {
                    let _ = s.set_nodelay(true);
                    tokio::spawn(handle(eg.clone(), s, peer));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    });
}

/// Zero linger: closing sends a reset, so a refused program fails at once.
fn reset(s: &TcpStream) {
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt reads a linger struct we own, on a socket we own.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &l as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

fn original_dst(s: &TcpStream) -> std::io::Result<SocketAddrV4> {
    const SO_ORIGINAL_DST: libc::c_int = 80;
    // SAFETY: getsockopt writes at most `len` bytes into a sockaddr_in we own.
    unsafe {
        let mut a: libc::sockaddr_in = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        let rc = libc::getsockopt(
            s.as_raw_fd(),
            libc::SOL_IP,
            SO_ORIGINAL_DST,
            &mut a as *mut _ as *mut libc::c_void,
            &mut len,
        );
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(SocketAddrV4::new(
            Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
            u16::from_be(a.sin_port),
        ))
    }
}

#[derive(Debug, Default)]
struct HttpHead {
    method: String,
    path: String,
    query: bool,
    host: Option<String>,
    problem: Option<String>,
    /// How the request's body ends (RFC 9112 6.3), so the next request's
    /// head can be found and checked too.
    body: Body,
    /// An `Upgrade` request: what follows is no longer HTTP/1 if (and only
    /// if) the upstream answers it `101 Switching Protocols`.
    upgrade: bool,
}

#[derive(Debug, Default, Clone, Copy, PartialEq)]
enum Body {
    #[default]
    None,
    Length(u64),
    Chunked,
}

#[derive(Debug)]
enum First {
    Tls(Option<String>),
    Http(HttpHead),
    Raw,
}

enum Parse {
    Done(First),
    More,
}

fn parse_tls(b: &[u8]) -> Parse {
    if b.len() < 5 {
        return Parse::More;
    }
    let rec_len = u16::from_be_bytes([b[3], b[4]]) as usize;
    if b.len() < 5 + rec_len {
        return if 5 + rec_len > MAX_PEEK {
            Parse::Done(First::Tls(None))
        } else {
            Parse::More
        };
    }
    Parse::Done(First::Tls(sni(&b[5..5 + rec_len])))
}

/// The server name of a ClientHello handshake message (RFC 8446 4.1.2, RFC
/// 6066 3), when it fits in the first record.
fn sni(h: &[u8]) -> Option<String> {
    let mut r = Reader { b: h, i: 0 };
    if r.u8()? != 1 {
        return None;
    }
    r.skip(3)?; // handshake length
    r.skip(2 + 32)?; // version, random
    let n = r.u8()? as usize;
    r.skip(n)?; // session id
    let n = r.u16()? as usize;
    r.skip(n)?; // cipher suites
    let n = r.u8()? as usize;
    r.skip(n)?; // compression
    let ext_len = r.u16()? as usize;
    let end = r.i + ext_len;
    while r.i + 4 <= end {
        let t = r.u16()?;
        let l = r.u16()? as usize;
        if t == 0 {
            let mut s = Reader {
                b: r.take(l)?,
                i: 0,
            };
            s.skip(2)?;
            if s.u8()? != 0 {
                return None;
            }
            let n = s.u16()? as usize;
            let name = std::str::from_utf8(s.take(n)?).ok()?;
            return Some(name.trim_end_matches('.').to_ascii_lowercase());
        }
        r.skip(l)?;
    }
    None
}

struct Reader<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.b.get(self.i..self.i + n)?;
        self.i += n;
        Some(s)
    }
    fn skip(&mut self, n: usize) -> Option<()> {
        self.take(n).map(|_| ())
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|s| s[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|s| u16::from_be_bytes([s[0], s[1]]))
    }
}

fn looks_http(b: &[u8]) -> bool {
    let n = b
        .iter()
        .take(8)
        .take_while(|c| c.is_ascii_uppercase())
        .count();
    n >= 3 && b.get(n).is_some_and(|c| *c == b' ')
}

fn parse_http(b: &[u8]) -> Parse {
    let Some(end) = b.windows(4).position(|w| w == b"\r\n\r\n") else {
        return if b.len() >= MAX_PEEK {
            Parse::Done(First::Http(HttpHead {
                problem: Some("request head too large to inspect".into()),
                ..Default::default()
            }))
        } else {
            Parse::More
        };
    };
    let text = String::from_utf8_lossy(&b[..end]);
    let mut lines = text.split("\r\n");
    let mut h = HttpHead::default();
    // A head another parser could read differently (bare CR or LF, folded
    // or malformed header lines, NUL) is refused: the gateway and the
    // server must agree on where each request and its Host are.
    let malformed = text.split("\r\n").enumerate().any(|(i, l)| {
        l.contains(['\r', '\n', '\0'])
            || (i > 0
                && l.split_once(':').is_none_or(|(k, _)| {
                    k.is_empty()
                        || !k
                            .bytes()
                            .all(|c| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c))
                }))
    });
    let line = lines.next().unwrap_or("");
    let mut parts = line.split(' ');
    h.method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("").to_string();
    let mut abs_host = None;
    let path_part = if let Some(rest) = target
        .strip_prefix("http://")
        .or_else(|| target.strip_prefix("https://"))
    {
        let (auth, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        abs_host = Some(host_of(auth));
        if path.is_empty() {
            "/".to_string()
        } else {
            path.to_string()
        }
    } else {
        target.clone()
    };
    let (p, q) = path_part.split_once('?').unwrap_or((&path_part, ""));
    h.path = p.to_string();
    h.query = !q.is_empty();
    let mut hosts = Vec::new();
    let (mut lengths, mut te, mut upgrade) = (Vec::new(), None::<String>, None::<String>);
    for l in lines {
        if let Some((k, v)) = l.split_once(':') {
            let v = v.trim();
            if k.eq_ignore_ascii_case("host") {
                hosts.push(host_of(v));
            } else if k.eq_ignore_ascii_case("content-length") {
                lengths.extend(v.split(',').map(|n| n.trim().to_string()));
            } else if k.eq_ignore_ascii_case("transfer-encoding") {
                let t = te.get_or_insert_with(String::new);
                t.push(',');
                t.push_str(&v.to_ascii_lowercase());
            } else if k.eq_ignore_ascii_case("upgrade") {
                upgrade = Some(v.to_ascii_lowercase());
            }
        }
    }
    let framing = match (&te, lengths.first()) {
        (Some(_), Some(_)) => Err("both Transfer-Encoding and Content-Length".to_string()),
        (Some(t), None) => {
            if t.rsplit(',').next().map(str::trim) == Some("chunked") {
                Ok(Body::Chunked)
            } else {
                Err(format!(
                    "Transfer-Encoding {:?} does not end in chunked",
                    t.trim_start_matches(',')
                ))
            }
        }
        (None, Some(n)) => match n.parse::<u64>() {
            Ok(v) if lengths.iter().all(|m| m == n) && n.bytes().all(|c| c.is_ascii_digit()) => {
                Ok(Body::Length(v))
            }
            _ => Err(format!(
                "Content-Length {:?} is not one number",
                lengths.join(",")
            )),
        },
        (None, None) => Ok(Body::None),
    };
    match framing {
        Ok(b) => h.body = b,
        Err(e) => h.problem = Some(format!("request framing cannot be inspected: {e}")),
    }
    h.upgrade = upgrade.is_some();
    if malformed {
        h.problem = Some("malformed request head".into());
    } else if h.method == "PRI" || upgrade.as_deref().is_some_and(|u| u.contains("h2c")) {
        h.problem = Some(
            "cleartext HTTP/2 cannot be checked request by request (use HTTP/1.1 or TLS)".into(),
        );
    }
    if h.problem.is_some() {
        h.host = hosts.pop();
    } else if h.method == "CONNECT" {
        h.host = Some(host_of(&target));
        h.problem = Some("CONNECT tunnels through the egress gateway are not allowed".into());
    } else if hosts.len() > 1 {
        h.problem = Some("more than one Host header".into());
    } else {
        h.host = hosts.pop();
        if let (Some(a), Some(hh)) = (&abs_host, &h.host) {
            if a != hh {
                h.problem = Some(format!("request target host {a} differs from Host {hh}"));
            }
        }
        if h.host.is_none() {
            h.host = abs_host;
        }
    }
    Parse::Done(First::Http(h))
}

/// Where one side of a kept-alive HTTP/1 connection is. The client's side:
/// each request head is found and checked before a byte of it is forwarded,
/// so a second request cannot name a host the first one did not. The
/// upstream's side ([`Framing::reply`]): each answer's head and body found,
/// so the gateway knows which request a `101` answers.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Framing {
    Head,
    Body(u64),
    ChunkSize,
    ChunkData(u64),
    ChunkEnd,
    Trailer,
    /// Bytes forwarded unparsed: the client's and the upstream's after a
    /// `101` to an `Upgrade` request; the upstream's once its answers cannot
    /// be framed (read to close, unparsable, out of step with the requests).
    Tunnel,
}

#[derive(Debug)]
enum Next {
    /// Forward this many bytes as they are.
    Forward(usize),
    /// A request head of this many bytes, to check before it is forwarded.
    Head(usize, HttpHead),
    More,
    Bad(String),
}

/// The longest chunk-size or trailer line read.
const MAX_LINE: usize = 4096;

impl Framing {
    fn next(&mut self, b: &[u8]) -> Next {
        if b.is_empty() {
            return Next::More;
        }
        let line = |b: &[u8]| b.windows(2).position(|w| w == b"\r\n");
        match *self {
            Framing::Head => {
                if b.starts_with(b"\r\n") {
                    return Next::Forward(2); // tolerated between requests
                }
                if b == b"\r" {
                    return Next::More;
                }
                if !looks_http(b) {
                    return if b.len() < 8 && b.iter().all(|c| c.is_ascii_uppercase()) {
                        Next::More
                    } else {
                        Next::Bad("bytes that are not an HTTP request on an HTTP connection".into())
                    };
                }
                match parse_http(b) {
                    Parse::More => Next::More,
                    Parse::Done(First::Http(h))
                        if h.problem.as_deref() == Some("request head too large to inspect") =>
                    {
                        Next::Bad("request head too large to inspect".into())
                    }
                    Parse::Done(First::Http(h)) => {
                        let end = b.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(0) + 4;
                        Next::Head(end, h)
                    }
                    Parse::Done(_) => Next::Bad("unparsable request".into()),
                }
            }
            Framing::Body(n) | Framing::ChunkData(n) => {
                let k = n.min(b.len() as u64);
                *self = match (*self, n - k) {
                    (Framing::Body(_), 0) => Framing::Head,
                    (Framing::Body(_), r) => Framing::Body(r),
                    (_, 0) => Framing::ChunkEnd,
                    (_, r) => Framing::ChunkData(r),
                };
                Next::Forward(k as usize)
            }
            Framing::ChunkEnd => {
                if b.len() < 2 {
                    Next::More
                } else if b.starts_with(b"\r\n") {
                    *self = Framing::ChunkSize;
                    Next::Forward(2)
                } else {
                    Next::Bad("a chunk not followed by CRLF".into())
                }
            }
            Framing::ChunkSize | Framing::Trailer => {
                let Some(i) = line(b) else {
                    return if b.len() > MAX_LINE {
                        Next::Bad("chunk line too long".into())
                    } else {
                        Next::More
                    };
                };
                let l = &b[..i];
                if l.contains(&b'\n') || l.contains(&b'\r') {
                    return Next::Bad("bare CR or LF in a chunked body".into());
                }
                if *self == Framing::Trailer {
                    if l.is_empty() {
                        *self = Framing::Head;
                    }
                    return Next::Forward(i + 2);
                }
                let hex = l.split(|c| *c == b';').next().unwrap_or(b"");
                let size = std::str::from_utf8(hex)
                    .ok()
                    .filter(|h| {
                        !h.is_empty() && h.len() <= 15 && h.bytes().all(|c| c.is_ascii_hexdigit())
                    })
                    .and_then(|h| u64::from_str_radix(h, 16).ok());
                match size {
                    None => Next::Bad("an unparsable chunk size".into()),
                    Some(0) => {
                        *self = Framing::Trailer;
                        Next::Forward(i + 2)
                    }
                    Some(n) => {
                        *self = Framing::ChunkData(n);
                        Next::Forward(i + 2)
                    }
                }
            }
            Framing::Tunnel => Next::Forward(b.len()),
        }
    }

    /// After an allowed head: where its body ends. (An `Upgrade` request is
    /// HTTP like any other until its answer is known: the relay holds what
    /// follows it meanwhile.)
    fn accept(&mut self, h: &HttpHead) {
        *self = match h.body {
            Body::None | Body::Length(0) => Framing::Head,
            Body::Length(n) => Framing::Body(n),
            Body::Chunked => Framing::ChunkSize,
        };
    }

    /// The upstream's side: how many bytes of `b` (what it sent, not yet
    /// forwarded) go to the client now, `None` when more are needed. Each
    /// final answer takes its request off `ex`'s queue and, for an `Upgrade`
    /// request, tells the client's side whether it was switched (`101`).
    /// Interim answers (1xx but 101) are forwarded as they are; answers to
    /// `HEAD`, 204 and 304 have no body (RFC 9112 6.3). Whatever cannot be
    /// framed for sure ends the framing for the connection's life: the rest
    /// is forwarded unparsed and no upgrade is switched any more, so the
    /// client's bytes stay checked request by request (a `101` inside a body
    /// or after an answer read to its close is never taken for one).
    fn reply(&mut self, b: &[u8], ex: &Exchange) -> Option<usize> {
        if b.is_empty() {
            return None;
        }
        if *self != Framing::Head {
            return match self.next(b) {
                Next::Forward(n) => Some(n),
                Next::More => None,
                Next::Head(..) | Next::Bad(_) => Some(self.lose(ex, b.len())),
            };
        }
        let (len, code, body) = match parse_reply(b) {
            Reply::More if b.len() < MAX_REPLY_HEAD => return None,
            Reply::More | Reply::Unframed => return Some(self.lose(ex, b.len())),
            Reply::Head { len, code, body } => (len, code, body),
        };
        if (100..200).contains(&code) && code != 101 {
            return Some(len);
        }
        let Some(asked) = ex.answered() else {
            // An answer nobody asked for: out of step.
            return Some(self.lose(ex, b.len()));
        };
        if code == 101 {
            if asked.upgrade {
                ex.resolve(true);
                *self = Framing::Tunnel;
            } else {
                self.lose(ex, 0);
            }
            return Some(len);
        }
        if asked.upgrade {
            ex.resolve(false);
        }
        *self = if asked.head || code == 204 || code == 304 {
            Framing::Head
        } else {
            match body {
                ReplyBody::Length(0) => Framing::Head,
                ReplyBody::Length(n) => Framing::Body(n),
                ReplyBody::Chunked => Framing::ChunkSize,
                ReplyBody::Close => {
                    self.lose(ex, 0);
                    Framing::Tunnel
                }
            }
        };
        Some(len)
    }

    /// The upstream's answers can no longer be framed: `n`.
    fn lose(&mut self, ex: &Exchange, n: usize) -> usize {
        *self = Framing::Tunnel;
        ex.lose();
        n
    }
}

/// The longest answer head framed; a longer one ends the framing.
const MAX_REPLY_HEAD: usize = 64 * 1024;
/// Requests forwarded and not answered yet, at most; past it (a client
/// pipelining without end to a server that does not answer), the framing of
/// answers ends as for [`Framing::reply`]'s unframable ones.
const MAX_OUTSTANDING: usize = 1024;

#[derive(Debug, PartialEq)]
enum Reply {
    More,
    Unframed,
    Head {
        len: usize,
        code: u16,
        body: ReplyBody,
    },
}

#[derive(Debug, PartialEq)]
enum ReplyBody {
    Length(u64),
    Chunked,
    /// Read until the upstream closes (no length; or framing headers that
    /// could be read two ways, which a client might take either way).
    Close,
}

/// An answer's head (`httparse`: strict, no obs-fold): its length, status
/// and how its body would end if it has one.
fn parse_reply(b: &[u8]) -> Reply {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut r = httparse::Response::new(&mut headers);
    let len = match r.parse(b) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Reply::More,
        Err(_) => return Reply::Unframed,
    };
    let (mut te, mut chunked, mut length, mut bad) = (false, false, None::<u64>, false);
    for h in r.headers.iter() {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            te = true;
            chunked = h
                .value
                .rsplit(|c| *c == b',')
                .next()
                .is_some_and(|v| v.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if h.name.eq_ignore_ascii_case("content-length") {
            for v in h.value.split(|c| *c == b',').map(<[u8]>::trim_ascii) {
                let n = std::str::from_utf8(v)
                    .ok()
                    .filter(|v| !v.is_empty() && v.bytes().all(|c| c.is_ascii_digit()))
                    .and_then(|v| v.parse::<u64>().ok());
                match (n, length) {
                    (Some(n), None) => length = Some(n),
                    (Some(n), Some(m)) if n == m => {}
                    _ => bad = true,
                }
            }
        }
    }
    let body = match (te, length) {
        (true, None) if chunked && !bad => ReplyBody::Chunked,
        (false, Some(n)) if !bad => ReplyBody::Length(n),
        _ => ReplyBody::Close,
    };
    Reply::Head {
        len,
        code: r.code.unwrap_or(0),
        body,
    }
}

/// A request forwarded upstream, not answered yet: what its answer's
/// framing depends on.
#[derive(Debug, Clone, Copy)]
struct Asked {
    head: bool,
    upgrade: bool,
}

/// The two directions of a relayed plain-HTTP connection in step: the
/// client's side queues each request it forwards, the upstream's side takes
/// one off per final answer and says whether an `Upgrade` request was
/// switched. Once the answers cannot be framed (`lost`), nothing is ever
/// switched on the connection again.
#[derive(Default)]
struct Exchange {
    state: Mutex<Outstanding>,
    wake: tokio::sync::Notify,
}

#[derive(Default)]
struct Outstanding {
    asked: VecDeque<Asked>,
    /// The answer to the `Upgrade` request the client's side waits on.
    switched: Option<bool>,
    lost: bool,
}

impl Exchange {
    fn lock(&self) -> std::sync::MutexGuard<'_, Outstanding> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The client's side forwards a request.
    fn ask(&self, a: Asked) {
        let mut s = self.lock();
        if s.lost {
            return;
        }
        if s.asked.len() >= MAX_OUTSTANDING {
            s.lost = true;
            s.asked = VecDeque::new();
            return;
        }
        s.asked.push_back(a);
    }

    /// The upstream's side has a final answer: to which request.
    fn answered(&self) -> Option<Asked> {
        let mut s = self.lock();
        if s.lost {
            return None;
        }
        s.asked.pop_front()
    }

    fn resolve(&self, switched: bool) {
        self.lock().switched = Some(switched);
        self.wake.notify_one();
    }

    /// Answers can no longer be framed (or the upstream is gone).
    fn lose(&self) {
        {
            let mut s = self.lock();
            s.lost = true;
            s.asked = VecDeque::new();
        }
        self.wake.notify_one();
    }

    /// The client's side, after an `Upgrade` request: whether it was
    /// switched, once its answer is known.
    async fn switched(&self) -> bool {
        loop {
            {
                let mut s = self.lock();
                if let Some(v) = s.switched.take() {
                    return v;
                }
                if s.lost {
                    return false;
                }
            }
            self.wake.notified().await;
        }
    }
}

/// `name:port`, `[v6]:port` → the lower-case name or address.
fn host_of(authority: &str) -> String {
    let a = authority.rsplit_once('@').map(|x| x.1).unwrap_or(authority);
    let a = if let Some(rest) = a.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else if a.matches(':').count() == 1 {
        a.split(':').next().unwrap_or("")
    } else {
        a
    };
    a.trim_end_matches('.').to_ascii_lowercase()
}

async fn read_first(s: &mut TcpStream, buf: &mut Vec<u8>) -> First {
    let deadline = tokio::time::Instant::now() + FIRST_BYTES_WAIT;
    let mut chunk = [0u8; 4096];
    loop {
        let n = match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return First::Raw,
            Ok(Ok(n)) => n,
            Err(_) => {
                return if buf.first() == Some(&0x16) {
                    First::Tls(None)
                } else {
                    First::Raw
                }
            }
        };
        buf.extend_from_slice(&chunk[..n]);
        let p = if buf[0] == 0x16 {
            parse_tls(buf)
        } else if looks_http(buf) {
            parse_http(buf)
        } else if buf.len() >= 8 || !buf.iter().all(|c| c.is_ascii_uppercase()) {
            Parse::Done(First::Raw)
        } else {
            Parse::More
        };
        match p {
            Parse::Done(f) => return f,
            Parse::More if buf.len() >= MAX_PEEK => return First::Raw,
            Parse::More => {}
        }
    }
}

struct Verdict {
    target: Option<SocketAddr>,
    reason: String,
}

async fn decide(eg: &Egress, p: &EgressPolicy, host: Option<&str>, orig: SocketAddrV4) -> Verdict {
    let deny = |reason: String| Verdict {
        target: None,
        reason,
    };
    let name = host.filter(|h| !h.is_empty() && h.parse::<IpAddr>().is_err());
    if let Some(h) = name {
        if let Err(r) = p.allows_name(h) {
            return deny(r);
        }
        return match eg.resolver().resolve(h).await {
            Ok((ips, src)) => pick(eg, p, h, &ips, src, orig.port()),
            Err(e) => deny(e),
        };
    }
    let ip = IpAddr::V4(*orig.ip());
    if let Some(f) = eg.forbidden(ip, p.names_ip(ip)) {
        return deny(format!("{ip} is {f}"));
    }
    match p.allows_ip(ip, false) {
        Ok(()) => Verdict {
            target: Some(SocketAddr::V4(orig)),
            reason: format!("{ip} allowed by the {} policy", mode(p)),
        },
        Err(r) => deny(r),
    }
}

/// The first of `name`'s addresses (resolved now, by the gateway) that the
/// policy allows and no rule forbids. A private address counts as named only
/// when it came from the operator's hosts file or a policy entry names it: a
/// system resolver's answer there is DNS rebinding.
fn pick(
    eg: &Egress,
    p: &EgressPolicy,
    name: &str,
    ips: &[IpAddr],
    src: Source,
    port: u16,
) -> Verdict {
    let mut why = format!("{name} has no IPv4 address");
    for ip in ips.iter().copied().filter(IpAddr::is_ipv4) {
        let named = src == Source::HostsFile || p.names_ip(ip);
        if let Some(f) = eg.forbidden(ip, named) {
            why = format!("{name} resolves to {ip}, {f}");
            continue;
        }
        if let Err(r) = p.allows_ip(ip, true) {
            why = r;
            continue;
        }
        return Verdict {
            target: Some(SocketAddr::new(ip, port)),
            reason: format!("{name} allowed by the {} policy", mode(p)),
        };
    }
    Verdict {
        target: None,
        reason: why,
    }
}

fn mode(p: &EgressPolicy) -> &'static str {
    match p.mode {
        EgressMode::Allowlist => "allowlist",
        EgressMode::Denylist => "denylist",
    }
}

async fn handle(eg: Arc<Egress>, mut s: TcpStream, peer: SocketAddr) {
    let Some(g) = eg.guarded(peer.ip()) else {
        reset(&s);
        return;
    };
    let Ok(orig) = original_dst(&s) else {
        reset(&s);
        return;
    };
    if let Err(why) = eg.admission.admit(&g.tenant, g.id) {
        reset(&s);
        eg.denied(g.id, "*", &why);
        refused(&eg, &g, peer, orig, why);
        return;
    }
    let _slot = Slot(eg.clone(), g.clone());
    let t0 = Instant::now();
    let mut buf = Vec::with_capacity(2048);
    let first = read_first(&mut s, &mut buf).await;
    let policy = g.policy();
    let (transport, plugin, host, http) = match &first {
        First::Tls(h) => ("tls", "sni", h.clone(), None),
        First::Http(h) => ("http", "http_host", h.host.clone(), Some(h)),
        First::Raw => ("tcp", "ip", None, None),
    };
    let mut v = match http.and_then(|h| h.problem.clone().or_else(|| eg.plain_stub(g.id, &buf))) {
        Some(problem) => Verdict {
            target: None,
            reason: problem,
        },
        None => decide(&eg, &policy, host.as_deref(), orig).await,
    };
    let plugin = if host
        .as_deref()
        .is_some_and(|h| h.parse::<IpAddr>().is_err())
    {
        plugin
    } else {
        "ip"
    };
    let shown_host = host.clone().unwrap_or_else(|| orig.ip().to_string());
    let audit = |action, outcome: &str, reason: &str, error: &str, up, down, dst: String| {
        EgressAuditPayload {
            kind: EgressAuditKind::TcpConnection,
            tcp_connection: Some(EgressTcpConnectionAudit {
                src_addr: peer.to_string(),
                dst_addr: dst,
                host: shown_host.clone(),
                transport: transport.into(),
                plugin: plugin.into(),
                bytes_up: up,
                bytes_down: down,
                duration_ms: t0.elapsed().as_millis() as u64,
                action,
                outcome: outcome.into(),
                reason: reason.into(),
                error: error.into(),
            }),
            http_request: None,
            icmp_drop: None,
            dns_query: None,
        }
    };
    let http_audit = |h: &HttpHead, action, status: u16, reason: &str| {
        http_audit(&shown_host, h, action, status, reason)
    };

    let target = match v.target.take() {
        Some(t) => t,
        None => {
            if let Some(h) = http {
                let resp = forbidden(&policy, g.id, &shown_host, &v.reason);
                let _ = tokio::time::timeout(Duration::from_secs(2), s.write_all(resp.as_bytes()))
                    .await;
                let _ = s.shutdown().await;
                eg.audits
                    .record(g.id, http_audit(h, EgressAction::Deny, 403, &v.reason));
            } else {
                // Refused at once: a reset, not a connection left hanging.
                reset(&s);
            }
            eg.denied(g.id, &shown_host, &v.reason);
            eg.audits.record(
                g.id,
                audit(
                    EgressAction::Deny,
                    "denied",
                    &v.reason,
                    "",
                    0,
                    0,
                    orig.to_string(),
                ),
            );
            return;
        }
    };
    // Secret injection: TLS to a bound host is terminated and proxied
    // (intercept.rs); everything else is spliced below.
    if let First::Tls(Some(sni)) = &first {
        if let Some((ca, watch)) = eg.intercepts(g.id, sni) {
            let job = super::intercept::Job {
                ca,
                watch,
                sni: sni.clone(),
                target,
                peer,
                reason: v.reason,
            };
            return super::intercept::run(&eg, &g, s, buf, job, t0).await;
        }
    }
    let up = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(target)).await {
        Ok(Ok(u)) => u,
        Ok(Err(e)) => {
            return fail(
                &eg,
                &g,
                s,
                http,
                audit(
                    EgressAction::Error,
                    "connect_failed",
                    &v.reason,
                    &e.to_string(),
                    0,
                    0,
                    target.to_string(),
                ),
            )
            .await
        }
        Err(_) => {
            return fail(
                &eg,
                &g,
                s,
                http,
                audit(
                    EgressAction::Error,
                    "connect_timeout",
                    &v.reason,
                    "connect timed out",
                    0,
                    0,
                    target.to_string(),
                ),
            )
            .await
        }
    };
    let _ = up.set_nodelay(true);
    if let Some(h) = http {
        eg.audits
            .record(g.id, http_audit(h, EgressAction::Allow, 0, &v.reason));
    }
    let counters = Arc::new((AtomicU64::new(0), AtomicU64::new(0)));
    let c2 = counters.clone();
    let inspect = http.map(|h| KeptAlive {
        eg: eg.clone(),
        g: g.clone(),
        host: h.host.clone(),
    });
    // Both sockets move to a relay thread (relays.rs) for the data phase.
    let (s, up) = match (s.into_std(), up.into_std()) {
        (Ok(s), Ok(up)) => (s, up),
        _ => return,
    };
    let task = super::relays::spawn(async move {
        let (Ok(s), Ok(up)) = (TcpStream::from_std(s), TcpStream::from_std(up)) else {
            return None;
        };
        if let Some(k) = inspect {
            return k.relay(s, up, buf, c2).await;
        }
        let mut s = s;
        let mut up = up;
        if up.write_all(&buf).await.is_err() {
            return None;
        }
        c2.0.fetch_add(buf.len() as u64, Ordering::Relaxed);
        if let Ok((a, b)) = tokio::io::copy_bidirectional(&mut s, &mut up).await {
            c2.0.fetch_add(a, Ordering::Relaxed);
            c2.1.fetch_add(b, Ordering::Relaxed);
        }
        None
    });
    let conn_id = CONN_SEQ.fetch_add(1, Ordering::Relaxed);
    let live = Live {
        host: host.filter(|h| h.parse::<IpAddr>().is_err()),
        addr: target.ip(),
        abort: task.abort_handle(),
    };
    let recheck = !live.still_allowed(&g.policy());
    g.conns
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(conn_id, live);
    if recheck {
        task.abort();
    }
    let res = task.await;
    g.conns
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&conn_id);
    let (action, outcome, reason) = match res {
        Err(_) => (
            EgressAction::Allow,
            "cut",
            "the runtime's egress policy changed and no longer allows it".to_string(),
        ),
        Ok(None) => (EgressAction::Allow, "closed", v.reason.clone()),
        Ok(Some((denied_host, why))) => {
            eg.denied(g.id, &denied_host, &why);
            (
                EgressAction::Deny,
                "denied",
                format!("a later request on the connection was refused: {why}"),
            )
        }
    };
    eg.audits.record(
        g.id,
        audit(
            action,
            outcome,
            &reason,
            "",
            counters.0.load(Ordering::Relaxed),
            counters.1.load(Ordering::Relaxed),
            target.to_string(),
        ),
    );
}

fn http_audit(
    host: &str,
    h: &HttpHead,
    action: EgressAction,
    status: u16,
    reason: &str,
) -> EgressAuditPayload {
    EgressAuditPayload {
        kind: EgressAuditKind::HttpRequest,
        http_request: Some(EgressHttpRequestAudit {
            host: host.to_string(),
            method: h.method.clone(),
            path: h.path.clone(),
            status,
            bytes_up: 0,
            bytes_down: 0,
            action,
            outcome: if action == EgressAction::Allow {
                "forwarded".into()
            } else {
                "denied".into()
            },
            reason: reason.into(),
            query_redacted: h.query,
        }),
        tcp_connection: None,
        icmp_drop: None,
        dns_query: None,
    }
}

/// The 403 a denied HTTP request gets: which policy denied which host, why.
fn forbidden(policy: &EgressPolicy, id: uuid::Uuid, host: &str, reason: &str) -> String {
    let body = format!(
        "runta egress: the {} policy of runtime {id} denied {host}: {reason}\n",
        mode(policy)
    );
    format!(
        "HTTP/1.1 403 Forbidden\r\ncontent-type: text/plain; charset=utf-8\r\nx-runta-egress: denied\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// An allowed plain-HTTP connection, relayed request by request: every
/// request head after the first is checked as the first was (problems,
/// policy) and must name the same host (the upstream is that host's
/// address), before any byte of it is forwarded. Responses flow back
/// untouched.
struct KeptAlive {
    eg: Arc<Egress>,
    g: Arc<Guarded>,
    /// The first request's host: the name the upstream was resolved from.
    host: Option<String>,
}

impl KeptAlive {
    fn check(&self, h: &HttpHead) -> Result<(), String> {
        if let Some(p) = &h.problem {
            return Err(p.clone());
        }
        let p = self.g.policy.read().unwrap_or_else(|e| e.into_inner());
        if let Some(name) = h
            .host
            .as_deref()
            .filter(|n| !n.is_empty() && n.parse::<IpAddr>().is_err())
        {
            p.allows_name(name)?;
        }
        if h.host != self.host {
            return Err(format!(
                "Host {} on a connection opened for {}",
                h.host.as_deref().unwrap_or("(none)"),
                self.host.as_deref().unwrap_or("(no host)")
            ));
        }
        Ok(())
    }

    /// Relays until either side ends; `Some((host, reason))` when a later
    /// request was refused (it got a 403 after the responses already asked
    /// for, and was never forwarded).
    async fn relay(
        self,
        s: TcpStream,
        up: TcpStream,
        mut pending: Vec<u8>,
        counters: Arc<(AtomicU64, AtomicU64)>,
    ) -> Option<(String, String)> {
        let (mut cr, mut cw) = s.into_split();
        let (mut ur, mut uw) = up.into_split();
        let c_up = counters.clone();
        let me = &self;
        let ex = &Exchange::default();
        let upward = async move {
            let mut f = Framing::Head;
            let mut first = true;
            // An `Upgrade` request was forwarded and its answer is not known:
            // the bytes after it wait (HTTP to check, or a switched protocol).
            let mut held = false;
            let mut chunk = vec![0u8; 16 * 1024];
            let mut more = Coalesced::new(me);
            let denial = 'conn: loop {
                loop {
                    if held && f == Framing::Head && !pending.is_empty() {
                        held = false;
                        if ex.switched().await {
                            f = Framing::Tunnel;
                        }
                    }
                    let n = match f.next(&pending) {
                        Next::More => break,
                        Next::Forward(n) => n,
                        Next::Head(n, h) => {
                            f.accept(&h);
                            if !first {
                                // A tenant's stub never travels in plain HTTP.
                                let stub = me.eg.plain_stub(me.g.id, &pending[..n]);
                                if let Err(why) =
                                    me.check(&h).and_then(|()| stub.map_or(Ok(()), Err))
                                {
                                    let shown = h.host.clone().unwrap_or_default();
                                    more.flush();
                                    me.eg.audits.record(
                                        me.g.id,
                                        http_audit(&shown, &h, EgressAction::Deny, 403, &why),
                                    );
                                    break 'conn Some((shown, why));
                                }
                            }
                            ex.ask(Asked {
                                head: h.method == "HEAD",
                                upgrade: h.upgrade,
                            });
                            held = h.upgrade;
                            if !first {
                                more.add(h);
                            }
                            first = false;
                            n
                        }
                        Next::Bad(why) => {
                            let shown = me.host.clone().unwrap_or_default();
                            break 'conn Some((shown, why));
                        }
                    };
                    if uw.write_all(&pending[..n]).await.is_err() {
                        break 'conn None;
                    }
                    c_up.0.fetch_add(n as u64, Ordering::Relaxed);
                    pending.drain(..n);
                }
                match cr.read(&mut chunk).await {
                    Ok(0) | Err(_) => break None,
                    Ok(n) => pending.extend_from_slice(&chunk[..n]),
                }
            };
            more.flush();
            // The upstream sees the end of what it was asked, finishes its
            // answers and closes.
            let _ = uw.shutdown().await;
            denial
        };
        let downward = async move {
            let mut f = Framing::Head;
            let mut buf: Vec<u8> = Vec::with_capacity(16 * 1024);
            let mut sent = 0u64;
            while matches!(ur.read_buf(&mut buf).await, Ok(n) if n > 0) {
                // Framed as far as it goes, then forwarded in one write.
                let mut at = 0;
                while let Some(n) = f.reply(&buf[at..], ex) {
                    at += n;
                }
                if cw.write_all(&buf[..at]).await.is_err() {
                    break;
                }
                sent += at as u64;
                buf.drain(..at);
            }
            // Nothing more will be answered: a client's side waiting on an
            // upgrade's answer goes on checking requests.
            ex.lose();
            counters.1.fetch_add(sent, Ordering::Relaxed);
            cw
        };
        tokio::pin!(upward, downward);
        tokio::select! {
            d = &mut upward => match d {
                None => {
                    let mut cw = downward.await;
                    let _ = cw.shutdown().await;
                    None
                }
                Some((host, why)) => {
                    // Answers to the requests before the refused one first;
                    // an upstream that does not finish in time is cut off.
                    if let Ok(mut cw) = tokio::time::timeout(Duration::from_secs(5), &mut downward).await {
                        let resp = forbidden(&self.g.policy(), self.g.id, &host, &why);
                        let _ = tokio::time::timeout(Duration::from_secs(2), cw.write_all(resp.as_bytes())).await;
                        let _ = cw.shutdown().await;
                    }
                    Some((host, why))
                }
            },
            mut cw = &mut downward => {
                let _ = cw.shutdown().await;
                upward.await
            }
        }
    }
}

/// The allowed requests after the first on a kept-alive connection (same
/// host, by [`KeptAlive::check`]): one audit for up to [`COALESCE_MAX`] of
/// them, written before a denial on the connection, at the first request
/// [`COALESCE_FOR`] after the record began, when full, and when the
/// connection ends (also when it is cut: on drop), so a chatty program cannot
/// flush the runtime's bounded history with one row per request. The first
/// request and every denial have a row each.
struct Coalesced {
    eg: Arc<Egress>,
    id: uuid::Uuid,
    count: u64,
    since: Instant,
    /// The latest of them (its method and path are the row's).
    last: Option<HttpHead>,
}

const COALESCE_MAX: u64 = 1000;
const COALESCE_FOR: Duration = Duration::from_secs(10);

impl Coalesced {
    fn new(k: &KeptAlive) -> Self {
        Coalesced {
            eg: k.eg.clone(),
            id: k.g.id,
            count: 0,
            since: Instant::now(),
            last: None,
        }
    }

    fn add(&mut self, h: HttpHead) {
        if self.count == 0 {
            self.since = Instant::now();
        }
        self.count += 1;
        self.last = Some(h);
        if self.count >= COALESCE_MAX || self.since.elapsed() >= COALESCE_FOR {
            self.flush();
        }
    }

    fn flush(&mut self) {
        if let Some(h) = self.last.take() {
            let host = h.host.as_deref().unwrap_or_default();
            let why = format!(
                "{} more request(s) on the connection to the same host, still allowed (one record, the latest's method and path)",
                self.count
            );
            self.eg
                .audits
                .record(self.id, http_audit(host, &h, EgressAction::Allow, 0, &why));
        }
        self.count = 0;
    }
}

impl Drop for Coalesced {
    fn drop(&mut self) {
        self.flush();
    }
}

async fn fail(
    eg: &Egress,
    g: &Guarded,
    mut s: TcpStream,
    http: Option<&HttpHead>,
    a: EgressAuditPayload,
) {
    if http.is_some() {
        let body = "runta egress: the upstream could not be reached\n";
        let resp = format!(
            "HTTP/1.1 502 Bad Gateway\r\ncontent-type: text/plain\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        let _ = s.write_all(resp.as_bytes()).await;
    } else {
        reset(&s);
    }
    eg.audits.record(g.id, a);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_are_capped_per_runtime_per_tenant_and_in_total() {
        // 4096 descriptors: 1024 connections in all, 256 a tenant, 256 a runtime.
        let a = Admission::for_nofile(4096);
        let (t1, t2): (Arc<str>, Arc<str>) = ("one".into(), "two".into());
        let rt = |i: u128| uuid::Uuid::from_u128(i);
        for _ in 0..256 {
            a.admit(&t1, rt(1)).unwrap();
        }
        let e = a.admit(&t1, rt(1)).unwrap_err();
        assert!(e.contains("runtime holds 256"), "{e}");
        // The same tenant's second runtime is refused by the tenant cap ...
        let e = a.admit(&t1, rt(2)).unwrap_err();
        assert!(e.contains("tenant's runtimes hold 256"), "{e}");
        // ... another tenant is not, up to the total.
        for t in 0..3u128 {
            let tenant: Arc<str> = format!("t{t}").into();
            for _ in 0..256 {
                a.admit(&tenant, rt(10 + t)).unwrap();
            }
        }
        let e = a.admit(&t2, rt(20)).unwrap_err();
        assert!(e.contains("gateway holds 1024"), "{e}");
        // Given back, the slot is free again, and nothing leaks per key.
        a.release(&t1, rt(1));
        a.admit(&t2, rt(20)).unwrap();
        a.release(&t2, rt(20));
        for _ in 0..255 {
            a.release(&t1, rt(1));
        }
        let o = a.open.lock().unwrap();
        assert!(!o.tenants.contains_key(&t1) && !o.runtimes.contains_key(&rt(1)));
        assert_eq!(o.total, 768);
    }

    /// Refusals at a cap: the first is a row at once, the rest of a burst
    /// one row with their count once the last row is 10 s old.
    #[test]
    fn refusals_are_one_row_per_burst() {
        let mut r = Refusals::default();
        let peer: SocketAddr = "10.250.0.2:40000".parse().unwrap();
        let dst: SocketAddrV4 = "198.18.0.2:9000".parse().unwrap();
        let refuse = |r: &mut Refusals| {
            r.count += 1;
            r.last = Some((
                peer,
                dst,
                "the runtime holds 512 gateway connections, its most".into(),
            ));
            r.take()
        };
        let reason = |p: EgressAuditPayload| p.tcp_connection.unwrap().reason;
        assert!(reason(refuse(&mut r).unwrap()).starts_with("1 connection(s) refused"));
        for _ in 0..999 {
            assert!(refuse(&mut r).is_none());
        }
        assert!(r.take().is_none(), "not due yet");
        r.written = Instant::now().checked_sub(REFUSALS_EVERY);
        let row = r.take().unwrap();
        let t = row.tcp_connection.as_ref().unwrap();
        assert_eq!(
            (t.plugin.as_str(), t.outcome.as_str(), t.action),
            ("admission", "refused", EgressAction::Deny)
        );
        assert!(
            t.reason.starts_with("999 connection(s) refused") && t.reason.contains("512"),
            "{}",
            t.reason
        );
        assert!(r.take().is_none(), "nothing left");
    }

    fn policy(mode: EgressMode, allowed: &[&str]) -> EgressPolicy {
        EgressPolicy {
            mode,
            allowed_hosts: allowed
                .iter()
                .map(|s| runta_api::HostEntry::try_from(s.to_string()).unwrap())
                .collect(),
            denied_hosts: vec![],
        }
    }

    /// Runs `f` over `stream` fed `step` bytes at a time, as reads would
    /// deliver it: the hosts of the heads found, in order, or the refusal.
    fn heads(stream: &[u8], step: usize) -> Result<Vec<String>, String> {
        let (mut f, mut pending, mut out) = (Framing::Head, Vec::new(), Vec::new());
        for piece in stream.chunks(step) {
            pending.extend_from_slice(piece);
            loop {
                match f.next(&pending) {
                    Next::More => break,
                    Next::Forward(n) => drop(pending.drain(..n)),
                    Next::Head(n, h) => {
                        if let Some(p) = &h.problem {
                            return Err(p.clone());
                        }
                        out.push(h.host.clone().unwrap_or_default());
                        f.accept(&h);
                        pending.drain(..n);
                    }
                    Next::Bad(e) => return Err(e),
                }
            }
        }
        assert!(
            pending.is_empty(),
            "{:?}",
            String::from_utf8_lossy(&pending)
        );
        Ok(out)
    }

    /// Every request head on a kept-alive connection is found, after a
    /// chunked body (extensions, trailers), a sized one or none, however
    /// the bytes are split; heads whose framing or lines another parser
    /// could read differently are refused.
    #[test]
    fn every_request_head_on_a_connection_is_found() {
        let stream = b"POST /a HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n5;x=1\r\nhello\r\n0\r\nX-T: 1\r\n\r\n\
GET /b HTTP/1.1\r\nHost: b.test\r\nContent-Length: 3\r\n\r\nxyz\
GET /c HTTP/1.1\r\nHost: C.test:80\r\n\r\n";
        for step in [1, 2, 7, stream.len()] {
            assert_eq!(
                heads(stream, step).unwrap(),
                ["a.test", "b.test", "c.test"],
                "{step}"
            );
        }
        // An Upgrade request is HTTP like any other to the framing (the relay
        // holds what follows it until its answer is known): what follows is
        // parsed, a request as a request, a switched protocol's bytes refused.
        let ws = b"GET /ws HTTP/1.1\r\nHost: a.test\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n";
        let then = [&ws[..], b"GET / HTTP/1.1\r\nHost: b.test\r\n\r\n"].concat();
        assert_eq!(heads(&then, 3).unwrap(), ["a.test", "b.test"]);
        let frame = [&ws[..], b"\x81\x05hello"].concat();
        assert!(heads(&frame, 3)
            .unwrap_err()
            .contains("not an HTTP request"));
        for (bad, why) in [
            (&b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"[..], "both"),
            (b"GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", "chunked"),
            (b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1, 2\r\n\r\n", "one number"),
            (b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: +1\r\n\r\n", "one number"),
            (b"GET / HTTP/1.1\r\nHost: a\nHost: b\r\n\r\n", "malformed"),
            (b"GET / HTTP/1.1\r\nHost : b\r\n\r\n", "malformed"),
            (b"GET / HTTP/1.1\r\nX: 1\r\n Host: b\r\n\r\n", "malformed"),
            (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "HTTP/2"),
            (b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\n\r\n", "HTTP/2"),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "chunk size"),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab\r\n", "CRLF"),
            (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n\x16\x03\x01", "not an HTTP request"),
        ] {
            let e = heads(bad, 1).unwrap_err();
            assert!(e.contains(why), "{:?}: {e}", String::from_utf8_lossy(bad));
        }
    }

    /// What the gateway connects to for a name is its own resolution,
    /// filtered: a system-resolver answer in a private range (a public name
    /// rebound inside) is refused unless an entry names the range; the
    /// operator's hosts file may point there; nobody may point at metadata,
    /// loopback or the runtime network; a mixed answer keeps its public part.
    #[test]
    fn a_system_answer_in_a_private_range_is_rebinding() {
        let eg = Egress::for_tests();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let allow = policy(EgressMode::Allowlist, &["rebind.test"]);
        let v = pick(
            &eg,
            &allow,
            "rebind.test",
            &[ip("10.1.2.3")],
            Source::System,
            80,
        );
        assert!(v.target.is_none());
        assert!(
            v.reason.contains("resolves to 10.1.2.3") && v.reason.contains("private"),
            "{}",
            v.reason
        );
        let v = pick(
            &eg,
            &allow,
            "rebind.test",
            &[ip("192.168.9.9"), ip("198.18.0.9")],
            Source::System,
            80,
        );
        assert_eq!(v.target, Some("198.18.0.9:80".parse().unwrap()));
        let v = pick(
            &eg,
            &allow,
            "rebind.test",
            &[ip("10.1.2.3")],
            Source::HostsFile,
            80,
        );
        assert_eq!(v.target, Some("10.1.2.3:80".parse().unwrap()));
        let named = policy(EgressMode::Allowlist, &["rebind.test", "10.0.0.0/8"]);
        let v = pick(
            &eg,
            &named,
            "rebind.test",
            &[ip("10.1.2.3")],
            Source::System,
            443,
        );
        assert_eq!(v.target, Some("10.1.2.3:443".parse().unwrap()));
        for never in ["169.254.169.254", "127.0.0.1", "10.250.0.1", "10.250.3.4"] {
            for src in [Source::System, Source::HostsFile] {
                let v = pick(&eg, &named, "rebind.test", &[ip(never)], src, 80);
                assert!(v.target.is_none(), "{never} {src:?}");
                assert!(
                    v.reason.contains(&format!("resolves to {never}")),
                    "{}",
                    v.reason
                );
            }
        }
        let open = policy(EgressMode::Denylist, &[]);
        let v = pick(
            &eg,
            &open,
            "rebind.test",
            &[ip("172.16.0.1")],
            Source::System,
            80,
        );
        assert!(
            v.target.is_none(),
            "a denylist keeps private ranges closed too"
        );
    }

    #[test]
    fn http_heads_are_named() {
        let Parse::Done(First::Http(h)) =
            parse_http(b"GET /a?b=1 HTTP/1.1\r\nHost: Example.test:8080\r\n\r\n")
        else {
            panic!()
        };
        assert_eq!(
            (h.host.as_deref(), h.path.as_str(), h.query),
            (Some("example.test"), "/a", true)
        );
        let Parse::Done(First::Http(h)) =
            parse_http(b"CONNECT x.test:443 HTTP/1.1\r\nHost: x.test\r\n\r\n")
        else {
            panic!()
        };
        assert!(h.problem.is_some());
        let Parse::Done(First::Http(h)) =
            parse_http(b"GET http://b.test/ HTTP/1.1\r\nHost: a.test\r\n\r\n")
        else {
            panic!()
        };
        assert!(h.problem.is_some());
        let Parse::Done(First::Http(h)) =
            parse_http(b"GET / HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\n\r\n")
        else {
            panic!()
        };
        assert!(h.problem.is_some());
        assert!(matches!(
            parse_http(b"GET / HTTP/1.1\r\nHost: a"),
            Parse::More
        ));
        assert_eq!(host_of("[2001:db8::1]:443"), "2001:db8::1");
        assert_eq!(host_of("user@a.test:1"), "a.test");
    }

    /// Feeds the upstream's `stream` to [`Framing::reply`] `step` bytes at a
    /// time, with `asked` forwarded before: every byte forwarded, and what
    /// the client's side was told of its upgrade (`None`: still waiting).
    fn replies(asked: &[Asked], stream: &[u8], step: usize) -> (Option<bool>, Framing) {
        let ex = Exchange::default();
        for a in asked {
            ex.ask(*a);
        }
        let (mut f, mut pending, mut sent) = (Framing::Head, Vec::new(), 0);
        for piece in stream.chunks(step) {
            pending.extend_from_slice(piece);
            while let Some(n) = f.reply(&pending, &ex) {
                pending.drain(..n);
                sent += n;
            }
        }
        assert_eq!(sent + pending.len(), stream.len());
        let s = ex.lock();
        let told = s.switched.or(s.lost.then_some(false));
        (told, f)
    }

    const PLAIN: Asked = Asked {
        head: false,
        upgrade: false,
    };
    const HEAD: Asked = Asked {
        head: true,
        upgrade: false,
    };
    const UPGRADE: Asked = Asked {
        head: false,
        upgrade: true,
    };

    /// Only a `101` that answers the `Upgrade` request itself switches: not
    /// one inside an earlier answer's body (sized, chunked, read to close),
    /// not an interim `100`, not one answering a request that asked for no
    /// upgrade, not an answer nobody asked for; `HEAD`, 204 and 304 answers
    /// have no body; however the bytes are split.
    #[test]
    fn only_the_upgrade_requests_own_101_switches() {
        let fake = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n";
        let sized = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{fake}",
            fake.len()
        );
        let chunked = format!(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{fake}\r\n0\r\nX-T: 1\r\n\r\n",
            fake.len()
        );
        let ok = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
        let switch = "HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n\x01\x05hello";
        let cases: Vec<(&str, Vec<Asked>, String, Option<bool>)> = vec![
            ("real 101", vec![UPGRADE], switch.into(), Some(true)),
            ("refused: a plain 200", vec![UPGRADE], ok.into(), Some(false)),
            ("100 then 200", vec![UPGRADE], format!("HTTP/1.1 100 Continue\r\n\r\n{ok}"), Some(false)),
            ("100, 103 then 101", vec![UPGRADE], format!("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n{switch}"), Some(true)),
            ("101 in a sized body", vec![PLAIN, UPGRADE], format!("{sized}{ok}"), Some(false)),
            ("101 in a chunked body", vec![PLAIN, UPGRADE], format!("{chunked}{ok}"), Some(false)),
            ("pipelined, then a real 101", vec![PLAIN, PLAIN, UPGRADE], format!("{sized}{chunked}{switch}"), Some(true)),
            ("HEAD answer has no body", vec![HEAD, UPGRADE], format!("HTTP/1.1 200 OK\r\nContent-Length: 40\r\n\r\n{switch}"), Some(true)),
            ("204 and 304 have none", vec![PLAIN, PLAIN, UPGRADE], format!("HTTP/1.1 204 No Content\r\nContent-Length: 9\r\n\r\nHTTP/1.1 304 Not Modified\r\n\r\n{switch}"), Some(true)),
            ("read to close", vec![PLAIN, UPGRADE], format!("HTTP/1.1 200 OK\r\n\r\n{fake}"), Some(false)),
            ("TE and CL", vec![PLAIN, UPGRADE], format!("HTTP/1.1 200 OK\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n{fake}"), Some(false)),
            ("two lengths", vec![PLAIN, UPGRADE], format!("HTTP/1.1 200 OK\r\nContent-Length: 0, 5\r\n\r\n{fake}"), Some(false)),
            ("TE not chunked", vec![PLAIN, UPGRADE], format!("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n{fake}"), Some(false)),
            ("obs-fold", vec![PLAIN, UPGRADE], format!("HTTP/1.1 200 OK\r\nX: a\r\n b\r\nContent-Length: 0\r\n\r\n{fake}"), Some(false)),
            ("101 to a plain request", vec![PLAIN, UPGRADE], format!("{fake}{fake}"), Some(false)),
            ("an answer nobody asked for", vec![], format!("{ok}{fake}"), Some(false)),
            ("not HTTP", vec![UPGRADE], format!("SSH-2.0-x\r\n{fake}"), Some(false)),
            ("still waiting", vec![PLAIN, UPGRADE], format!("{sized}HTTP/1.1 2"), None),
        ];
        for (what, asked, stream, told) in cases {
            for step in [1, 3, 17, stream.len()] {
                let (got, f) = replies(&asked, stream.as_bytes(), step);
                assert_eq!(got, told, "{what}, {step} at a time");
                if told == Some(true) {
                    assert_eq!(f, Framing::Tunnel, "{what}");
                }
            }
        }
        // Past the most requests outstanding, nothing is switched any more.
        let ex = Exchange::default();
        for _ in 0..=MAX_OUTSTANDING {
            ex.ask(PLAIN);
        }
        ex.ask(UPGRADE);
        assert!(ex.lock().lost);
        // A head too long to frame ends the framing.
        let long = format!("HTTP/1.1 200 OK\r\nX: {}\r\n", "a".repeat(MAX_REPLY_HEAD));
        assert_eq!(replies(&[UPGRADE], long.as_bytes(), 4096).0, Some(false));
    }

    /// An upstream for [`relay_case`]: reads until it has `heads` request
    /// heads, answers `answer`, then echoes (`echo`) or reads on until the
    /// gateway closes; returns all it received.
    async fn upstream(l: TcpListener, heads: usize, answer: Vec<u8>, echo: bool) -> Vec<u8> {
        let (mut s, _) = l.accept().await.unwrap();
        let mut got = Vec::new();
        let mut b = [0u8; 4096];
        while got.windows(4).filter(|w| w == b"\r\n\r\n").count() < heads {
            match s.read(&mut b).await {
                Ok(0) | Err(_) => return got,
                Ok(n) => got.extend_from_slice(&b[..n]),
            }
        }
        s.write_all(&answer).await.unwrap();
        loop {
            match s.read(&mut b).await {
                Ok(0) | Err(_) => return got,
                Ok(n) => {
                    got.extend_from_slice(&b[..n]);
                    if echo {
                        let at = got.len() - n;
                        let _ = s.write_all(&got[at..]).await;
                    }
                }
            }
        }
    }

    /// One connection through [`KeptAlive::relay`] for a runtime allowed
    /// `a.test`: the client sends `sent` (then ends its side once it has
    /// `until` in what came back, or at once); (what the client got, what
    /// the upstream got, the relay's refusal).
    async fn relay_case(
        sent: &[u8],
        heads: usize,
        answer: &[u8],
        echo: bool,
        until: &str,
    ) -> (String, String, Option<(String, String)>) {
        let eg = Arc::new(Egress::for_tests());
        let g = Arc::new(Guarded {
            id: uuid::Uuid::from_u128(7),
            policy: std::sync::RwLock::new(policy(EgressMode::Allowlist, &["a.test"])),
            conns: Mutex::new(HashMap::new()),
            tenant: "t".into(),
            refusals: Mutex::new(Refusals::default()),
            dns: Mutex::default(),
        });
        let ul = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let ua = ul.local_addr().unwrap();
        let server = tokio::spawn(upstream(ul, heads, answer.to_vec(), echo));
        let gl = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(gl.local_addr().unwrap()).await.unwrap();
        let (s, _) = gl.accept().await.unwrap();
        let up = TcpStream::connect(ua).await.unwrap();
        let k = KeptAlive {
            eg,
            g,
            host: Some("a.test".into()),
        };
        let counters = Arc::new((AtomicU64::new(0), AtomicU64::new(0)));
        let relay = tokio::spawn(k.relay(s, up, Vec::new(), counters));
        client.write_all(sent).await.unwrap();
        let mut got = Vec::new();
        let mut b = [0u8; 4096];
        let read = async {
            loop {
                if !until.is_empty() && String::from_utf8_lossy(&got).contains(until) {
                    let _ = client.shutdown().await;
                }
                match client.read(&mut b).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&b[..n]),
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(10), read)
            .await
            .expect("the relay ends");
        let denial = tokio::time::timeout(Duration::from_secs(10), relay)
            .await
            .expect("the relay ends")
            .unwrap();
        let at_server = server.await.unwrap();
        (
            String::from_utf8_lossy(&got).into_owned(),
            String::from_utf8_lossy(&at_server).into_owned(),
            denial,
        )
    }

    /// The red-team hole and the variants an attacker tries next, through
    /// the real relay over loopback: after an `Upgrade` request the server
    /// answered without `101` (a plain 200, a 100 then a 200, a fake `101`
    /// inside an earlier pipelined answer's body, a `101` to a request that
    /// asked for no upgrade), a request for a denied host is refused (403,
    /// never reaches the server) and bytes that are not HTTP are refused; a
    /// real `101` (also after a 100, after pipelined requests, after a
    /// `HEAD`) tunnels both ways.
    #[tokio::test]
    async fn an_upgrade_tunnels_only_after_its_own_101() {
        let up =
            "GET /ws HTTP/1.1\r\nHost: a.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";
        let denied = "GET / HTTP/1.1\r\nHost: b.test\r\n\r\n";
        let ok = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
        let fake = "HTTP/1.1 101 Switching Protocols\r\n\r\n";
        let sized = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{fake}",
            fake.len()
        );
        let switch =
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";
        let plain = "GET /x HTTP/1.1\r\nHost: a.test\r\n\r\n";
        for (what, sent, heads, answer) in [
            ("a plain 200", format!("{up}{denied}"), 1, ok.to_string()),
            (
                "100 then 200",
                format!("{up}{denied}"),
                1,
                format!("HTTP/1.1 100 Continue\r\n\r\n{ok}"),
            ),
            (
                "a fake 101 in a pipelined answer",
                format!("{plain}{up}{denied}"),
                2,
                format!("{sized}{ok}"),
            ),
        ] {
            let (client, server, denial) =
                relay_case(sent.as_bytes(), heads, answer.as_bytes(), false, "").await;
            assert!(
                client.contains(&answer) && client.contains("403 Forbidden"),
                "{what}: {client}"
            );
            assert!(client.contains("b.test"), "{what}: {client}");
            assert!(
                !server.contains("b.test"),
                "{what}: the server got {server}"
            );
            assert_eq!(denial.map(|d| d.0).as_deref(), Some("b.test"), "{what}");
        }
        // A 101 answering a request that asked for no upgrade: nothing is
        // switched, what follows the later upgrade stays HTTP to check.
        let sent = format!("{plain}{up}\x01\x05hello");
        let (client, server, denial) = relay_case(
            sent.as_bytes(),
            2,
            format!("{fake}{switch}").as_bytes(),
            false,
            "",
        )
        .await;
        assert!(client.contains("403 Forbidden"), "{client}");
        assert!(!server.contains("hello"), "{server}");
        assert!(denial.unwrap().1.contains("not an HTTP request"));
        // Real upgrades: the frame reaches the server and comes back.
        for (what, sent, heads, answer) in [
            ("101", format!("{up}\x01\x05hello"), 1, switch.to_string()),
            (
                "100 then 101",
                format!("{up}\x01\x05hello"),
                1,
                format!("HTTP/1.1 100 Continue\r\n\r\n{switch}"),
            ),
            (
                "pipelined before",
                format!("{plain}{up}\x01\x05hello"),
                2,
                format!("{sized}{switch}"),
            ),
            (
                "after a HEAD",
                format!("HEAD /x HTTP/1.1\r\nHost: a.test\r\n\r\n{up}\x01\x05hello"),
                2,
                format!("HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n{switch}"),
            ),
        ] {
            let (client, server, denial) = relay_case(
                sent.as_bytes(),
                heads,
                answer.as_bytes(),
                true,
                "\x01\x05hello",
            )
            .await;
            assert!(
                client.ends_with(&format!("{switch}\x01\x05hello")),
                "{what}: {client:?}"
            );
            assert!(server.ends_with("\x01\x05hello"), "{what}: {server:?}");
            assert!(denial.is_none(), "{what}: {denial:?}");
        }
    }
}
