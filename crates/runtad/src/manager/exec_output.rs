//! Bounded buffered-exec output: the bytes a command prints become the JSON
//! string of the reply as they arrive, under two limits (docs/security.md, item 7).
//!
//! * Per stream, the *encoded* form is at most `max_output_bytes` plus five
//!   times that or 16 MiB, whichever is less ([`encoded_cap`]). Up to a cap of
//!   3 MiB any output of `max_output_bytes` fits whatever it holds (the longest
//!   escape, NUL as `\u0000`, is six bytes); above that, output that escaping
//!   inflates (control bytes, invalid UTF-8 as U+FFFD) is cut at a character
//!   boundary and flagged `*_truncated`, so 64 MiB of NULs is at most 80 MiB
//!   of JSON, not 400.
//! * All buffered execs of the daemon share one [`ExecGate`]: at most so many
//!   at once (per tenant and in total) and at most so many encoded bytes held.
//!   A stream that cannot get more bytes from the shared budget stops growing
//!   and is flagged truncated, so a flood costs the daemon the budget and no more.
//! * One tenant may hold at most half of the budget the other tenants leave
//!   free (so at most half of all of it): the room it leaves is always at
//!   least what it holds, and its own execs are cut, or refused with 429,
//!   instead of everyone else's being refused with 503.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::{Error, Result};

/// Defaults of the gate (flags `--exec-max-concurrent`, `--exec-max-per-tenant`,
/// `--exec-buffer-mib`; docs/operations.md).
pub const DEFAULT_EXEC_MAX_CONCURRENT: usize = 128;
pub const DEFAULT_EXEC_MAX_PER_TENANT: usize = 32;
pub const DEFAULT_EXEC_BUFFER_MIB: u64 = 96;

/// Smallest step a stream takes from the shared budget, so small outputs cost
/// one atomic operation.
const GROW_STEP: u64 = 64 * 1024;

/// Admission and memory budget of buffered execs.
pub struct ExecGate {
    max_total: AtomicUsize,
    max_per_tenant: AtomicUsize,
    budget_bytes: AtomicU64,
    used_bytes: AtomicU64,
    running: Mutex<(usize, HashMap<String, usize>)>,
    /// Encoded bytes held per tenant (the sum is `used_bytes`).
    held: Mutex<HashMap<Arc<str>, u64>>,
}

impl Default for ExecGate {
    fn default() -> Self {
        ExecGate {
            max_total: AtomicUsize::new(DEFAULT_EXEC_MAX_CONCURRENT),
            max_per_tenant: AtomicUsize::new(DEFAULT_EXEC_MAX_PER_TENANT),
            budget_bytes: AtomicU64::new(DEFAULT_EXEC_BUFFER_MIB * 1024 * 1024),
            used_bytes: AtomicU64::new(0),
            running: Mutex::new((0, HashMap::new())),
            held: Mutex::new(HashMap::new()),
        }
    }
}

impl ExecGate {
    pub fn configure(&self, max_total: usize, max_per_tenant: usize, budget_mib: u64) {
        self.max_total.store(max_total.max(1), Ordering::Relaxed);
        self.max_per_tenant
            .store(max_per_tenant.max(1), Ordering::Relaxed);
        self.budget_bytes
            .store(budget_mib.max(1) * 1024 * 1024, Ordering::Relaxed);
    }

    /// Bytes of encoded output held right now (for `/metrics` and tests).
    pub fn used_bytes(&self) -> u64 {
        self.used_bytes.load(Ordering::Relaxed)
    }

