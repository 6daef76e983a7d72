//! Latency samples and their summary (nearest-rank percentiles).

use std::time::Duration;

use serde::Serialize;

/// Summary of a set of latency samples, in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub n: usize,
    pub errors: usize,
    pub min_ms: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub mean_ms: f64,
    pub max_ms: f64,
}

/// Collects durations; errors are counted, never silently dropped.
#[derive(Debug, Default, Clone)]
pub struct Samples {
    ms: Vec<f64>,
    pub errors: usize,
    pub first_error: Option<String>,
}

impl Samples {
    pub fn push(&mut self, d: Duration) {
        self.ms.push(d.as_secs_f64() * 1000.0);
    }

    pub fn error(&mut self, e: impl std::fmt::Display) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(e.to_string());
        }
    }

    pub fn record<T, E: std::fmt::Display>(&mut self, d: Duration, r: &Result<T, E>) {
        match r {
            Ok(_) => self.push(d),
            Err(e) => self.error(e),
        }
    }

    pub fn merge(&mut self, other: Samples) {
        self.ms.extend(other.ms);
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }

    pub fn summary(&self) -> Option<Summary> {
        if self.ms.is_empty() {
            return None;
        }
        let mut v = self.ms.clone();
        v.sort_by(|a, b| a.total_cmp(b));
        let pct = |p: f64| {
            let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
            v[rank.clamp(1, v.len()) - 1]
        };
        Some(Summary {
            n: v.len(),
            errors: self.errors,
            min_ms: round3(v[0]),
            p50_ms: round3(pct(50.0)),
            p95_ms: round3(pct(95.0)),
            p99_ms: round3(pct(99.0)),
            mean_ms: round3(v.iter().sum::<f64>() / v.len() as f64),
            max_ms: round3(v[v.len() - 1]),
        })
    }
}

pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let mut s = Samples::default();
        for i in 1..=100 {
            s.push(Duration::from_millis(i));
        }
        let m = s.summary().unwrap();
        assert_eq!(m.p50_ms, 50.0);
        assert_eq!(m.p95_ms, 95.0);
        assert_eq!(m.p99_ms, 99.0);
        assert_eq!(m.max_ms, 100.0);
    }
}
