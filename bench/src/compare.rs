//! `runta-bench compare`: two Runta daemons — this tree and a baseline commit —
//! measured in one run, interleaved, with the same client.
//!
//! "Performance must not move" is a claim about two builds, not about two
//! days: the host's speed drifts between sessions (podman, which did not
//! change, moved 12–17 % between two of our runs). So both daemons run side by
//! side on the same machine, and their create → ready and `exec true` samples
//! are taken in alternating blocks (A B, then B A, …) so a burst of load on
//! the host lands on both. Requests use only the fields every v1 daemon has
//! accepted (`name`, `resources.requests`; `command`, `args`) and read only
//! `data.id` / `data.status` / `data.exit_code`, so an older daemon answers
//! the same calls.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use reqwest::{Client, Method};
use serde::Serialize;
use serde_json::{json, Value};

use crate::stats::{round3, Samples, Summary};

#[derive(clap::Args)]
pub struct CompareArgs {
    /// This tree's daemon.
    #[arg(long)]
    pub endpoint: String,
    #[arg(long)]
    pub token: String,
    /// The baseline daemon.
    #[arg(long)]
    pub baseline_endpoint: String,
    #[arg(long)]
    pub baseline_token: String,
    /// What the baseline is (commit and date), for the report.
    #[arg(long, default_value = "baseline")]
    pub baseline_label: String,
    /// What this tree is, for the report.
    #[arg(long, default_value = "this tree")]
    pub label: String,
    /// Alternating rounds; each round measures both daemons once.
    #[arg(long, default_value_t = 10)]
    pub rounds: usize,
    #[arg(long, default_value_t = 5)]
    pub creates_per_round: usize,
    #[arg(long, default_value_t = 100)]
    pub execs_per_round: usize,
    #[arg(long, default_value_t = 64)]
    pub memory_mib: u64,
    #[arg(long, default_value_t = 1.0)]
    pub vcpus: f64,
    #[arg(long, default_value = "bench/results")]
    pub out_dir: PathBuf,
    #[arg(long)]
    pub stem: String,
    /// Facts about the host (JSON object) for the report.
    #[arg(long)]
    pub env_json: Option<PathBuf>,
}

struct Daemon {
    http: Client,
    base: String,
    auth: String,
}

impl Daemon {
    fn new(endpoint: &str, token: &str) -> Result<Self, String> {
        let http = Client::builder()
            .pool_max_idle_per_host(16)
            .tcp_nodelay(true)
            .timeout(Duration::from_secs(120))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Daemon {
            http,
            base: endpoint.trim_end_matches('/').to_string(),
            auth: format!("Bearer {token}"),
        })
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Result<Value, String> {
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.base))
            .header("authorization", &self.auth);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| format!("{method} {path}: {e}"))?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| e.to_string())?;
        if !status.is_success() {
            return Err(format!(
                "{method} {path}: {status}: {}",
                String::from_utf8_lossy(&bytes)
            ));
        }
        if bytes.is_empty() {
            return Ok(Value::Null);
        }
        let v: Value = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
        Ok(v.get("data").cloned().unwrap_or(Value::Null))
    }

    async fn create(&self, name: &str, a: &CompareArgs) -> Result<String, String> {
        let body = json!({"name": name, "resources": {"requests": {
            "vcpus": a.vcpus, "memory_mib": a.memory_mib}}});
        let d = self
            .call(Method::POST, "/v1/runtimes?wait=true", Some(body))
            .await?;
        if d["status"] != "running" {
            return Err(format!("create {name}: status {}", d["status"]));
        }
        d["id"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| format!("create {name}: no id"))
    }

    async fn exec_true(&self, id: &str) -> Result<(), String> {
        let d = self
            .call(
                Method::POST,
                &format!("/v1/runtimes/{id}/exec"),
                Some(json!({"command": "true", "args": []})),
            )
            .await?;
        match d["exit_code"].as_i64() {
            Some(0) => Ok(()),
            other => Err(format!("exec true: exit code {other:?}")),
        }
    }

    async fn delete(&self, id: &str) -> Result<(), String> {
        self.call(Method::DELETE, &format!("/v1/runtimes/{id}"), None)
            .await
            .map(|_| ())
    }
}

#[derive(Default)]
struct Side {
    create: Samples,
    exec: Samples,
}

#[derive(Serialize)]
struct SideReport {
    label: String,
    create: Option<Summary>,
    exec: Option<Summary>,
}

#[derive(Serialize)]
struct Report {
    stem: String,
    env: Value,
    config: Value,
    current: SideReport,
    baseline: SideReport,
}

async fn measure(d: &Daemon, tag: &str, round: usize, main: &str, a: &CompareArgs, s: &mut Side) {
    for i in 0..a.creates_per_round {
        let name = format!("cmp-{tag}-{round}-{i}");
        let t0 = Instant::now();
        match d.create(&name, a).await {
            Ok(id) => {
                s.create.push(t0.elapsed());
                if let Err(e) = d.delete(&id).await {
                    eprintln!("  delete {name}: {e}");
                }
            }
            Err(e) => s.create.error(e),
        }
    }
    for _ in 0..a.execs_per_round {
        let t0 = Instant::now();
        let r = d.exec_true(main).await;
        s.exec.record(t0.elapsed(), &r);
    }
}

