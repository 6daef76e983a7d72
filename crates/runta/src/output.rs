//! Output helpers: tables, ages, sizes, JSON, and the progress spinner.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::Value;

pub fn print_json(v: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
    );
}

/// With `--json`, what a command over several names did: one object for one
/// name, an array for more (the lines without `--json` are printed as it goes).
pub fn print_json_results(mut out: Vec<Value>, json: bool) {
    if json {
        print_json(&if out.len() == 1 {
            out.remove(0)
        } else {
            Value::Array(out)
        });
    }
}

/// Left-aligned columns separated by three spaces, like `docker ps`.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let n = cells.len();
        let mut l = String::new();
        for (i, c) in cells.into_iter().enumerate() {
            l.push_str(c);
            if i + 1 < n {
                let pad = widths[i] - c.chars().count() + 3;
                l.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(header.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
    out
}

/// `42s`, `5m`, `3h`, `2d`.
pub fn age(since: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let s = (now - since).num_seconds().max(0);
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m", s / 60),
        3600..=86_399 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

/// `2`, `0.5`, `1.25`.
pub fn cpus(v: f64) -> String {
    let s = format!("{v:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// `1 CPU`, `2 CPUs`, `0.5 CPUs`.
pub fn cpus_label(v: f64) -> String {
    format!("{} CPU{}", cpus(v), if v == 1.0 { "" } else { "s" })
}

pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// A spinner on stderr while a slow call runs — only when stderr is a terminal.
pub struct Spinner {
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Spinner {
    pub fn start(label: String) -> Self {
        if !std::io::stderr().is_terminal() {
            return Self { task: None };
        }
        let task = tokio::spawn(async move {
            const FRAMES: [&str; 10] = ["⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"];
            let t0 = Instant::now();
            let mut i = 0usize;
            loop {
                {
                    let mut e = std::io::stderr().lock();
                    let _ = write!(
                        e,
                        "\r\x1b[2K{} {label} {:.1}s",
                        FRAMES[i % FRAMES.len()],
                        t0.elapsed().as_secs_f64()
                    );
                    let _ = e.flush();
                }
                i += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        Self { task: Some(task) }
    }

    pub fn stop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
            let mut e = std::io::stderr().lock();
            let _ = write!(e, "\r\x1b[2K");
            let _ = e.flush();
        }
    }
}

impl Drop for Spinner {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(cpus(2.0), "2");
        assert_eq!(cpus(0.5), "0.5");
        assert_eq!(cpus_label(1.0), "1 CPU");
        assert_eq!(cpus_label(2.0), "2 CPUs");
        assert_eq!(cpus_label(0.5), "0.5 CPUs");
        assert_eq!(bytes(2048), "2.0 KiB");
        let now = Utc::now();
        assert_eq!(age(now - chrono::Duration::seconds(90), now), "1m");
        let t = table(&["A", "BB"], &[vec!["xxxx".into(), "y".into()]]);
        assert_eq!(t, "A      BB\nxxxx   y\n");
    }
}
