//! The request path: find the runtime a host name names, make sure it runs
//! (waking it from an idle suspension), and pass the request through to
//! `<runtime ip>:<port>`, streaming bodies and protocol upgrades included.
//!
//! Every proxied request holds an activity guard of its runtime until its
//! response body is finished (an upgraded connection until it closes), so the
//! idle policy never suspends a runtime that is serving.

use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use runta_api::{Protocol, RuntimeStatus};
use tokio::net::TcpStream;
use tracing::debug;

use super::route;
use crate::manager::{Error as ManagerError, ExecGuard, Manager};

/// How long a request waits for a just-woken runtime to accept connections.
const WAKE_PATIENCE: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A response body that keeps its runtime's activity guard until it is done.
pub struct Tracked {
    inner: BoxBody<Bytes, hyper::Error>,
    _guard: Option<ExecGuard>,
}

impl hyper::body::Body for Tracked {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// What the listener knows about a connection.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    /// Came in over TLS (the HTTPS listener).
    pub secure: bool,
    /// The TLS server name, used when a request has no host.
    pub sni: Option<Arc<str>>,
}

pub struct Proxy {
    manager: Arc<Manager>,
    /// Lower-case, no trailing dot.
    domain: String,
    https_port: u16,
    client: Client<HttpConnector, Incoming>,
}

impl Proxy {
    pub fn new(manager: Arc<Manager>, domain: &str, https_port: u16) -> Arc<Self> {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(64)
            .build(connector);
        Arc::new(Proxy {
            manager,
            domain: domain.trim_end_matches('.').to_ascii_lowercase(),
            https_port,
            client,
        })
    }

    pub async fn handle(&self, mut req: Request<Incoming>, conn: &ConnInfo) -> Response<Tracked> {
        let authority = req
            .uri()
            .authority()
            .map(|a| a.as_str().to_string())
            .or_else(|| {
                req.headers()
                    .get(header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .map(str::to_string)
            })
            .or_else(|| conn.sni.as_deref().map(str::to_string))
            .unwrap_or_default();
        let host = route::host_only(&authority);
        let Some(target) = route::parse(&host, &self.domain) else {
            return page(
                StatusCode::NOT_FOUND,
                "not_found",
                "No runtime here",
                &format!("Nothing answers at {host}."),
            );
        };
        let r = match self.manager.record(target.id) {
            Ok(Some(r)) => r,
            Ok(None) => return unknown(&host),
            Err(e) => {
                return page(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "Ingress error",
                    &e.to_string(),
                )
            }
        };
        let Some(spec) = target.resolve(&r.publish).copied() else {
            return unknown(&host);
        };
        if !conn.secure && spec.protocol == Protocol::Https {
            return self.to_https(&host, req.uri());
        }
        if !matches!(r.status, RuntimeStatus::Running | RuntimeStatus::Suspended) {
            return unavailable(&r.name, r.status);
        }
        self.manager
            .metrics
            .ingress_requests
            .fetch_add(1, Ordering::Relaxed);
        // Count the request before looking at the status again: from here on
        // the idle scan leaves the runtime alone.
        let guard = self.manager.begin_activity(r.id);
        let fresh = match self.manager.wake_if_suspended(r.id).await {
            Ok(f) => f,
            Err(ManagerError::NotFound(_)) => return unknown(&host),
            Err(e) => {
                return page(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "Runtime could not be woken",
                    &format!("Runtime {} could not be woken: {e}", r.name),
                )
            }
        };
        if fresh.status != RuntimeStatus::Running {
            return unavailable(&fresh.name, fresh.status);
        }
        // A change of revision means the runtime was woken (by us or just
        // before us): its server may need a moment to accept again.
        let woken = fresh.revision != r.revision || r.status == RuntimeStatus::Suspended;
        let Ok(ip) = fresh.ip.parse::<IpAddr>() else {
            return page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "Ingress error",
                "bad runtime address",
            );
        };
        let addr = SocketAddr::new(ip, spec.port);
        let upgrade = crate::hop::is_upgrade(&req);
        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
        let upstream = upstream_request(req, addr, conn, &authority, upgrade);

        let result = if upgrade || woken {
            let patience = if woken { WAKE_PATIENCE } else { Duration::ZERO };
            self.send_dedicated(addr, upstream, patience, upgrade).await
        } else {
            self.client.request(upstream).await.map_err(|e| {
                if e.is_connect() {
                    format!("nothing accepts connections on port {} ({e:?})", spec.port)
                } else {
                    format!("{e}")
                }
            })
        };
        let mut resp = match result {
            Ok(resp) => resp,
            Err(e) => {
                debug!(id = %fresh.id, %addr, "upstream: {e}");
                return page(
                    StatusCode::BAD_GATEWAY,
                    "bad_gateway",
                    "Runtime did not answer",
                    &format!(
                        "Runtime {} did not answer on port {}: {e}",
                        fresh.name, spec.port
                    ),
                );
            }
        };
        if let (Some(client_upgrade), StatusCode::SWITCHING_PROTOCOLS) =
            (client_upgrade, resp.status())
        {
            let upstream_upgrade = hyper::upgrade::on(&mut resp);
            tokio::spawn(async move {
                // The tunnel counts as one request in flight until it closes.
                let _guard = guard;
                match tokio::try_join!(client_upgrade, upstream_upgrade) {
                    Ok((c, u)) => {
                        let _ = tokio::io::copy_bidirectional(
                            &mut TokioIo::new(c),
                            &mut TokioIo::new(u),
                        )
                        .await;
                    }
                    Err(e) => debug!("upgrade: {e}"),
                }
            });
            let (parts, _) = resp.into_parts();
            return Response::from_parts(parts, empty(None));
        }
        let (mut parts, body) = resp.into_parts();
        strip_hop_by_hop(&mut parts.headers, false);
        Response::from_parts(
            parts,
            Tracked {
                inner: body.boxed(),
                _guard: Some(guard),
            },
        )
    }

