//! Secrets injected at egress: the runtime uses a credential it never holds.
//!
//! Job: keep tenant secrets (encrypted at rest, write-only over the API) and
//! their injection *bindings* (a secret, a host pattern, a path pattern and a
//! header or query-parameter template), and hand the egress gateway, per
//! runtime, a live [`BindingSet`]: which hosts to intercept and what to add
//! to a request. The API has two spellings for a binding, 0.1.1's
//! `secret-injection-rules` and 0.1.21's `secret-stubs` /
//! `default-secret-stubs`; both are mapped at the API edge onto this one
//! model (see docs/api.md, "Secrets").
//!
//! # The interface the egress gateway uses
//!
//! ```ignore
//! let watch: BindingWatch = hub.watch(runtime_id);   // cheap to clone, live
//! let set: Arc<BindingSet> = watch.current();        // one snapshot per request
//! if set.is_bound_host(sni) {                        // intercept only then
//!     for inj in set.matching(host, path_and_query) {
//!         match &inj.target {
//!             Target::Header { name } => { /* replace header `name` with inj.value */ }
//!             Target::QueryParam { name } => {
//!                 let pq = set_query_param(path_and_query, name, &inj.value);
//!             }
//!         }
//!         // audit: inj.binding_id, inj.secret_name, host: never inj.value
//!     }
//! }
//! if let Some(hit) = set.misplaced_stub(host, request_bytes) { /* block + audit */ }
//! ```
//!
//! - The hub is `Manager::secrets_hub()` (an `Arc<SecretsHub>`, there from
//!   `Manager::new`, filled at daemon start before any runtime boots).
//!   Runtimes with an open egress policy can have bindings too:
//!   [`SecretsHub::runtimes_with_bindings`] and [`SecretsHub::any_change`]
//!   tell the gateway which runtimes to put under interception.
//! - [`SecretsHub`] holds one `tokio::sync::watch` channel per runtime. The
//!   manager publishes a fresh `Arc<BindingSet>` after every store commit
//!   that changes what a runtime would inject (secret created, replaced or
//!   deleted; binding added or removed; tenant default changed; runtime
//!   deleted), so a removed binding stops being injected by the next request
//!   that takes a snapshot. A runtime with no bindings gets [`BindingSet`]'s
//!   empty value: `is_bound_host` is false for every host, so nothing is
//!   intercepted.
//! - Host patterns (`api.example.com`, `*.example.com`) compare with the host
//!   lower-cased and with one trailing dot and any `:port` removed.
//!   `*.example.com` matches one or more labels before `example.com`, never
//!   `example.com` itself.
//! - Path patterns: `*` (or `/*`, the default) matches every path; one
//!   ending in `/*` matches the prefix itself and everything below it
//!   (`/v1/*` matches `/v1`, `/v1/` and `/v1/chat`, not `/v10`); any other
//!   pattern matches that path exactly. The query string is never part of
//!   the match.
//! - Templates contain `${credential}` at least once; every occurrence is
//!   replaced by the secret's value. The rendered [`Injection::value`] is a
//!   zeroize-on-drop string: keep it no longer than the request needs and
//!   never log it. The set itself holds no plaintext: each binding has its
//!   secret's [`SealedValue`] (ciphertext and key), which
//!   [`BindingSet::matching`] opens for the injections it returns, keeping
//!   the plaintext at most the secret's `cache_ttl_secs` ([`value`]). Values are validated at write time (no control
//!   characters), so a rendered header value is always a valid HTTP header
//!   value and cannot split a header.
//! - Stubs: every secret has a *stub*, a placeholder string
//!   (`runta-stub-` + 26 random base32 characters) that is not secret and may
//!   be given to code in the runtime (for example as `OPENAI_API_KEY`) so
//!   clients that insist on a key send something. [`BindingSet::contains_stub`]
//!   finds any of the tenant's stubs in a buffer;
//!   [`BindingSet::misplaced_stub`] finds one sent to a host with no binding
//!   for its secret: the gateway blocks such a request and audits it.
//!
//! Boundaries: the store keeps ciphertext only ([`crypto`]); this module
//! decrypts when a request is injected ([`value`]). Nothing here speaks HTTP
//! or touches the gateway's sockets.

