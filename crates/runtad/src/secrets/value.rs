//! A secret's value as the live binding sets hold it: the ciphertext and the
//! key, opened when a request needs it, the plaintext kept at most the
//! secret's `cache_ttl_secs` after it was decrypted (the official model's
//! "worker-side cache TTL": how long the injecting side may keep the value).
//!
//! - `cache_ttl_secs` 0: every [`SealedValue::reveal`] decrypts; nothing is
//!   kept past the caller's use of what it got.
//! - `cache_ttl_secs` n > 0: the first reveal decrypts and caches the
//!   plaintext until n seconds after that decrypt. A timer on the daemon's
//!   runtime drops it then even if no request comes (so an idle secret is
//!   not held in clear for longer than n seconds), and a reveal after the
//!   deadline never uses it (the timer may run late under load).
//! - The cache lives in the [`SealedValue`], one per stored version of a
//!   secret, shared by every runtime's set that binds it. Replacing or
//!   deleting a secret makes the manager build new sets without this one,
//!   so a change reaches the next request at once whatever the TTL, and the
//!   old version's plaintext goes when the last set holding it is dropped.
//! - Every plaintext is a [`Zeroizing`] string: wiped when the cache and the
//!   last request using it let go.
//!
//! Observability: each decrypt for injection adds one to the daemon-wide
//! `runta_secret_decrypts_total` on `/metrics`, and logs a `debug` line with
//! the tenant, the secret's id and name and the secret's own count (never
//! the value). `/metrics` needs no token, so it carries no per-secret labels
//! (they would show every tenant's secret ids and use to anyone who can reach
//! the port); the per-secret count is for the operator, in the log.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use uuid::Uuid;
use zeroize::Zeroizing;

use super::crypto::SecretKey;
use crate::metrics::Metrics;

/// One stored version of a secret: ciphertext, key, TTL and the cache.
pub struct SealedValue {
    secret_id: Uuid,
    tenant: String,
    name: String,
    key: Arc<SecretKey>,
    ciphertext: Vec<u8>,
    ttl: Duration,
    cache: Mutex<Cache>,
    /// This secret's decrypts since the daemon started (carried over to the
    /// next version by [`SealedValue::replaced`]).
    decrypts: Arc<AtomicU64>,
    metrics: Arc<Metrics>,
}

#[derive(Default)]
struct Cache {
    plain: Option<(Arc<Zeroizing<String>>, Instant)>,
    /// Bumped by every decrypt, so a timer of an earlier one leaves a later
    /// one's plaintext alone.
    epoch: u64,
}

impl std::fmt::Debug for SealedValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedValue")
            .field("secret_id", &self.secret_id)
            .field("name", &self.name)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

/// What a [`SealedValue`] is made of (the store's row, the key, the metrics).
pub struct Sealed<'a> {
    pub secret_id: Uuid,
    pub tenant: &'a str,
    pub name: &'a str,
    pub ciphertext: Vec<u8>,
    /// Seconds; negative values are treated as 0 (the API refuses them).
    pub cache_ttl_secs: i64,
}

impl SealedValue {
    pub fn new(s: Sealed<'_>, key: Arc<SecretKey>, metrics: Arc<Metrics>) -> Arc<Self> {
        Self::with_counter(s, key, metrics, Arc::default())
    }

    /// The next version of the same secret (a replaced value or TTL): a
    /// fresh, empty cache; the secret's decrypt count goes on.
    pub fn replaced(&self, s: Sealed<'_>) -> Arc<Self> {
        Self::with_counter(
            s,
            self.key.clone(),
            self.metrics.clone(),
            self.decrypts.clone(),
        )
    }

    fn with_counter(
        s: Sealed<'_>,
        key: Arc<SecretKey>,
        metrics: Arc<Metrics>,
        decrypts: Arc<AtomicU64>,
    ) -> Arc<Self> {
        Arc::new(SealedValue {
            secret_id: s.secret_id,
            tenant: s.tenant.to_string(),
            name: s.name.to_string(),
            key,
            ciphertext: s.ciphertext,
            ttl: Duration::from_secs(s.cache_ttl_secs.max(0) as u64),
            cache: Mutex::new(Cache::default()),
            decrypts,
            metrics,
        })
    }

    pub fn secret_id(&self) -> Uuid {
        self.secret_id
    }

    /// This secret's decrypts for injection since the daemon started.
    pub fn decrypts(&self) -> u64 {
        self.decrypts.load(Ordering::Relaxed)
    }