    /// One connection just for this request: after a wake (retrying the connect
    /// while the runtime's server comes back) and for upgrades.
    async fn send_dedicated(
        &self,
        addr: SocketAddr,
        mut req: Request<Incoming>,
        patience: Duration,
        upgrade: bool,
    ) -> Result<Response<Incoming>, String> {
        // A bare connection sends the URI as given: origin form here.
        let pq = req.uri().path_and_query().map(|p| p.as_str().to_string());
        *req.uri_mut() = pq
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| Uri::from_static("/"));
        let tcp = connect(addr, patience)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(async move {
            let r = if upgrade {
                conn.with_upgrades().await
            } else {
                conn.await
            };
            if let Err(e) = r {
                debug!("upstream connection: {e}");
            }
        });
        sender.send_request(req).await.map_err(|e| e.to_string())
    }

    /// A port published as https asked for over plain HTTP: send the client over.
    fn to_https(&self, host: &str, uri: &Uri) -> Response<Tracked> {
        let port = if self.https_port == 443 {
            String::new()
        } else {
            format!(":{}", self.https_port)
        };
        let pq = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let location = format!("https://{host}{port}{pq}");
        let mut resp = page(
            StatusCode::PERMANENT_REDIRECT,
            "redirect",
            "Use HTTPS",
            &format!("This port is published over HTTPS: {location}"),
        );
        if let Ok(v) = HeaderValue::from_str(&location) {
            resp.headers_mut().insert(header::LOCATION, v);
        }
        resp
    }
}

