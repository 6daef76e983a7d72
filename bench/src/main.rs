//! `runta-bench`: measures Runta through its REST API and its peers (podman,
//! raw crun) in the same run on the same machine, and writes a Markdown table
//! and JSON. Started by `bench/run.sh`, which sets up the daemon and the peers'
//! rootfs. Benchmarks report; they never fail a test suite.

mod bench;
mod compare;
mod mem;
mod peers;
mod report;
mod runta;
mod stats;
mod system;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use serde::Serialize;

use crate::bench::{ConcurrentResult, CreateResult, DensityResult, ExecResult, PauseResult};
use crate::peers::{Crun, Podman};
use crate::runta::Runta;
use crate::system::{Handle, System};

#[derive(Parser)]
#[command(about = "Runta benchmark suite (see bench/README.md)")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Args, Clone)]
struct Target {
    #[arg(long, default_value = "http://127.0.0.1:18186")]
    endpoint: String,
    /// Tenant token.
    #[arg(long, env = "RUNTA_TOKEN")]
    token: String,
    /// The daemon's data dir (to find each runtime's init pid).
    #[arg(long)]
    data_dir: PathBuf,
    /// Work folder for the crun bundles and state.
    #[arg(long)]
    work: PathBuf,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the benchmarks and write results.
    Run(Box<RunArgs>),
    /// Delete whatever a (possibly interrupted) run left behind.
    Cleanup(Target),
    /// This tree's daemon against a baseline build's, in one run (bench/baseline.sh).
    Compare(Box<compare::CompareArgs>),
}

#[derive(clap::Args)]
struct RunArgs {
    #[command(flatten)]
    target: Target,
    #[arg(long)]
    daemon_pid: Option<u32>,
    /// The base image rootfs (read-only; podman overlays it with `:O`).
    #[arg(long, default_value = "/var/lib/runta/images/base/rootfs")]
    rootfs: PathBuf,
    /// Overlay mount over the base rootfs for crun's bundles.
    #[arg(long)]
    crun_rootfs: PathBuf,
    /// Comma-separated: runta,podman,crun.
    #[arg(long, default_value = "runta,podman,crun")]
    systems: String,
    #[arg(long, default_value_t = 50)]
    create_reps: usize,
    #[arg(long, default_value_t = 1000)]
    exec_reps: usize,
    /// Sequential exec round trips for podman (≈170 ms each).
    #[arg(long, default_value_t = 300)]
    podman_exec_reps: usize,
    #[arg(long, default_value_t = 16)]
    callers: usize,
    #[arg(long, default_value_t = 10.0)]
    throughput_secs: f64,
    #[arg(long, default_value_t = 50)]
    pause_reps: usize,
    #[arg(long, default_value_t = 100)]
    concurrent: usize,
    #[arg(long, default_value_t = 200)]
    density: usize,
    #[arg(long, default_value_t = 8)]
    density_parallel: usize,
    #[arg(long, default_value_t = 10)]
    settle_secs: u64,
    #[arg(long, default_value_t = 64)]
    memory_mib: u64,
    /// CPUs of every runtime/container (CFS quota), for all three systems;
    /// default: all of the host's, so "exec/s on N cores" is not capped by
    /// the quota of one runtime.
    #[arg(long)]
    vcpus: Option<f64>,
    /// Rows from `bench/ingress.sh` (JSON array of report rows), if it ran.
    #[arg(long)]
    ingress_json: Option<PathBuf>,
    #[arg(long, default_value = "bench/results")]
    out_dir: PathBuf,
    /// File name stem, e.g. 2025-11-24.
    #[arg(long)]
    stem: String,
    /// Free-form facts about the host and versions (JSON object) for the report.
    #[arg(long)]
    env_json: Option<PathBuf>,
}

/// Everything measured for one system.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SystemResults {
    pub create: Option<CreateResult>,
    pub exec: Option<ExecResult>,
    pub pause: Option<PauseResult>,
    pub concurrent: Option<ConcurrentResult>,
    pub density: Option<DensityResult>,
    pub fork: Option<bench::ForkResult>,
    pub errors: Vec<String>,
}

async fn measure<S: System>(sys: Arc<S>, a: &RunArgs, exec_reps: usize) -> SystemResults {
    let name = sys.name();
    let tag = &name[..1];
    let mut out = SystemResults::default();
    eprintln!("[{name}] 1. create -> ready x{}", a.create_reps);
    out.create = Some(bench::create_ready(&sys, tag, a.create_reps, 3).await);

    let main = format!("rb-{tag}-main");
    let h: Option<Handle> = match sys.prepare(&main) {
        Ok(()) => match sys.create(&main).await {
            Ok(h) => Some(h),
            Err(e) => {
                out.errors.push(format!("create {main}: {e}"));
                None
            }
        },
        Err(e) => {
            out.errors.push(e);
            None
        }
    };
    if let Some(h) = &h {
        eprintln!(
            "[{name}] 2. exec true x{exec_reps}, then {} callers for {} s",
            a.callers, a.throughput_secs
        );
        out.exec = Some(bench::exec(&sys, h, exec_reps, a.callers, a.throughput_secs).await);
        eprintln!("[{name}] 3. pause/resume x{}", a.pause_reps);
        out.pause = Some(bench::pause_resume(&sys, h, a.pause_reps).await);
        if let Err(e) = sys.delete(h).await {
            out.errors.push(format!("delete {main}: {e}"));
        }
    }
    eprintln!("[{name}] 4. {} concurrent creates", a.concurrent);
    out.concurrent = Some(bench::concurrent_creates(&sys, tag, a.concurrent).await);
    eprintln!("[{name}] 5. density: {} idle runtimes", a.density);
    out.density = Some(
        bench::density(
            &sys,
            tag,
            a.density,
            a.density_parallel,
            Duration::from_secs(a.settle_secs),
        )
        .await,
    );
    eprintln!("[{name}] done");
    out
}