pub mod crypto;
pub mod validate;
pub mod value;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;
use uuid::Uuid;
use zeroize::Zeroizing;

pub use value::SealedValue;

/// The marker that starts every stub (see the module doc).
pub const STUB_PREFIX: &str = "runta-stub-";
/// The placeholder in every template.
pub const CREDENTIAL: &str = "${credential}";

/// Where an injection goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Set (replace) this request header. The name is a valid header token.
    Header { name: String },
    /// Set (replace) this query parameter; see [`set_query_param`].
    QueryParam { name: String },
}

/// Which spelling created a binding: a runtime's own or a tenant default
/// (`/v1/default-secret-stubs`, which applies to every runtime of the tenant).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Runtime,
    TenantDefault,
}

/// One binding as the gateway sees it: patterns parsed, the secret's value
/// sealed (opened per request, see [`value`]). Built by the manager from the
/// store; never serialised.
pub struct Binding {
    pub id: Uuid,
    pub scope: Scope,
    pub secret_id: Uuid,
    pub secret_name: String,
    pub host: HostPattern,
    pub path: PathPattern,
    pub target: Target,
    /// The template, `${credential}` in it (validated).
    pub template: String,
    pub value: Arc<SealedValue>,
}

impl std::fmt::Debug for Binding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Binding")
            .field("id", &self.id)
            .field("secret_name", &self.secret_name)
            .field("host", &self.host)
            .field("path", &self.path)
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

/// What to add to one request. Dropping it wipes the rendered value.
pub struct Injection {
    pub binding_id: Uuid,
    pub scope: Scope,
    pub secret_id: Uuid,
    pub secret_name: String,
    pub target: Target,
    /// The template with the secret's value in it. Never log it.
    pub value: Zeroizing<String>,
    /// The secret's value alone, for the gateway's check that a response
    /// does not carry it back. Never log it.
    pub secret: Arc<Zeroizing<String>>,
}

impl std::fmt::Debug for Injection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Injection")
            .field("binding_id", &self.binding_id)
            .field("secret_name", &self.secret_name)
            .field("target", &self.target)
            .field("value", &"<redacted>")
            .finish()
    }
}

/// A stub found where it does not belong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StubHit {
    pub secret_id: Uuid,
    pub secret_name: String,
}

/// A host pattern, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// `api.example.com`
    Exact(String),
    /// `*.example.com`, stored as `.example.com`
    Suffix(String),
}

impl HostPattern {
    /// Parses a pattern; [`validate::host_pattern`] says what is refused.
    pub fn parse(s: &str) -> Result<Self, String> {
        validate::host_pattern(s)
    }

    pub fn matches(&self, host: &str) -> bool {
        let host = normalize_host(host);
        match self {
            HostPattern::Exact(h) => *h == host,
            HostPattern::Suffix(s) => host.len() > s.len() && host.ends_with(s.as_str()),
        }
    }
}

impl std::fmt::Display for HostPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostPattern::Exact(h) => f.write_str(h),
            HostPattern::Suffix(s) => write!(f, "*{s}"),
        }
    }
}

/// A path pattern, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathPattern {
    Any,
    /// `/v1/*`, stored as `/v1`
    Prefix(String),
    Exact(String),
}

impl PathPattern {
    /// Parses a pattern; [`validate::path_pattern`] says what is refused.
    pub fn parse(s: &str) -> Result<Self, String> {
        validate::path_pattern(s)
    }

