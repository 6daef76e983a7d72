//! Counters for `GET /metrics` (Prometheus text format), kept in atomics.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

#[derive(Default)]
pub struct Metrics {
    pub http_requests: AtomicU64,
    pub http_errors: AtomicU64,
    pub execs: AtomicU64,
    pub exec_micros: AtomicU64,
    pub creates: AtomicU64,
    pub create_micros: AtomicU64,
    pub oom_kills: AtomicU64,
    pub ingress_requests: AtomicU64,
    /// Secret values decrypted for injection at egress (crate::secrets::value).
    pub secret_decrypts: AtomicU64,
}

impl Metrics {
    pub fn observe_exec(&self, d: Duration) {
        self.execs.fetch_add(1, Ordering::Relaxed);
        self.exec_micros
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    pub fn observe_create(&self, d: Duration) {
        self.creates.fetch_add(1, Ordering::Relaxed);
        self.create_micros
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    /// Renders everything; `statuses` are the live runtime counts per status.
    pub fn render(&self, statuses: &[(String, u64)], backend: &str) -> String {
        let mut s = String::new();
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let _ = writeln!(
            s,
            "# HELP runta_build_info Build and backend of this daemon."
        );
        let _ = writeln!(s, "# TYPE runta_build_info gauge");
        let _ = writeln!(
            s,
            "runta_build_info{{version=\"{}\",backend=\"{backend}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        let _ = writeln!(s, "# HELP runta_runtimes Runtimes by status.");
        let _ = writeln!(s, "# TYPE runta_runtimes gauge");
        for (status, n) in statuses {
            let _ = writeln!(s, "runta_runtimes{{status=\"{status}\"}} {n}");
        }
        let counters: [(&str, &str, u64); 6] = [
            (
                "runta_http_requests_total",
                "API requests served.",
                g(&self.http_requests),
            ),
            (
                "runta_http_errors_total",
                "API requests answered with an error.",
                g(&self.http_errors),
            ),
            (
                "runta_oom_kills_total",
                "Processes killed for exceeding a runtime's memory limit.",
                g(&self.oom_kills),
            ),
            (
                "runta_ingress_requests_total",
                "Requests proxied by the ingress.",
                g(&self.ingress_requests),
            ),
            ("runta_creates_total", "Runtimes created.", g(&self.creates)),
            (
                "runta_secret_decrypts_total",
                "Secret values decrypted for injection at egress (each secret's cache_ttl_secs bounds how long one is kept).",
                g(&self.secret_decrypts),
            ),
        ];
        for (name, help, v) in counters {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
        }
        let summaries = [
            (
                "runta_exec_duration_seconds",
                "Buffered exec round trips.",
                &self.execs,
                &self.exec_micros,
            ),
            (
                "runta_create_duration_seconds",
                "Create to running.",
                &self.creates,
                &self.create_micros,
            ),
        ];
        for (name, help, count, micros) in summaries {
            let _ = writeln!(
                s,
                "# HELP {name} {help}\n# TYPE {name} summary\n{name}_sum {}\n{name}_count {}",
                g(micros) as f64 / 1e6,
                g(count)
            );
        }
        s
    }
}
