//! Serving HTTP connections so that idle or slow clients cannot exhaust the
//! daemon (docs/security.md, item 8): a cap on connections per peer address
//! and in total (extra ones are closed at once), a deadline for a request's
//! headers, an idle deadline while a handler waits for body bytes, and the
//! file-descriptor limit raised at start so the caps, not the kernel, decide.
//! The API listener and both ingress listeners share [`ConnTracker`].

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use axum::Router;
use hyper::body::{Frame, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::time::Sleep;
use tracing::{debug, info, warn};

/// Defaults of `--http-header-timeout-secs`, `--http-body-idle-secs` and
/// `--max-connections-per-peer` (docs/operations.md).
pub const DEFAULT_HEADER_TIMEOUT_SECS: u64 = 10;
pub const DEFAULT_BODY_IDLE_SECS: u64 = 30;
pub const DEFAULT_MAX_CONNECTIONS_PER_PEER: usize = 256;
/// How long a stopping daemon lets open requests finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (a daemon holds one
/// descriptor per connection, runtime socket and cgroup file) and returns the
/// soft limit in force.
pub fn raise_nofile_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit write/read the struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur < lim.rlim_max {
            let want = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
    }
    lim.rlim_cur
}

/// The total connection cap when the operator sets none: half the descriptors
/// (the rest are for runtimes, the store and agent calls), within 64..=16384.
pub fn auto_max_connections(nofile: u64) -> usize {
    (nofile.saturating_sub(512) / 2).clamp(64, 16384) as usize
}

/// Counts open connections per peer address and in total.
pub struct ConnTracker {
    total: usize,
    per_peer: usize,
    open: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

impl ConnTracker {
    pub fn new(total: usize, per_peer: usize) -> Arc<Self> {
        Arc::new(ConnTracker {
            total: total.max(1),
            per_peer: per_peer.max(1),
            open: Mutex::new((0, HashMap::new())),
        })
    }

    /// A slot for one more connection from `peer`, or `None` over a cap.
    pub fn admit(self: &Arc<Self>, peer: IpAddr) -> Option<ConnSlot> {
        let mut g = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let mine = g.1.get(&peer).copied().unwrap_or(0);
        if mine >= self.per_peer || g.0 >= self.total {
            return None;
        }
        g.0 += 1;
        *g.1.entry(peer).or_insert(0) += 1;
        Some(ConnSlot {
            tracker: self.clone(),
            peer,
        })
    }

    pub fn open(&self) -> usize {
        self.open.lock().unwrap_or_else(|e| e.into_inner()).0
    }
}

/// One admitted connection; freed when dropped.
pub struct ConnSlot {
    tracker: Arc<ConnTracker>,
    peer: IpAddr,
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        let mut g = self.tracker.open.lock().unwrap_or_else(|e| e.into_inner());
        g.0 = g.0.saturating_sub(1);
        if let Some(n) = g.1.get_mut(&self.peer) {
            *n -= 1;
            if *n == 0 {
                g.1.remove(&self.peer);
            }
        }
    }
}

/// Logs refused connections at most once a second per listener, so a flood
/// does not turn into a flood of log lines.
pub struct RefusalLog {
    what: &'static str,
    last: Mutex<(std::time::Instant, u64)>,
}

impl RefusalLog {
    pub fn new(what: &'static str) -> Self {
        RefusalLog {
            what,
            last: Mutex::new((std::time::Instant::now(), 0)),
        }
    }

