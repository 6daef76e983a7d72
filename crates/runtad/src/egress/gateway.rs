//! The TCP side of the egress gateway: every new TCP connection of a policy
//! runtime arrives here (iptables REDIRECT), is named from its first bytes,
//! checked, and spliced to an address the gateway resolved itself.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
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
    for l in lines {
        if let Some((k, v)) = l.split_once(':') {
            if k.trim().eq_ignore_ascii_case("host") {
                hosts.push(host_of(v.trim()));
            }
        }
    }
    if h.method == "CONNECT" {
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
        let (ips, src) = match eg.resolver().resolve(h).await {
            Ok(v) => v,
            Err(e) => return deny(e),
        };
        let mut why = format!("{h} has no IPv4 address");
        for ip in ips.iter().copied().filter(IpAddr::is_ipv4) {
            let named = src == Source::HostsFile || p.names_ip(ip);
            if let Some(f) = eg.forbidden(ip, named) {
                why = format!("{h} resolves to {ip}, {f}");
                continue;
            }
            if let Err(r) = p.allows_ip(ip, true) {
                why = r;
                continue;
            }
            return Verdict {
                target: Some(SocketAddr::new(ip, orig.port())),
                reason: format!("{h} allowed by the {} policy", mode(p)),
            };
        }
        return deny(why);
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
    if g.active.fetch_add(1, Ordering::AcqRel) >= MAX_CONNS_PER_RUNTIME {
        g.active.fetch_sub(1, Ordering::AcqRel);
        reset(&s);
        eg.denied(g.id, "*", "more than 512 connections open at once");
        return;
    }
    struct Slot(Arc<Guarded>);
    impl Drop for Slot {
        fn drop(&mut self) {
            self.0.active.fetch_sub(1, Ordering::AcqRel);
        }
    }
    let _slot = Slot(g.clone());
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
    let http_audit = |h: &HttpHead, action, status: u16, reason: &str| EgressAuditPayload {
        kind: EgressAuditKind::HttpRequest,
        http_request: Some(EgressHttpRequestAudit {
            host: shown_host.clone(),
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
    };

    let target = match v.target.take() {
        Some(t) => t,
        None => {
            if let Some(h) = http {
                let body = format!(
                    "runta egress: the {} policy of runtime {} denied {}: {}\n",
                    mode(&policy),
                    g.id,
                    shown_host,
                    v.reason
                );
                let resp = format!(
                    "HTTP/1.1 403 Forbidden\r\ncontent-type: text/plain; charset=utf-8\r\nx-runta-egress: denied\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                );
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
    let task = tokio::spawn(async move {
        let mut s = s;
        let mut up = up;
        if up.write_all(&buf).await.is_err() {
            return;
        }
        c2.0.fetch_add(buf.len() as u64, Ordering::Relaxed);
        if let Ok((a, b)) = tokio::io::copy_bidirectional(&mut s, &mut up).await {
            c2.0.fetch_add(a, Ordering::Relaxed);
            c2.1.fetch_add(b, Ordering::Relaxed);
        }
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
    let (outcome, reason) = if res.is_err() {
        (
            "cut",
            "the runtime's egress policy changed and no longer allows it".to_string(),
        )
    } else {
        ("closed", v.reason.clone())
    };
    eg.audits.record(
        g.id,
        audit(
            EgressAction::Allow,
            outcome,
            &reason,
            "",
            counters.0.load(Ordering::Relaxed),
            counters.1.load(Ordering::Relaxed),
            target.to_string(),
        ),
    );
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
}
