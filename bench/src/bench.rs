//! The benchmarks, written once and run against every system.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::Semaphore;

use crate::mem::{self, Footprint};
use crate::stats::{round3, Samples, Summary};
use crate::system::{Handle, System};

/// Deletes handles, `parallel` at a time; returns the error count.
pub async fn delete_all<S: System>(sys: &Arc<S>, handles: Vec<Handle>, parallel: usize) -> usize {
    let sem = Arc::new(Semaphore::new(parallel.max(1)));
    let mut tasks = Vec::new();
    for h in handles {
        let sys = sys.clone();
        let sem = sem.clone();
        tasks.push(tokio::spawn(async move {
            let _p = sem.acquire_owned().await;
            let r = sys.delete(&h).await;
            if let Err(e) = &r {
                eprintln!("  delete {}: {e}", h.0);
            }
            r.is_err()
        }));
    }
    let mut errors = 0;
    for t in tasks {
        if t.await.unwrap_or(true) {
            errors += 1;
        }
    }
    errors
}

#[derive(Debug, Clone, Serialize)]
pub struct CreateResult {
    /// Until the system reports the runtime up (Runta: the agent answered).
    pub create: Option<Summary>,
    /// Create, then the first `exec true` returned.
    pub create_first_exec: Option<Summary>,
    pub delete: Option<Summary>,
    pub first_error: Option<String>,
}