    pub fn refused(&self, peer: IpAddr) {
        let mut g = self.last.lock().unwrap_or_else(|e| e.into_inner());
        g.1 += 1;
        if g.0.elapsed() >= Duration::from_secs(1) {
            warn!(%peer, refused = g.1, "{}: connection cap reached; closing new connections", self.what);
            *g = (std::time::Instant::now(), 0);
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct HttpTimeouts {
    /// From the first byte a request may be waited for to its last header
    /// (also how long an idle keep-alive connection stays open).
    pub header: Duration,
    /// How long a handler waits for the next bytes of a request body.
    pub body_idle: Duration,
}

/// Serves the API on `listener` until `shutdown` resolves (HTTP/1.1 with
/// upgrades, for the exec WebSocket), then lets open requests finish.
pub async fn serve_api(
    listener: TcpListener,
    app: Router,
    conns: Arc<ConnTracker>,
    t: HttpTimeouts,
    shutdown: impl Future<Output = ()>,
) {
    let app = app.layer(axum::middleware::from_fn_with_state(t.body_idle, idle_body));
    let refusals = RefusalLog::new("api");
    // Every connection task holds a sender: when the last one is gone, all
    // connections have ended.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (alive_tx, mut alive_rx) = tokio::sync::mpsc::channel::<()>(1);
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            _ = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of descriptors and the like: back off, keep serving.
                    warn!("api accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Some(slot) = conns.admit(peer.ip()) else {
            refusals.refused(peer.ip());
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let svc = TowerToHyperService::new(app.clone());
        // HTTP/1.1 only, served directly: the header deadline runs from the
        // first moment (no protocol sniffing before it, which has none).
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(t.header)
            .serve_connection(TokioIo::new(tcp), svc)
            .with_upgrades();
        let mut stop = stop_rx.clone();
        let alive = alive_tx.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let _alive = alive;
            tokio::pin!(conn);
            let r = tokio::select! {
                r = conn.as_mut() => r,
                _ = async { let _ = stop.wait_for(|s| *s).await; } => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = r {
                debug!(%peer, "api connection: {e}");
            }
        });
    }
    drop(listener);
    info!("api: stopped accepting; letting open requests finish");
    let _ = stop_tx.send(true);
    drop(alive_tx);
    if tokio::time::timeout(SHUTDOWN_GRACE, alive_rx.recv())
        .await
        .is_err()
    {
        warn!("api: requests still open after {SHUTDOWN_GRACE:?}; closing them");
    }
}

/// Puts the idle deadline on every request body.
async fn idle_body(State(idle): State<Duration>, req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    let body = Body::new(IdleBody {
        inner: body,
        idle,
        sleep: None,
    });
    next.run(Request::from_parts(parts, body)).await
}

/// A body that fails when its sender goes quiet for longer than `idle` while
/// someone waits for it (the clock runs only while a read is pending).
pub struct IdleBody {
    inner: Body,
    idle: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl HttpBody for IdleBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(v) => {
                this.sleep = None;
                Poll::Ready(v)
            }
            Poll::Pending => {
                let idle = this.idle;
                let sleep = this
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
                match sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        Poll::Ready(Some(Err(axum::Error::new(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            format!("no request body bytes for {} s", idle.as_secs()),
                        )))))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_per_peer_and_total() {
        let t = ConnTracker::new(3, 2);
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        let b: IpAddr = "127.0.0.3".parse().unwrap();
        let a1 = t.admit(a).unwrap();
        let _a2 = t.admit(a).unwrap();
        assert!(t.admit(a).is_none(), "per-peer cap");
        let _b1 = t.admit(b).unwrap();
        assert!(t.admit(b).is_none(), "total cap");
        drop(a1);
        let b2 = t.admit(b);
        assert!(b2.is_some());
        assert_eq!(t.open(), 3);
        drop(b2);
        assert_eq!(t.open(), 2);
    }

    #[test]
    fn auto_cap_follows_the_fd_limit() {
        assert_eq!(auto_max_connections(1024), 256);
        assert_eq!(auto_max_connections(100), 64);
        assert_eq!(auto_max_connections(1 << 20), 16384);
    }

    #[tokio::test]
    async fn a_quiet_body_fails_after_the_idle_deadline() {
        let (send, r) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
        let body = Body::from_stream(tokio_stream_from(r));
        send.try_send(Ok(Bytes::from_static(b"abc"))).unwrap();
        let b = Body::new(IdleBody {
            inner: body,
            idle: Duration::from_millis(200),
            sleep: None,
        });
        let t0 = std::time::Instant::now();
        let r = axum::body::to_bytes(b, 1024).await;
        assert!(r.is_err());
        assert!(t0.elapsed() >= Duration::from_millis(200));
        drop(send);
    }

    fn tokio_stream_from(
        mut r: tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>,
    ) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> {
        futures_util::stream::poll_fn(move |cx| r.poll_recv(cx))
    }
}
