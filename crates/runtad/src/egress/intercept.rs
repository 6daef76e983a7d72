//! Secret injection: the gateway's TLS interception of a bound host.
//!
//! Only a TLS connection whose SNI is a host the runtime has a binding for
//! arrives here (every other connection is spliced untouched by `gateway`).
//! This side: the TLS handshake with the runtime, with a leaf of the
//! runtime's own CA (`ca`) for the SNI; HTTP/1.1 or HTTP/2 as ALPN said; per
//! request, the host checked against the SNI, the injections of the
//! binding set as of that request set (header replaced, or query parameter
//! set), a stub bound to another host refused; then the request sent on one
//! upstream connection, TLS verified against the host's trust store (plus
//! `--egress-upstream-ca`), ALPN offered as the runtime asked. Bodies are
//! streamed frame by frame both ways (hyper), so SSE and chunked responses
//! flow as they arrive; an HTTP/1.1 upgrade (WebSocket) is spliced once both
//! sides switched.
//!
//! Never logged nor audited: a rendered value. The audit names the binding,
//! the secret's name, the host, the method and the path.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{
    header, HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, Uri, Version,
};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use runta_api::{EgressAction, EgressAuditKind, EgressAuditPayload, EgressHttpRequestAudit};
use rustls::ClientConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use uuid::Uuid;

use super::ca::RuntimeCa;
use super::Egress;
use crate::secrets::{BindingWatch, Target};

/// A runtime that opens a connection and never finishes its handshake holds
/// it this long at most.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(10);
/// Request heads larger than this are refused (431 on HTTP/1.1, a stream
/// error on HTTP/2): a hostile program must not make the daemon buffer more.
const MAX_HEAD: usize = 64 * 1024;
/// Bytes of headers and query scanned for a misplaced stub.
const MAX_SCAN: usize = MAX_HEAD + 8 * 1024;

type Body = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// How the gateway reaches upstreams of intercepted hosts.
pub struct Upstream {
    /// ALPN h2 and http/1.1 (the runtime spoke HTTP/2).
    h2: Arc<ClientConfig>,
    /// ALPN http/1.1 only (the runtime spoke HTTP/1.1: upgrades stay possible).
    h1: Arc<ClientConfig>,
}

/// Bundles of the host's trust store, the first found is read.
const HOST_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

impl Upstream {
    /// The host's trust store plus `extra` (a PEM file, for tests and private
    /// upstreams). Neither found: no upstream certificate verifies, so every
    /// intercepted request fails closed (502).
    pub fn new(extra: Option<&Path>) -> Result<Upstream, String> {
        let mut roots = rustls::RootCertStore::empty();
        if let Some(b) = HOST_BUNDLES.iter().find(|p| Path::new(p).is_file()) {
            if let Ok(it) = CertificateDer::pem_file_iter(b) {
                let certs: Vec<_> = it.filter_map(Result::ok).collect();
                roots.add_parsable_certificates(certs);
            }
        }
        if let Some(p) = extra {
            let certs = CertificateDer::pem_file_iter(p)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("read --egress-upstream-ca {}: {e}", p.display()))?;
            if certs.is_empty() {
                return Err(format!(
                    "--egress-upstream-ca {}: no certificate in it",
                    p.display()
                ));
            }
            for c in certs {
                roots
                    .add(c)
                    .map_err(|e| format!("--egress-upstream-ca {}: {e}", p.display()))?;
            }
        }
        let roots = Arc::new(roots);
        let make = |alpn: Vec<Vec<u8>>| -> Result<Arc<ClientConfig>, String> {
            let mut c = ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS versions: {e}"))?
            .with_root_certificates(roots.clone())
            .with_no_client_auth();
            c.alpn_protocols = alpn;
            Ok(Arc::new(c))
        };
        Ok(Upstream {
            h2: make(vec![b"h2".to_vec(), b"http/1.1".to_vec()])?,
            h1: make(vec![b"http/1.1".to_vec()])?,
        })
    }
}

/// The first bytes the gateway already read, then the socket.
pub struct Prefixed {
    pre: Vec<u8>,
    at: usize,
    inner: TcpStream,
}

impl Prefixed {
    pub fn new(pre: Vec<u8>, inner: TcpStream) -> Self {
        Prefixed { pre, at: 0, inner }
    }
}