    /// Whether a plaintext is cached right now.
    pub fn is_cached(&self) -> bool {
        self.lock().plain.is_some()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The plaintext, from the cache while it is fresh, else decrypted now.
    /// Keep it no longer than the request needs. `None` (logged) if the
    /// ciphertext does not open, which the start-up check and the write path
    /// make impossible short of memory corruption.
    pub fn reveal(self: &Arc<Self>) -> Option<Arc<Zeroizing<String>>> {
        // Decrypting under the lock: concurrent requests for a cold secret
        // decrypt once, not once each.
        let mut cache = self.lock();
        let now = Instant::now();
        match cache.plain.take() {
            Some((plain, until)) if now < until => {
                cache.plain = Some((plain.clone(), until));
                return Some(plain);
            }
            // Expired (the timer is late): dropped here, before the decrypt.
            _ => {}
        }
        let plain = match self.key.open(self.secret_id, &self.ciphertext) {
            Ok(p) => Arc::new(p),
            Err(e) => {
                tracing::error!(tenant = %self.tenant, secret = %self.secret_id, name = %self.name, "{e}; not injected");
                return None;
            }
        };
        let n = self.decrypts.fetch_add(1, Ordering::Relaxed) + 1;
        self.metrics.secret_decrypts.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(
            tenant = %self.tenant,
            secret = %self.secret_id,
            name = %self.name,
            cache_ttl_secs = self.ttl.as_secs(),
            decrypts = n,
            "secret decrypted for injection"
        );
        if !self.ttl.is_zero() {
            cache.epoch += 1;
            cache.plain = Some((plain.clone(), now + self.ttl));
            self.expire_after(cache.epoch);
        }
        Some(plain)
    }

    /// Drops the plaintext of decrypt `epoch` when its TTL has passed. Holds
    /// only a weak reference: a version nobody binds any more goes at once.
    fn expire_after(self: &Arc<Self>, epoch: u64) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            // No runtime (a unit test): the deadline check in `reveal` still
            // keeps an expired plaintext from being used.
            return;
        };
        let weak: Weak<Self> = Arc::downgrade(self);
        let ttl = self.ttl;
        rt.spawn(async move {
            tokio::time::sleep(ttl).await;
            if let Some(v) = weak.upgrade() {
                let mut cache = v.lock();
                if cache.epoch == epoch {
                    cache.plain = None;
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Arc<SecretKey> {
        Arc::new(SecretKey::ephemeral())
    }

    fn sealed(key: &Arc<SecretKey>, value: &str, ttl: i64) -> (Arc<SealedValue>, Arc<Metrics>) {
        let id = Uuid::new_v4();
        let m = Arc::new(Metrics::default());
        let v = SealedValue::new(
            Sealed {
                secret_id: id,
                tenant: "t",
                name: "k",
                ciphertext: key.seal(id, value),
                cache_ttl_secs: ttl,
            },
            key.clone(),
            m.clone(),
        );
        (v, m)
    }

    #[test]
    fn ttl_zero_decrypts_every_time_and_keeps_nothing() {
        let k = key();
        let (v, m) = sealed(&k, "sk-zero", 0);
        for i in 1..=3 {
            assert_eq!(v.reveal().unwrap().as_str(), "sk-zero");
            assert_eq!(v.decrypts(), i);
            assert!(!v.is_cached());
        }
        assert_eq!(m.secret_decrypts.load(Ordering::Relaxed), 3);
        assert!(!format!("{v:?}").contains("sk-zero"));
    }

    #[tokio::test]
    async fn a_ttl_caches_then_drops_the_plaintext_unasked() {
        let k = key();
        let (v, _) = sealed(&k, "sk-ttl", 1);
        for _ in 0..5 {
            assert_eq!(v.reveal().unwrap().as_str(), "sk-ttl");
        }
        assert_eq!(v.decrypts(), 1);
        assert!(v.is_cached());
        // Nobody asks: the timer drops it once the TTL has passed.
        tokio::time::sleep(Duration::from_millis(1300)).await;
        assert!(!v.is_cached(), "the plaintext outlived its TTL");
        assert_eq!(v.reveal().unwrap().as_str(), "sk-ttl");
        assert_eq!(v.decrypts(), 2);
        // A new version starts cold and keeps counting.
        let next = v.replaced(Sealed {
            secret_id: v.secret_id(),
            tenant: "t",
            name: "k",
            ciphertext: k.seal(v.secret_id(), "sk-new"),
            cache_ttl_secs: 30,
        });
        assert!(!next.is_cached());
        assert_eq!(next.reveal().unwrap().as_str(), "sk-new");
        assert_eq!(next.decrypts(), 3);
        // A version dropped with a timer pending: the timer finds nothing.
        drop(next);
    }

    #[test]
    fn an_expired_plaintext_is_never_used_without_a_timer() {
        let k = key();
        let (v, _) = sealed(&k, "sk-late", 1);
        v.reveal().unwrap();
        assert!(v.is_cached());
        std::thread::sleep(Duration::from_millis(1100));
        v.reveal().unwrap();
        assert_eq!(v.decrypts(), 2);
    }

    #[test]
    fn a_ciphertext_that_does_not_open_is_not_revealed() {
        let k = key();
        let id = Uuid::new_v4();
        let mut ct = k.seal(id, "x");
        *ct.last_mut().unwrap() ^= 1;
        let v = SealedValue::new(
            Sealed {
                secret_id: id,
                tenant: "t",
                name: "k",
                ciphertext: ct,
                cache_ttl_secs: 0,
            },
            k.clone(),
            Arc::default(),
        );
        assert!(v.reveal().is_none());
        assert_eq!(v.decrypts(), 0);
    }
}