    /// `path` may carry a query string; it is ignored. A path that a server
    /// could resolve to another path than it spells (see [`ambiguous_path`])
    /// matches no pattern but `/*`: `/v1/../admin` must not carry a secret
    /// bound to `/v1/*` to `/admin`.
    pub fn matches(&self, path: &str) -> bool {
        let path = path.split(['?', '#']).next().unwrap_or("");
        let path = if path.is_empty() { "/" } else { path };
        if !matches!(self, PathPattern::Any) && ambiguous_path(path) {
            return false;
        }
        match self {
            PathPattern::Any => true,
            PathPattern::Exact(p) => p == path,
            PathPattern::Prefix(p) => {
                path == p
                    || (path.len() > p.len()
                        && path.starts_with(p.as_str())
                        && path.as_bytes()[p.len()] == b'/')
            }
        }
    }
}

impl std::fmt::Display for PathPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PathPattern::Any => f.write_str("/*"),
            PathPattern::Prefix(p) if p.is_empty() => f.write_str("/*"),
            PathPattern::Prefix(p) => write!(f, "{p}/*"),
            PathPattern::Exact(p) => f.write_str(p),
        }
    }
}

/// Whether servers may resolve `path` (no query) to another path than the
/// one it spells: a `.` or `..` segment (also before a `;` parameter, as
/// some servers read `..;`), a backslash, or a percent-encoded dot, slash or
/// backslash. Such a path never matches a prefix or exact path pattern.
pub fn ambiguous_path(path: &str) -> bool {
    if path.contains('\\') {
        return true;
    }
    let lower = path.to_ascii_lowercase();
    if ["%2e", "%2f", "%5c"].iter().any(|e| lower.contains(e)) {
        return true;
    }
    path.split('/').any(|seg| {
        let seg = seg.split(';').next().unwrap_or("");
        seg == "." || seg == ".."
    })
}

/// Lower-cases, drops one trailing dot and a `:port`.
pub fn normalize_host(host: &str) -> String {
    let host = match host.rsplit_once(':') {
        Some((h, port)) if !h.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    };
    host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase()
}

/// Renders a template (`${credential}` replaced by the value).
pub fn render(template: &str, value: &str) -> Zeroizing<String> {
    let mut out = Zeroizing::new(String::with_capacity(template.len() + value.len()));
    let mut rest = template;
    while let Some(i) = rest.find(CREDENTIAL) {
        out.push_str(&rest[..i]);
        out.push_str(value);
        rest = &rest[i + CREDENTIAL.len()..];
    }
    out.push_str(rest);
    out
}

/// Returns `path_and_query` with query parameter `name` set to `value`
/// (percent-encoded; every earlier occurrence of `name` removed), for a
/// [`Target::QueryParam`] injection.
pub fn set_query_param(path_and_query: &str, name: &str, value: &str) -> Zeroizing<String> {
    let (path, query) = match path_and_query.split_once('?') {
        Some((p, q)) => (p, q),
        None => (path_and_query, ""),
    };
    let mut ser = form_urlencoded::Serializer::new(String::new());
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        if k != name {
            ser.append_pair(&k, &v);
        }
    }
    ser.append_pair(name, value);
    let query = Zeroizing::new(ser.finish());
    let mut out = Zeroizing::new(String::with_capacity(path.len() + 1 + query.len()));
    out.push_str(path);
    out.push('?');
    out.push_str(&query);
    out
}

/// Every binding of one runtime (its own and its tenant's defaults) and the
/// tenant's stubs: an immutable snapshot. See the module doc.
#[derive(Default)]
pub struct BindingSet {
    bindings: Vec<Binding>,
    /// Exact host → indexes into `bindings`.
    exact: HashMap<String, Vec<usize>>,
    /// (suffix, index), for `*.` patterns.
    suffix: Vec<(String, usize)>,
    /// stub string → secret.
    stubs: HashMap<String, StubHit>,
    /// Bumped on every publish of this runtime's set.
    generation: u64,
}

