//! The results table: one row per figure, Runta next to its peers, the ratio
//! against podman measured in the same run, and the targets.

use serde::{Deserialize, Serialize};

use crate::stats::{round3, Summary};
use crate::{Results, SystemResults};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Row {
    pub section: String,
    pub metric: String,
    pub unit: String,
    pub runta: Option<f64>,
    pub podman: Option<f64>,
    pub crun: Option<f64>,
    pub lower_is_better: bool,
    /// The target for Runta, if any (≤ for lower-is-better, else ≥).
    pub target: Option<f64>,
    /// How many times better Runta is than podman (>1 = better).
    pub vs_podman: Option<f64>,
    pub meets_target: Option<bool>,
    /// Runta ≥ 5× better than podman (only on rows with a target).
    pub five_x_podman: Option<bool>,
    #[serde(default)]
    pub note: String,
}

struct Spec {
    section: &'static str,
    metric: String,
    unit: &'static str,
    lower: bool,
    target: Option<f64>,
    note: &'static str,
}

fn row(s: Spec, get: impl Fn(&str, &SystemResults) -> Option<f64>, r: &Results) -> Row {
    let runta = r.runta.as_ref().and_then(|x| get("runta", x));
    let podman = r.podman.as_ref().and_then(|x| get("podman", x));
    let crun = r.crun.as_ref().and_then(|x| get("crun", x));
    finish(Row {
        section: s.section.into(),
        metric: s.metric,
        unit: s.unit.into(),
        runta,
        podman,
        crun,
        lower_is_better: s.lower,
        target: s.target,
        vs_podman: None,
        meets_target: None,
        five_x_podman: None,
        note: s.note.into(),
    })
}

/// Fills the ratio and the verdicts.
pub fn finish(mut r: Row) -> Row {
    r.vs_podman = match (r.runta, r.podman) {
        (Some(a), Some(b)) if r.lower_is_better && a > 0.0 => Some(round3(b / a)),
        (Some(a), Some(b)) if !r.lower_is_better && b > 0.0 => Some(round3(a / b)),
        _ => None,
    };
    if let (Some(t), Some(v)) = (r.target, r.runta) {
        r.meets_target = Some(if r.lower_is_better { v <= t } else { v >= t });
        r.five_x_podman = r.vs_podman.map(|x| x >= 5.0);
    }
    r
}

fn p50(s: &Option<Summary>) -> Option<f64> {
    s.as_ref().map(|s| s.p50_ms)
}
fn p95(s: &Option<Summary>) -> Option<f64> {
    s.as_ref().map(|s| s.p95_ms)
}
fn p99(s: &Option<Summary>) -> Option<f64> {
    s.as_ref().map(|s| s.p99_ms)
}

