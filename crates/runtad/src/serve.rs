//! Serving HTTP connections so that idle or slow clients cannot exhaust the
//! daemon (docs/security.md, item 8): a cap on connections per peer address
//! and in total (extra ones are closed at once), a deadline for a request's
//! headers, an idle deadline while a handler waits for body bytes, and the
//! file-descriptor limit raised at start so the caps, not the kernel, decide.
//! Past the headers, both directions must keep moving: a response the peer
//! reads slower than [`MIN_PROGRESS_BYTES`] per [`PROGRESS_WINDOW`] closes the
//! connection ([`PacedIo`]), and so does a request body sent slower than that.
//! The API listener and both ingress listeners share [`ConnTracker`] and
//! [`PacedIo`]; IPv6 peers are counted per /64 (one host's usual allocation).

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
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::time::Sleep;
use tracing::{debug, info, warn};

/// Defaults of `--http-header-timeout-secs`, `--http-body-idle-secs` and
/// `--max-connections-per-peer` (docs/operations.md).
pub const DEFAULT_HEADER_TIMEOUT_SECS: u64 = 10;
pub const DEFAULT_BODY_IDLE_SECS: u64 = 30;
pub const DEFAULT_MAX_CONNECTIONS_PER_PEER: usize = 256;
/// The least a connection must move while it has bytes waiting to be sent
/// (and a request body while a handler waits for it), per window. A fast
/// link moves this in microseconds; a reader that takes a few hundred bytes
/// every few seconds to hold the connection does not.
pub const MIN_PROGRESS_BYTES: u64 = 16 * 1024;
pub const PROGRESS_WINDOW: Duration = Duration::from_secs(10);
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
        let peer = peer_key(peer);
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

/// What the per-peer cap counts by: an IPv4 address, or an IPv6 /64 (one
/// host can hold a whole /64, so per address it would have no cap at all).
fn peer_key(peer: IpAddr) -> IpAddr {
    match peer {
        IpAddr::V4(_) => peer,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let bits = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(bits.into())
            }
        },
    }
}

/// Connection IO that fails once the peer stops taking what is sent: while
/// bytes wait to go out (a write that cannot proceed, or data still queued in
/// the kernel's send buffer), at least `min_bytes` must leave per `window`.
/// The window's timer is polled with the task's context, so the task is woken
/// at the deadline even if the socket never becomes writable again; every
/// later read or write then fails with `TimedOut` and the connection is reset.
/// A connection closed with bytes still queued (the kernel would otherwise
/// keep trickling them to a slow reader for as long as it reads) is watched
/// by the same rule until the queue drains, then reset if it stalls.
pub struct PacedIo<T> {
    inner: T,
    min_bytes: u64,
    window: Duration,
    /// Bytes written since the window opened; `None` when no window is open.
    moved: Option<u64>,
    /// The kernel's unsent bytes when the window opened.
    queued_at_open: u64,
    /// The last write attempt could not go out (the peer is not reading).
    waiting: bool,
    stalled: bool,
    timer: Pin<Box<Sleep>>,
    /// The socket, to read its send queue (none for in-memory IO in tests).
    fd: Option<std::os::fd::RawFd>,
    /// Kept until the connection is really gone, queue drained included.
    slot: Option<ConnSlot>,
}

impl PacedIo<tokio::net::TcpStream> {
    /// Paces a TCP connection; `slot` is held until its send queue drains.
    pub fn tcp(inner: tokio::net::TcpStream, slot: Option<ConnSlot>) -> Self {
        use std::os::fd::AsRawFd;
        let fd = inner.as_raw_fd();
        let mut p = Self::with_rate(inner, MIN_PROGRESS_BYTES, PROGRESS_WINDOW);
        p.fd = Some(fd);
        p.slot = slot;
        p
    }
}

/// Bytes in the socket's send queue not yet acknowledged by the peer.
fn unsent(fd: Option<std::os::fd::RawFd>) -> u64 {
    let Some(fd) = fd else { return 0 };
    let mut n: libc::c_int = 0;
    // SAFETY: TIOCOUTQ writes one int into `n`; `fd` is open while we hold it.
    if unsafe { libc::ioctl(fd, libc::TIOCOUTQ, &mut n) } != 0 {
        return 0;
    }
    n.max(0) as u64
}

