//! Pulls: where an image's blobs come from (a registry or an OCI layout
//! directory, both behind [`BlobSource`]), and the progress of each pull as
//! `GET /v1/images/pulls/{id}` shows it. Pulls live in memory: a pull cut
//! short by a daemon restart is simply asked for again, and it resumes from
//! the blobs and layers the store kept.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::digest::Digest;
use super::oci::{self, ManifestOrIndex};
use super::reference::Reference;
use super::registry::{login_key, Session};
use super::{Image, ImageError, Images, Limits, Result};

/// Where a pull stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullState {
    Running,
    Succeeded,
    Failed,
}

impl PullState {
    pub fn as_str(self) -> &'static str {
        match self {
            PullState::Running => "running",
            PullState::Succeeded => "succeeded",
            PullState::Failed => "failed",
        }
    }
}

/// Live counters of one pull (or import).
pub struct PullProgress {
    pub id: String,
    /// Whose pull it is: its credentials, and the tenant whose name it sets.
    pub tenant: String,
    pub reference: String,
    pub started_at: DateTime<Utc>,
    layers_total: AtomicU64,
    layers_done: AtomicU64,
    bytes_total: AtomicU64,
    bytes_done: AtomicU64,
    outcome: Mutex<Outcome>,
    /// Why it failed, when a create that waited for it should say so rather
    /// than "unavailable": 1 credentials (403), 2 the store is full (503
    /// `resource_exhausted`), 3 the tenant's quota (429).
    failure: std::sync::atomic::AtomicU8,
    done: tokio::sync::watch::Sender<bool>,
}

/// How a pull ended (state, image digest, error, when).
#[derive(Debug, Clone)]
struct Outcome(
    PullState,
    Option<String>,
    Option<String>,
    Option<DateTime<Utc>>,
);

/// A copy of a pull's counters at one moment.
#[derive(Debug, Clone)]
pub struct PullSnapshot {
    pub id: String,
    pub reference: String,
    pub state: PullState,
    pub layers_total: u64,
    pub layers_done: u64,
    pub bytes_total: u64,
    pub bytes_done: u64,
    /// The image's manifest digest once it succeeded.
    pub digest: Option<String>,
    pub error: Option<String>,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl PullProgress {
    pub fn new(tenant: &str, reference: &str) -> Arc<Self> {
        Arc::new(PullProgress {
            id: uuid::Uuid::new_v4().to_string(),
            tenant: tenant.to_string(),
            reference: reference.to_string(),
            started_at: crate::store::now(),
            layers_total: AtomicU64::new(0),
            layers_done: AtomicU64::new(0),
            bytes_total: AtomicU64::new(0),
            bytes_done: AtomicU64::new(0),
            outcome: Mutex::new(Outcome(PullState::Running, None, None, None)),
            failure: Default::default(),
            done: tokio::sync::watch::channel(false).0,
        })
    }

    pub(super) fn start(&self, layers: usize, bytes: u64) {
        self.layers_total.store(layers as u64, Ordering::Relaxed);
        self.bytes_total.store(bytes, Ordering::Relaxed);
    }

    pub(super) fn bytes(&self, n: u64) {
        self.bytes_done.fetch_add(n, Ordering::Relaxed);
    }

    pub(super) fn unbytes(&self, n: u64) {
        let _ = self
            .bytes_done
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                Some(v.saturating_sub(n))
            });
    }

    pub(super) fn layer_done(&self) {
        self.layers_done.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn layer_cached(&self, size: u64) {
        self.bytes(size);
        self.layer_done();
    }

    fn finish(&self, r: &Result<Image>) {
        let kind = match r {
            Err(ImageError::Unauthorized(_)) => 1,
            Err(ImageError::StoreFull(_)) => 2,
            Err(ImageError::TenantQuota(_)) => 3,
            _ => 0,
        };
        self.failure.store(kind, Ordering::Relaxed);
        let mut o = self.outcome.lock().unwrap_or_else(|e| e.into_inner());
        *o = match r {
            Ok(img) => Outcome(
                PullState::Succeeded,
                Some(img.digest.to_string()),
                None,
                Some(crate::store::now()),
            ),
            Err(e) => Outcome(
                PullState::Failed,
                None,
                Some(e.to_string()),
                Some(crate::store::now()),
            ),
        };
        drop(o);
        let _ = self.done.send(true);
    }

    pub fn snapshot(&self) -> PullSnapshot {
        let o = self
            .outcome
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        PullSnapshot {
            id: self.id.clone(),
            reference: self.reference.clone(),
            state: o.0,
            layers_total: self.layers_total.load(Ordering::Relaxed),
            layers_done: self.layers_done.load(Ordering::Relaxed),
            bytes_total: self.bytes_total.load(Ordering::Relaxed),
            bytes_done: self
                .bytes_done
                .load(Ordering::Relaxed)
                .min(self.bytes_total.load(Ordering::Relaxed).max(1)),
            digest: o.1,
            error: o.2,
            started_at: self.started_at,
            finished_at: o.3,
        }
    }

    /// Waits until the pull has finished (or `timeout` passed: `false`).
    pub async fn wait(&self, timeout: Duration) -> bool {
        let mut rx = self.done.subscribe();
        let done = matches!(
            tokio::time::timeout(timeout, rx.wait_for(|d| *d)).await,
            Ok(Ok(_))
        );
        done
    }
}