    /// Admits one buffered exec of `tenant`: a tenant over its share is told to
    /// slow down (429), a daemon at its total is unavailable for a moment (503).
    pub fn admit(self: &Arc<Self>, tenant: &str) -> Result<ExecPermit> {
        let mut g = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let per = self.max_per_tenant.load(Ordering::Relaxed);
        let total = self.max_total.load(Ordering::Relaxed);
        let mine = g.1.get(tenant).copied().unwrap_or(0);
        if mine >= per {
            return Err(Error::RateLimited(format!(
                "tenant {tenant:?} already runs {mine} buffered execs (the limit is {per}); retry when one ends"
            )));
        }
        if g.0 >= total {
            return Err(Error::Unavailable(format!(
                "the daemon already runs {} buffered execs (its limit); retry shortly",
                g.0
            )));
        }
        {
            let held = self.held.lock().unwrap_or_else(|e| e.into_inner());
            let budget = self.budget_bytes.load(Ordering::Relaxed);
            let used = self.used_bytes.load(Ordering::Relaxed);
            let own = held.get(tenant).copied().unwrap_or(0);
            // The tenant's own share is spent: its problem, not the daemon's.
            if own > 0 && own.saturating_add(GROW_STEP) > Self::share(budget, used - own) {
                return Err(Error::RateLimited(format!(
                    "tenant {tenant:?} already holds {own} bytes of buffered exec output (its share of the daemon's buffer); retry when an exec ends"
                )));
            }
            if used >= budget {
                return Err(Error::Unavailable(
                    "the daemon's exec output buffer is full; retry shortly".into(),
                ));
            }
        }
        g.0 += 1;
        *g.1.entry(tenant.to_string()).or_insert(0) += 1;
        Ok(ExecPermit {
            gate: self.clone(),
            tenant: tenant.to_string(),
        })
    }

    /// What one tenant may hold when the others hold `others`: half of the
    /// rest, so it always leaves at least as much free as it has.
    fn share(budget: u64, others: u64) -> u64 {
        budget.saturating_sub(others) / 2
    }

    /// Takes `n` bytes for `tenant`, or with `partial` as many as its share
    /// and the budget allow; returns how many were taken.
    fn take(&self, tenant: &Arc<str>, n: u64, partial: bool) -> u64 {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let budget = self.budget_bytes.load(Ordering::Relaxed);
        let used = self.used_bytes.load(Ordering::Relaxed);
        let own = held.get(tenant).copied().unwrap_or(0);
        let room = budget
            .saturating_sub(used)
            .min(Self::share(budget, used - own).saturating_sub(own));
        let got = if n <= room {
            n
        } else if partial {
            room
        } else {
            0
        };
        if got > 0 {
            held.insert(tenant.clone(), own + got);
            self.used_bytes.fetch_add(got, Ordering::AcqRel);
        }
        got
    }

    fn give(&self, tenant: &Arc<str>, n: u64) {
        if n == 0 {
            return;
        }
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(b) = held.get_mut(tenant) {
            *b = b.saturating_sub(n);
            if *b == 0 {
                held.remove(tenant);
            }
        }
        self.used_bytes.fetch_sub(n, Ordering::AcqRel);
    }
}

/// One admitted exec; its slot is freed on drop.
pub struct ExecPermit {
    gate: Arc<ExecGate>,
    tenant: String,
}

impl ExecPermit {
    /// An output stream whose bytes count against this exec's tenant.
    pub fn stream(&self, max_output_bytes: u64) -> JsonStream {
        JsonStream::for_tenant(
            &self.gate,
            Arc::from(self.tenant.as_str()),
            max_output_bytes,
        )
    }
}

impl Drop for ExecPermit {
    fn drop(&mut self) {
        let mut g = self.gate.running.lock().unwrap_or_else(|e| e.into_inner());
        g.0 = g.0.saturating_sub(1);
        if let Some(n) = g.1.get_mut(&self.tenant) {
            *n -= 1;
            if *n == 0 {
                g.1.remove(&self.tenant);
            }
        }
    }
}

/// Bytes taken from the gate's budget; given back on drop (when the reply
/// has been handed to the connection).
pub struct Held {
    gate: Arc<ExecGate>,
    tenant: Arc<str>,
    bytes: u64,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.gate.give(&self.tenant, self.bytes);
    }
}