impl std::fmt::Debug for BindingSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BindingSet")
            .field("bindings", &self.bindings)
            .field("stubs", &self.stubs.len())
            .field("generation", &self.generation)
            .finish()
    }
}

impl BindingSet {
    /// `stubs`: (stub string, secret id, secret name) of every secret of the
    /// tenant.
    pub fn new(bindings: Vec<Binding>, stubs: Vec<(String, Uuid, String)>) -> Self {
        let mut exact: HashMap<String, Vec<usize>> = HashMap::new();
        let mut suffix = Vec::new();
        for (i, b) in bindings.iter().enumerate() {
            match &b.host {
                HostPattern::Exact(h) => exact.entry(h.clone()).or_default().push(i),
                HostPattern::Suffix(s) => suffix.push((s.clone(), i)),
            }
        }
        BindingSet {
            bindings,
            exact,
            suffix,
            stubs: stubs
                .into_iter()
                .map(|(stub, secret_id, secret_name)| {
                    (
                        stub,
                        StubHit {
                            secret_id,
                            secret_name,
                        },
                    )
                })
                .collect(),
            generation: 0,
        }
    }

    /// Increases with every set published for the runtime, so the gateway
    /// can tell when to rebuild what it derives (its leaf certificates, the
    /// CA's name constraints).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn is_empty(&self) -> bool {
        self.bindings.is_empty()
    }

    pub fn bindings(&self) -> &[Binding] {
        &self.bindings
    }

    /// The distinct host patterns, for the per-runtime CA's name constraints.
    pub fn host_patterns(&self) -> Vec<HostPattern> {
        let mut out: Vec<HostPattern> = Vec::new();
        for b in &self.bindings {
            if !out.contains(&b.host) {
                out.push(b.host.clone());
            }
        }
        out
    }

    fn for_host(&self, host: &str) -> impl Iterator<Item = &Binding> {
        let host = normalize_host(host);
        let mut idx: Vec<usize> = self.exact.get(&host).cloned().unwrap_or_default();
        for (s, i) in &self.suffix {
            if host.len() > s.len() && host.ends_with(s.as_str()) {
                idx.push(*i);
            }
        }
        idx.sort_unstable();
        idx.into_iter().map(move |i| &self.bindings[i])
    }

    /// True when some binding's host pattern matches `host` (SNI or Host
    /// header): the gateway intercepts this connection. False for any host
    /// when the set is empty.
    pub fn is_bound_host(&self, host: &str) -> bool {
        if self.bindings.is_empty() {
            return false;
        }
        self.for_host(host).next().is_some()
    }

    /// The injections for one request, in binding order (oldest first). When
    /// two bindings set the same header or parameter, the runtime's own
    /// binding wins over a tenant default and, within a scope, the newer one
    /// wins: at most one injection per target is returned. Only the winners'
    /// secrets are opened, each once per call (a secret whose ciphertext does
    /// not open is left out, and logged).
    pub fn matching(&self, host: &str, path: &str) -> Vec<Injection> {
        let mut won: Vec<&Binding> = Vec::new();
        for b in self.for_host(host).filter(|b| b.path.matches(path)) {
            let same = won.iter().position(|w| same_target(&w.target, &b.target));
            if let Some(pos) = same {
                if won[pos].scope == Scope::Runtime && b.scope == Scope::TenantDefault {
                    continue;
                }
                won.remove(pos);
            }
            won.push(b);
        }
        let mut opened: Vec<(Uuid, Arc<Zeroizing<String>>)> = Vec::new();
        let mut out = Vec::with_capacity(won.len());
        for b in won {
            let plain = match opened.iter().find(|(id, _)| *id == b.secret_id) {
                Some((_, p)) => p.clone(),
                None => {
                    let Some(p) = b.value.reveal() else { continue };
                    opened.push((b.secret_id, p.clone()));
                    p
                }
            };
            out.push(Injection {
                binding_id: b.id,
                scope: b.scope,
                secret_id: b.secret_id,
                secret_name: b.secret_name.clone(),
                target: b.target.clone(),
                value: render(&b.template, &plain),
                secret: plain,
            });
        }
        out
    }

    /// The value of every secret bound to `host`, whatever the path, each
    /// once: a response from that host carries none of them back, even to a
    /// request that was not injected (the upstream may have kept the value
    /// from an earlier one). A secret whose ciphertext does not open is left
    /// out (it was never injected either).
    pub fn host_secrets(&self, host: &str) -> Vec<Arc<Zeroizing<String>>> {
        let mut seen: Vec<Uuid> = Vec::new();
        let mut out = Vec::new();
        for b in self.for_host(host) {
            if seen.contains(&b.secret_id) {
                continue;
            }
            seen.push(b.secret_id);
            if let Some(p) = b.value.reveal() {
                out.push(p);
            }
        }
        out
    }

    /// Every stub of the tenant (stub string → secret).
    pub fn stubs(&self) -> impl Iterator<Item = (&str, &StubHit)> {
        self.stubs.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// The first stub of the tenant found in `bytes`.
    pub fn contains_stub(&self, bytes: &[u8]) -> Option<&StubHit> {
        self.stubs_in(bytes).into_iter().next()
    }

    /// A stub in `bytes` whose secret has no binding for `host` (whatever the
    /// path): the request must be blocked. `None` when every stub in it is
    /// bound to this host, or there is none.
    pub fn misplaced_stub(&self, host: &str, bytes: &[u8]) -> Option<&StubHit> {
        let bound: Vec<Uuid> = self.for_host(host).map(|b| b.secret_id).collect();
        self.stubs_in(bytes)
            .into_iter()
            .find(|hit| !bound.contains(&hit.secret_id))
    }

    /// Every stub of the tenant in `bytes`, in order.
    fn stubs_in(&self, bytes: &[u8]) -> Vec<&StubHit> {
        let mut out = Vec::new();
        if self.stubs.is_empty() {
            return out;
        }
        let prefix = STUB_PREFIX.as_bytes();
        let len = prefix.len() + validate::STUB_RANDOM_LEN;
        let mut at = 0usize;
        while at + len <= bytes.len() {
            let Some(rel) = bytes[at..].windows(prefix.len()).position(|w| w == prefix) else {
                break;
            };
            let start = at + rel;
            if start + len > bytes.len() {
                break;
            }
            match std::str::from_utf8(&bytes[start..start + len])
                .ok()
                .and_then(|s| self.stubs.get(s))
            {
                Some(hit) => {
                    out.push(hit);
                    at = start + len;
                }
                None => at = start + 1,
            }
        }
        out
    }
}

