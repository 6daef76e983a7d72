//! The ingress: published ports of runtimes at `https://<uuid>.<domain>`.
//!
//! Two listeners (HTTPS with TLS terminated here, and plain HTTP) accept
//! connections, speak HTTP/1.1 or HTTP/2 to clients, and hand each request to
//! [`proxy::Proxy`], which routes by host name to `<runtime ip>:<port>` on the
//! runtime bridge. It reads runtime records and asks the manager to wake a
//! suspended runtime; it never changes a runtime otherwise.

pub mod proxy;
pub mod route;
pub mod tls;

use std::convert::Infallible;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

use crate::config::Config;
use crate::manager::Manager;
use proxy::{ConnInfo, Proxy};

const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The HTTPS ingress's TLS settings: the operator's certificate, or one from
/// the daemon's own CA (made on first use). `None` when HTTPS is off. A bad
/// certificate or key is an error: the daemon refuses to start.
pub fn load_tls(cfg: &Config, data_dir: &Path) -> Result<Option<Arc<ServerConfig>>, String> {
    if cfg.ingress_https().bind.is_none() {
        return Ok(None);
    }
    Ok(Some(match (&cfg.tls_cert, &cfg.tls_key) {
        (Some(cert), Some(key)) => {
            let c = tls::operator(cert, key)?;
            info!(cert = %cert.display(), "ingress uses the operator's certificate");
            c
        }
        _ => {
            let (c, ca) = tls::self_managed(&data_dir.join("ingress"), &cfg.ingress_domain)?;
            info!(ca = %ca.display(), domain = %cfg.ingress_domain, "ingress CA (trust it: curl --cacert {})", ca.display());
            c
        }
    }))
}

/// The ingress's bound sockets, made by [`bind`] before the daemon touches the
/// host and handed to [`start`].
pub struct Listeners {
    https: Option<TcpListener>,
    http: Option<TcpListener>,
}

/// Binds both ingress listeners (those not `off`). A port that cannot be bound
/// is an error and the daemon does not start: serving on without it would hand
/// out URLs on a port it does not own (another daemon's, for instance).
pub async fn bind(cfg: &Config) -> Result<Listeners, String> {
    let https = match &cfg.ingress_https().bind {
        Some(addr) => Some(
            bind_one(
                addr,
                "HTTPS",
                "--ingress-listen-https / --ingress-https-port",
            )
            .await?,
        ),
        None => None,
    };
    let http = match &cfg.ingress_http().bind {
        Some(addr) => {
            Some(bind_one(addr, "HTTP", "--ingress-listen-http / --ingress-http-port").await?)
        }
        None => None,
    };
    Ok(Listeners { https, http })
}

async fn bind_one(addr: &str, what: &str, flags: &str) -> Result<TcpListener, String> {
    TcpListener::bind(addr).await.map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::AddrInUse {
            " (another runtad, or another program, holds it)"
        } else {
            ""
        };
        format!(
            "cannot listen on {addr} for the {what} ingress: {e}{hint}; free the port, \
             or choose another with {flags} (`off` disables that listener)"
        )
    })
}

/// Serves both listeners.
pub fn start(
    manager: Arc<Manager>,
    cfg: &Config,
    tls: Option<Arc<ServerConfig>>,
    listeners: Listeners,
) {
    let https = cfg.ingress_https();
    let proxy = Proxy::new(manager, &cfg.ingress_domain, https.public_port);
    let header = cfg.http_timeouts().header;
    // Each listener has its own caps (docs/security.md, item 8), so a flood
    // on one leaves the other and the API alone.
    let caps = || {
        crate::serve::ConnTracker::new(
            cfg.max_connections.unwrap_or_else(|| {
                crate::serve::auto_max_connections(crate::serve::raise_nofile_limit())
            }),
            cfg.max_connections_per_peer,
        )
    };
    if let (Some(l), Some(tls)) = (listeners.https, tls) {
        info!(listen = ?l.local_addr().ok(), "ingress (https) ready");
        let limits = Limits {
            conns: caps(),
            header,
            what: "ingress (https)",
        };
        tokio::spawn(serve(
            l,
            Some(TlsAcceptor::from(tls)),
            proxy.clone(),
            limits,
        ));
    }
    if let Some(l) = listeners.http {
        info!(listen = ?l.local_addr().ok(), "ingress (http) ready");
        let limits = Limits {
            conns: caps(),
            header,
            what: "ingress (http)",
        };
        tokio::spawn(serve(l, None, proxy, limits));
    }
}

struct Limits {
    conns: Arc<crate::serve::ConnTracker>,
    /// Header deadline; also how long a new connection may stay silent.
    header: Duration,
    what: &'static str,
}

async fn serve(listener: TcpListener, tls: Option<TlsAcceptor>, proxy: Arc<Proxy>, limits: Limits) {
    let refusals = crate::serve::RefusalLog::new(limits.what);
    let header = limits.header;
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors and the like: back off, keep serving.
                warn!("ingress accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(slot) = limits.conns.admit(peer.ip()) else {
            refusals.refused(peer.ip());
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let proxy = proxy.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            // The API's send-progress rule (crate::serve::PacedIo): a peer
            // that takes its answer too slowly is reset; it holds the slot.
            let slot = Some(slot);
            match tls {
                Some(acceptor) => {
                    let tcp = crate::serve::PacedIo::tcp(tcp, slot);
                    let stream =
                        match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp))
                            .await
                        {
                            Ok(Ok(s)) => s,
                            Ok(Err(e)) => return debug!(%peer, "TLS handshake: {e}"),
                            Err(_) => return debug!(%peer, "TLS handshake timed out"),
                        };
                    let sni = stream.get_ref().1.server_name().map(Arc::from);
                    serve_connection(
                        TokioIo::new(stream),
                        ConnInfo {
                            peer,
                            secure: true,
                            sni,
                        },
                        proxy,
                        header,
                    )
                    .await
                }
                None => {
                    // The version sniffing before HTTP/1 has no deadline of its
                    // own: a connection that never speaks is closed here.
                    if !matches!(
                        tokio::time::timeout(header, tcp.readable()).await,
                        Ok(Ok(()))
                    ) {
                        return debug!(%peer, "ingress: nothing sent within {header:?}");
                    }
                    serve_connection(
                        TokioIo::new(crate::serve::PacedIo::tcp(tcp, slot)),
                        ConnInfo {
                            peer,
                            secure: false,
                            sni: None,
                        },
                        proxy,
                        header,
                    )
                    .await
                }
            }
        });
    }
}

async fn serve_connection<I>(io: I, info: ConnInfo, proxy: Arc<Proxy>, header: Duration)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let info = Arc::new(info);
    let svc = service_fn(move |req| {
        let proxy = proxy.clone();
        let info = info.clone();
        async move { Ok::<_, Infallible>(proxy.handle(req, &info).await) }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header);
    builder.http2().timer(TokioTimer::new());
    if let Err(e) = builder.serve_connection_with_upgrades(io, svc).await {
        debug!("ingress connection: {e}");
    }
}