/// The most JSON bytes one stream of `max_output_bytes` may encode to.
pub fn encoded_cap(max_output_bytes: u64) -> u64 {
    const SLACK_MAX: u64 = 16 * 1024 * 1024;
    max_output_bytes.saturating_add(max_output_bytes.saturating_mul(5).min(SLACK_MAX))
}

/// One output stream being turned into the inside of a JSON string.
pub struct JsonStream {
    out: Vec<u8>,
    /// The start of a UTF-8 sequence split across frames.
    pending: Vec<u8>,
    cap: usize,
    held: Held,
    pub truncated: bool,
}

impl JsonStream {
    /// A stream not tied to a tenant (all such streams share one share).
    pub fn new(gate: &Arc<ExecGate>, max_output_bytes: u64) -> Self {
        Self::for_tenant(gate, Arc::from(""), max_output_bytes)
    }

    pub fn for_tenant(gate: &Arc<ExecGate>, tenant: Arc<str>, max_output_bytes: u64) -> Self {
        JsonStream {
            out: Vec::new(),
            pending: Vec::new(),
            cap: encoded_cap(max_output_bytes).min(usize::MAX as u64) as usize,
            held: Held {
                gate: gate.clone(),
                tenant,
                bytes: 0,
            },
            truncated: false,
        }
    }

    pub fn push(&mut self, data: &[u8]) {
        if self.truncated || data.is_empty() {
            return;
        }
        let joined;
        let mut input: &[u8] = if self.pending.is_empty() {
            data
        } else {
            let mut j = std::mem::take(&mut self.pending);
            j.extend_from_slice(data);
            joined = j;
            &joined
        };
        while !input.is_empty() && !self.truncated {
            match std::str::from_utf8(input) {
                Ok(s) => {
                    self.text(s);
                    input = &[];
                }
                Err(e) => {
                    let (ok, rest) = input.split_at(e.valid_up_to());
                    // SAFETY-free: `valid_up_to` bytes are valid UTF-8.
                    self.text(std::str::from_utf8(ok).unwrap_or_default());
                    match e.error_len() {
                        Some(n) => {
                            self.text("\u{FFFD}");
                            input = &rest[n..];
                        }
                        None => {
                            self.pending = rest.to_vec();
                            input = &[];
                        }
                    }
                }
            }
        }
    }

    /// Ends the stream: a sequence cut off at the end becomes U+FFFD, as
    /// `String::from_utf8_lossy` does.
    pub fn finish(mut self, raw_truncated: bool) -> (Vec<u8>, bool, Held) {
        if !self.pending.is_empty() && !self.truncated {
            self.pending.clear();
            self.text("\u{FFFD}");
        }
        let truncated = self.truncated || raw_truncated;
        (self.out, truncated, self.held)
    }

    fn text(&mut self, s: &str) {
        let b = s.as_bytes();
        let mut run = 0;
        for (i, &c) in b.iter().enumerate() {
            let esc: Option<&[u8]> = match c {
                b'"' => Some(b"\\\""),
                b'\\' => Some(b"\\\\"),
                b'\n' => Some(b"\\n"),
                b'\r' => Some(b"\\r"),
                b'\t' => Some(b"\\t"),
                0x08 => Some(b"\\b"),
                0x0c => Some(b"\\f"),
                0..=0x1f => None,
                _ => continue,
            };
            if !self.append(&b[run..i], s, run) {
                return;
            }
            let ok = match esc {
                Some(e) => self.append_ascii(e),
                None => {
                    const HEX: &[u8; 16] = b"0123456789abcdef";
                    self.append_ascii(&[
                        b'\\',
                        b'u',
                        b'0',
                        b'0',
                        HEX[(c >> 4) as usize],
                        HEX[(c & 0xf) as usize],
                    ])
                }
            };
            if !ok {
                return;
            }
            run = i + 1;
        }
        self.append(&b[run..], s, run);
    }

