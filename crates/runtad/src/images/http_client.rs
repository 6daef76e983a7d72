//! A small HTTP/1.1 client for registries, on hyper and tokio-rustls (both
//! already in the daemon). One connection per request, TLS checked against
//! the roots the daemon was given.
//!
//! Everything a registry answers is attacker-written, redirects and token
//! realms included (docs/security.md, Image store red-team pass): at most
//! [`MAX_REDIRECTS`] redirects are followed, `Authorization` goes only to the
//! scheme and host:port it was meant for, and no request goes to a loopback,
//! link-local (cloud metadata), private or otherwise non-public address unless
//! the operator named that host:port (`--insecure-registry`,
//! `--private-registry`); the name is resolved once and the checked address is
//! the one connected to. A body must keep arriving at the minimum rate
//! ([`Pace`]), so a registry that trickles cannot hold a pull forever.
//!
//! Not reqwest: with TLS on, reqwest needs a process-wide rustls provider (or
//! aws-lc), and feature unification would switch that on for every reqwest
//! client of the workspace (the CLI's, the tests') built beside the daemon.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{HeaderValue, AUTHORIZATION, HOST, LOCATION};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

/// A request body: empty, in memory, or streamed (a blob file).
pub type Body = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

pub fn empty() -> Body {
    Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed()
}

pub fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|never| match never {}).boxed()
}

/// The file at `path`, streamed in 1 MiB chunks.
pub async fn file(path: &std::path::Path) -> std::io::Result<Body> {
    let f = tokio::fs::File::open(path).await?;
    let stream = tokio_util_stream(f);
    Ok(http_body_util::StreamBody::new(stream).boxed())
}

fn tokio_util_stream(
    mut f: tokio::fs::File,
) -> impl futures_util::Stream<Item = std::io::Result<hyper::body::Frame<Bytes>>> + Send + Sync + 'static
{
    use tokio::io::AsyncRead;
    let mut buf = vec![0u8; 1 << 20];
    futures_util::stream::poll_fn(move |cx| {
        let mut rb = tokio::io::ReadBuf::new(&mut buf);
        match std::pin::Pin::new(&mut f).poll_read(cx, &mut rb) {
            std::task::Poll::Ready(Ok(())) if rb.filled().is_empty() => {
                std::task::Poll::Ready(None)
            }
            std::task::Poll::Ready(Ok(())) => {
                let data = Bytes::copy_from_slice(rb.filled());
                std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(data))))
            }
            std::task::Poll::Ready(Err(e)) => std::task::Poll::Ready(Some(Err(e))),
            std::task::Poll::Pending => std::task::Poll::Pending,
        }
    })
}

/// Redirects one `GET` follows at most.
pub const MAX_REDIRECTS: usize = 5;

/// The slowest a body may arrive: over every `window`, at least
/// `min_bytes_per_sec × window` bytes (flags `--image-pull-stall-secs`,
/// `--image-pull-min-rate`). A body that falls below fails; what a blob got
/// so far stays in `blobs/partial` for the next pull to resume.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    pub window: Duration,
    pub min_bytes_per_sec: u64,
}

impl Default for Pace {
    fn default() -> Self {
        Pace {
            window: Duration::from_secs(60),
            min_bytes_per_sec: 1024,
        }
    }
}

#[derive(Clone)]
pub struct Http {
    tls: tokio_rustls::TlsConnector,
    connect_timeout: Duration,
    pace: Pace,
    /// `host:port` (lower case) the operator placed on non-public addresses
    /// on purpose: the only such targets a request may reach.
    allowed_private: Arc<HashSet<String>>,
}

/// An answer whose body is read chunk by chunk.
pub struct Answer {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    body: Incoming,
    pace: Pace,
    window_start: Instant,
    window_bytes: u64,
}

impl Answer {
    pub fn content_length(&self) -> Option<u64> {
        self.headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
    }

    pub fn header(&self, name: http::header::HeaderName) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Up to `max` bytes of the body as text (for error messages).
    pub async fn text(mut self, max: usize) -> String {
        let mut out = Vec::new();
        while out.len() < max {
            match self.chunk().await {
                Ok(Some(c)) => out.extend_from_slice(&c),
                _ => break,
            }
        }
        out.truncate(max);
        String::from_utf8_lossy(&out).into_owned()
    }