/// Pulls of this daemon's life: running ones by tenant and reference (a
/// second pull of the same reference by the same tenant joins the first; one
/// of another tenant never does, since it pulls with other credentials), all
/// by id.
#[derive(Default)]
pub struct Pulls {
    by_id: Mutex<HashMap<String, Arc<PullProgress>>>,
    running: Mutex<HashMap<String, Arc<PullProgress>>>,
}

/// What an image's blobs are read from.
#[async_trait::async_trait]
pub trait BlobSource: Send + Sync {
    /// The image manifest (never an index: resolved already) and its digest.
    async fn manifest(&self) -> Result<(Vec<u8>, Digest)>;
    /// Writes blob `digest` of `size` bytes into `partial` (continuing what is
    /// there if it can); the caller verifies it.
    async fn fetch(
        &self,
        digest: &Digest,
        size: u64,
        partial: &Path,
        progress: Option<&PullProgress>,
    ) -> Result<()>;
}

/// A registry repository.
struct RegistrySource {
    session: Session,
    manifest: Vec<u8>,
    digest: Digest,
}

#[async_trait::async_trait]
impl BlobSource for RegistrySource {
    async fn manifest(&self) -> Result<(Vec<u8>, Digest)> {
        Ok((self.manifest.clone(), self.digest.clone()))
    }

    async fn fetch(
        &self,
        digest: &Digest,
        size: u64,
        partial: &Path,
        progress: Option<&PullProgress>,
    ) -> Result<()> {
        self.session.blob(digest, size, partial, progress).await
    }
}

/// An OCI image layout directory.
pub(super) struct LayoutSource {
    dir: PathBuf,
    manifest: Vec<u8>,
    digest: Digest,
}

fn read_capped(path: &Path, max: u64) -> Result<Vec<u8>> {
    let m = std::fs::metadata(path)
        .map_err(|e| ImageError::NotFound(format!("{}: {e}", path.display())))?;
    if m.len() > max {
        return Err(ImageError::TooLarge(format!(
            "{} is {} bytes (at most {max})",
            path.display(),
            m.len()
        )));
    }
    Ok(std::fs::read(path)?)
}