fn pct(cur: Option<&Summary>, base: Option<&Summary>, f: Stat) -> String {
    match (cur, base) {
        (Some(c), Some(b)) if f(b) > 0.0 => format!("{:+.1} %", (f(c) / f(b) - 1.0) * 100.0),
        _ => "–".into(),
    }
}

type Pick = fn(&SideReport) -> Option<&Summary>;
type Stat = fn(&Summary) -> f64;

fn markdown(r: &Report) -> String {
    let mut s = format!(
        "# Runta against a baseline build — {}\n\n\
         Produced by `bash bench/baseline.sh` (see bench/README.md): two daemons on the same \
         machine at the same time, this tree and the baseline, measured with the same client \
         in alternating blocks. Each runtime: {} vCPU, {} MiB. Δ is this tree against the \
         baseline (negative = faster).\n\n\
         | Metric | Unit | {} | {} | Δ |\n|---|---|---:|---:|---:|\n",
        r.stem, r.config["vcpus"], r.config["memory_mib"], r.current.label, r.baseline.label
    );
    let create: Pick = |x| x.create.as_ref();
    let exec: Pick = |x| x.exec.as_ref();
    let rows: [(&str, Pick, Stat); 6] = [
        ("create → ready, p50", create, |m| m.p50_ms),
        ("create → ready, p95", create, |m| m.p95_ms),
        ("create → ready, mean", create, |m| m.mean_ms),
        ("exec `true` round trip, p50", exec, |m| m.p50_ms),
        ("exec `true` round trip, p99", exec, |m| m.p99_ms),
        ("exec `true` round trip, mean", exec, |m| m.mean_ms),
    ];
    for (name, get, f) in rows {
        let (c, b) = (get(&r.current), get(&r.baseline));
        let show = |m: Option<&Summary>| m.map_or("–".into(), |m| format!("{:.3}", f(m)));
        s.push_str(&format!(
            "| {name} | ms | {} | {} | {} |\n",
            show(c),
            show(b),
            pct(c, b, f)
        ));
    }
    let errs = |x: &SideReport| {
        x.create.as_ref().map_or(0, |m| m.errors) + x.exec.as_ref().map_or(0, |m| m.errors)
    };
    s.push_str(&format!(
        "\nSamples per side: {} creates, {} execs; errors: {} (this tree), {} (baseline).\n\n\
         Config: `{}`\n\nHost: `{}`\n",
        r.current.create.as_ref().map_or(0, |m| m.n),
        r.current.exec.as_ref().map_or(0, |m| m.n),
        errs(&r.current),
        errs(&r.baseline),
        r.config,
        r.env
    ));
    s
}

pub async fn run(a: CompareArgs) -> Result<(), String> {
    let cur = Daemon::new(&a.endpoint, &a.token)?;
    let base = Daemon::new(&a.baseline_endpoint, &a.baseline_token)?;
    let main_cur = cur.create("cmp-c-main", &a).await?;
    let main_base = base.create("cmp-b-main", &a).await?;
    // Warm both: connections, page cache, the agents' first spawn.
    for _ in 0..20 {
        cur.exec_true(&main_cur).await?;
        base.exec_true(&main_base).await?;
    }
    for d in [&cur, &base] {
        let id = d.create("cmp-warm", &a).await?;
        d.delete(&id).await?;
    }
    let (mut sc, mut sb) = (Side::default(), Side::default());
    for round in 0..a.rounds {
        eprintln!("[compare] round {}/{}", round + 1, a.rounds);
        if round % 2 == 0 {
            measure(&cur, "c", round, &main_cur, &a, &mut sc).await;
            measure(&base, "b", round, &main_base, &a, &mut sb).await;
        } else {
            measure(&base, "b", round, &main_base, &a, &mut sb).await;
            measure(&cur, "c", round, &main_cur, &a, &mut sc).await;
        }
    }
    let _ = cur.delete(&main_cur).await;
    let _ = base.delete(&main_base).await;
    let report = Report {
        stem: a.stem.clone(),
        env: a
            .env_json
            .as_ref()
            .and_then(|p| std::fs::read(p).ok())
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(Value::Null),
        config: json!({
            "rounds": a.rounds, "creates_per_round": a.creates_per_round,
            "execs_per_round": a.execs_per_round, "memory_mib": a.memory_mib,
            "vcpus": round3(a.vcpus),
        }),
        current: SideReport {
            label: a.label.clone(),
            create: sc.create.summary(),
            exec: sc.exec.summary(),
        },
        baseline: SideReport {
            label: a.baseline_label.clone(),
            create: sb.create.summary(),
            exec: sb.exec.summary(),
        },
    };
    std::fs::create_dir_all(&a.out_dir).map_err(|e| e.to_string())?;
    let md = markdown(&report);
    let md_path = a.out_dir.join(format!("{}.md", a.stem));
    let json_path = a.out_dir.join(format!("{}.json", a.stem));
    std::fs::write(&md_path, &md).map_err(|e| e.to_string())?;
    std::fs::write(
        &json_path,
        serde_json::to_vec_pretty(&report).map_err(|e| e.to_string())?,
    )
    .map_err(|e| e.to_string())?;
    println!("{md}");
    eprintln!("wrote {} and {}", md_path.display(), json_path.display());
    Ok(())
}