impl AsyncRead for Prefixed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.at < self.pre.len() {
            let n = (self.pre.len() - self.at).min(buf.remaining());
            let at = self.at;
            buf.put_slice(&self.pre[at..at + n]);
            self.at += n;
            if self.at == self.pre.len() {
                self.pre = Vec::new();
                self.at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// What one intercepted connection needs per request.
struct Conn {
    eg: Arc<Egress>,
    runtime: Uuid,
    sni: String,
    watch: BindingWatch,
    target: SocketAddr,
    /// The runtime negotiated HTTP/2.
    h2_client: bool,
    /// The upstream connection, made again when the upstream closed it (an
    /// idle timeout, `Connection: close`) while the runtime keeps its own.
    up: tokio::sync::Mutex<Sender>,
    /// Upgraded (WebSocket) connections spliced after a `101`: part of this
    /// connection, so [`serve`] returns only once they end (the gateway's
    /// connection slot is held meanwhile) and a policy cut, which drops
    /// `serve`, drops and so aborts them too.
    splices: std::sync::Mutex<tokio::task::JoinSet<()>>,
}

#[derive(Clone)]
enum Sender {
    H1(Arc<tokio::sync::Mutex<hyper::client::conn::http1::SendRequest<Body>>>),
    H2(hyper::client::conn::http2::SendRequest<Body>),
}

/// Counters of one intercepted connection, for its closing audit.
#[derive(Default)]
pub struct Counts {
    pub requests: std::sync::atomic::AtomicU64,
    pub injected: std::sync::atomic::AtomicU64,
}

/// One connection the gateway hands over: the runtime's CA, its live
/// bindings, the SNI, and the address the policy check resolved and allowed.
pub struct Job {
    pub ca: Arc<RuntimeCa>,
    pub watch: BindingWatch,
    pub sni: String,
    pub target: SocketAddr,
    pub peer: SocketAddr,
    /// Why the policy allowed it.
    pub reason: String,
}

/// Runs one intercepted connection, registered with the runtime's open
/// connections (a policy change cuts it like any other), and audits it.
pub async fn run(
    eg: &Arc<Egress>,
    g: &Arc<super::Guarded>,
    s: TcpStream,
    first: Vec<u8>,
    job: Job,
    t0: std::time::Instant,
) {
    use std::sync::atomic::Ordering::Relaxed;
    let counts = Arc::new(Counts::default());
    let (sni, target, peer, reason) = (job.sni.clone(), job.target, job.peer, job.reason.clone());
    let task = tokio::spawn(serve(
        eg.clone(),
        g.id,
        job.ca,
        job.watch,
        Prefixed::new(first, s),
        sni.clone(),
        target,
        counts.clone(),
    ));
    let conn_id = super::gateway::next_conn_id();
    let live = super::gateway::Live::new(Some(sni.clone()), target.ip(), task.abort_handle());
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
    let (action, outcome, why, error) = match res {
        Err(_) => (
            EgressAction::Allow,
            "cut",
            "the runtime's egress policy changed and no longer allows it".to_string(),
            String::new(),
        ),
        Ok(Ok(())) => (EgressAction::Allow, "closed", reason, String::new()),
        Ok(Err(e)) => (EgressAction::Error, "intercept_failed", reason, e),
    };
    eg.audits.record(
        g.id,
        EgressAuditPayload {
            kind: EgressAuditKind::TcpConnection,
            tcp_connection: Some(runta_api::EgressTcpConnectionAudit {
                src_addr: peer.to_string(),
                dst_addr: target.to_string(),
                host: sni,
                transport: "tls".into(),
                plugin: "secret_injection".into(),
                bytes_up: 0,
                bytes_down: 0,
                duration_ms: t0.elapsed().as_millis() as u64,
                action,
                outcome: outcome.into(),
                reason: format!(
                    "{why}; intercepted for secret injection: {} request(s), {} with a secret injected",
                    counts.requests.load(Relaxed),
                    counts.injected.load(Relaxed)
                ),
                error,
            }),
            http_request: None,
            icmp_drop: None,
            dns_query: None,
        },
    );
}

/// Serves one intercepted connection to its end. `Err` = it never got as far
/// as HTTP (handshake failed or timed out, upstream unreachable or not
/// verified), with the reason.
#[allow(clippy::too_many_arguments)]
async fn serve(
    eg: Arc<Egress>,
    runtime: Uuid,
    ca: Arc<RuntimeCa>,
    watch: BindingWatch,
    client: Prefixed,
    sni: String,
    target: SocketAddr,
    counts: Arc<Counts>,
) -> Result<(), String> {
    let cfg = ca.server_config(&sni)?;
    let tls = tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        tokio_rustls::TlsAcceptor::from(cfg).accept(client),
    )
    .await
    .map_err(|_| "the runtime did not finish its TLS handshake".to_string())?
    .map_err(|e| format!("TLS handshake with the runtime: {e}"))?;
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");

    // Upstream now: an upstream that cannot be reached or verified fails
    // the connection before the runtime sends a request.
    let sender = connect(&eg, &sni, target, h2).await?;
    let conn = Arc::new(Conn {
        eg,
        runtime,
        sni,
        watch,
        target,
        h2_client: h2,
        up: tokio::sync::Mutex::new(sender),
        splices: Default::default(),
    });
    let held = conn.clone();
    let svc = hyper::service::service_fn(move |req| {
        let conn = conn.clone();
        let counts = counts.clone();
        async move { Ok::<_, Infallible>(conn.request(req, &counts).await) }
    });
    let io = TokioIo::new(tls);
    let res = if h2 {
        hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .max_header_list_size(MAX_HEAD as u32)
            .serve_connection(io, svc)
            .await
            .map_err(|e| format!("HTTP/2: {e}"))
    } else {
        hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(Duration::from_secs(30))
            .max_buf_size(MAX_HEAD)
            .serve_connection(io, svc)
            .with_upgrades()
            .await
            .map_err(|e| format!("HTTP/1.1: {e}"))
    };
    // An upgraded connection goes on after hyper handed its bytes over.
    let mut splices = std::mem::take(&mut *held.splices.lock().unwrap_or_else(|e| e.into_inner()));
    while splices.join_next().await.is_some() {}
    res
}

/// One upstream connection for `sni` at `target` (the address the gateway
/// resolved and checked), its certificate verified for the SNI against the
/// host's trust store; ALPN as the runtime asked (`h2`: HTTP/2 offered).
async fn connect(eg: &Egress, sni: &str, target: SocketAddr, h2: bool) -> Result<Sender, String> {
    // Upstream: the address the gateway resolved and checked, the certificate
    // verified for the SNI against the host's trust store.
    let up = Upstream::get(eg)?;
    let tcp = tokio::time::timeout(UPSTREAM_TIMEOUT, TcpStream::connect(target))
        .await
        .map_err(|_| format!("connect to {target} timed out"))?
        .map_err(|e| format!("connect to {target}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let name = ServerName::try_from(sni.to_string()).map_err(|e| format!("{sni}: {e}"))?;
    let connector =
        tokio_rustls::TlsConnector::from(if h2 { up.h2.clone() } else { up.h1.clone() });
    let utls = tokio::time::timeout(UPSTREAM_TIMEOUT, connector.connect(name, tcp))
        .await
        .map_err(|_| format!("TLS handshake with {sni} timed out"))?
        .map_err(|e| format!("TLS with {sni} ({target}): {e}"))?;
    let up_h2 = utls.get_ref().1.alpn_protocol() == Some(b"h2");
    Ok(if up_h2 {
        let (s, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .max_header_list_size(MAX_HEAD as u32 * 4)
            .handshake(TokioIo::new(utls))
            .await
            .map_err(|e| format!("HTTP/2 with {sni}: {e}"))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Sender::H2(s)
    } else {
        let (s, conn) = hyper::client::conn::http1::Builder::new()
            .handshake(TokioIo::new(utls))
            .await
            .map_err(|e| format!("HTTP/1.1 with {sni}: {e}"))?;
        tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
        });
        Sender::H1(Arc::new(tokio::sync::Mutex::new(s)))
    })
}

impl Sender {
    fn is_closed(&self) -> bool {
        match self {
            Sender::H2(s) => s.is_closed(),
            // In use = open (HTTP/1.1 requests of one connection come in order).
            Sender::H1(m) => m.try_lock().map(|s| s.is_closed()).unwrap_or(false),
        }
    }
}

impl Upstream {
    fn get(eg: &Egress) -> Result<&Upstream, String> {
        eg.upstream
            .get_or_init(|| Upstream::new(None).map_err(|e| e.to_string()))
            .as_ref()
            .map_err(|e| e.clone())
    }
}

fn text(status: StatusCode, msg: String) -> Response<Body> {
    let mut r = Response::new(
        Full::new(Bytes::from(format!("runta egress: {msg}\n")))
            .map_err(|never| match never {})
            .boxed(),
    );
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r.headers_mut()
        .insert("x-runta-egress", HeaderValue::from_static("denied"));
    r
}

/// `name:port` → `name`, lower case, no trailing dot.
fn bare_host(authority: &str) -> String {
    crate::secrets::normalize_host(authority)
}

/// Hop-by-hop headers go (HTTP/2 forbids them; HTTP/1.1 hops re-add their
/// own); an upgrade keeps `Connection: upgrade` and `Upgrade`.
fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    crate::hop::strip(
        headers,
        upgrade,
        &[
            "keep-alive",
            "proxy-connection",
            "proxy-authorization",
            "transfer-encoding",
        ],
    );
    // `te: trailers` is the one value HTTP/2 allows.
    if headers
        .get(header::TE)
        .is_some_and(|v| !v.as_bytes().eq_ignore_ascii_case(b"trailers"))
    {
        headers.remove(header::TE);
    }
}

/// Values shorter than this are not looked for in responses (too likely to
/// occur by chance; a real credential is longer).
const MIN_REFLECTED: usize = 8;

/// The values bound to a request's host (injected into it or not), in
/// every spelling a response
/// could carry them back in: as they are, percent-encoded (form and strict,
/// either hex case), JSON-escaped, hex, and base64 (standard and URL-safe,
/// at each of the three alignments a value can have inside a larger encoded
/// text). docs/security.md, "Secrets red-team pass", lists what is not
/// caught.
struct Reflection(Vec<zeroize::Zeroizing<Vec<u8>>>);

impl Reflection {
    fn of(secrets: &[Arc<zeroize::Zeroizing<String>>]) -> Reflection {
        let mut out: Vec<zeroize::Zeroizing<Vec<u8>>> = Vec::new();
        for secret in secrets {
            let raw = secret.as_bytes();
            if raw.len() < MIN_REFLECTED {
                continue;
            }
            for v in spellings(raw) {
                if v.len() >= MIN_REFLECTED && !out.iter().any(|o| o[..] == v[..]) {
                    out.push(v);
                }
            }
        }
        Reflection(out)
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The name of the first response header whose value holds one of them.
    fn find(&self, headers: &HeaderMap) -> Option<String> {
        if self.0.is_empty() {
            return None;
        }
        headers.iter().find_map(|(k, v)| {
            let b = v.as_bytes();
            self.0
                .iter()
                .any(|n| b.windows(n.len()).any(|w| w == &n[..]))
                .then(|| k.as_str().to_string())
        })
    }
}

/// `raw` as a response may spell it (see [`Reflection`]).
fn spellings(raw: &[u8]) -> Vec<zeroize::Zeroizing<Vec<u8>>> {
    use base64::Engine;
    use zeroize::Zeroizing;
    let mut out = vec![Zeroizing::new(raw.to_vec())];
    out.push(Zeroizing::new(
        form_urlencoded::byte_serialize(raw)
            .collect::<String>()
            .into_bytes(),
    ));
    for upper in [true, false] {
        let mut p = Zeroizing::new(Vec::with_capacity(raw.len() * 3));
        let mut h = Zeroizing::new(Vec::with_capacity(raw.len() * 2));
        for &b in raw {
            let hex = |n: u8| {
                let c = b"0123456789abcdef"[n as usize];
                if upper {
                    c.to_ascii_uppercase()
                } else {
                    c
                }
            };
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                p.push(b);
            } else {
                p.extend_from_slice(&[b'%', hex(b >> 4), hex(b & 15)]);
            }
            h.extend_from_slice(&[hex(b >> 4), hex(b & 15)]);
        }
        out.push(p);
        out.push(h);
    }
    if let Ok(j) = serde_json::to_string(&String::from_utf8_lossy(raw)) {
        let j = Zeroizing::new(j);
        let inner = &j.as_bytes()[1..j.len() - 1];
        out.push(Zeroizing::new(inner.to_vec()));
        // Some encoders also escape the solidus.
        out.push(Zeroizing::new(
            String::from_utf8_lossy(inner)
                .replace('/', "\\/")
                .into_bytes(),
        ));
    }
    // base64: with `r` bytes before the value, the characters that depend on
    // the value alone start at the first whole group after those bytes and
    // end at the last whole group it fills.
    for engine in [
        &base64::engine::general_purpose::STANDARD_NO_PAD,
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
    ] {
        for r in 0..3usize {
            let mut padded = Zeroizing::new(vec![0u8; r]);
            padded.extend_from_slice(raw);
            let enc = Zeroizing::new(engine.encode(&padded[..]));
            let start = if r == 0 { 0 } else { 4 };
            let end = (padded.len() / 3) * 4;
            if end > start {
                out.push(Zeroizing::new(enc.as_bytes()[start..end].to_vec()));
            }
        }
    }
    out
}

/// One spelling looked for in a response body, as a Knuth-Morris-Pratt
/// matcher whose state carries across chunks: `state` is how much of the
/// needle the body's last bytes are (those bytes are held back).
struct Needle {
    pat: zeroize::Zeroizing<Vec<u8>>,
    fail: Vec<u32>,
    state: usize,
}

impl Needle {
    fn new(pat: zeroize::Zeroizing<Vec<u8>>) -> Needle {
        let mut fail = vec![0u32; pat.len()];
        let mut k = 0usize;
        for i in 1..pat.len() {
            while k > 0 && pat[i] != pat[k] {
                k = fail[k - 1] as usize;
            }
            if pat[i] == pat[k] {
                k += 1;
            }
            fail[i] = k as u32;
        }
        Needle {
            pat,
            fail,
            state: 0,
        }
    }