    /// The next piece of the body; `None` at its end. Fails when the body
    /// stalls: nothing for a whole window, or less than the minimum rate
    /// over one.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, String> {
        loop {
            let left = self
                .pace
                .window
                .saturating_sub(self.window_start.elapsed())
                .max(Duration::from_millis(1));
            let f = match tokio::time::timeout(left, self.body.frame()).await {
                Ok(f) => f,
                Err(_) => {
                    self.check_pace()?;
                    continue;
                }
            };
            match f {
                None => return Ok(None),
                Some(Err(e)) => return Err(e.to_string()),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.window_bytes += data.len() as u64;
                        self.check_pace()?;
                        return Ok(Some(data));
                    }
                }
            }
        }
    }

    /// At the end of each window: enough bytes came, or the body stalled.
    fn check_pace(&mut self) -> Result<(), String> {
        let w = self.pace.window;
        if self.window_start.elapsed() < w {
            return Ok(());
        }
        let need = self
            .pace
            .min_bytes_per_sec
            .saturating_mul(w.as_secs().max(1));
        if self.window_bytes < need {
            return Err(format!(
                "stalled: {} bytes in the last {} s, below the minimum of {} bytes/s (--image-pull-min-rate); what arrived is kept and the next pull resumes it",
                self.window_bytes,
                w.as_secs(),
                self.pace.min_bytes_per_sec
            ));
        }
        self.window_start = Instant::now();
        self.window_bytes = 0;
        Ok(())
    }
}

/// Whether `ip` is an address of the public internet: not loopback,
/// unspecified, private (RFC 1918, unique local), link-local (cloud metadata
/// at 169.254.169.254), shared (100.64/10), benchmarking (198.18/15),
/// documentation, multicast or reserved.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || o[0] == 0
                || o[0] >= 240
                || (o[0] == 100 && (o[1] & 0xc0) == 64)
                || (o[0] == 198 && (o[1] & 0xfe) == 18)
                || (o[0] == 192 && o[1] == 0 && o[2] == 0))
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let s = v6.segments();
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
                || (s[0] == 0x64 && s[1] == 0xff9b)
                || (s[0] == 0x2001 && s[1] == 0x0db8)
                || (s[0] == 0 && s[1] == 0 && s[2] == 0 && s[3] == 0 && s[4] == 0))
        }
    }
}

/// `host:port` of a URI, lower case, the port filled in from the scheme.
pub fn authority_of(uri: &Uri) -> Option<String> {
    let host = uri.host()?.to_ascii_lowercase();
    let port = uri
        .port_u16()
        .unwrap_or(if uri.scheme_str() == Some("http") {
            80
        } else {
            443
        });
    Some(format!("{host}:{port}"))
}

impl Http {
    pub fn new(tls: rustls::ClientConfig, pace: Pace, allowed_private: HashSet<String>) -> Self {
        Http {
            tls: tokio_rustls::TlsConnector::from(Arc::new(tls)),
            connect_timeout: Duration::from_secs(15),
            pace,
            allowed_private: Arc::new(
                allowed_private
                    .into_iter()
                    .map(|a| a.to_ascii_lowercase())
                    .collect(),
            ),
        }
    }

    /// Whether the operator placed `authority` (`host:port`) on a non-public
    /// address on purpose.
    pub fn private_allowed(&self, authority: &str) -> bool {
        self.allowed_private
            .contains(&authority.to_ascii_lowercase())
    }