#[derive(Debug, Serialize)]
pub struct Results {
    pub stem: String,
    pub env: serde_json::Value,
    pub config: serde_json::Value,
    pub runta: Option<SystemResults>,
    pub podman: Option<SystemResults>,
    pub crun: Option<SystemResults>,
    pub ingress: Option<serde_json::Value>,
    pub rows: Vec<report::Row>,
}

async fn run(a: RunArgs) -> Result<(), String> {
    let systems: Vec<&str> = a.systems.split(',').map(str::trim).collect();
    let vcpus = a
        .vcpus
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()) as f64);
    let t = &a.target;
    let mut res = Results {
        stem: a.stem.clone(),
        env: a
            .env_json
            .as_ref()
            .and_then(|p| std::fs::read(p).ok())
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(serde_json::Value::Null),
        config: serde_json::json!({
            "create_reps": a.create_reps, "exec_reps": a.exec_reps,
            "podman_exec_reps": a.podman_exec_reps, "callers": a.callers,
            "throughput_secs": a.throughput_secs, "pause_reps": a.pause_reps,
            "concurrent": a.concurrent, "density": a.density,
            "density_parallel": a.density_parallel, "settle_secs": a.settle_secs,
            "memory_mib": a.memory_mib, "vcpus": vcpus,
        }),
        runta: None,
        podman: None,
        crun: None,
        ingress: None,
        rows: vec![],
    };
    if systems.contains(&"runta") {
        let r = Runta::new(
            &t.endpoint,
            &t.token,
            t.data_dir.clone(),
            a.daemon_pid,
            a.memory_mib,
            vcpus,
        )?;
        r.healthz().await?;
        let r = Arc::new(r);
        let mut out = measure(r.clone(), &a, a.exec_reps).await;
        let reps = a.pause_reps.clamp(3, 20);
        eprintln!("[runta] 6. checkpoint -> fork ready x{reps}");
        out.fork = Some(r.fork_bench(reps).await);
        res.runta = Some(out);
    }
    if systems.contains(&"podman") {
        let p = Podman::new(&a.rootfs, a.memory_mib, vcpus);
        res.podman = Some(measure(Arc::new(p), &a, a.podman_exec_reps).await);
    }
    if systems.contains(&"crun") {
        let c = Crun::new(
            a.crun_rootfs.clone(),
            t.work.join("crun"),
            a.memory_mib,
            vcpus,
        )
        .await?;
        res.crun = Some(measure(Arc::new(c), &a, a.exec_reps).await);
    }
    res.ingress = a
        .ingress_json
        .as_ref()
        .and_then(|p| std::fs::read(p).ok())
        .and_then(|b| serde_json::from_slice(&b).ok());
    res.rows = report::rows(&res);
    std::fs::create_dir_all(&a.out_dir).map_err(|e| e.to_string())?;
    let json_path = a.out_dir.join(format!("{}.json", a.stem));
    let md_path = a.out_dir.join(format!("{}.md", a.stem));
    std::fs::write(
        &json_path,
        serde_json::to_vec_pretty(&res).map_err(|e| e.to_string())?,
    )
    .map_err(|e| e.to_string())?;
    let md = report::markdown(&res);
    std::fs::write(&md_path, &md).map_err(|e| e.to_string())?;
    println!("{md}");
    eprintln!("wrote {} and {}", md_path.display(), json_path.display());
    Ok(())
}

/// Deletes every runtime of the bench tenant, every podman container labelled
/// `runta-bench=1` and every crun container in the bench's state root.
async fn cleanup(t: Target) -> Result<(), String> {
    let r = Runta::new(&t.endpoint, &t.token, t.data_dir.clone(), None, 64, 1.0)?;
    let mut n = 0;
    match r.list_ids().await {
        Ok(ids) => {
            let sys = Arc::new(r);
            n += ids.len();
            bench::delete_all(&sys, ids.into_iter().map(Handle).collect(), 8).await;
        }
        Err(e) => eprintln!("cleanup: list runtimes: {e}"),
    }
    let state = t.work.join("crun").join("state");
    if state.is_dir() {
        let crun = Crun::new(PathBuf::from("/nonexistent"), t.work.join("crun"), 64, 1.0).await?;
        let ids: Vec<Handle> = std::fs::read_dir(&state)
            .map_err(|e| e.to_string())?
            .filter_map(|e| e.ok())
            .filter(|e| e.path().is_dir())
            .map(|e| Handle(e.file_name().to_string_lossy().into_owned()))
            .collect();
        n += ids.len();
        bench::delete_all(&Arc::new(crun), ids, 8).await;
    }
    let _ = tokio::process::Command::new("podman")
        .args(["rm", "-f", "-t", "0", "--filter", "label=runta-bench=1"])
        .stdout(std::process::Stdio::null())
        .status()
        .await;
    eprintln!("cleanup: {n} Runta/crun runtimes deleted; podman containers removed");
    Ok(())
}

fn main() {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let r = rt.block_on(async {
        match cli.cmd {
            Cmd::Run(a) => run(*a).await,
            Cmd::Cleanup(t) => cleanup(t).await,
            Cmd::Compare(a) => compare::run(*a).await,
        }
    });
    if let Err(e) = r {
        eprintln!("runta-bench: {e}");
        std::process::exit(1);
    }
}