    /// Reads `b`; true once the whole needle has been seen.
    fn feed(&mut self, b: &[u8]) -> bool {
        let mut at = 0;
        while at < b.len() {
            if self.state == 0 {
                // The common case, a body without the value: skip to the
                // next byte that could start it.
                match b[at..].iter().position(|&c| c == self.pat[0]) {
                    Some(k) => at += k,
                    None => return false,
                }
            }
            let c = b[at];
            at += 1;
            while self.state > 0 && self.pat[self.state] != c {
                self.state = self.fail[self.state - 1] as usize;
            }
            if self.pat[self.state] == c {
                self.state += 1;
            }
            if self.state == self.pat.len() {
                return true;
            }
        }
        false
    }
}

/// Who to audit a cut response for.
struct CutAudit {
    eg: Arc<Egress>,
    runtime: Uuid,
    sni: String,
    method: String,
    path: String,
    status: u16,
}

/// A response body of an injected request, streamed frame by frame as it
/// arrives, but cut (an error: the runtime's connection or stream is reset,
/// the response truncated) as soon as it carries an injected value in any
/// spelling of [`Reflection`], wherever the chunk boundaries fall. The only
/// bytes held back are a body's last few when they could be the start of a
/// value; they follow with the next frame (or the end), so a stream whose
/// events end in a newline is never delayed.
struct Scanned {
    inner: Body,
    needles: Vec<Needle>,
    held: Vec<u8>,
    /// A frame read while `held` was being flushed.
    next: Option<hyper::body::Frame<Bytes>>,
    audit: Option<CutAudit>,
    ended: bool,
}

impl Scanned {
    fn new(inner: Body, reflection: Reflection, audit: CutAudit) -> Scanned {
        Scanned {
            inner,
            needles: reflection.0.into_iter().map(Needle::new).collect(),
            held: Vec::new(),
            next: None,
            audit: Some(audit),
            ended: false,
        }
    }