    /// Appends a run of `s` (starting at byte `at`) that needs no escaping,
    /// cutting it at a character boundary if the room ends inside it.
    fn append(&mut self, run: &[u8], s: &str, at: usize) -> bool {
        if run.is_empty() {
            return true;
        }
        let room = self.room(run.len());
        if room >= run.len() {
            self.out.extend_from_slice(run);
            return true;
        }
        let mut k = room;
        while k > 0 && !s.is_char_boundary(at + k) {
            k -= 1;
        }
        self.out.extend_from_slice(&run[..k]);
        self.truncated = true;
        false
    }

    fn append_ascii(&mut self, e: &[u8]) -> bool {
        if self.room(e.len()) < e.len() {
            self.truncated = true;
            return false;
        }
        self.out.extend_from_slice(e);
        true
    }

    /// How many of `want` more bytes may be written: bounded by the stream's
    /// cap and by what the shared budget grants.
    fn room(&mut self, want: usize) -> usize {
        let len = self.out.len();
        let want = want.min(self.cap.saturating_sub(len));
        let need = (len + want) as u64;
        if need > self.held.bytes {
            let gate = self.held.gate.clone();
            let tenant = self.held.tenant.clone();
            // Grow geometrically (fewer reallocations), exactly if that is refused.
            let step = (self.held.bytes.max(GROW_STEP))
                .min(self.cap as u64 - self.held.bytes)
                .max(need - self.held.bytes);
            if gate.take(&tenant, step, false) == step {
                self.held.bytes += step;
            } else {
                // Whatever room is left, so a stream is cut at its share,
                // not short of it.
                self.held.bytes += gate.take(&tenant, need - self.held.bytes, true);
                if self.held.bytes < need {
                    let granted = self.held.bytes.saturating_sub(len as u64) as usize;
                    self.out
                        .reserve_exact((self.held.bytes as usize).saturating_sub(len));
                    return granted.min(want);
                }
            }
            self.out
                .reserve_exact((self.held.bytes as usize).saturating_sub(len));
        }
        want
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(gate: &Arc<ExecGate>, max: u64, chunks: &[&[u8]]) -> (String, bool) {
        let mut s = JsonStream::new(gate, max);
        for c in chunks {
            s.push(c);
        }
        let (out, t, _held) = s.finish(false);
        (String::from_utf8(out).unwrap(), t)
    }

    fn serde_inner(s: &str) -> String {
        let j = serde_json::to_string(s).unwrap();
        j[1..j.len() - 1].to_string()
    }

    #[test]
    fn matches_serde_json_and_lossy_utf8() {
        let gate = Arc::new(ExecGate::default());
        let raw: Vec<u8> = (0u8..=255).chain("héllo ✓ \"q\" \\ \n".bytes()).collect();
        let (enc, t) = encode(&gate, 1 << 20, &[&raw]);
        assert!(!t);
        assert_eq!(enc, serde_inner(&String::from_utf8_lossy(&raw)));
        // A character split across frames is joined, not replaced.
        let ck = "✓".as_bytes();
        let (enc, _) = encode(&gate, 100, &[&ck[..1], &ck[1..2], &ck[2..]]);
        assert_eq!(enc, "✓");
        // A sequence cut off at the end is one U+FFFD.
        let (enc, _) = encode(&gate, 100, &[b"a", &ck[..2]]);
        assert_eq!(enc, "a\u{FFFD}");
        assert_eq!(gate.used_bytes(), 0, "budget given back");
    }

    #[test]
    fn encoded_size_is_bounded_and_cut_on_a_boundary() {
        let gate = Arc::new(ExecGate::default());
        // A small cap holds its worth of anything: 1,000 NULs are 6,000 bytes.
        let (enc, t) = encode(&gate, 1000, &[&[0u8; 1000]]);
        assert!(!t);
        assert_eq!(enc.len(), 6000);
        assert_eq!(encoded_cap(1000), 6000);
        assert_eq!(encoded_cap(64 << 20), (64 << 20) + (16 << 20));
        let nul = vec![0u8; 10_000];
        let (enc, t) = encode(&gate, 1000, &[&nul]);
        assert!(t);
        assert!(enc.len() <= 6000 && enc.len() % 6 == 0, "{}", enc.len());
        let text = "✓".repeat(3000);
        let (enc, t) = encode(&gate, 1000, &[text.as_bytes()]);
        assert!(t && enc.len() <= 6000 && enc.chars().all(|c| c == '✓'));
        // Plain text within the raw cap is never cut, even all newlines.
        let (enc, t) = encode(&gate, 1000, &[&[b'\n'; 1000]]);
        assert!(!t);
        assert_eq!(enc.len(), 2000);
    }

    #[test]
    fn the_shared_budget_bounds_every_stream_together() {
        let gate = Arc::new(ExecGate::default());
        gate.configure(10, 10, 1);
        let mut a = JsonStream::new(&gate, 1 << 20);
        let mut b = JsonStream::new(&gate, 1 << 20);
        a.push(&vec![b'x'; 400 * 1024]);
        b.push(&vec![b'y'; 400 * 1024]);
        assert!(gate.used_bytes() <= 512 * 1024);
        let (oa, ta, ha) = a.finish(false);
        let (ob, tb, hb) = b.finish(false);
        assert!(!ta && tb, "the second stream is cut by the share");
        assert_eq!(oa.len(), 400 * 1024);
        assert!(ob.len() < 200 * 1024);
        drop((ha, hb));
        assert_eq!(gate.used_bytes(), 0);
    }

    #[test]
    fn one_tenant_holds_at_most_half_of_what_others_leave() {
        let gate = Arc::new(ExecGate::default());
        gate.configure(10, 10, 1);
        let mib = 1024 * 1024;
        let hog = gate.admit("hog").unwrap();
        let mut h1 = hog.stream(4 * mib);
        h1.push(&vec![b'x'; 2 * mib as usize]);
        assert!(gate.used_bytes() <= mib / 2, "{}", gate.used_bytes());
        // The hog's next exec is its own 429; other tenants still get in.
        assert!(matches!(gate.admit("hog"), Err(Error::RateLimited(_))));
        let other = gate.admit("other").unwrap();
        let mut o = other.stream(4 * mib);
        o.push(&vec![b'y'; 100 * 1024]);
        let (oo, ot, oh) = o.finish(false);
        assert!(!ot && oo.len() == 100 * 1024);
        // A second hog tenant gets half of what is left, never all of it.
        let hog2 = gate.admit("hog2").unwrap();
        let mut h2 = hog2.stream(4 * mib);
        h2.push(&vec![b'z'; 2 * mib as usize]);
        assert!(gate.used_bytes() < mib, "{}", gate.used_bytes());
        assert!(gate.admit("third").is_ok());
        let (_, t1, held1) = h1.finish(false);
        let (_, t2, held2) = h2.finish(false);
        assert!(t1 && t2);
        drop((held1, held2, oh));
        assert_eq!(gate.used_bytes(), 0);
        drop(hog);
        assert!(
            gate.admit("hog").is_ok(),
            "its share is back when its output is freed"
        );
    }

    #[test]
    fn admission_per_tenant_and_total() {
        let gate = Arc::new(ExecGate::default());
        gate.configure(3, 2, 1);
        let a1 = gate.admit("a").unwrap();
        let _a2 = gate.admit("a").unwrap();
        assert!(matches!(gate.admit("a"), Err(Error::RateLimited(_))));
        let _b1 = gate.admit("b").unwrap();
        assert!(matches!(gate.admit("c"), Err(Error::Unavailable(_))));
        drop(a1);
        assert!(gate.admit("a").is_ok());
    }
}