/// 1. Sequential create → ready, `reps` times (after `warmup` untimed rounds).
pub async fn create_ready<S: System>(
    sys: &Arc<S>,
    tag: &str,
    reps: usize,
    warmup: usize,
) -> CreateResult {
    let (mut create, mut first, mut delete) =
        (Samples::default(), Samples::default(), Samples::default());
    for i in 0..warmup + reps {
        let name = format!("rb-{tag}-seq{i}");
        if let Err(e) = sys.prepare(&name) {
            create.error(e);
            continue;
        }
        let t0 = Instant::now();
        let h = match sys.create(&name).await {
            Ok(h) => h,
            Err(e) => {
                eprintln!("  create {name}: {e}");
                create.error(e);
                continue;
            }
        };
        let t1 = Instant::now();
        let r = sys.exec_true(&h).await;
        let t2 = Instant::now();
        let t3 = Instant::now();
        let d = sys.delete(&h).await;
        let t4 = Instant::now();
        if i >= warmup {
            create.push(t1 - t0);
            first.record(t2 - t0, &r);
            delete.record(t4 - t3, &d);
        }
    }
    let first_error = create
        .first_error
        .clone()
        .or(first.first_error.clone())
        .or(delete.first_error.clone());
    CreateResult {
        create: create.summary(),
        create_first_exec: first.summary(),
        delete: delete.summary(),
        first_error,
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ExecResult {
    pub latency: Option<Summary>,
    pub throughput_callers: usize,
    pub throughput_secs: f64,
    pub throughput_ok: usize,
    pub throughput_errors: usize,
    pub throughput_per_sec: f64,
    /// Latency seen by each caller while 16 run at once.
    pub throughput_latency: Option<Summary>,
    pub first_error: Option<String>,
}

/// 2. `exec true`: sequential round trips, then `callers` concurrent callers
///    for `secs` seconds, all on one runtime.
pub async fn exec<S: System>(
    sys: &Arc<S>,
    h: &Handle,
    reps: usize,
    callers: usize,
    secs: f64,
) -> ExecResult {
    for _ in 0..10.min(reps) {
        let _ = sys.exec_true(h).await;
    }
    let mut seq = Samples::default();
    for _ in 0..reps {
        let t0 = Instant::now();
        let r = sys.exec_true(h).await;
        seq.record(t0.elapsed(), &r);
    }
    let ok = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(secs);
    let mut tasks = Vec::new();
    for _ in 0..callers {
        let sys = sys.clone();
        let h = h.clone();
        let ok = ok.clone();
        tasks.push(tokio::spawn(async move {
            let mut s = Samples::default();
            while Instant::now() < deadline {
                let t0 = Instant::now();
                let r = sys.exec_true(&h).await;
                s.record(t0.elapsed(), &r);
                if r.is_ok() {
                    ok.fetch_add(1, Ordering::Relaxed);
                }
            }
            s
        }));
    }
    let mut conc = Samples::default();
    for t in tasks {
        if let Ok(s) = t.await {
            conc.merge(s);
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let n = ok.load(Ordering::Relaxed);
    ExecResult {
        latency: seq.summary(),
        throughput_callers: callers,
        throughput_secs: round3(elapsed),
        throughput_ok: n,
        throughput_errors: conc.errors,
        throughput_per_sec: round3(n as f64 / elapsed),
        throughput_latency: conc.summary(),
        first_error: seq.first_error.or(conc.first_error),
    }
}

/// Runta only: checkpoint a runtime, then start a fork from the checkpoint.
#[derive(Debug, Clone, Serialize)]
pub struct ForkResult {
    pub checkpoint: Option<Summary>,
    pub fork_ready: Option<Summary>,
    /// Checkpoint → fork ready for exec.
    pub total: Option<Summary>,
    pub first_error: Option<String>,
}

impl ForkResult {
    pub fn from(ck: Samples, fork: Samples, total: Samples) -> Self {
        ForkResult {
            checkpoint: ck.summary(),
            fork_ready: fork.summary(),
            total: total.summary(),
            first_error: ck.first_error.or(fork.first_error),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct PauseResult {
    pub pause: Option<Summary>,
    pub resume: Option<Summary>,
    pub first_error: Option<String>,
}

/// 3. Pause then resume, `reps` times.
pub async fn pause_resume<S: System>(sys: &Arc<S>, h: &Handle, reps: usize) -> PauseResult {
    let (mut p, mut r) = (Samples::default(), Samples::default());
    for i in 0..reps + 2 {
        let t0 = Instant::now();
        let a = sys.pause(h).await;
        let t1 = Instant::now();
        let b = sys.resume(h).await;
        let t2 = Instant::now();
        if i >= 2 {
            p.record(t1 - t0, &a);
            r.record(t2 - t1, &b);
        }
    }
    // Still usable afterwards?
    if let Err(e) = sys.exec_true(h).await {
        r.error(format!("exec after resume: {e}"));
    }
    PauseResult {
        pause: p.summary(),
        resume: r.summary(),
        first_error: p.first_error.or(r.first_error),
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ConcurrentResult {
    pub n: usize,
    pub wall_ms: f64,
    pub errors: usize,
    /// Per-create latency under the burst.
    pub each: Option<Summary>,
    pub delete_wall_ms: f64,
    pub delete_errors: usize,
    pub first_error: Option<String>,
}

/// 4. `n` creates issued at once; wall time until the last is up.
pub async fn concurrent_creates<S: System>(sys: &Arc<S>, tag: &str, n: usize) -> ConcurrentResult {
    let names: Vec<String> = (0..n).map(|i| format!("rb-{tag}-par{i}")).collect();
    let mut s = Samples::default();
    for name in &names {
        if let Err(e) = sys.prepare(name) {
            s.error(e);
        }
    }
    let start = Instant::now();
    let mut tasks = Vec::new();
    for name in names {
        let sys = sys.clone();
        tasks.push(tokio::spawn(async move {
            let t0 = Instant::now();
            let r = sys.create(&name).await;
            (t0.elapsed(), name, r)
        }));
    }
    let mut handles = Vec::new();
    for t in tasks {
        match t.await {
            Ok((d, _, Ok(h))) => {
                s.push(d);
                handles.push(h);
            }
            Ok((_, name, Err(e))) => {
                eprintln!("  create {name}: {e}");
                s.error(e);
            }
            Err(e) => s.error(e),
        }
    }
    let wall = start.elapsed();
    let t0 = Instant::now();
    let delete_errors = delete_all(sys, handles, 16).await;
    ConcurrentResult {
        n,
        wall_ms: round3(wall.as_secs_f64() * 1000.0),
        errors: s.errors,
        each: s.summary(),
        delete_wall_ms: round3(t0.elapsed().as_secs_f64() * 1000.0),
        delete_errors,
        first_error: s.first_error.clone(),
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct DensityResult {
    pub n: usize,
    pub created: usize,
    pub errors: usize,
    pub create_wall_ms: f64,
    pub settle_secs: u64,
    pub before: Footprint,
    pub after: Footprint,
    /// (cgroup charge of the runtimes + helper processes + daemon RSS growth) / created.
    pub per_runtime_mib: f64,
    /// Anonymous memory only (cgroup anon + helpers + daemon growth) / created.
    pub per_runtime_anon_mib: f64,
    /// Host-wide (MemTotal − MemAvailable) growth / created; includes kernel
    /// objects no cgroup is charged for (namespaces, veths), and any noise
    /// from other work on a shared host.
    pub per_runtime_host_delta_mib: f64,
    pub daemon_rss_mib_idle: Option<f64>,
    pub daemon_rss_mib_loaded: Option<f64>,
    pub delete_errors: usize,
    pub first_error: Option<String>,
}

fn mib(kib: u64) -> f64 {
    round3(kib as f64 / 1024.0)
}

/// 5. `n` idle running runtimes: what they hold on the host.
pub async fn density<S: System>(
    sys: &Arc<S>,
    tag: &str,
    n: usize,
    parallel: usize,
    settle: Duration,
) -> DensityResult {
    let before = sys.footprint(&[]).await;
    let host_before = mem::host_used_kib();
    let sem = Arc::new(Semaphore::new(parallel.max(1)));
    let start = Instant::now();
    let mut tasks = Vec::new();
    let mut s = Samples::default();
    for i in 0..n {
        let name = format!("rb-{tag}-den{i}");
        if let Err(e) = sys.prepare(&name) {
            s.error(e);
            continue;
        }
        let sys = sys.clone();
        let sem = sem.clone();
        tasks.push(tokio::spawn(async move {
            let _p = sem.acquire_owned().await;
            sys.create(&name).await
        }));
    }
    let mut handles = Vec::new();
    for t in tasks {
        match t.await {
            Ok(Ok(h)) => handles.push(h),
            Ok(Err(e)) => {
                eprintln!("  density create: {e}");
                s.error(e)
            }
            Err(e) => s.error(e),
        }
    }
    let create_wall = start.elapsed();
    tokio::time::sleep(settle).await;
    let after = sys.footprint(&handles).await;
    let host_after = mem::host_used_kib();
    let created = handles.len().max(1) as f64;
    let daemon_growth = after
        .daemon_rss_kib
        .unwrap_or(0)
        .saturating_sub(before.daemon_rss_kib.unwrap_or(0));
    let per = |kib: u64| round3(kib as f64 / 1024.0 / created);
    let result = DensityResult {
        n,
        created: handles.len(),
        errors: s.errors,
        create_wall_ms: round3(create_wall.as_secs_f64() * 1000.0),
        settle_secs: settle.as_secs(),
        per_runtime_mib: per(after.cgroup_usage_kib + after.helpers_pss_kib + daemon_growth),
        per_runtime_anon_mib: per(after.cgroup_anon_kib + after.helpers_pss_kib + daemon_growth),
        per_runtime_host_delta_mib: per(host_after.saturating_sub(host_before)),
        daemon_rss_mib_idle: before.daemon_rss_kib.map(mib),
        daemon_rss_mib_loaded: after.daemon_rss_kib.map(mib),
        before,
        after,
        delete_errors: 0,
        first_error: s.first_error,
    };
    let delete_errors = delete_all(sys, handles, parallel).await;
    DensityResult {
        delete_errors,
        ..result
    }
}