    fn cut(&mut self) -> Box<dyn std::error::Error + Send + Sync> {
        self.ended = true;
        self.held.clear();
        if let Some(a) = self.audit.take() {
            let why = "the upstream's response body carries the injected secret back; \
                 the response was cut so that the runtime never holds it"
                .to_string();
            record(
                &a.eg,
                a.runtime,
                &a.sni,
                &a.method,
                &a.path,
                a.status,
                EgressAction::Deny,
                "secret_reflected",
                why.clone(),
            );
            a.eg.denied(a.runtime, &a.sni, &why);
        }
        Box::new(io::Error::other(
            "runta egress: response cut (it carried an injected secret)",
        ))
    }
}

impl hyper::body::Body for Scanned {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        let me = &mut *self;
        loop {
            if me.ended {
                return Poll::Ready(None);
            }
            if let Some(f) = me.next.take() {
                return Poll::Ready(Some(Ok(f)));
            }
            let frame = match Pin::new(&mut me.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(Some(Ok(f))) => f,
                Poll::Ready(None) => {
                    me.ended = true;
                    if me.held.is_empty() {
                        return Poll::Ready(None);
                    }
                    let rest = Bytes::from(std::mem::take(&mut me.held));
                    return Poll::Ready(Some(Ok(hyper::body::Frame::data(rest))));
                }
            };
            let data = match frame.into_data() {
                Ok(d) => d,
                Err(other) => {
                    // Trailers are part of the response too: an upstream can
                    // echo the request into them (docs/security.md, "Second
                    // secrets red-team pass").
                    if let Some(t) = other.trailers_ref() {
                        let hit = t.iter().any(|(_, v)| {
                            let b = v.as_bytes();
                            me.needles
                                .iter()
                                .any(|n| b.windows(n.pat.len()).any(|w| w == &n.pat[..]))
                        });
                        if hit {
                            let e = me.cut();
                            return Poll::Ready(Some(Err(e)));
                        }
                    }
                    // Trailers: what is held goes first.
                    if me.held.is_empty() {
                        return Poll::Ready(Some(Ok(other)));
                    }
                    me.next = Some(other);
                    let rest = Bytes::from(std::mem::take(&mut me.held));
                    return Poll::Ready(Some(Ok(hyper::body::Frame::data(rest))));
                }
            };
            let mut hit = false;
            for n in &mut me.needles {
                hit |= n.feed(&data);
            }
            if hit {
                let e = me.cut();
                return Poll::Ready(Some(Err(e)));
            }
            let hold = me.needles.iter().map(|n| n.state).max().unwrap_or(0);
            let mut all = std::mem::take(&mut me.held);
            all.extend_from_slice(&data);
            let keep = hold.min(all.len());
            me.held = all.split_off(all.len() - keep);
            if !all.is_empty() {
                return Poll::Ready(Some(Ok(hyper::body::Frame::data(Bytes::from(all)))));
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended && self.next.is_none()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        let h = self.inner.size_hint();
        let held = self.held.len() as u64;
        let mut out = hyper::body::SizeHint::new();
        out.set_lower(h.lower() + held);
        if let Some(u) = h.upper() {
            out.set_upper(u + held);
        }
        out
    }
}

/// One `http_request` audit of an intercepted request.
#[allow(clippy::too_many_arguments)]
fn record(
    eg: &Egress,
    runtime: Uuid,
    sni: &str,
    method: &str,
    path: &str,
    status: u16,
    action: EgressAction,
    outcome: &str,
    reason: String,
) {
    eg.audits.record(
        runtime,
        EgressAuditPayload {
            kind: EgressAuditKind::HttpRequest,
            http_request: Some(EgressHttpRequestAudit {
                host: sni.to_string(),
                method: method.to_string(),
                path: path.to_string(),
                status,
                bytes_up: 0,
                bytes_down: 0,
                action,
                outcome: outcome.into(),
                reason,
                query_redacted: true,
            }),
            tcp_connection: None,
            icmp_drop: None,
            dns_query: None,
        },
    );
}

/// The request head as bytes, for the stub scan (bounded).
fn head_bytes(uri: &Uri, headers: &HeaderMap) -> Vec<u8> {
    let mut b = Vec::with_capacity(1024);
    b.extend_from_slice(uri.to_string().as_bytes());
    for (k, v) in headers {
        if b.len() > MAX_SCAN {
            break;
        }
        b.extend_from_slice(k.as_str().as_bytes());
        b.push(b':');
        b.extend_from_slice(v.as_bytes());
        b.push(b'\n');
    }
    b
}

impl Conn {
    async fn sender(&self) -> Result<Sender, String> {
        let mut g = self.up.lock().await;
        if g.is_closed() {
            *g = connect(&self.eg, &self.sni, self.target, self.h2_client).await?;
        }
        Ok(g.clone())
    }