pub fn rows(r: &Results) -> Vec<Row> {
    // podman's "ready" is `podman run -d` plus the first `podman exec`.
    let ready = |name: &str, s: &SystemResults, pick: fn(&Option<Summary>) -> Option<f64>| {
        let c = s.create.as_ref()?;
        if name == "podman" {
            pick(&c.create_first_exec)
        } else {
            pick(&c.create)
        }
    };
    let cfg = |k: &str| r.config.get(k).cloned().unwrap_or_default();
    let (callers, secs, conc, dens) = (
        cfg("callers"),
        cfg("throughput_secs"),
        cfg("concurrent"),
        cfg("density"),
    );
    let mut v = vec![
        row(
            Spec {
                section: "1",
                metric: "create → ready, p50".into(),
                unit: "ms",
                lower: true,
                target: Some(30.0),
                note: "Runta: POST /v1/runtimes?wait=true; podman: run -d + first exec; crun: create+start",
            },
            |n, s| ready(n, s, p50),
            r,
        ),
        row(
            Spec {
                section: "1",
                metric: "create → ready, p95".into(),
                unit: "ms",
                lower: true,
                target: None,
                note: "",
            },
            |n, s| ready(n, s, p95),
            r,
        ),
        row(
            Spec {
                section: "1",
                metric: "create + first exec `true`, p50".into(),
                unit: "ms",
                lower: true,
                target: None,
                note: "same end point for all three",
            },
            |_, s| p50(&s.create.as_ref()?.create_first_exec),
            r,
        ),
        row(
            Spec {
                section: "1",
                metric: "delete, p50".into(),
                unit: "ms",
                lower: true,
                target: None,
                note: "",
            },
            |_, s| p50(&s.create.as_ref()?.delete),
            r,
        ),
        row(
            Spec {
                section: "2",
                metric: "exec `true` round trip, p50".into(),
                unit: "ms",
                lower: true,
                target: Some(2.0),
                note: "sequential, one keep-alive connection",
            },
            |_, s| p50(&s.exec.as_ref()?.latency),
            r,
        ),
        row(
            Spec {
                section: "2",
                metric: "exec `true` round trip, p99".into(),
                unit: "ms",
                lower: true,
                target: None,
                note: "",
            },
            |_, s| p99(&s.exec.as_ref()?.latency),
            r,
        ),
        row(
            Spec {
                section: "2",
                metric: format!("exec throughput, {callers} callers × {secs} s"),
                unit: "exec/s",
                lower: false,
                target: Some(2000.0),
                note: "one runtime, 2 cores shared by client, daemon and runtime",
            },
            |_, s| Some(s.exec.as_ref()?.throughput_per_sec),
            r,
        ),
        row(
            Spec {
                section: "2",
                metric: "exec latency under 16 callers, p99".into(),
                unit: "ms",
                lower: true,
                target: None,
                note: "",
            },
            |_, s| p99(&s.exec.as_ref()?.throughput_latency),
            r,
        ),
        row(
            Spec {
                section: "3",
                metric: "pause, p50".into(),
                unit: "ms",
                lower: true,
                target: Some(10.0),
                note: "",
            },
            |_, s| p50(&s.pause.as_ref()?.pause),
            r,
        ),
        row(
            Spec {
                section: "3",
                metric: "pause, p95".into(),
                unit: "ms",
                lower: true,
                target: None,
                note: "",
            },
            |_, s| p95(&s.pause.as_ref()?.pause),
            r,
        ),
        row(
            Spec {
                section: "3",
                metric: "resume, p50".into(),
                unit: "ms",
                lower: true,
                target: Some(10.0),
                note: "",
            },
            |_, s| p50(&s.pause.as_ref()?.resume),
            r,
        ),
        row(
            Spec {
                section: "3",
                metric: "resume, p95".into(),
                unit: "ms",
                lower: true,
                target: None,
                note: "",
            },
            |_, s| p95(&s.pause.as_ref()?.resume),
            r,
        ),
        row(
            Spec {
                section: "4",
                metric: format!("{conc} concurrent creates, wall time"),
                unit: "s",
                lower: true,
                target: Some(5.0),
                note: "until the last one is ready",
            },
            |_, s| Some(round3(s.concurrent.as_ref()?.wall_ms / 1000.0)),
            r,
        ),
        row(
            Spec {
                section: "4",
                metric: format!("{conc} concurrent creates, errors"),
                unit: "count",
                lower: true,
                target: Some(0.0),
                note: "",
            },
            |_, s| Some(s.concurrent.as_ref()?.errors as f64),
            r,
        ),
        row(
            Spec {
                section: "5",
                metric: format!("host memory per idle runtime ({dens} running)"),
                unit: "MiB",
                lower: true,
                target: Some(3.0),
                note: "cgroup charge (anon + page cache + kernel) + per-runtime helpers (conmon) + daemon RSS growth, ÷ N",
            },
            |_, s| Some(s.density.as_ref()?.per_runtime_mib),
            r,
        ),
        row(
            Spec {
                section: "5",
                metric: "… anonymous memory only, per runtime".into(),
                unit: "MiB",
                lower: true,
                target: None,
                note: "cgroup anon + helpers + daemon growth, ÷ N",
            },
            |_, s| Some(s.density.as_ref()?.per_runtime_anon_mib),
            r,
        ),
        row(
            Spec {
                section: "5",
                metric: "… host-wide MemAvailable drop, per runtime".into(),
                unit: "MiB",
                lower: true,
                target: None,
                note: "includes namespaces, veths, slab; noisy on a shared host",
            },
            |_, s| Some(s.density.as_ref()?.per_runtime_host_delta_mib),
            r,
        ),
        row(
            Spec {
                section: "5",
                metric: format!("daemon RSS with {dens} running"),
                unit: "MiB",
                lower: true,
                target: None,
                note: "",
            },
            |_, s| s.density.as_ref()?.daemon_rss_mib_loaded,
            r,
        ),
        row(
            Spec {
                section: "7",
                metric: "checkpoint → fork ready, p50".into(),
                unit: "ms",
                lower: true,
                target: None,
                note: "Runta only: checkpoint a runtime with 8 MiB + /etc of its own files, then create a fork from it",
            },
            |_, s| p50(&s.fork.as_ref()?.total),
            r,
        ),
        row(
            Spec {
                section: "7",
                metric: "checkpoint → fork ready, p95".into(),
                unit: "ms",
                lower: true,
                target: None,
                note: "",
            },
            |_, s| p95(&s.fork.as_ref()?.total),
            r,
        ),
        row(
            Spec {
                section: "7",
                metric: "… checkpoint alone, p50".into(),
                unit: "ms",
                lower: true,
                target: None,
                note: "the source is frozen while its layer is copied",
            },
            |_, s| p50(&s.fork.as_ref()?.checkpoint),
            r,
        ),
        row(
            Spec {
                section: "7",
                metric: "… fork create alone, p50".into(),
                unit: "ms",
                lower: true,
                target: None,
                note: "no copy: the checkpoint is stacked read-only under the fork",
            },
            |_, s| p50(&s.fork.as_ref()?.fork_ready),
            r,
        ),
    ];
    match r
        .ingress
        .as_ref()
        .and_then(|j| serde_json::from_value::<Vec<Row>>(j.clone()).ok())
    {
        Some(rows) => v.extend(rows.into_iter().map(finish)),
        None => v.push(Row {
            section: "6".into(),
            metric: "ingress".into(),
            unit: "".into(),
            runta: None,
            podman: None,
            crun: None,
            lower_is_better: true,
            target: None,
            vs_podman: None,
            meets_target: None,
            five_x_podman: None,
            note: "skipped: bench/ingress.sh wrote no rows (it needs wrk and a built runtad)"
                .into(),
        }),
    }
    v
}

