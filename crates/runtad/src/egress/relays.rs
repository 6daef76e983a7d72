//! Threads of their own for the gateway's relays: each a current-thread
//! runtime, each relayed connection on one of them for its whole life.
//!
//! On the daemon's multi-thread runtime every relayed request was a wake-up
//! across threads: the worker in `epoll_wait` handed the ready task to a
//! parked worker (a futex wake) or the other way round (an eventfd write to
//! the I/O driver); on 2 cores context switches were the largest share of
//! the daemon's profile (23 % of its samples). On a relay thread both sockets of a connection, its
//! task and the reactor that wakes it are on one thread: `epoll_wait`, the
//! ready tasks, `epoll_wait` again. A connection never moves between them.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use tokio::runtime::Handle;
use tokio::task::JoinHandle;

struct Relay {
    handle: Handle,
    /// Connections relayed on it now: a new one goes to the least busy.
    live: Arc<AtomicUsize>,
}

static RELAYS: OnceLock<Vec<Relay>> = OnceLock::new();

/// How many relay threads: `RUNTA_EGRESS_RELAY_THREADS`, else one per two
/// cores the daemon may run on (at least one, at most 8). Each relayed
/// request also costs its client and server a wake-up each: a relay thread
/// kept busy drains more ready sockets per `epoll_wait` and sleeps less, so
/// on 2 cores one thread is worth more than two (bench/README.md, egress).
fn threads() -> usize {
    std::env::var("RUNTA_EGRESS_RELAY_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get() / 2))
        .clamp(1, 8)
}

fn start() -> Vec<Relay> {
    let mut v = Vec::new();
    for i in 0..threads() {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            break;
        };
        let handle = rt.handle().clone();
        let spawned = std::thread::Builder::new()
            .name(format!("egress-relay-{i}"))
            .spawn(move || rt.block_on(std::future::pending::<()>()));
        if spawned.is_err() {
            break;
        }
        v.push(Relay {
            handle,
            live: Arc::new(AtomicUsize::new(0)),
        });
    }
    if v.is_empty() {
        tracing::warn!(
            "egress relay threads cannot be started: relays run on the daemon's runtime"
        );
    }
    v
}

/// Runs `f` on the least busy relay thread (on the caller's runtime when
/// none could be started). `f` must register its sockets itself (from std
/// sockets, inside the future): a tokio socket belongs to the reactor it
/// was made on.
pub(super) fn spawn<F>(f: F) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let relays = RELAYS.get_or_init(start);
    let Some(r) = relays.iter().min_by_key(|r| r.live.load(Ordering::Relaxed)) else {
        return tokio::spawn(f);
    };
    r.live.fetch_add(1, Ordering::Relaxed);
    // Counted down however the task ends, also aborted before it ran (a
    // policy change).
    let done = Done(r.live.clone());
    r.handle.spawn(async move {
        let _done = done;
        f.await
    })
}

struct Done(Arc<AtomicUsize>);

impl Drop for Done {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