/// Makes the next close of `fd` a reset: a stalled peer gets nothing more.
fn reset_on_close(fd: std::os::fd::RawFd) {
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: plain setsockopt on an open descriptor with a struct we own.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &l as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

impl<T> Drop for PacedIo<T> {
    fn drop(&mut self) {
        let Some(fd) = self.fd else { return };
        if self.stalled {
            reset_on_close(fd);
            return;
        }
        let queued = unsent(Some(fd));
        if queued == 0 {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        // SAFETY: dup of an open descriptor; the copy is owned by `keep`.
        let copy = unsafe { libc::dup(fd) };
        if copy < 0 {
            return;
        }
        let keep = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(copy) };
        let (min, window, slot) = (self.min_bytes, self.window, self.slot.take());
        rt.spawn(async move {
            use std::os::fd::AsRawFd;
            let _slot = slot;
            // The queue is looked at soon and then less often (a healthy peer
            // acknowledges within a round trip, and the slot must come back
            // then: one client's sequential calls would otherwise hold a slot
            // each for a whole window); the pace is judged once per window.
            let mut mark = (std::time::Instant::now(), queued);
            let mut delay = Duration::from_millis(2);
            loop {
                tokio::time::sleep(delay).await;
                delay = (delay * 4).min(Duration::from_secs(1)).min(window);
                let now = unsent(Some(keep.as_raw_fd()));
                if now == 0 {
                    return;
                }
                if mark.0.elapsed() >= window {
                    if mark.1.saturating_sub(now) < min {
                        debug!(
                            unsent = now,
                            "resetting a closed connection whose peer reads too slowly"
                        );
                        reset_on_close(keep.as_raw_fd());
                        return;
                    }
                    mark = (std::time::Instant::now(), now);
                }
            }
        });
    }
}

impl<T> PacedIo<T> {
    pub fn new(inner: T) -> Self {
        Self::with_rate(inner, MIN_PROGRESS_BYTES, PROGRESS_WINDOW)
    }

    pub fn with_rate(inner: T, min_bytes: u64, window: Duration) -> Self {
        PacedIo {
            inner,
            min_bytes,
            window,
            moved: None,
            queued_at_open: 0,
            waiting: false,
            stalled: false,
            timer: Box::pin(tokio::time::sleep(window)),
            fd: None,
            slot: None,
        }
    }

    pub fn get_ref(&self) -> &T {
        &self.inner
    }

    /// Handles an expired window (polling the timer registers `cx`); true
    /// when the connection is to be closed.
    fn check(&mut self, cx: &mut Context<'_>) -> bool {
        if self.stalled {
            return true;
        }
        let Some(moved) = self.moved else {
            return false;
        };
        if self.timer.as_mut().poll(cx).is_pending() {
            return false;
        }
        let queued = unsent(self.fd);
        let left = (moved + self.queued_at_open).saturating_sub(queued);
        // Slow means bytes that were already waiting when the window opened
        // are still waiting: a trickle of small writes to a distant peer
        // always has a few bytes in flight, but they are new ones.
        let stuck = match self.fd {
            Some(_) => (self.waiting || queued > 0) && left < self.queued_at_open,
            None => self.waiting,
        };
        if !self.waiting && queued == 0 {
            // Everything sent went out; nothing waits any more.
            self.moved = None;
        } else if stuck && left < self.min_bytes {
            self.stalled = true;
            debug!(
                left,
                "closing a connection that takes its response too slowly"
            );
            return true;
        } else {
            self.open_window(cx);
        }
        false
    }

    fn open_window(&mut self, cx: &mut Context<'_>) {
        self.moved = Some(0);
        self.queued_at_open = unsent(self.fd);
        let at = tokio::time::Instant::now() + self.window;
        self.timer.as_mut().reset(at);
        let _ = self.timer.as_mut().poll(cx);
    }

    fn stalled_error() -> std::io::Error {
        std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "the peer takes the response too slowly",
        )
    }

    fn after_write(
        &mut self,
        cx: &mut Context<'_>,
        r: Poll<std::io::Result<usize>>,
    ) -> Poll<std::io::Result<usize>> {
        // Any write opens a window: bytes accepted by the kernel are not yet
        // taken by the peer.
        if self.moved.is_none() && !matches!(r, Poll::Ready(Err(_))) {
            self.open_window(cx);
        }
        match &r {
            Poll::Ready(Ok(n)) => {
                self.waiting = false;
                if let Some(m) = self.moved.as_mut() {
                    *m += *n as u64;
                }
            }
            Poll::Ready(Err(_)) => self.waiting = false,
            Poll::Pending => {
                self.waiting = true;
                if self.check(cx) {
                    return Poll::Ready(Err(Self::stalled_error()));
                }
            }
        }
        r
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for PacedIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.check(cx) {
            return Poll::Ready(Err(Self::stalled_error()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for PacedIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if self.check(cx) {
            return Poll::Ready(Err(Self::stalled_error()));
        }
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.after_write(cx, r)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        if self.check(cx) {
            return Poll::Ready(Err(Self::stalled_error()));
        }
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.after_write(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if self.check(cx) {
            return Poll::Ready(Err(Self::stalled_error()));
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
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
        // The slot goes with the socket: a connection whose answer is still
        // queued in the kernel keeps counting until that drains.
        let io = PacedIo::tcp(tcp, Some(slot));
        let svc = TowerToHyperService::new(app.clone());
        // HTTP/1.1 only, served directly: the header deadline runs from the
        // first moment (no protocol sniffing before it, which has none).
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(t.header)
            .serve_connection(TokioIo::new(io), svc)
            .with_upgrades();
        let mut stop = stop_rx.clone();
        let alive = alive_tx.clone();
        tokio::spawn(async move {
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
    let body = Body::new(IdleBody::new(body, idle));
    next.run(Request::from_parts(parts, body)).await
}

/// A body that fails when its sender goes quiet for longer than `idle`, or
/// sends fewer than `min_bytes` in a `window`, while someone waits for it (the
/// clocks run only while a read is pending: a busy handler is not the
/// sender's fault).
pub struct IdleBody {
    inner: Body,
    idle: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
    min_bytes: u64,
    window: Duration,
    /// The open rate window: its deadline and the bytes received in it.
    rate: Option<(Pin<Box<Sleep>>, u64)>,
}

impl IdleBody {
    pub fn new(inner: Body, idle: Duration) -> Self {
        Self::with_rate(inner, idle, MIN_PROGRESS_BYTES, PROGRESS_WINDOW)
    }

    pub fn with_rate(inner: Body, idle: Duration, min_bytes: u64, window: Duration) -> Self {
        IdleBody {
            inner,
            idle,
            sleep: None,
            min_bytes,
            window,
            rate: None,
        }
    }
}

fn body_timed_out(msg: String) -> axum::Error {
    axum::Error::new(std::io::Error::new(std::io::ErrorKind::TimedOut, msg))
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
                if let Some(Ok(f)) = &v {
                    let n = f.data_ref().map_or(0, |d| d.len() as u64);
                    if let Some((_, got)) = this.rate.as_mut() {
                        *got += n;
                        if *got >= this.min_bytes {
                            this.rate = None;
                        }
                    }
                }
                Poll::Ready(v)
            }
            Poll::Pending => {
                let idle = this.idle;
                let sleep = this
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
                if sleep.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Some(Err(body_timed_out(format!(
                        "no request body bytes for {} s",
                        idle.as_secs()
                    )))));
                }
                let window = this.window;
                let (deadline, got) = this
                    .rate
                    .get_or_insert_with(|| (Box::pin(tokio::time::sleep(window)), 0));
                if deadline.as_mut().poll(cx).is_ready() {
                    if *got < this.min_bytes {
                        return Poll::Ready(Some(Err(body_timed_out(format!(
                            "the request body arrives slower than {} bytes per {} s",
                            this.min_bytes,
                            window.as_secs()
                        )))));
                    }
                    this.rate = None;
                    let (d, _) = this.rate.insert((Box::pin(tokio::time::sleep(window)), 0));
                    let _ = d.as_mut().poll(cx);
                }
                Poll::Pending
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
        let b = Body::new(IdleBody::new(body, Duration::from_millis(200)));
        let t0 = std::time::Instant::now();
        let r = axum::body::to_bytes(b, 1024).await;
        assert!(r.is_err());
        assert!(t0.elapsed() >= Duration::from_millis(200));
        drop(send);
    }

    #[tokio::test]
    async fn a_trickled_body_fails_within_a_rate_window() {
        let (send, r) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
        let body = Body::from_stream(tokio_stream_from(r));
        let b = Body::new(IdleBody::with_rate(
            body,
            Duration::from_secs(30),
            1000,
            Duration::from_millis(300),
        ));
        let trickle = tokio::spawn(async move {
            // A byte every 50 ms never leaves the idle deadline's reach.
            while send.send(Ok(Bytes::from_static(b"x"))).await.is_ok() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        let t0 = std::time::Instant::now();
        let r = axum::body::to_bytes(b, 1 << 20).await;
        assert!(r.is_err(), "{r:?}");
        assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
        trickle.abort();
        // A body at a healthy rate is not cut, however long it runs.
        let (send, r) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
        let body = Body::from_stream(tokio_stream_from(r));
        let b = Body::new(IdleBody::with_rate(
            body,
            Duration::from_secs(30),
            1000,
            Duration::from_millis(300),
        ));
        tokio::spawn(async move {
            for _ in 0..20 {
                send.send(Ok(Bytes::from(vec![b'y'; 600]))).await.unwrap();
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        let r = axum::body::to_bytes(b, 1 << 20).await.unwrap();
        assert_eq!(r.len(), 12000);
    }

    #[tokio::test]
    async fn a_slow_reader_is_cut_and_a_fast_one_is_not() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        // Slow: the peer takes 100 bytes every 100 ms of a 1 MiB answer.
        let (a, mut b) = tokio::io::duplex(4096);
        let mut w = PacedIo::with_rate(a, 8192, Duration::from_millis(400));
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 100];
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                match b.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        });
        let t0 = std::time::Instant::now();
        let r = w.write_all(&vec![0u8; 1 << 20]).await;
        assert_eq!(r.unwrap_err().kind(), std::io::ErrorKind::TimedOut);
        assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
        drop(w);
        reader.await.unwrap();
        // Fast: the same answer read at once, then a long quiet spell (no
        // write waiting), then more: nothing is cut.
        let (a, mut b) = tokio::io::duplex(4096);
        let mut w = PacedIo::with_rate(a, 8192, Duration::from_millis(400));
        let reader = tokio::spawn(async move {
            let mut all = Vec::new();
            b.read_to_end(&mut all).await.map(|_| all.len())
        });
        w.write_all(&vec![0u8; 1 << 20]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(900)).await;
        w.write_all(&vec![0u8; 1 << 20]).await.unwrap();
        w.shutdown().await.unwrap();
        drop(w);
        assert_eq!(reader.await.unwrap().unwrap(), 2 << 20);
    }

    #[tokio::test]
    async fn a_closed_connection_gives_its_slot_back_once_its_answer_is_read() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        // An answer still queued when the server closes keeps its slot only
        // until the peer has it: a client's next call must not wait for a
        // whole pacing window (the API refused a bench's sequential calls).
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.set_recv_buffer_size(4096).unwrap();
        let mut client = sock.connect(addr).await.unwrap();
        let (server, peer) = l.accept().await.unwrap();
        let tracker = ConnTracker::new(8, 1);
        let slot = tracker.admit(peer.ip()).unwrap();
        let mut w = PacedIo::tcp(server, Some(slot));
        // More than the peer's window: part of it stays in our send queue.
        let answer = vec![7u8; 1 << 20];
        let writer = tokio::spawn(async move {
            let _ = w.write_all(&answer).await;
            w
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut got = vec![0u8; 64 * 1024];
        let n = client.read(&mut got).await.unwrap();
        assert!(n > 0);
        // The writer is done once the rest fits in the kernel's queue.
        let mut total = n;
        let w = loop {
            if writer.is_finished() {
                break writer.await.unwrap();
            }
            total += client.read(&mut got).await.unwrap();
        };
        assert!(
            unsent(w.fd) > 0,
            "the test needs an answer still queued at close"
        );
        drop(w);
        assert_eq!(tracker.open(), 1, "held while the answer is queued");
        let t0 = std::time::Instant::now();
        while total < 1 << 20 {
            let n = client.read(&mut got).await.unwrap();
            assert!(n > 0);
            total += n;
        }
        while tracker.open() > 0 && t0.elapsed() < Duration::from_secs(5) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(tracker.open(), 0);
        assert!(
            t0.elapsed() < Duration::from_secs(2),
            "the slot came back {:?} after the answer was read",
            t0.elapsed()
        );
        assert!(tracker.admit(peer.ip()).is_some());
    }

    #[tokio::test]
    async fn the_deadline_wakes_a_writer_nobody_polls() {
        use tokio::io::AsyncWriteExt;
        // The peer never reads: only the window's timer can wake the writer.
        let (a, _b) = tokio::io::duplex(1024);
        let mut w = PacedIo::with_rate(a, 8192, Duration::from_millis(300));
        let r = tokio::time::timeout(Duration::from_secs(3), w.write_all(&[1u8; 1 << 16])).await;
        assert!(
            matches!(r, Ok(Err(ref e)) if e.kind() == std::io::ErrorKind::TimedOut),
            "{r:?}"
        );
    }

    #[test]
    fn ipv6_peers_share_a_cap_per_64() {
        let t = ConnTracker::new(100, 2);
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        let _a = t.admit(a).unwrap();
        let _b = t.admit(b).unwrap();
        assert!(t.admit("2001:db8:1:2:abcd::1".parse().unwrap()).is_none());
        assert!(t.admit(c).is_some(), "another /64 has its own cap");
        // An IPv4-mapped address counts as the IPv4 peer it is.
        let _v4 = t.admit("10.0.0.1".parse().unwrap()).unwrap();
        let _v4b = t.admit("::ffff:10.0.0.1".parse().unwrap()).unwrap();
        assert!(t.admit("10.0.0.1".parse().unwrap()).is_none());
    }

    fn tokio_stream_from(
        mut r: tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>,
    ) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> {
        futures_util::stream::poll_fn(move |cx| r.poll_recv(cx))
    }
}