fn same_target(a: &Target, b: &Target) -> bool {
    match (a, b) {
        (Target::Header { name: x }, Target::Header { name: y }) => x.eq_ignore_ascii_case(y),
        (Target::QueryParam { name: x }, Target::QueryParam { name: y }) => x == y,
        _ => false,
    }
}

/// A runtime's live binding set. Cloning is cheap (a watch receiver).
#[derive(Clone)]
pub struct BindingWatch(watch::Receiver<Arc<BindingSet>>);

impl BindingWatch {
    /// The set as of now; take one per request (or per connection) and use
    /// it for that request's decisions.
    pub fn current(&self) -> Arc<BindingSet> {
        self.0.borrow().clone()
    }

    /// Resolves when a newer set has been published (or the runtime is gone:
    /// then the current set is empty).
    pub async fn changed(&mut self) {
        if self.0.changed().await.is_err() {
            std::future::pending::<()>().await
        }
    }
}

/// One live binding set per runtime. The manager publishes; the gateway
/// watches. Created empty for a runtime nobody published for yet.
pub struct SecretsHub {
    runtimes: Mutex<HashMap<Uuid, watch::Sender<Arc<BindingSet>>>>,
    /// Bumped after every publish or forget, whatever the runtime.
    any: watch::Sender<u64>,
}