impl LayoutSource {
    pub(super) fn open(dir: &Path, name: &str, limits: &Limits) -> Result<Self> {
        let max = limits.max_manifest_bytes;
        if !dir.join("oci-layout").is_file() {
            return Err(ImageError::Invalid(format!(
                "{} is not an OCI image layout (no oci-layout file)",
                dir.display()
            )));
        }
        let index: oci::Index = serde_json::from_slice(&read_capped(&dir.join("index.json"), max)?)
            .map_err(|e| ImageError::Invalid(format!("{}/index.json: {e}", dir.display())))?;
        let tag = Reference::parse(name).ok().and_then(|r| r.tag);
        let named: Vec<&oci::Descriptor> = index
            .manifests
            .iter()
            .filter(|d| {
                d.annotations
                    .as_ref()
                    .and_then(|a| a.get("org.opencontainers.image.ref.name"))
                    .is_some_and(|n| n == name || Some(n) == tag.as_ref())
            })
            .collect();
        let desc = match (named.as_slice(), index.manifests.as_slice()) {
            ([one], _) => (*one).clone(),
            (_, [only]) => only.clone(),
            _ => {
                return Err(ImageError::Invalid(format!(
                    "{}: the layout holds {} images and none is annotated {name:?}",
                    dir.display(),
                    index.manifests.len()
                )))
            }
        };
        let blob = |d: &Digest| dir.join("blobs/sha256").join(d.hex());
        let mut digest = Digest::parse(&desc.digest)?;
        for _ in 0..4 {
            let bytes = read_capped(&blob(&digest), max)?;
            let got = Digest::of(&bytes);
            if got != digest {
                return Err(ImageError::DigestMismatch {
                    what: "a manifest in the layout".into(),
                    expected: digest.to_string(),
                    got: got.to_string(),
                });
            }
            match oci::parse_manifest(&bytes, None).map_err(ImageError::Invalid)? {
                ManifestOrIndex::Manifest(_) => {
                    return Ok(LayoutSource {
                        dir: dir.to_path_buf(),
                        manifest: bytes,
                        digest,
                    })
                }
                ManifestOrIndex::Index(ix) => {
                    digest = Digest::parse(&platform_entry(&ix, name)?.digest)?;
                }
            }
        }
        Err(ImageError::Invalid("image indexes nested too deep".into()))
    }
}

fn platform_entry<'a>(ix: &'a oci::Index, name: &str) -> Result<&'a oci::Descriptor> {
    oci::pick_platform(ix).ok_or_else(|| {
        let have: Vec<String> = ix
            .manifests
            .iter()
            .filter_map(|d| d.platform.as_ref())
            .map(|p| format!("{}/{}", p.os, p.architecture))
            .collect();
        ImageError::NoPlatform(format!(
            "image {name} has no linux/amd64 variant (it has: {})",
            if have.is_empty() {
                "none named".to_string()
            } else {
                have.join(", ")
            }
        ))
    })
}

#[async_trait::async_trait]
impl BlobSource for LayoutSource {
    async fn manifest(&self) -> Result<(Vec<u8>, Digest)> {
        Ok((self.manifest.clone(), self.digest.clone()))
    }

    async fn fetch(
        &self,
        digest: &Digest,
        size: u64,
        partial: &Path,
        progress: Option<&PullProgress>,
    ) -> Result<()> {
        let src = self.dir.join("blobs/sha256").join(digest.hex());
        let len = std::fs::metadata(&src)
            .map_err(|e| ImageError::NotFound(format!("blob {digest} in the layout: {e}")))?
            .len();
        if len != size {
            return Err(ImageError::DigestMismatch {
                what: format!("blob {} in the layout", digest.short()),
                expected: format!("{size} bytes"),
                got: format!("{len} bytes"),
            });
        }
        let (s, d) = (src.clone(), partial.to_path_buf());
        tokio::task::spawn_blocking(move || std::fs::copy(s, d))
            .await
            .map_err(|e| ImageError::Io(std::io::Error::other(e.to_string())))??;
        if let Some(p) = progress {
            p.bytes(size);
        }
        Ok(())
    }
}

