//! A small HTTP/1.1 client for registries, on hyper and tokio-rustls (both
//! already in the daemon). One connection per request, redirects followed for
//! `GET`/`HEAD` (credentials dropped when the host changes), TLS checked
//! against the roots the daemon was given.
//!
//! Not reqwest: with TLS on, reqwest needs a process-wide rustls provider (or
//! aws-lc), and feature unification would switch that on for every reqwest
//! client of the workspace (the CLI's, the tests') built beside the daemon.

use std::sync::Arc;
use std::time::Duration;

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

#[derive(Clone)]
pub struct Http {
    tls: tokio_rustls::TlsConnector,
    connect_timeout: Duration,
    /// How long one read of the response may take.
    pub read_timeout: Duration,
}

/// An answer whose body is read chunk by chunk.
pub struct Answer {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    body: Incoming,
    read_timeout: Duration,
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

    /// The next piece of the body; `None` at its end.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, String> {
        loop {
            let f = tokio::time::timeout(self.read_timeout, self.body.frame())
                .await
                .map_err(|_| format!("no data for {} s", self.read_timeout.as_secs()))?;
            match f {
                None => return Ok(None),
                Some(Err(e)) => return Err(e.to_string()),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        return Ok(Some(data));
                    }
                }
            }
        }
    }
}

impl Http {
    pub fn new(tls: rustls::ClientConfig) -> Self {
        Http {
            tls: tokio_rustls::TlsConnector::from(Arc::new(tls)),
            connect_timeout: Duration::from_secs(15),
            read_timeout: Duration::from_secs(60),
        }
    }

    /// Sends one request (absolute URI) on a new connection.
    pub async fn send_once(&self, mut req: Request<Body>) -> Result<Answer, String> {
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
        let tcp = tokio::time::timeout(
            self.connect_timeout,
            tokio::net::TcpStream::connect((bare.as_str(), port)),
        )
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
            Self::exchange(TokioIo::new(tls), req, self.read_timeout).await?
        } else {
            Self::exchange(TokioIo::new(tcp), req, self.read_timeout).await?
        };
        let (parts, body) = resp.into_parts();
        Ok(Answer {
            status: parts.status,
            headers: parts.headers,
            body,
            read_timeout: self.read_timeout,
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

    /// A `GET` (or `HEAD`) following up to five redirects; the
    /// `Authorization` header is kept only while the host stays the same.
    pub async fn get(
        &self,
        method: Method,
        url: &str,
        headers: &[(http::header::HeaderName, HeaderValue)],
    ) -> Result<Answer, String> {
        let mut url = url.to_string();
        let first_host = url.parse::<Uri>().ok().and_then(|u| u.authority().cloned());
        for _ in 0..6 {
            let uri: Uri = url.parse().map_err(|e| format!("{url}: {e}"))?;
            let same_host = uri.authority().cloned() == first_host;
            let mut req = Request::builder().method(method.clone()).uri(uri.clone());
            for (k, v) in headers {
                if *k == AUTHORIZATION && !same_host {
                    continue;
                }
                req = req.header(k, v);
            }
            let req = req.body(empty()).map_err(|e| e.to_string())?;
            let a = self.send_once(req).await?;
            if a.status.is_redirection() {
                let loc = a
                    .header(LOCATION)
                    .ok_or_else(|| format!("{url}: redirect without a location"))?;
                url = join(&uri, loc)?;
                continue;
            }
            return Ok(a);
        }
        Err(format!("{url}: too many redirects"))
    }
}

/// Resolves a `Location` against the URL it came from.
pub fn join(base: &Uri, loc: &str) -> Result<String, String> {
    if loc.starts_with("http://") || loc.starts_with("https://") {
        return Ok(loc.to_string());
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