impl Default for SecretsHub {
    fn default() -> Self {
        SecretsHub {
            runtimes: Mutex::new(HashMap::new()),
            any: watch::Sender::new(0),
        }
    }
}

impl SecretsHub {
    /// Resolves on every change of any runtime's set: for the gateway to
    /// re-read [`runtimes_with_bindings`](Self::runtimes_with_bindings) and
    /// start (or stop) intercepting a runtime whose egress policy is open.
    pub fn any_change(&self) -> watch::Receiver<u64> {
        self.any.subscribe()
    }

    /// Runtimes whose current set has at least one binding.
    pub fn runtimes_with_bindings(&self) -> Vec<Uuid> {
        let map = self.runtimes.lock().unwrap_or_else(|e| e.into_inner());
        map.iter()
            .filter(|(_, tx)| !tx.borrow().is_empty())
            .map(|(id, _)| *id)
            .collect()
    }

    pub fn watch(&self, runtime: Uuid) -> BindingWatch {
        let mut map = self.runtimes.lock().unwrap_or_else(|e| e.into_inner());
        let tx = map
            .entry(runtime)
            .or_insert_with(|| watch::channel(Arc::new(BindingSet::default())).0);
        BindingWatch(tx.subscribe())
    }

    /// The runtime's set now, without subscribing.
    pub fn current(&self, runtime: Uuid) -> Arc<BindingSet> {
        self.watch(runtime).current()
    }

    /// Replaces a runtime's set (after the store commit that changed it).
    pub fn publish(&self, runtime: Uuid, mut set: BindingSet) {
        let mut map = self.runtimes.lock().unwrap_or_else(|e| e.into_inner());
        let tx = map
            .entry(runtime)
            .or_insert_with(|| watch::channel(Arc::new(BindingSet::default())).0);
        set.generation = tx.borrow().generation + 1;
        tx.send_replace(Arc::new(set));
        drop(map);
        self.any.send_modify(|n| *n += 1);
    }