    fn audit(
        &self,
        method: &str,
        path: &str,
        status: u16,
        action: EgressAction,
        outcome: &str,
        reason: String,
    ) {
        record(
            &self.eg,
            self.runtime,
            &self.sni,
            method,
            path,
            status,
            action,
            outcome,
            reason,
        );
    }

    async fn request(&self, mut req: Request<Incoming>, counts: &Counts) -> Response<Body> {
        use std::sync::atomic::Ordering::Relaxed;
        counts.requests.fetch_add(1, Relaxed);
        let method = req.method().to_string();
        let path = req.uri().path().to_string();
        if req.method() == http::Method::CONNECT {
            let why = "CONNECT tunnels through the egress gateway are not allowed".to_string();
            self.audit(
                &method,
                &path,
                405,
                EgressAction::Deny,
                "denied",
                why.clone(),
            );
            return text(StatusCode::METHOD_NOT_ALLOWED, why);
        }
        // The host the request names (HTTP/2 `:authority`, HTTP/1.1 `Host`
        // or an absolute target) must be the SNI the certificate was made
        // for: the binding was matched on it, and the upstream was verified
        // for it.
        let mut named: Vec<String> = req
            .headers()
            .get_all(header::HOST)
            .iter()
            .map(|v| bare_host(&String::from_utf8_lossy(v.as_bytes())))
            .collect();
        if let Some(a) = req.uri().authority() {
            named.push(bare_host(a.as_str()));
        }
        if named.is_empty() || named.iter().any(|h| *h != self.sni) {
            let why = format!(
                "the request names {} but the TLS connection is for {}",
                if named.is_empty() {
                    "no host".to_string()
                } else {
                    named.join(", ")
                },
                self.sni
            );
            self.audit(
                &method,
                &path,
                421,
                EgressAction::Deny,
                "denied",
                why.clone(),
            );
            return text(StatusCode::MISDIRECTED_REQUEST, why);
        }
        // One snapshot of the bindings for this request: a binding removed
        // before it stops here.
        let set = self.watch.current();
        let pq = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into());
        if let Some(hit) = set.misplaced_stub(&self.sni, &head_bytes(req.uri(), req.headers())) {
            let why = format!(
                "the request carries the stub of secret {:?}, which has no binding for {}",
                hit.secret_name, self.sni
            );
            self.audit(
                &method,
                &path,
                403,
                EgressAction::Deny,
                "stub_blocked",
                why.clone(),
            );
            self.eg.denied(self.runtime, &self.sni, &why);
            return text(StatusCode::FORBIDDEN, why);
        }
        let upgrade = crate::hop::is_upgrade(&req);
        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
        let (mut parts, body) = req.into_parts();
        strip_hop_by_hop(&mut parts.headers, upgrade);
        let mut new_pq: Option<zeroize::Zeroizing<String>> = None;
        let injections = set.matching(&self.sni, &pq);
        // Every value bound to this host, not only those injected into this
        // request: an upstream can keep one and hand it back to a request
        // outside the binding's path (docs/security.md, "Second secrets
        // red-team pass").
        let reflected = Reflection::of(&set.host_secrets(&self.sni));
        drop(set);
        let mut applied = Vec::new();
        for inj in &injections {
            match &inj.target {
                Target::Header { name } => {
                    let (Ok(n), Ok(mut v)) = (
                        HeaderName::from_bytes(name.as_bytes()),
                        HeaderValue::from_str(&inj.value),
                    ) else {
                        continue;
                    };
                    v.set_sensitive(true);
                    parts.headers.remove(&n);
                    parts.headers.insert(n, v);
                    applied.push(format!(
                        "binding {} set header {name} from secret {:?}",
                        inj.binding_id, inj.secret_name
                    ));
                }
                Target::QueryParam { name } => {
                    let cur = new_pq
                        .as_deref()
                        .map(|s| s.as_str())
                        .unwrap_or(&pq)
                        .to_string();
                    new_pq = Some(crate::secrets::set_query_param(&cur, name, &inj.value));
                    applied.push(format!(
                        "binding {} set query parameter {name} from secret {:?}",
                        inj.binding_id, inj.secret_name
                    ));
                }
            }
        }
        drop(injections);
        if !reflected.is_empty() {
            // A compressed body could carry the value back unseen: the
            // upstream is asked for the body as it is, so it can be scanned.
            parts.headers.insert(
                header::ACCEPT_ENCODING,
                HeaderValue::from_static("identity"),
            );
            // A range of the answer could carry a few bytes of the value at a
            // time, each too short to be recognised: the whole answer is
            // asked for, so the scan sees the value whole.
            parts.headers.remove(header::RANGE);
            parts.headers.remove(header::IF_RANGE);
        }
        let sender = match self.sender().await {
            Ok(s) => s,
            Err(why) => {
                self.audit(
                    &method,
                    &path,
                    502,
                    EgressAction::Error,
                    "upstream_failed",
                    why.clone(),
                );
                return text(StatusCode::BAD_GATEWAY, why);
            }
        };
        let pq_final = new_pq.as_deref().map(|s| s.as_str()).unwrap_or(&pq);
        let h2 = matches!(sender, Sender::H2(_));
        let uri = if h2 {
            format!("https://{}{pq_final}", self.sni)
        } else {
            pq_final.to_string()
        };
        parts.uri = match uri.parse() {
            Ok(u) => u,
            Err(_) => return text(StatusCode::BAD_REQUEST, "request target".into()),
        };
        drop(new_pq);
        if h2 {
            parts.version = Version::HTTP_2;
            parts.headers.remove(header::HOST);
        } else {
            parts.version = Version::HTTP_11;
            // The upstream sees the name its certificate was verified for,
            // in one spelling (not `BOUND.test.`, which a shared front may
            // route to another site).
            let host = match self.target.port() {
                443 => self.sni.clone(),
                p => format!("{}:{p}", self.sni),
            };
            if let Ok(v) = HeaderValue::from_str(&host) {
                parts.headers.insert(header::HOST, v);
            }
        }
        let up_req = Request::from_parts(parts, body.map_err(Into::into).boxed());
        let resp = match &sender {
            Sender::H2(s) => {
                let mut s = s.clone();
                match s.ready().await {
                    Ok(()) => s.send_request(up_req).await,
                    Err(e) => Err(e),
                }
            }
            Sender::H1(s) => {
                // HTTP/1.1 carries one request at a time; the runtime's side
                // is served in order anyway.
                let mut s = s.lock().await;
                match s.ready().await {
                    Ok(()) => s.send_request(up_req).await,
                    Err(e) => Err(e),
                }
            }
        };
        let mut resp = match resp {
            Ok(r) => r,
            Err(e) => {
                let why = format!("upstream {}: {e}", self.sni);
                self.audit(
                    &method,
                    &path,
                    502,
                    EgressAction::Error,
                    "upstream_failed",
                    why.clone(),
                );
                return text(StatusCode::BAD_GATEWAY, why);
            }
        };
        if let Some(name) = reflected.find(resp.headers()) {
            // A response head that carries the value back (a redirect to the
            // URL with the injected parameter, a header echoing the request)
            // would hand the runtime what it must never hold.
            let why = format!(
                "the upstream's response carries the injected secret back (header {name}); \
                 refused so that the runtime never holds it"
            );
            self.audit(
                &method,
                &path,
                502,
                EgressAction::Deny,
                "secret_reflected",
                why.clone(),
            );
            self.eg.denied(self.runtime, &self.sni, &why);
            return text(StatusCode::BAD_GATEWAY, why);
        }
        // A transfer coding other than chunked (`Transfer-Encoding: gzip,
        // chunked`) is left on the body once hyper removed the chunking, and
        // the header is dropped as hop-by-hop: the runtime would get
        // compressed bytes it can inflate itself.
        let coded = resp
            .headers()
            .get_all(header::CONTENT_ENCODING)
            .iter()
            .chain(resp.headers().get_all(header::TRANSFER_ENCODING).iter())
            .flat_map(|v| v.to_str().unwrap_or("?").split(','))
            .map(|v| v.trim().to_ascii_lowercase())
            .find(|v| !v.is_empty() && v != "identity" && v != "chunked");
        // A response without a body (to HEAD, 204, 304) has nothing to scan.
        let bodiless = method == "HEAD" || matches!(resp.status().as_u16(), 204 | 304);
        if let (false, false, Some(coding)) = (reflected.is_empty(), bodiless, coded) {
            // Asked for identity, the upstream encoded the body anyway: it
            // cannot be scanned for the value, so it is not passed on.
            let why = format!(
                "the upstream answered an injected request with content or transfer coding {coding:?} \
                 although identity was asked; an encoded body cannot be checked for the \
                 injected secret, so it is refused"
            );
            self.audit(
                &method,
                &path,
                502,
                EgressAction::Deny,
                "secret_unscannable",
                why.clone(),
            );
            self.eg.denied(self.runtime, &self.sni, &why);
            return text(StatusCode::BAD_GATEWAY, why);
        }
        let status = resp.status().as_u16();
        if applied.is_empty() {
            self.audit(
                &method,
                &path,
                status,
                EgressAction::Allow,
                "forwarded",
                format!("{} intercepted; no binding matches {path}", self.sni),
            );
        } else {
            counts.injected.fetch_add(1, Relaxed);
            self.audit(
                &method,
                &path,
                status,
                EgressAction::Allow,
                "injected",
                applied.join("; "),
            );
        }
        if let (Some(cu), StatusCode::SWITCHING_PROTOCOLS) = (client_upgrade, resp.status()) {
            let uu = hyper::upgrade::on(&mut resp);
            let mut splices = self.splices.lock().unwrap_or_else(|e| e.into_inner());
            splices.spawn(async move {
                if let Ok((c, u)) = tokio::try_join!(cu, uu) {
                    let _ =
                        tokio::io::copy_bidirectional(&mut TokioIo::new(c), &mut TokioIo::new(u))
                            .await;
                }
            });
        }
        let (mut parts, body) = resp.into_parts();
        if !(upgrade && status == 101) {
            strip_hop_by_hop(&mut parts.headers, false);
        }
        parts.version = Version::HTTP_11;
        let body: Body = body.map_err(Into::into).boxed();
        if reflected.is_empty() || status == 101 {
            return Response::from_parts(parts, body);
        }
        let audit = CutAudit {
            eg: self.eg.clone(),
            runtime: self.runtime,
            sni: self.sni.clone(),
            method,
            path,
            status,
        };
        Response::from_parts(parts, Scanned::new(body, reflected, audit).boxed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    /// Feeds `chunks` through a scanned body; the bytes let through and
    /// whether it was cut.
    async fn scan(value: &str, chunks: &[&[u8]]) -> (Vec<u8>, bool) {
        let frames: Vec<
            Result<hyper::body::Frame<Bytes>, Box<dyn std::error::Error + Send + Sync>>,
        > = chunks
            .iter()
            .map(|c| Ok(hyper::body::Frame::data(Bytes::copy_from_slice(c))))
            .collect();
        let inner: Body =
            http_body_util::StreamBody::new(futures_util::stream::iter(frames)).boxed();
        let needles = spellings(value.as_bytes())
            .into_iter()
            .filter(|n| n.len() >= MIN_REFLECTED)
            .collect();
        let audit = CutAudit {
            eg: Arc::new(Egress::for_tests()),
            runtime: Uuid::nil(),
            sni: "bound.test".into(),
            method: "GET".into(),
            path: "/".into(),
            status: 200,
        };
        let mut body = Scanned::new(inner, Reflection(needles), audit);
        let mut out = Vec::new();
        loop {
            match body.frame().await {
                None => return (out, false),
                Some(Err(_)) => return (out, true),
                Some(Ok(f)) => out.extend_from_slice(f.data_ref().unwrap()),
            }
        }
    }

    const V: &str = "sv-0123456789abcdef/+=";

    #[tokio::test]
    async fn a_value_is_cut_in_every_spelling_across_any_split() {
        let b64 = |pad: usize, url: bool| {
            let text = format!("{}authorization: Bearer {V}", "x".repeat(pad));
            if url {
                base64::engine::general_purpose::URL_SAFE.encode(text)
            } else {
                base64::engine::general_purpose::STANDARD.encode(text)
            }
        };
        let pct: String = form_urlencoded::byte_serialize(V.as_bytes()).collect();
        let mut bodies = vec![
            format!("echo: Bearer {V}\n"),
            format!("q={pct}&x=1"),
            format!(
                "q={}",
                V.replace('/', "%2f")
                    .replace('+', "%2b")
                    .replace('=', "%3d")
            ),
            format!(
                "{{\"auth\":{}}}",
                serde_json::to_string(V).unwrap().replace('/', "\\/")
            ),
            format!(
                "hex {}",
                V.as_bytes()
                    .iter()
                    .map(|b| format!("{b:02X}"))
                    .collect::<String>()
            ),
        ];
        for pad in 0..3 {
            bodies.push(format!("B64 {}", b64(pad, false)));
            bodies.push(format!("B64 {}", b64(pad, true)));
        }
        for body in &bodies {
            for step in [1, 2, 3, 7, body.len()] {
                let chunks: Vec<&[u8]> = body.as_bytes().chunks(step).collect();
                let (out, cut) = scan(V, &chunks).await;
                assert!(cut, "{body:?} in chunks of {step} went through");
                let out = String::from_utf8_lossy(&out);
                assert!(!out.contains(&V[..4]), "{body:?}/{step}: {out:?}");
            }
        }
    }

    #[tokio::test]
    async fn a_value_with_repeats_is_found_after_false_starts() {
        let v = "abababac-x9";
        for body in ["abababababac-x9!", "ababab|abababac-x9", "aabababac-x9"] {
            for step in [1, 2, 5, body.len()] {
                let chunks: Vec<&[u8]> = body.as_bytes().chunks(step).collect();
                let (out, cut) = scan(v, &chunks).await;
                assert!(cut, "{body:?}/{step}");
                assert!(
                    !String::from_utf8_lossy(&out).contains("abababac"),
                    "{body:?}/{step}"
                );
            }
        }
        let (out, cut) = scan(v, &[b"abababa", b"bac-x8 ok"]).await;
        assert!(!cut);
        assert_eq!(out, b"ababababac-x8 ok");
    }

    #[tokio::test]
    async fn other_bodies_pass_whole_and_chunks_flow_as_they_come() {
        // A chunk ending in what could be the value's start waits for the
        // next byte only; then everything arrives, in order.
        let chunks: [&[u8]; 4] = [b"data: 1\n\n", b"tail sv-01", b"2 not it\n", b"end"];
        let (out, cut) = scan(V, &chunks).await;
        assert!(!cut);
        assert_eq!(out, b"data: 1\n\ntail sv-012 not it\nend");
        // The value's prefix at the very end is let through at the end.
        let (out, cut) = scan(V, &[b"x sv-0123"]).await;
        assert!(!cut);
        assert_eq!(out, b"x sv-0123");
        // A first chunk that cannot start the value is passed on at once.
        let mut n: Vec<Needle> = spellings(V.as_bytes())
            .into_iter()
            .map(Needle::new)
            .collect();
        for x in &mut n {
            assert!(!x.feed(b"data: 1\n\n"));
            assert_eq!(x.state, 0);
        }
    }
}