fn num(x: Option<f64>) -> String {
    match x {
        None => "–".into(),
        Some(v) if v >= 100.0 => format!("{v:.0}"),
        Some(v) if v >= 10.0 => format!("{v:.1}"),
        Some(v) => format!("{v:.2}"),
    }
}

fn verdict(b: Option<bool>) -> &'static str {
    match b {
        Some(true) => "✅",
        Some(false) => "❌",
        None => "",
    }
}

fn target(r: &Row) -> String {
    match r.target {
        Some(t) if r.lower_is_better => format!("≤ {}", num(Some(t))),
        Some(t) => format!("≥ {}", num(Some(t))),
        None => String::new(),
    }
}

pub fn markdown(r: &Results) -> String {
    let mut s = String::new();
    s.push_str(&format!("# Runta benchmarks — {}\n\n", r.stem));
    s.push_str(
        "Produced by `bash bench/run.sh` (see bench/README.md): Runta through its REST API \
         from a compiled keep-alive client, podman 4 (`--runtime runc --rootfs <base>:O \
         --network none`) and raw crun (bundle on an overlay of the same base rootfs), in the \
         same run on the same machine. Each runtime: 1 vCPU, 64 MiB. `× podman` is how many \
         times better Runta is than podman (>1 = better). Targets are the issue's, for Runta.\n\n",
    );
    s.push_str("| # | Metric | Unit | Runta | podman | crun | × podman | Target | Met | ≥5× podman | Notes |\n");
    s.push_str("|---|---|---|---:|---:|---:|---:|---|:-:|:-:|---|\n");
    for row in &r.rows {
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            row.section,
            row.metric,
            row.unit,
            num(row.runta),
            num(row.podman),
            num(row.crun),
            row.vs_podman
                .map(|x| format!("{x:.1}×"))
                .unwrap_or_default(),
            target(row),
            verdict(row.meets_target),
            verdict(row.five_x_podman),
            row.note,
        ));
    }
    s.push_str("\nRepetitions: ");
    s.push_str(&r.config.to_string());
    s.push('\n');
    let mut errs = Vec::new();
    for (name, sys) in [
        ("runta", &r.runta),
        ("podman", &r.podman),
        ("crun", &r.crun),
    ] {
        let Some(sys) = sys else { continue };
        for e in &sys.errors {
            errs.push(format!("{name}: {e}"));
        }
        let firsts = [
            sys.create.as_ref().and_then(|c| c.first_error.clone()),
            sys.exec.as_ref().and_then(|c| c.first_error.clone()),
            sys.pause.as_ref().and_then(|c| c.first_error.clone()),
            sys.concurrent.as_ref().and_then(|c| c.first_error.clone()),
            sys.density.as_ref().and_then(|c| c.first_error.clone()),
        ];
        for e in firsts.into_iter().flatten() {
            errs.push(format!("{name}: {e}"));
        }
    }
    if !errs.is_empty() {
        s.push_str("\nErrors seen (first of each kind):\n\n");
        for e in errs {
            s.push_str(&format!("- {}\n", e.replace('\n', " ")));
        }
    }
    if !r.env.is_null() {
        s.push_str(&format!("\nHost: `{}`\n", r.env));
    }
    s
}