    /// A deleted runtime: its watchers see an empty set.
    pub fn forget(&self, runtime: Uuid) {
        let mut map = self.runtimes.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tx) = map.remove(&runtime) {
            let generation = tx.borrow().generation + 1;
            tx.send_replace(Arc::new(BindingSet {
                generation,
                ..Default::default()
            }));
        }
        drop(map);
        self.any.send_modify(|n| *n += 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding(host: &str, path: &str, target: Target, template: &str, value: &str) -> Binding {
        let secret_id = Uuid::new_v4();
        let key = Arc::new(crypto::SecretKey::ephemeral());
        let sealed = SealedValue::new(
            value::Sealed {
                secret_id,
                tenant: "t",
                name: "key",
                ciphertext: key.seal(secret_id, value),
                cache_ttl_secs: 0,
            },
            key,
            Arc::default(),
        );
        Binding {
            id: Uuid::new_v4(),
            scope: Scope::Runtime,
            secret_id,
            secret_name: "key".into(),
            host: HostPattern::parse(host).unwrap(),
            path: PathPattern::parse(path).unwrap(),
            target,
            template: template.into(),
            value: sealed,
        }
    }

    fn header(n: &str) -> Target {
        Target::Header { name: n.into() }
    }

    #[test]
    fn host_patterns() {
        let exact = HostPattern::parse("API.example.com").unwrap();
        assert!(exact.matches("api.example.com"));
        assert!(exact.matches("api.EXAMPLE.com."));
        assert!(exact.matches("api.example.com:443"));
        assert!(!exact.matches("xapi.example.com"));
        assert!(!exact.matches("api.example.com.evil.net"));
        let wild = HostPattern::parse("*.example.com").unwrap();
        assert!(wild.matches("a.example.com"));
        assert!(wild.matches("a.b.example.com"));
        assert!(!wild.matches("example.com"));
        assert!(!wild.matches("badexample.com"));
        assert!(!wild.matches("a.example.com.evil.net"));
        assert_eq!(wild.to_string(), "*.example.com");
    }

    #[test]
    fn path_patterns() {
        let p = PathPattern::parse("/v1/*").unwrap();
        assert!(p.matches("/v1"));
        assert!(p.matches("/v1/"));
        assert!(p.matches("/v1/chat/completions?x=1"));
        assert!(!p.matches("/v10"));
        assert!(!p.matches("/v2/x"));
        assert_eq!(p.to_string(), "/v1/*");
        // Paths a server may resolve outside the prefix match nothing.
        for sneaky in [
            "/v1/../admin",
            "/v1/./x",
            "/v1/..",
            "/v1/%2e%2e/admin",
            "/v1/%2E./admin",
            "/v1/..%2fadmin",
            "/v1/..;/admin",
            "/v1/..\\admin",
            "/v1%5c..%5cadmin",
        ] {
            assert!(!p.matches(sneaky), "{sneaky}");
            assert!(!PathPattern::parse("/v1/../admin").unwrap().matches(sneaky));
            assert!(PathPattern::Any.matches(sneaky));
        }
        assert!(p.matches("/v1/a..b/.well"));
        let e = PathPattern::parse("/v1/chat").unwrap();
        assert!(e.matches("/v1/chat?stream=true"));
        assert!(!e.matches("/v1/chat/x"));
        for any in ["*", "/*", ""] {
            let a = PathPattern::parse(any).unwrap();
            assert!(a.matches("/anything/at/all"));
            assert!(a.matches(""));
        }
    }

    #[test]
    fn matching_renders_and_filters() {
        let set = BindingSet::new(
            vec![
                binding(
                    "api.openai.com",
                    "/v1/*",
                    header("Authorization"),
                    "Bearer ${credential}",
                    "sk-1",
                ),
                binding(
                    "*.maps.example",
                    "/*",
                    Target::QueryParam { name: "key".into() },
                    "${credential}",
                    "m-2",
                ),
            ],
            vec![],
        );
        assert!(set.is_bound_host("api.openai.com"));
        assert!(set.is_bound_host("eu.maps.example"));
        assert!(!set.is_bound_host("maps.example"));
        assert!(!set.is_bound_host("example.org"));
        let m = set.matching("api.openai.com", "/v1/chat/completions");
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].target, header("Authorization"));
        assert_eq!(m[0].value.as_str(), "Bearer sk-1");
        assert!(set.matching("api.openai.com", "/v2/x").is_empty());
        let q = set.matching("eu.maps.example", "/geo?q=1");
        assert_eq!(q[0].value.as_str(), "m-2");
        assert!(!format!("{:?}", q[0]).contains("m-2"));
        assert!(!format!("{set:?}").contains("sk-1"));
        assert!(!BindingSet::default().is_bound_host("api.openai.com"));
    }

    #[test]
    fn one_injection_per_target_runtime_wins() {
        let mut default = binding("h.example", "/*", header("x-key"), "${credential}", "d");
        default.scope = Scope::TenantDefault;
        let own = binding("h.example", "/*", header("X-Key"), "${credential}", "own");
        let newer_default = {
            let mut b = binding("h.example", "/*", header("x-key"), "${credential}", "d2");
            b.scope = Scope::TenantDefault;
            b
        };
        let set = BindingSet::new(vec![default, own, newer_default], vec![]);
        let m = set.matching("h.example", "/");
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].value.as_str(), "own");
    }

    #[test]
    fn only_the_winners_are_opened_once_per_request() {
        let mut default = binding("h.example", "/*", header("x-key"), "${credential}", "d");
        default.scope = Scope::TenantDefault;
        let default_value = default.value.clone();
        let own = binding("h.example", "/*", header("X-Key"), "${credential}", "own");
        let own_value = own.value.clone();
        // The same secret again, as a query parameter.
        let mut param = binding(
            "h.example",
            "/*",
            Target::QueryParam { name: "k".into() },
            "${credential}",
            "unused",
        );
        param.secret_id = own.secret_id;
        param.value = own.value.clone();
        let set = BindingSet::new(vec![default, own, param], vec![]);
        for round in 1..=3 {
            let m = set.matching("h.example", "/");
            assert_eq!(m.len(), 2);
            assert!(m.iter().all(|i| i.value.as_str() == "own"));
            // TTL 0: once per request, for both of its injections.
            assert_eq!(own_value.decrypts(), round);
        }
        // The default lost to the runtime's binding: never opened.
        assert_eq!(default_value.decrypts(), 0);
        // A request no binding matches opens nothing.
        assert!(set.matching("other.example", "/").is_empty());
        assert_eq!(own_value.decrypts(), 3);
    }

    #[test]
    fn templates_render_every_placeholder() {
        assert_eq!(
            render("a ${credential} b ${credential}", "K").as_str(),
            "a K b K"
        );
        assert_eq!(render("${credential}", "").as_str(), "");
    }

    #[test]
    fn query_param_is_set_once_and_encoded() {
        assert_eq!(
            set_query_param("/geo?key=runta-stub-x&q=a b", "key", "v&=1").as_str(),
            "/geo?q=a+b&key=v%26%3D1"
        );
        assert_eq!(set_query_param("/geo", "key", "v").as_str(), "/geo?key=v");
    }

    #[test]
    fn stubs_are_found_and_misplaced_ones_flagged() {
        let b = binding(
            "api.openai.com",
            "/v1/*",
            header("Authorization"),
            "Bearer ${credential}",
            "sk",
        );
        let bound_secret = b.secret_id;
        let other = Uuid::new_v4();
        let s1 = format!("{STUB_PREFIX}{}", "a".repeat(validate::STUB_RANDOM_LEN));
        let s2 = format!("{STUB_PREFIX}{}", "b".repeat(validate::STUB_RANDOM_LEN));
        let set = BindingSet::new(
            vec![b],
            vec![
                (s1.clone(), bound_secret, "key".into()),
                (s2.clone(), other, "other".into()),
            ],
        );
        let req = format!("GET / HTTP/1.1\r\nAuthorization: Bearer {s1}\r\n\r\n");
        assert_eq!(
            set.contains_stub(req.as_bytes()).unwrap().secret_id,
            bound_secret
        );
        assert!(set
            .misplaced_stub("api.openai.com", req.as_bytes())
            .is_none());
        assert_eq!(
            set.misplaced_stub("evil.example", req.as_bytes())
                .unwrap()
                .secret_name,
            "key"
        );
        let both = format!("x={s1}&y={s2}");
        assert_eq!(
            set.misplaced_stub("api.openai.com", both.as_bytes())
                .unwrap()
                .secret_id,
            other
        );
        assert!(set.contains_stub(b"runta-stub-short").is_none());
        assert!(set.contains_stub(STUB_PREFIX.as_bytes()).is_none());
    }

    #[tokio::test]
    async fn hub_publishes_live() {
        let hub = SecretsHub::default();
        let rt = Uuid::new_v4();
        let mut w = hub.watch(rt);
        assert!(!w.current().is_bound_host("h.example"));
        hub.publish(
            rt,
            BindingSet::new(
                vec![binding(
                    "h.example",
                    "/*",
                    header("x"),
                    "${credential}",
                    "v",
                )],
                vec![],
            ),
        );
        w.changed().await;
        assert!(w.current().is_bound_host("h.example"));
        assert_eq!(w.current().generation(), 1);
        hub.forget(rt);
        w.changed().await;
        assert!(!w.current().is_bound_host("h.example"));
    }
}