    /// The address to connect to for `host:port`: resolved once, every
    /// address checked (a name that also resolves to a private address is
    /// refused), unless `allow_private`.
    async fn resolve(
        &self,
        host: &str,
        port: u16,
        allow_private: bool,
    ) -> Result<SocketAddr, String> {
        let addrs: Vec<SocketAddr> = match host.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => {
                tokio::time::timeout(self.connect_timeout, tokio::net::lookup_host((host, port)))
                    .await
                    .map_err(|_| format!("resolve {host}: timed out"))?
                    .map_err(|e| format!("resolve {host}: {e}"))?
                    .collect()
            }
        };
        let first = *addrs
            .first()
            .ok_or_else(|| format!("resolve {host}: no address"))?;
        if !allow_private {
            if let Some(bad) = addrs.iter().find(|a| !is_public(a.ip())) {
                return Err(format!(
                    "refused to connect to {host}:{port}: it is at {}, a loopback, link-local, private or reserved address; only a registry the operator names with --insecure-registry or --private-registry may be there, and redirects or token realms may not lead there",
                    bad.ip()
                ));
            }
        }
        Ok(first)
    }

    /// Sends one request (absolute URI) on a new connection; a non-public
    /// target only if the operator named it.
    pub async fn send_once(&self, req: Request<Body>) -> Result<Answer, String> {
        let allow = authority_of(req.uri()).is_some_and(|a| self.private_allowed(&a));
        self.send_checked(req, allow).await
    }

    async fn send_checked(
        &self,
        mut req: Request<Body>,
        allow_private: bool,
    ) -> Result<Answer, String> {
        let uri = req.uri().clone();
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(format!("{uri}: not an http(s) URL")),
        };
        let host = uri
            .host()
            .ok_or_else(|| format!("{uri}: no host"))?
            .to_string();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let bare = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let addr = self.resolve(&bare, port, allow_private).await?;
        let tcp = tokio::time::timeout(self.connect_timeout, tokio::net::TcpStream::connect(addr))
            .await
            .map_err(|_| format!("connect to {host}:{port}: timed out"))?
            .map_err(|e| format!("connect to {host}:{port}: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let authority = uri
            .authority()
            .map(|a| a.as_str().to_string())
            .unwrap_or_else(|| host.clone());
        req.headers_mut().insert(
            HOST,
            HeaderValue::from_str(&authority).map_err(|e| e.to_string())?,
        );
        let path = uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into());
        *req.uri_mut() = path.parse::<Uri>().map_err(|e| e.to_string())?;
        let resp = if https {
            let name = rustls_pki_types::ServerName::try_from(bare.clone())
                .map_err(|e| format!("{host}: {e}"))?;
            let tls = tokio::time::timeout(self.connect_timeout, self.tls.connect(name, tcp))
                .await
                .map_err(|_| format!("TLS with {host}:{port}: timed out"))?
                .map_err(|e| format!("TLS with {host}:{port}: {e}"))?;
            Self::exchange(TokioIo::new(tls), req, self.pace.window).await?
        } else {
            Self::exchange(TokioIo::new(tcp), req, self.pace.window).await?
        };
        let (parts, body) = resp.into_parts();
        Ok(Answer {
            status: parts.status,
            headers: parts.headers,
            body,
            pace: self.pace,
            window_start: Instant::now(),
            window_bytes: 0,
        })
    }

    async fn exchange<T>(
        io: T,
        req: Request<Body>,
        timeout: Duration,
    ) -> Result<Response<Incoming>, String>
    where
        T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        tokio::time::timeout(timeout, sender.send_request(req))
            .await
            .map_err(|_| format!("no answer for {} s", timeout.as_secs()))?
            .map_err(|e| {
                let mut m = e.to_string();
                let mut src = std::error::Error::source(&e);
                while let Some(s) = src {
                    m = format!("{m}: {s}");
                    src = s.source();
                }
                m
            })
    }

    /// A `GET` (or `HEAD`) of `url`, following at most [`MAX_REDIRECTS`]
    /// redirects. A redirect may lead to a non-public address only where the
    /// operator put a registry (`--insecure-registry`, `--private-registry`),
    /// the registry's own host included. `Authorization` is sent only while the scheme and
    /// host:port are those of `url` itself: a redirect elsewhere (a CDN for
    /// blobs, or an attacker's host) never sees the credentials or token,
    /// nor does an `http://` downgrade.
    pub async fn get(
        &self,
        method: Method,
        url: &str,
        headers: &[(http::header::HeaderName, HeaderValue)],
    ) -> Result<Answer, String> {
        let mut url = url.to_string();
        let first: Uri = url.parse().map_err(|e| format!("{url}: {e}"))?;
        let first_scheme = first.scheme_str().map(str::to_string);
        let first_auth = authority_of(&first);
        for _ in 0..=MAX_REDIRECTS {
            let uri: Uri = url.parse().map_err(|e| format!("{url}: {e}"))?;
            let auth = authority_of(&uri);
            let same = auth == first_auth && uri.scheme_str().map(str::to_string) == first_scheme;
            let allow_private = auth.as_ref().is_some_and(|a| self.private_allowed(a));
            let mut req = Request::builder().method(method.clone()).uri(uri.clone());
            for (k, v) in headers {
                if *k == AUTHORIZATION && !same {
                    continue;
                }
                req = req.header(k, v);
            }
            let req = req.body(empty()).map_err(|e| e.to_string())?;
            let a = self.send_checked(req, allow_private).await?;
            if a.status.is_redirection() && a.status != StatusCode::NOT_MODIFIED {
                let loc = a
                    .header(LOCATION)
                    .ok_or_else(|| format!("{url}: redirect without a location"))?;
                url = join(&uri, loc)?;
                continue;
            }
            return Ok(a);
        }
        Err(format!(
            "{url}: more than {MAX_REDIRECTS} redirects, not followed"
        ))
    }
}

/// Resolves a `Location` against the URL it came from.
pub fn join(base: &Uri, loc: &str) -> Result<String, String> {
    if loc.starts_with("http://") || loc.starts_with("https://") {
        return Ok(loc.to_string());
    }
    if loc.starts_with("//") || loc.contains("://") {
        return Err(format!(
            "redirect to {loc:?}: only http(s) URLs are followed"
        ));
    }
    let scheme = base.scheme_str().unwrap_or("https");
    let auth = base.authority().map(|a| a.as_str()).unwrap_or("");
    if loc.starts_with('/') {
        Ok(format!("{scheme}://{auth}{loc}"))
    } else {
        let path = base.path();
        let dir = &path[..path.rfind('/').map(|i| i + 1).unwrap_or(0)];
        Ok(format!("{scheme}://{auth}{dir}{loc}"))
    }
}