impl Images {
    /// Starts pulling `reference` in the background for `tenant` (or joins
    /// that tenant's running pull of the same reference) and returns its
    /// progress. Refused past the running-pull caps (`--image-max-pulls`,
    /// `--image-max-pulls-per-tenant`): a slow registry holds a slot only
    /// until the stall timeout.
    pub fn start_pull(
        self: &Arc<Self>,
        tenant: &str,
        reference: &str,
    ) -> Result<Arc<PullProgress>> {
        let r = Reference::parse(reference)?;
        let key = format!("{tenant}\u{0}{r}");
        let mut running = self.pulls.running.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = running.get(&key) {
            return Ok(p.clone());
        }
        let mine = running.values().filter(|p| p.tenant == tenant).count();
        if mine >= self.limits.max_pulls_per_tenant {
            return Err(ImageError::TooManyPulls {
                tenant: true,
                message: format!(
                    "tenant {tenant} has {mine} pulls running (at most {}, --image-max-pulls-per-tenant); wait for one to end",
                    self.limits.max_pulls_per_tenant
                ),
            });
        }
        if running.len() >= self.limits.max_pulls {
            return Err(ImageError::TooManyPulls {
                tenant: false,
                message: format!(
                    "the daemon has {} pulls running (at most {}, --image-max-pulls); try again later",
                    running.len(),
                    self.limits.max_pulls
                ),
            });
        }
        let progress = PullProgress::new(tenant, &r.to_string());
        running.insert(key.clone(), progress.clone());
        drop(running);
        {
            let mut by_id = self.pulls.by_id.lock().unwrap_or_else(|e| e.into_inner());
            if by_id.len() > 1000 {
                by_id.retain(|_, p| p.snapshot().state == PullState::Running);
            }
            by_id.insert(progress.id.clone(), progress.clone());
        }
        let me = self.clone();
        let p = progress.clone();
        tokio::spawn(async move {
            let r = me.pull_now(&r, &p).await;
            if let Err(e) = &r {
                tracing::warn!(reference = %r_name(&key), "pull failed: {e}");
            }
            p.finish(&r);
            me.pulls
                .running
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&key);
        });
        Ok(progress)
    }

    /// A pull by id (of this daemon's life), if `tenant` (`None`: the admin)
    /// started it.
    pub fn pull_status(&self, tenant: Option<&str>, id: &str) -> Option<PullSnapshot> {
        self.pulls
            .by_id
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .filter(|p| tenant.is_none_or(|t| t == p.tenant))
            .map(|p| p.snapshot())
    }

    /// [`Images::ensure_as`] for the admin.
    pub async fn ensure(
        self: &Arc<Self>,
        reference: &str,
        timeout: Duration,
    ) -> Result<(Image, Option<PullSnapshot>)> {
        self.ensure_as(crate::auth::ADMIN_TENANT, reference, timeout)
            .await
    }

    /// The image `reference` names for `tenant`, pulled first (with the
    /// tenant's credentials, as the tenant) if the tenant sees none such,
    /// waiting at most `timeout` for the pull. `Ok((image, Some(pull)))`
    /// when it had to be pulled. A local name (`localhost/…`) is never
    /// pulled: another tenant's is simply not found.
    pub async fn ensure_as(
        self: &Arc<Self>,
        tenant: &str,
        reference: &str,
        timeout: Duration,
    ) -> Result<(Image, Option<PullSnapshot>)> {
        let scope = (tenant != crate::auth::ADMIN_TENANT).then_some(tenant);
        match self.image_as(scope, reference) {
            Ok(img) => return Ok((img, None)),
            Err(ImageError::NotFound(m)) => {
                // A bare digest, or a local name, names nothing to pull.
                if reference.starts_with("sha256:")
                    || Reference::parse(reference).is_ok_and(|r| r.registry == "localhost")
                {
                    return Err(ImageError::NotFound(m));
                }
            }
            Err(e) => return Err(e),
        }
        let p = self.start_pull(tenant, reference)?;
        if !p.wait(timeout).await {
            return Err(ImageError::Registry {
                registry: Reference::parse(reference)?.registry,
                message: format!(
                    "the pull of {reference} did not finish within {} s; it goes on (pull {}), try again when it is done",
                    timeout.as_secs(),
                    p.id
                ),
            });
        }
        let snap = p.snapshot();
        let why = || snap.error.clone().unwrap_or_default();
        match p.failure.load(Ordering::Relaxed) {
            1 => {
                return Err(ImageError::Unauthorized(
                    Reference::parse(reference)?.registry,
                ))
            }
            2 => return Err(ImageError::StoreFull(why())),
            3 => return Err(ImageError::TenantQuota(why())),
            _ => {}
        }
        match (&snap.state, &snap.digest) {
            (PullState::Succeeded, Some(d)) => Ok((self.image_as(scope, d)?, Some(snap))),
            _ => Err(ImageError::Registry {
                registry: Reference::parse(reference)?.registry,
                message: snap
                    .error
                    .clone()
                    .unwrap_or_else(|| "the pull failed".into()),
            }),
        }
    }

    /// Pulls now, in this task.
    async fn pull_now(&self, r: &Reference, progress: &PullProgress) -> Result<Image> {
        // The puller's own login only: another tenant's (the admin's too)
        // never opens a registry for it.
        let login = self
            .store
            .registry_login(&progress.tenant, &login_key(&r.registry))?
            .map(|l| (l.username, l.secret));
        let session = self.registries.session(r, login);
        let max = self.limits.max_manifest_bytes;
        let mut reference = r.manifest_ref();
        let mut pinned = r.digest.clone();
        for _ in 0..4 {
            let (bytes, ct) = session.manifest(&reference, max).await?;
            let digest = Digest::of(&bytes);
            if let Some(want) = &pinned {
                if *want != digest {
                    return Err(ImageError::DigestMismatch {
                        what: format!("the manifest of {r}"),
                        expected: want.to_string(),
                        got: digest.to_string(),
                    });
                }
            }
            match oci::parse_manifest(&bytes, ct.as_deref()).map_err(ImageError::Invalid)? {
                ManifestOrIndex::Manifest(_) => {
                    // A pull by digest names the digest, never a tag (not
                    // even `repo:tag@sha256:…`'s): an older digest cannot
                    // move a tag back. Tags are per tenant anyway.
                    let name = match &r.digest {
                        Some(d) => format!("{}/{}@{d}", r.registry, r.repository),
                        None => r.name(),
                    };
                    // The operator's name is every tenant's to see, unless
                    // credentials opened the registry (the manifest's fetch
                    // answered its challenge): a private image stays the
                    // puller's (docs/images.md, Tenants).
                    let shared = !session.used_credentials();
                    let source = RegistrySource {
                        session,
                        manifest: bytes,
                        digest,
                    };
                    return self
                        .add_image(&progress.tenant, Some(&name), shared, &source, progress)
                        .await;
                }
                ManifestOrIndex::Index(ix) => {
                    let d = Digest::parse(&platform_entry(&ix, &r.to_string())?.digest)?;
                    reference = d.to_string();
                    pinned = Some(d);
                }
            }
        }
        Err(ImageError::Invalid("image indexes nested too deep".into()))
    }

    /// Checks credentials against a registry (`GET /v2/` with them).
    pub async fn check_login(&self, registry: &str, username: &str, secret: &str) -> Result<()> {
        let r = Reference::parse(&format!("{registry}/runta-login-check"))?;
        let s = self
            .registries
            .session(&r, Some((username.to_string(), secret.to_string())));
        s.check_login().await
    }
}

/// The reference part of a running-pull key (`tenant\0reference`).
fn r_name(key: &str) -> &str {
    key.split_once('\u{0}').map(|(_, r)| r).unwrap_or(key)
}