async fn connect(addr: SocketAddr, patience: Duration) -> std::io::Result<TcpStream> {
    let deadline = Instant::now() + patience;
    let mut pause = Duration::from_millis(10);
    loop {
        let err = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => {
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Ok(Err(e)) => e,
            Err(_) => std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out"),
        };
        if Instant::now() + pause > deadline {
            return Err(err);
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

/// Removes headers that describe one hop only (the ingress's list).
fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    crate::hop::strip(
        headers,
        upgrade,
        &[
            "keep-alive",
            "proxy-connection",
            "proxy-authenticate",
            "proxy-authorization",
            "te",
            "trailer",
            "transfer-encoding",
        ],
    );
}

/// The request as the runtime sees it: HTTP/1.1, the public host kept, and the
/// client's address and scheme in `X-Forwarded-*`.
fn upstream_request(
    req: Request<Incoming>,
    addr: SocketAddr,
    conn: &ConnInfo,
    authority: &str,
    upgrade: bool,
) -> Request<Incoming> {
    let (mut parts, body) = req.into_parts();
    let pq = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    // The pooled client connects to what the URI names; the wire gets origin form.
    parts.uri = format!("http://{addr}{pq}")
        .parse()
        .unwrap_or_else(|_| Uri::from_static("/"));
    parts.version = Version::HTTP_11;
    strip_hop_by_hop(&mut parts.headers, upgrade);
    if !parts.headers.contains_key(header::HOST) {
        if let Ok(v) = HeaderValue::from_str(authority) {
            parts.headers.insert(header::HOST, v);
        }
    }
    let h = &mut parts.headers;
    let peer = conn.peer.ip().to_string();
    let xff = match h.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(prev) => format!("{prev}, {peer}"),
        None => peer,
    };
    if let Ok(v) = HeaderValue::from_str(&xff) {
        h.insert("x-forwarded-for", v);
    }
    h.insert(
        "x-forwarded-proto",
        HeaderValue::from_static(if conn.secure { "https" } else { "http" }),
    );
    if let Ok(v) = HeaderValue::from_str(authority) {
        h.insert("x-forwarded-host", v);
    }
    Request::from_parts(parts, body)
}

fn empty(guard: Option<ExecGuard>) -> Tracked {
    Tracked {
        inner: Empty::new().map_err(|never| match never {}).boxed(),
        _guard: guard,
    }
}

fn unknown(host: &str) -> Response<Tracked> {
    page(
        StatusCode::NOT_FOUND,
        "not_found",
        "No runtime here",
        &format!("Nothing answers at {host}."),
    )
}

fn unavailable(name: &str, status: RuntimeStatus) -> Response<Tracked> {
    let (why, retry) = match status {
        RuntimeStatus::Shutdown => (
            "is shut down; boot it (`runta boot`) to serve again".to_string(),
            false,
        ),
        RuntimeStatus::Paused => ("is paused; resume it to serve again".to_string(), false),
        // Only reached when the idle policy is suspend_only: any other
        // suspended runtime is woken by the request itself.
        RuntimeStatus::Suspended => (
            "is suspended and its idle policy is suspend_only: requests do not wake it; start or resume it (`runta start`) to serve again"
                .to_string(),
            false,
        ),
        RuntimeStatus::Creating => ("is still starting".to_string(), true),
        RuntimeStatus::Crashed | RuntimeStatus::Error => {
            (format!("is in status {status}; start it again"), false)
        }
        other => (format!("is {other}"), false),
    };
    let mut resp = page(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        "Runtime not running",
        &format!("Runtime {name} {why}."),
    );
    resp.headers_mut()
        .insert("x-runta-status", HeaderValue::from_static(status.as_str()));
    if retry {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    resp
}

/// A small HTML page for answers the ingress gives itself; `X-Runta-Ingress`
/// carries a machine-readable code so they are never mistaken for the app's.
fn page(status: StatusCode, code: &'static str, title: &str, detail: &str) -> Response<Tracked> {
    let body = format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{status} {title}</title></head>\
         <body><h1>{title}</h1><p>{}</p><hr><p>runta ingress</p></body></html>\n",
        escape(detail),
        status = status.as_u16(),
        title = escape(title),
    );
    let mut resp = Response::new(Tracked {
        inner: Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed(),
        _guard: None,
    });
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert("x-runta-ingress", HeaderValue::from_static(code));
    resp
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_go_and_upgrades_keep_theirs() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, X-Secret, Upgrade"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert("x-app", HeaderValue::from_static("kept"));
        let mut plain = h.clone();
        strip_hop_by_hop(&mut plain, false);
        assert_eq!(plain.len(), 1, "{plain:?}");
        assert!(plain.contains_key("x-app"));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h.get(header::CONNECTION).unwrap(), "upgrade");
        assert_eq!(h.get(header::UPGRADE).unwrap(), "websocket");
        assert!(!h.contains_key("x-secret") && !h.contains_key("keep-alive"));
    }

    #[test]
    fn pages_escape_what_clients_sent() {
        assert_eq!(
            escape("<a href='x'>&</a>"),
            "&lt;a href=&#39;x&#39;&gt;&amp;&lt;/a&gt;"
        );
    }
}
