//! The image store: any OCI image, pulled from a registry or imported from an
//! OCI image layout, kept content-addressed and shared read-only by every
//! runtime that uses it. See docs/images.md.
//!
//! Layout under `<data dir>/images/`:
//!
//! ```text
//! blobs/sha256/<hex>        verified blobs (manifests, configs, compressed layers)
//! blobs/partial/<hex>       a download in progress (a later pull resumes it)
//! layers/sha256/<diff_id>/  one layer unpacked, read-only, in overlayfs' form
//! layers/tmp/…              an unpack in progress (removed at start)
//! ```
//!
//! Records (image → manifest, config, layers; names → image; registry
//! logins) live in the SQLite store (`store/images.rs`). A blob or layer is
//! only ever moved into place complete and verified (rename), and an image is
//! recorded only once all its layers are in place: a pull killed half way
//! leaves nothing that looks complete, and the next pull reuses what it
//! finished. A runtime's root filesystem is an overlay of the image's layer
//! directories (lower, shared) and its own writable layer: nothing is copied
//! per runtime.
//!
//! Boundaries: this module knows registries, blobs, layers and records; it
//! knows nothing of runtimes beyond asking the store who uses an image. The
//! manager resolves a runtime's image to [`Images::layer_dirs`] and hands the
//! paths to the backend. The built-in `base` image (debootstrap, prepared by
//! `runtad --prepare-image`, `runta_backend::images`) is not in this store;
//! [`Images::list`] shows it beside the others.
//!
//! The build engineer's entry points: [`Images::import_oci_layout`],
//! [`Images::blob_path`], [`Images::image`], [`Images::layer_dirs`].

pub mod build;
pub mod commit;
pub mod digest;
pub mod http_client;
pub mod layer_tar;
pub mod oci;
mod pull;
mod push;
pub mod reference;
mod registry;
mod unpack;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

pub use digest::Digest;
pub use http_client::Pace;
pub use oci::{ImageConfig, Manifest};
pub use pull::PullSnapshot;
pub use pull::{PullProgress, PullState};
pub use push::PushReport;
pub use reference::Reference;
pub use registry::{login_key as registry_login_key, RegistryConfig};

use crate::store::{ImageRecord, ImageRef, Store, StoreError};

/// Everything that can go wrong with an image. The API maps each variant to
/// one status (api/images.rs).
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{0}")]
    NotFound(String),
    /// Bad input from the caller (a reference, a digest).
    #[error("{0}")]
    Invalid(String),
    /// The registry refused or failed.
    #[error("registry {registry}: {message}")]
    Registry { registry: String, message: String },
    /// The registry wants credentials we do not have, or refused them.
    #[error("registry {0}: authentication required or refused (see `runta image login`)")]
    Unauthorized(String),
    #[error("{what} does not match its digest: expected {expected}, got {got}")]
    DigestMismatch {
        what: String,
        expected: String,
        got: String,
    },
    /// Past a limit: manifest size, layer count, image size, file count.
    #[error("{0}")]
    TooLarge(String),
    /// Layer content that would escape, or that the store refuses to write.
    #[error("refused layer content: {0}")]
    Hostile(String),
    #[error("{0}")]
    NoPlatform(String),
    /// The store as a whole is at `--image-store-max-bytes`.
    #[error("{0}")]
    StoreFull(String),
    /// The tenant's images are at `--image-tenant-max-bytes`.
    #[error("{0}")]
    TenantQuota(String),
    /// Too many pulls running: the caller's own (`tenant`) or the daemon's.
    #[error("{message}")]
    TooManyPulls { tenant: bool, message: String },
    /// Deleting an image that runtimes or checkpoints use.
    #[error("image {image} is in use by {}", users.join(", "))]
    InUse { image: String, users: Vec<String> },
    #[error("image store: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Store(#[from] StoreError),
}

pub type Result<T, E = ImageError> = std::result::Result<T, E>;

/// Limits that stop hostile or absurd images (daemon flags `--image-max-*`).
#[derive(Debug, Clone)]
pub struct Limits {
    /// A manifest, index or config document.
    pub max_manifest_bytes: u64,
    pub max_layers: usize,
    /// Compressed bytes of all layers, and separately unpacked bytes.
    pub max_image_bytes: u64,
    /// Entries in one layer.
    pub max_files: u64,
    /// Bytes of one path in a layer.
    pub max_path: usize,
    /// Entries in one image, all layers together.
    pub max_total_files: u64,
    /// Bytes of one tar extension header (PAX records, GNU long name).
    pub max_header_bytes: u64,
    /// Bytes of one extended attribute value.
    pub max_xattr_bytes: u64,
    /// Bytes the whole store may hold (blobs and unpacked layers); 0: no cap.
    pub max_store_bytes: u64,
    /// Compressed bytes of the images one tenant holds names of; 0: no cap.
    pub max_tenant_bytes: u64,
    /// Pulls running at once: all tenants, and one tenant.
    pub max_pulls: usize,
    pub max_pulls_per_tenant: usize,
    /// How long a create waits for the pull of an image it is the first to use.
    pub pull_wait: std::time::Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_manifest_bytes: 4 << 20,
            max_layers: 128,
            max_image_bytes: 64 << 30,
            max_files: 2_000_000,
            max_path: 4096,
            max_total_files: 4_000_000,
            max_header_bytes: 1 << 20,
            max_xattr_bytes: 65536,
            max_store_bytes: 0,
            max_tenant_bytes: 0,
            max_pulls: 16,
            max_pulls_per_tenant: 4,
            pull_wait: std::time::Duration::from_secs(600),
        }
    }
}

/// One layer of an image: the compressed blob and the unpacked tar's digest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Layer {
    /// Digest of the blob as stored in the registry (compressed).
    pub digest: String,
    /// Digest of the uncompressed tar: the name of its unpacked directory.
    pub diff_id: String,
    /// Compressed size in bytes.
    pub size: u64,
    pub media_type: String,
    /// Bytes the layer unpacked to (what it costs on disk; what a tenant's
    /// quota counts). Absent in records of before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unpacked: Option<u64>,
}

/// An image in the store.
#[derive(Debug, Clone)]
pub struct Image {
    /// The manifest digest: the image's identity.
    pub digest: Digest,
    /// Names pointing at it (`registry/repo:tag`, or a local name), of
    /// every tenant.
    pub names: Vec<String>,
    /// The same names with the tenant each belongs to (names are per
    /// tenant; the admin's are seen by every tenant unless pulled with
    /// credentials).
    pub refs: Vec<ImageRef>,
    pub manifest: Manifest,
    pub config: ImageConfig,
    /// Bottom layer first, as in the manifest.
    pub layers: Vec<Layer>,
    /// Compressed bytes of the layers (what a pull downloads).
    pub size: u64,
    pub created: DateTime<Utc>,
    pub pulled_at: DateTime<Utc>,
}

impl Image {
    /// `name@digest`: what a runtime records so a moved tag never changes
    /// the layers under it.
    pub fn pinned(&self, name: &str) -> String {
        let base = name.split('@').next().unwrap_or(name);
        format!("{base}@{}", self.digest)
    }
}

/// The store. One per daemon; cheap to share (`Arc`).
pub struct Images {
    dir: PathBuf,
    store: Arc<Store>,
    limits: Limits,
    registries: registry::Registries,
    /// The blobs and layers pulls and imports in flight use: garbage
    /// collection leaves them alone whether or not a record names them yet
    /// (and never waits for a pull, however slow).
    in_use: Mutex<InUse>,
    /// One unpack or download at a time per digest.
    busy: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    pulls: pull::Pulls,
    /// Bytes of blobs and unpacked layers, counted when a store cap is set.
    used: std::sync::atomic::AtomicU64,
}

impl Images {
    /// Opens (or makes) the store under `dir` (`<data dir>/images`). Unpacks
    /// (and collections' trash, commit layouts) left by a killed daemon are
    /// removed; partial downloads are kept. The daemon then runs
    /// [`Images::collect_at_start`].
    pub fn open(
        dir: PathBuf,
        store: Arc<Store>,
        limits: Limits,
        registry: RegistryConfig,
    ) -> Result<Arc<Self>, String> {
        for d in [
            "blobs/sha256",
            "blobs/partial",
            "layers/sha256",
            "layers/tmp",
        ] {
            std::fs::create_dir_all(dir.join(d))
                .map_err(|e| format!("create {}: {e}", dir.join(d).display()))?;
        }
        // (And commit layouts a killed daemon was writing or importing.)
        for tmp in ["layers/tmp", "commits"] {
            if let Ok(rd) = std::fs::read_dir(dir.join(tmp)) {
                for e in rd.flatten() {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        let registries = registry::Registries::new(registry)?;
        let used = if limits.max_store_bytes > 0 {
            du(&dir.join("blobs/sha256")) + du(&dir.join("layers/sha256"))
        } else {
            0
        };
        Ok(Arc::new(Images {
            used: used.into(),
            dir,
            store,
            limits,
            registries,
            in_use: Mutex::new(InUse::default()),
            busy: Mutex::new(HashMap::new()),
            pulls: pull::Pulls::default(),
        }))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Where the blob with `digest` is (or would be) stored. The file exists
    /// only once the blob is complete and verified; it is read-only content,
    /// never to be modified in place.
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.dir.join("blobs/sha256").join(digest.hex())
    }

    fn partial_path(&self, digest: &Digest) -> PathBuf {
        self.dir.join("blobs/partial").join(digest.hex())
    }

    /// The unpacked directory of the layer whose uncompressed tar has `diff_id`.
    pub fn layer_dir(&self, diff_id: &Digest) -> PathBuf {
        self.dir.join("layers/sha256").join(diff_id.hex())
    }

    /// The image `r` names, as the admin sees the store (every tenant's
    /// names, the admin's first): a name as listed (`registry/repo:tag` or a
    /// local name), a reference in short form (`python:3.12`),
    /// `name@sha256:…` (the digest wins) or a bare manifest digest.
    pub fn image(&self, r: &str) -> Result<Image> {
        self.image_as(None, r)
    }

    /// The image `r` names for `tenant` (`None`: the admin): its own names
    /// first, then the operator's (admin's); a digest only if the tenant or
    /// the operator holds a name of that image. Another tenant's image is
    /// not found, whatever the caller knows of it.
    pub fn image_as(&self, tenant: Option<&str>, r: &str) -> Result<Image> {
        let not_found = || ImageError::NotFound(format!("image {r:?} is not in the store"));
        let digest = self.resolve(tenant, r)?;
        let img = self.by_digest(&digest)?.ok_or_else(not_found)?;
        if !visible_to(&img, tenant) {
            return Err(not_found());
        }
        Ok(img)
    }

    /// The manifest digest `r` names, if the store has it.
    fn resolve(&self, tenant: Option<&str>, r: &str) -> Result<String> {
        if let Some((_, d)) = r.rsplit_once('@') {
            let d = Digest::parse(d)?;
            return Ok(d.to_string());
        }
        if r.starts_with("sha256:") {
            return Ok(Digest::parse(r)?.to_string());
        }
        if let Some(d) = self.store.image_name(tenant, r)? {
            return Ok(d);
        }
        if let Ok(parsed) = Reference::parse(r) {
            if let Some(d) = self.store.image_name(tenant, &parsed.name())? {
                return Ok(d);
            }
        }
        Err(ImageError::NotFound(format!(
            "image {r:?} is not in the store"
        )))
    }

    fn by_digest(&self, digest: &str) -> Result<Option<Image>> {
        let Some(rec) = self.store.image_by_digest(digest)? else {
            return Ok(None);
        };
        let refs = self.store.image_refs(digest)?;
        Ok(Some(image_of(rec, refs)?))
    }

    /// The image's layer directories, topmost first (the order of overlayfs'
    /// `lowerdir`). Every one exists while the image is recorded.
    pub fn layer_dirs(&self, image: &Image) -> Vec<PathBuf> {
        image
            .layers
            .iter()
            .rev()
            .filter_map(|l| Digest::parse(&l.diff_id).ok())
            .map(|d| self.layer_dir(&d))
            .collect()
    }

    /// Every image in the store with its names, sorted by first name.
    pub fn list(&self) -> Result<Vec<Image>> {
        let mut v: Vec<Image> = self
            .store
            .list_images()?
            .into_iter()
            .map(|(rec, refs)| image_of(rec, refs))
            .collect::<Result<_>>()?;
        v.sort_by(|a, b| a.names.first().cmp(&b.names.first()));
        Ok(v)
    }

    /// Runtimes and checkpoints that use `image` (`tenant/name`).
    pub fn users(&self, image: &Image) -> Result<Vec<String>> {
        Ok(self
            .store
            .image_users(&image.names, image.digest.as_str())?)
    }

    /// Removes the name `r` (or, given a digest, the image and all its
    /// names) as the admin sees the store: every tenant's names. Refused
    /// while a runtime or checkpoint uses the image.
    pub async fn delete(&self, r: &str) -> Result<Image> {
        self.delete_as(None, r).await
    }

    /// Removes `tenant`'s name `r` (given a digest, all of its names of that
    /// image); `None`: the admin, every tenant's. Refused while a runtime or
    /// checkpoint of the caller's uses the image (`users` says whose count).
    /// The image itself goes, with its layers, at the garbage collection this
    /// runs once no name and no runtime holds it.
    pub async fn delete_as(&self, tenant: Option<&str>, r: &str) -> Result<Image> {
        let img = self.image_as(tenant, r)?;
        let mine = |t: &str| tenant.is_none_or(|me| me == t);
        let users: Vec<String> = self
            .users(&img)?
            .into_iter()
            .filter(|u| {
                mine(
                    u.trim_start_matches("checkpoint ")
                        .split('/')
                        .next()
                        .unwrap_or(""),
                )
            })
            .collect();
        if !users.is_empty() {
            return Err(ImageError::InUse {
                image: r.to_string(),
                users,
            });
        }
        let by_digest = r.contains('@') || r.starts_with("sha256:");
        let name = if by_digest {
            None
        } else if img.refs.iter().any(|x| x.name == r && mine(&x.tenant)) {
            Some(r.to_string())
        } else {
            Reference::parse(r).ok().map(|p| p.name())
        };
        let gone = self
            .store
            .delete_image_refs(tenant, name.as_deref(), img.digest.as_str())?;
        if gone == 0 {
            // Only the operator's name matched: a tenant reads it, never
            // removes it.
            return Err(ImageError::NotFound(format!(
                "image {r:?}: no name of yours points at it (the operator's names are the admin's to remove)"
            )));
        }
        // Partial downloads stay within their room, as at a pull's end: a
        // tenant's DELETE (any tenant's, as often as it likes) is no way to
        // drop every other tenant's resume (docs/security.md, gc red-team
        // pass). The operator's gc drops them all.
        self.collect(Some(PARTIALS_KEPT)).await?;
        Ok(img)
    }

    /// Removes blobs and layer directories no recorded image references,
    /// partial downloads, and images with no name that nothing uses.
    /// Returns the bytes freed (apparent sizes).
    pub async fn gc(&self) -> Result<GcReport> {
        self.collect(None).await
    }

    /// The collection a daemon runs at start: what a killed one had moved
    /// half aside (records dropped, files not yet) goes, partial downloads
    /// stay within their room.
    pub async fn collect_at_start(&self) {
        self.collect_keeping_partials("at start").await;
    }

    /// A collection that keeps partial downloads within [`PARTIALS_KEPT`]
    /// (and the store cap's room); a failure is logged, `when` saying when.
    async fn collect_keeping_partials(&self, when: &str) {
        if let Err(e) = self.collect(Some(PARTIALS_KEPT)).await {
            warn!("image garbage collection {when}: {e}");
        }
    }

    /// [`Images::gc`], keeping at most `partials` bytes of partial downloads
    /// (`None`: none).
    async fn collect(&self, partials: Option<u64>) -> Result<GcReport> {
        // One collection at a time (each is quick: what it removes is moved
        // aside first and deleted after).
        let once = self.lock_for("gc");
        let _once = once.lock().await;
        let mut report = GcReport::default();
        // Under the in-use lock, from reading the records to moving aside
        // what no record keeps and no pull holds: a pull that records an
        // image and lets go of its blobs meanwhile is in the listing, one
        // that holds a blob a moment later finds it gone and fetches or
        // unpacks it again, never half of it. Deleting (which may take long)
        // happens after, with no lock held.
        let trash = self
            .dir
            .join("layers/tmp")
            .join(format!("gc-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir(&trash)?;
        let moved: Vec<(PathBuf, Gone)> = {
            let held = self.in_use.lock().unwrap_or_else(|e| e.into_inner());
            let mut keep_blobs = std::collections::HashSet::new();
            let mut keep_layers = std::collections::HashSet::new();
            for (rec, refs) in self.store.list_images()? {
                let img = image_of(rec, refs)?;
                // (An image a pull is recording right now is held by it.)
                let recording = held.blobs.contains_key(img.digest.hex());
                if img.names.is_empty() && !recording && self.users(&img)?.is_empty() {
                    self.store.delete_image(img.digest.as_str())?;
                    report.images += 1;
                    continue;
                }
                keep_blobs.insert(img.digest.hex().to_string());
                if let Ok(d) = Digest::parse(&img.manifest.config.digest) {
                    keep_blobs.insert(d.hex().to_string());
                }
                for l in &img.layers {
                    if let Ok(d) = Digest::parse(&l.digest) {
                        keep_blobs.insert(d.hex().to_string());
                    }
                    if let Ok(d) = Digest::parse(&l.diff_id) {
                        keep_layers.insert(d.hex().to_string());
                    }
                }
            }
            // Partial downloads are not counted against the store's cap
            // while they wait: kept, they fit in the room it leaves.
            let cap = self.limits.max_store_bytes;
            let room = partials.map(|room| {
                if cap > 0 {
                    room.min(
                        cap.saturating_sub(self.used.load(std::sync::atomic::Ordering::Relaxed)),
                    )
                } else {
                    room
                }
            });
            let kept_partials = match room {
                Some(room) => partials_within(&self.dir.join("blobs/partial"), room),
                None => std::collections::HashSet::new(),
            };
            let mut moved = Vec::new();
            for (sub, keep, layers) in [
                ("blobs/sha256", &keep_blobs, false),
                ("blobs/partial", &kept_partials, false),
                ("layers/sha256", &keep_layers, true),
            ] {
                for e in std::fs::read_dir(self.dir.join(sub))?.flatten() {
                    let name = e.file_name().to_string_lossy().into_owned();
                    let in_use = if layers {
                        held.layers.contains_key(&name)
                    } else {
                        // A proof download (`<hex>.proof-<uuid>`) is its
                        // blob's, held with it.
                        let hex = name.split_once('.').map_or(name.as_str(), |(h, _)| h);
                        held.blobs.contains_key(hex)
                    };
                    if keep.contains(&name) || in_use {
                        continue;
                    }
                    let to = trash.join(format!("{}-{name}", moved.len()));
                    std::fs::rename(e.path(), &to)?;
                    let kind = match (layers, sub == "blobs/partial") {
                        (true, _) => Gone::Layer,
                        (false, true) => Gone::Partial,
                        (false, false) => Gone::Blob,
                    };
                    moved.push((to, kind));
                }
            }
            moved
        };
        // (Report, bytes the store's counter held of them: partial
        // downloads were never counted, so they are not taken off it.)
        let (r, counted) =
            tokio::task::spawn_blocking(move || -> std::io::Result<(GcReport, u64)> {
                let mut rep = GcReport::default();
                let mut counted = 0u64;
                for (p, kind) in moved {
                    if kind == Gone::Layer {
                        let n = du(&p);
                        rep.bytes += n;
                        counted += n;
                        make_writable_and_remove(&p)?;
                        rep.layers += 1;
                    } else {
                        let n = std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
                        rep.bytes += n;
                        if kind == Gone::Blob {
                            counted += n;
                        }
                        std::fs::remove_file(&p)?;
                        rep.blobs += 1;
                    }
                }
                std::fs::remove_dir(&trash)?;
                Ok((rep, counted))
            })
            .await
            .map_err(|e| ImageError::Io(std::io::Error::other(e.to_string())))??;
        report.blobs += r.blobs;
        report.layers += r.layers;
        report.bytes += r.bytes;
        let _ = self.used.fetch_update(
            std::sync::atomic::Ordering::Relaxed,
            std::sync::atomic::Ordering::Relaxed,
            |u| Some(u.saturating_sub(counted)),
        );
        if report != GcReport::default() {
            info!(?report, "image garbage collection");
        }
        Ok(report)
    }

    /// Imports the image in the OCI image layout at `dir` (`oci-layout`,
    /// `index.json`, `blobs/sha256/…`, as `skopeo copy … oci:DIR`, `umoci` or
    /// `buildah push … oci:DIR` write it) under `name` (any valid image name:
    /// `myapp:1`, `registry:5000/team/app:2`). With several images in the
    /// layout, the one whose `org.opencontainers.image.ref.name` annotation is
    /// `name` or `name`'s tag is taken; an index is resolved to linux/amd64.
    /// Every blob is verified against its digest and copied into the store;
    /// layers are unpacked (once: layers the store has are reused). The name
    /// then points at the image (replacing what it pointed at).
    /// The name belongs to the tenant it is made for: `localhost/<tenant>/…`
    /// (what a tenant's build or commit is named) to that tenant, any other
    /// to the admin.
    pub async fn import_oci_layout(&self, dir: &Path, name: &str) -> Result<Image> {
        self.import_oci_layout_as(&owner_of_name(name), dir, name)
            .await
    }

    /// [`Images::import_oci_layout`] with the name given to `tenant`.
    pub async fn import_oci_layout_as(
        &self,
        tenant: &str,
        dir: &Path,
        name: &str,
    ) -> Result<Image> {
        check_name(name)?;
        let source = pull::LayoutSource::open(dir, name, &self.limits)?;
        let progress = PullProgress::new(tenant, name);
        self.add_image(tenant, Some(name), true, &source, &progress)
            .await
    }

    /// Fetches (or reuses) every blob of the image `source` offers, unpacks
    /// its layers, then records it under `tenant`'s `name`; `shared`: an
    /// operator's name every tenant sees. Shared by pulls and imports.
    async fn add_image(
        &self,
        tenant: &str,
        name: Option<&str>,
        shared: bool,
        source: &dyn pull::BlobSource,
        progress: &PullProgress,
    ) -> Result<Image> {
        let r = {
            let mut holds = Holds {
                images: self,
                blobs: Vec::new(),
                layers: Vec::new(),
            };
            self.add_image_held(tenant, name, shared, source, progress, &mut holds)
                .await
        };
        // What a refused pull left (layers it unpacked, blobs it fetched)
        // and an image a moved name left unnamed go now, not at the
        // operator's next gc: they are nobody's and counted against no
        // quota. Partial downloads stay within their room, for the next
        // pull of the blob to resume.
        self.collect_keeping_partials("after a pull").await;
        r
    }

    async fn add_image_held(
        &self,
        tenant: &str,
        name: Option<&str>,
        shared: bool,
        source: &dyn pull::BlobSource,
        progress: &PullProgress,
        holds: &mut Holds<'_>,
    ) -> Result<Image> {
        // A capped tenant's pulls and imports add images one at a time: each
        // counts what it unpacks against the room the ones before it left,
        // so two at once never both spend the same room.
        let quota_lock = (self.limits.max_tenant_bytes > 0 && tenant != crate::auth::ADMIN_TENANT)
            .then(|| self.lock_for(&format!("quota:{tenant}")));
        let _quota = match &quota_lock {
            Some(l) => Some(l.lock().await),
            None => None,
        };
        let (manifest_bytes, digest) = source.manifest().await?;
        let manifest: Manifest = serde_json::from_slice(&manifest_bytes)
            .map_err(|e| ImageError::Invalid(format!("bad image manifest: {e}")))?;
        if manifest.layers.len() > self.limits.max_layers {
            return Err(ImageError::TooLarge(format!(
                "the image has {} layers (at most {})",
                manifest.layers.len(),
                self.limits.max_layers
            )));
        }
        let total: u64 = manifest.layers.iter().map(|l| l.size).sum();
        if total > self.limits.max_image_bytes {
            return Err(ImageError::TooLarge(format!(
                "the image's layers are {total} bytes (at most {})",
                self.limits.max_image_bytes
            )));
        }
        let mut quota = self.tenant_quota(tenant, &digest, total)?;
        if manifest.config.size > self.limits.max_manifest_bytes {
            return Err(ImageError::TooLarge(format!(
                "the image config is {} bytes (at most {})",
                manifest.config.size, self.limits.max_manifest_bytes
            )));
        }
        for l in &manifest.layers {
            if !oci::is_layer_type(&l.media_type) {
                return Err(ImageError::Invalid(format!(
                    "layer {} has media type {:?}, which is not a layer this store unpacks",
                    l.digest, l.media_type
                )));
            }
        }
        progress.start(manifest.layers.len(), total);
        // Content the store has is reused only where this tenant already has
        // it: a digest is no key to another tenant's layers (docs/security.md,
        // Image red-team pass 2). Anything else must come from the source.
        let known = self.known_to(tenant)?;
        // Write the manifest blob too, so the image can be pushed again as is.
        holds.blob(&digest);
        self.put_small_blob(&digest, &manifest_bytes)?;
        let config_digest = Digest::parse(&manifest.config.digest)?;
        holds.blob(&config_digest);
        let prove = !known.has_blob(config_digest.as_str());
        self.ensure_blob(source, &config_digest, manifest.config.size, None, prove)
            .await?;
        let config_bytes = std::fs::read(self.blob_path(&config_digest))?;
        let config: ImageConfig = serde_json::from_slice(&config_bytes)
            .map_err(|e| ImageError::Invalid(format!("bad image config: {e}")))?;
        if config.rootfs.diff_ids.len() != manifest.layers.len() {
            return Err(ImageError::Invalid(format!(
                "the image config lists {} layers, the manifest {}",
                config.rootfs.diff_ids.len(),
                manifest.layers.len()
            )));
        }
        let mut layers = Vec::new();
        let mut unpacked_sizes: HashMap<String, u64> = HashMap::new();
        let mut lowers: Vec<PathBuf> = Vec::new();
        let mut budget = self.limits.max_image_bytes;
        let mut files_left = self.limits.max_total_files;
        for (desc, diff_id) in manifest.layers.iter().zip(&config.rootfs.diff_ids) {
            let blob = Digest::parse(&desc.digest)?;
            let diff_id = Digest::parse(diff_id)?;
            // Held before it is looked at: a gc now leaves it be.
            holds.blob(&blob);
            holds.layer(&diff_id);
            let dir = self.layer_dir(&diff_id);
            let prove = !known.has_blob(blob.as_str());
            let pair_known = known.has_pair(blob.as_str(), diff_id.as_str());
            if dir.is_dir() {
                // The layer is unpacked, but its blob may be another
                // compression of it (buildah's push recompresses `base`'s
                // layer): keep this image's own blob, or it can be neither
                // exported to a build nor pushed.
                self.ensure_blob(source, &blob, desc.size, None, prove)
                    .await?;
                if !pair_known {
                    self.check_diff_id(&blob, &diff_id).await?;
                }
                if let Some(q) = quota.as_mut() {
                    let n = q.size_of(&diff_id, &dir).await;
                    q.charge(tenant, n, &diff_id)?;
                }
                progress.layer_cached(desc.size);
            } else {
                self.ensure_blob(source, &blob, desc.size, Some(progress), prove)
                    .await?;
                let quota_left = quota.as_ref().map_or(u64::MAX, |q| q.left);
                let unpacked = self
                    .ensure_layer(&blob, &diff_id, &lowers, budget.min(quota_left), files_left)
                    .await
                    .map_err(|e| match e {
                        ImageError::TooLarge(_) if quota_left < budget => ImageError::TenantQuota(format!(
                            "layer {} unpacks to more than the {quota_left} bytes left of tenant {tenant}'s --image-tenant-max-bytes",
                            diff_id.short()
                        )),
                        e => e,
                    })?;
                let (used, files) = match unpacked {
                    Some(n) => n,
                    // Unpacked meanwhile by another pull: this blob must
                    // still be that layer.
                    None if !pair_known => {
                        self.check_diff_id(&blob, &diff_id).await?;
                        (0, 0)
                    }
                    None => (0, 0),
                };
                budget = budget.saturating_sub(used);
                files_left = files_left.saturating_sub(files);
                if let Some(q) = quota.as_mut() {
                    let n = if used > 0 {
                        used
                    } else {
                        q.size_of(&diff_id, &dir).await
                    };
                    q.charge(tenant, n, &diff_id)?;
                }
                unpacked_sizes.insert(diff_id.to_string(), used);
                progress.layer_done();
            }
            lowers.insert(0, dir);
            let unpacked = match unpacked_sizes.get(diff_id.as_str()) {
                Some(&n) if n > 0 => Some(n),
                _ => quota
                    .as_ref()
                    .and_then(|q| q.known.get(diff_id.as_str()).copied()),
            };
            layers.push(Layer {
                digest: blob.to_string(),
                diff_id: diff_id.to_string(),
                size: desc.size,
                media_type: desc.media_type.clone(),
                unpacked,
            });
        }
        let now = crate::store::now();
        let created = config
            .created
            .as_deref()
            .and_then(|c| DateTime::parse_from_rfc3339(c).ok())
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or(now);
        let rec = ImageRecord {
            digest: digest.to_string(),
            manifest: String::from_utf8_lossy(&manifest_bytes).into_owned(),
            config: String::from_utf8_lossy(&config_bytes).into_owned(),
            layers: serde_json::to_string(&layers).unwrap_or_else(|_| "[]".into()),
            size: total,
            created_at: created,
            pulled_at: now,
        };
        self.store.put_image(&rec, tenant, name, shared)?;
        info!(tenant, name, digest = %digest, layers = layers.len(), bytes = total, "image stored");
        self.image(digest.as_str())
    }

    /// What `tenant` may still add to the store with the image `digest`
    /// whose layers are `adding` compressed bytes, from one reading of the
    /// records: each of the tenant's images costs, once, the larger of its
    /// compressed and unpacked bytes (a few MiB of gzip may unpack to
    /// gigabytes), and the compressed layers must fit in what is left
    /// (`--image-tenant-max-bytes`). Also the unpacked sizes of the layers
    /// the store knows. `None` when nothing is counted: no cap, the admin
    /// (the operator's images), or an image the tenant holds already (a tag
    /// moved onto it costs nothing).
    fn tenant_quota(
        &self,
        tenant: &str,
        digest: &Digest,
        adding: u64,
    ) -> Result<Option<QuotaLeft>> {
        let cap = self.limits.max_tenant_bytes;
        if cap == 0 || tenant == crate::auth::ADMIN_TENANT {
            return Ok(None);
        }
        let mut held = 0u64;
        let mut known = HashMap::new();
        for (rec, refs) in self.store.list_images()? {
            let layers = serde_json::from_str::<Vec<Layer>>(&rec.layers).unwrap_or_default();
            if refs.iter().any(|r| r.tenant == tenant) {
                if rec.digest == digest.as_str() {
                    return Ok(None);
                }
                let unpacked = layers
                    .iter()
                    .filter_map(|l| l.unpacked)
                    .fold(0u64, u64::saturating_add);
                held = held.saturating_add(rec.size.max(unpacked));
            }
            for l in layers {
                if let Some(n) = l.unpacked {
                    known.insert(l.diff_id, n);
                }
            }
        }
        if held.saturating_add(adding) > cap {
            return Err(ImageError::TenantQuota(format!(
                "tenant {tenant} holds images of {held} bytes; {adding} more would pass its {cap} (--image-tenant-max-bytes): delete some with DELETE /v1/images/{{ref}}"
            )));
        }
        Ok(Some(QuotaLeft {
            cap,
            left: cap.saturating_sub(held),
            known,
        }))
    }

    /// Room for `n` more bytes in the store (`--image-store-max-bytes`).
    fn store_room(&self, n: u64, what: &str) -> Result<()> {
        let cap = self.limits.max_store_bytes;
        let used = self.used.load(std::sync::atomic::Ordering::Relaxed);
        if cap > 0 && used.saturating_add(n) > cap {
            return Err(ImageError::StoreFull(format!(
                "the image store holds {used} bytes; {what} of {n} bytes would pass its {cap} (--image-store-max-bytes): the operator frees room with DELETE /v1/images and POST /v1/images/gc"
            )));
        }
        Ok(())
    }

    fn lock_for(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut m = self.busy.lock().unwrap_or_else(|e| e.into_inner());
        if m.len() > 4096 {
            m.retain(|_, v| Arc::strong_count(v) > 1);
        }
        m.entry(key.to_string()).or_default().clone()
    }

    fn put_small_blob(&self, digest: &Digest, bytes: &[u8]) -> Result<()> {
        let got = Digest::of(bytes);
        if &got != digest {
            return Err(ImageError::DigestMismatch {
                what: "the manifest".into(),
                expected: digest.to_string(),
                got: got.to_string(),
            });
        }
        let path = self.blob_path(digest);
        if !path.exists() {
            let tmp = self.partial_path(digest);
            std::fs::write(&tmp, bytes)?;
            std::fs::rename(&tmp, &path)?;
            // Counted as a collection will take it off.
            self.used
                .fetch_add(bytes.len() as u64, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(())
    }

    /// What `tenant` already has a right to: the blobs and (blob, diff_id)
    /// pairs of the images it sees (its own names, the operator's shared
    /// ones); everything for the admin, who sees the whole store.
    fn known_to(&self, tenant: &str) -> Result<Known> {
        let mut known = Known {
            all: tenant == crate::auth::ADMIN_TENANT,
            blobs: Default::default(),
            pairs: Default::default(),
        };
        if known.all {
            return Ok(known);
        }
        for (rec, refs) in self.store.list_images()? {
            if !refs.iter().any(|r| r.seen_by(tenant)) {
                continue;
            }
            let img = image_of(rec, refs)?;
            known.blobs.insert(img.manifest.config.digest.clone());
            for l in img.layers {
                known.blobs.insert(l.digest.clone());
                known.pairs.insert((l.digest, l.diff_id));
            }
        }
        Ok(known)
    }

    /// Fails unless blob `blob` uncompresses to the tar `diff_id` names (a
    /// blob reused for a layer the store unpacked from another one).
    async fn check_diff_id(&self, blob: &Digest, diff_id: &Digest) -> Result<()> {
        let path = self.blob_path(blob);
        let limit = self
            .limits
            .max_image_bytes
            .saturating_add(self.limits.max_files.saturating_mul(1024));
        let got = tokio::task::spawn_blocking(move || unpack::diff_id_of(&path, limit))
            .await
            .map_err(|e| ImageError::Io(std::io::Error::other(e.to_string())))??;
        if got != *diff_id {
            return Err(ImageError::DigestMismatch {
                what: format!("layer {} (its diff_id)", blob.short()),
                expected: diff_id.to_string(),
                got: got.to_string(),
            });
        }
        Ok(())
    }

    /// Makes sure blob `digest` of `size` bytes is in the store: fetched into
    /// `blobs/partial` (resuming what is there), verified, moved into place.
    /// With `prove`, a blob the store has already is fetched from `source`
    /// all the same (into a fresh file, no resume) and verified, then
    /// dropped: the caller must show it has the content, not only its digest.
    async fn ensure_blob(
        &self,
        source: &dyn pull::BlobSource,
        digest: &Digest,
        size: u64,
        progress: Option<&PullProgress>,
        prove: bool,
    ) -> Result<()> {
        let lock = self.lock_for(digest.as_str());
        let _g = lock.lock().await;
        let path = self.blob_path(digest);
        if path.exists() && !prove {
            if let Some(p) = progress {
                p.bytes(size);
            }
            return Ok(());
        }
        let proof = path.exists();
        let partial = if proof {
            self.dir.join("blobs/partial").join(format!(
                "{}.proof-{}",
                digest.hex(),
                uuid::Uuid::new_v4().simple()
            ))
        } else {
            self.store_room(size, &format!("blob {}", digest.short()))?;
            self.partial_path(digest)
        };
        let fetched = source.fetch(digest, size, &partial, progress).await;
        if proof {
            let checked = match fetched {
                Ok(()) => self.verify_blob(&partial, digest, size).await,
                Err(e) => Err(e),
            };
            let _ = std::fs::remove_file(&partial);
            return checked;
        }
        fetched?;
        self.verify_blob(&partial, digest, size).await?;
        std::fs::rename(&partial, &path)?;
        self.used
            .fetch_add(size, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// Checks the file `partial` is blob `digest` of `size` bytes; removes it
    /// when it is not.
    async fn verify_blob(&self, partial: &Path, digest: &Digest, size: u64) -> Result<()> {
        let p2 = partial.to_path_buf();
        let got = tokio::task::spawn_blocking(move || -> std::io::Result<(Digest, u64)> {
            let mut f = std::fs::File::open(&p2)?;
            let mut h = digest::HashingWriter {
                inner: std::io::sink(),
                hasher: digest::Hasher::new(),
                count: 0,
            };
            std::io::copy(&mut f, &mut h)?;
            Ok((h.hasher.finish(), h.count))
        })
        .await
        .map_err(|e| ImageError::Io(std::io::Error::other(e.to_string())))??;
        if got.0 != *digest || got.1 != size {
            let _ = std::fs::remove_file(partial);
            return Err(ImageError::DigestMismatch {
                what: format!("blob {}", digest.short()),
                expected: format!("{digest} ({size} bytes)"),
                got: format!("{} ({} bytes)", got.0, got.1),
            });
        }
        Ok(())
    }

    /// Unpacks blob `blob` into the layer directory of `diff_id` unless it is
    /// there (`None`); returns the content bytes and entries written. The
    /// tar's digest must be `diff_id`, or nothing is kept.
    async fn ensure_layer(
        &self,
        blob: &Digest,
        diff_id: &Digest,
        lowers: &[PathBuf],
        budget: u64,
        files_left: u64,
    ) -> Result<Option<(u64, u64)>> {
        let lock = self.lock_for(diff_id.as_str());
        let _g = lock.lock().await;
        let dir = self.layer_dir(diff_id);
        if dir.is_dir() {
            return Ok(None);
        }
        let tmp = self.dir.join("layers/tmp").join(format!(
            "{}-{}",
            diff_id.hex(),
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir(&tmp)?;
        let cap = self.limits.max_store_bytes;
        let store_left = if cap > 0 {
            cap.saturating_sub(self.used.load(std::sync::atomic::Ordering::Relaxed))
        } else {
            u64::MAX
        };
        let budget_here = budget.min(store_left);
        let (blob_path, tmp2, lowers, limits, d2) = (
            self.blob_path(blob),
            tmp.clone(),
            lowers.to_vec(),
            self.limits.clone(),
            diff_id.clone(),
        );
        let r = tokio::task::spawn_blocking(move || {
            let out =
                unpack::unpack_layer(&blob_path, &tmp2, &lowers, &limits, budget_here, files_left)?;
            let got = out.diff_id.clone().unwrap_or_else(|| Digest::of(b""));
            if got != d2 {
                return Err(ImageError::DigestMismatch {
                    what: "the unpacked layer (diff_id)".into(),
                    expected: d2.to_string(),
                    got: got.to_string(),
                });
            }
            if out.skipped_devices > 0 {
                warn!(layer = %d2, devices = out.skipped_devices, "device nodes in the layer were skipped");
            }
            Ok((out.bytes, out.files))
        })
        .await
        .map_err(|e| ImageError::Io(std::io::Error::other(e.to_string())))?;
        match r {
            Ok(n) => {
                std::fs::rename(&tmp, &dir)?;
                self.used
                    .fetch_add(n.0, std::sync::atomic::Ordering::Relaxed);
                Ok(Some(n))
            }
            Err(e) => {
                let e = match e {
                    ImageError::TooLarge(_) if store_left < budget => ImageError::StoreFull(format!(
                        "the image store has {store_left} bytes left of its {cap} (--image-store-max-bytes) and the layer {} unpacks to more",
                        diff_id.short()
                    )),
                    e => e,
                };
                let t = tmp.clone();
                let _ = tokio::task::spawn_blocking(move || make_writable_and_remove(&t)).await;
                Err(e)
            }
        }
    }

    /// The default shell for commands given as one string: the image's
    /// `Shell`, else `/bin/sh -c` if the image has `/bin/sh`. `None`: the
    /// image has no shell (distroless), so a command needs `args`.
    pub fn shell(&self, image: &Image) -> Option<Vec<String>> {
        if let Some(s) = image.config.config.shell.as_ref().filter(|s| !s.is_empty()) {
            return Some(s.clone());
        }
        let dirs = self.layer_dirs(image);
        exists_in_layers(&dirs, "/bin/sh").then(|| vec!["/bin/sh".into(), "-c".into()])
    }
}

/// The blobs and (blob, diff_id) pairs a tenant's images hold; `all`:
/// everything (the admin).
struct Known {
    all: bool,
    blobs: std::collections::HashSet<String>,
    pairs: std::collections::HashSet<(String, String)>,
}

impl Known {
    fn has_blob(&self, digest: &str) -> bool {
        self.all || self.blobs.contains(digest)
    }

    fn has_pair(&self, blob: &str, diff_id: &str) -> bool {
        self.all
            || self
                .pairs
                .contains(&(blob.to_string(), diff_id.to_string()))
    }
}

/// Freed by one garbage collection.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct GcReport {
    pub images: u64,
    pub blobs: u64,
    pub layers: u64,
    pub bytes: u64,
}

/// Names an image may be stored under: a reference, or a local name in the
/// same alphabet (`myapp:1`).
pub fn check_name(name: &str) -> Result<()> {
    if name == runta_backend::images::BASE_IMAGE {
        return Err(ImageError::Invalid(
            "the name \"base\" is the built-in image's".into(),
        ));
    }
    Reference::parse(name).map(drop)
}

/// Who a name made by a build or commit belongs to: `localhost/<tenant>/…`
/// to that tenant, anything else (the admin's own names) to the admin.
pub fn owner_of_name(name: &str) -> String {
    name.strip_prefix("localhost/")
        .and_then(|rest| rest.split_once('/'))
        .map(|(t, _)| t)
        .filter(|t| !t.is_empty() && *t != "runta")
        .unwrap_or(crate::auth::ADMIN_TENANT)
        .to_string()
}

/// Whether `tenant` (`None`: the admin) may see `img`: it, or the operator,
/// holds a name of it.
pub fn visible_to(img: &Image, tenant: Option<&str>) -> bool {
    match tenant {
        None => true,
        Some(t) => img.refs.iter().any(|r| r.seen_by(t)),
    }
}

fn image_of(rec: ImageRecord, refs: Vec<ImageRef>) -> Result<Image> {
    let mut names: Vec<String> = refs.iter().map(|r| r.name.clone()).collect();
    names.sort();
    names.dedup();
    let manifest: Manifest = serde_json::from_str(&rec.manifest)
        .map_err(|e| ImageError::Store(StoreError::Corrupt(format!("image manifest: {e}"))))?;
    let config: ImageConfig = serde_json::from_str(&rec.config)
        .map_err(|e| ImageError::Store(StoreError::Corrupt(format!("image config: {e}"))))?;
    let layers: Vec<Layer> = serde_json::from_str(&rec.layers)
        .map_err(|e| ImageError::Store(StoreError::Corrupt(format!("image layers: {e}"))))?;
    Ok(Image {
        digest: Digest::parse(&rec.digest)?,
        names,
        refs,
        manifest,
        config,
        layers,
        size: rec.size,
        created: rec.created_at,
        pulled_at: rec.pulled_at,
    })
}

/// Whether `path` exists in the stack of layer directories (topmost first),
/// following symlinks inside the image (`/bin -> usr/bin`) and honouring
/// whiteouts and opaque directories, as the merged root would show it.
pub fn exists_in_layers(dirs: &[PathBuf], path: &str) -> bool {
    let mut comps: Vec<String> = path
        .split('/')
        .filter(|c| !c.is_empty())
        .map(str::to_string)
        .collect();
    let mut hops = 0;
    let mut i = 0;
    'outer: while i < comps.len() {
        let prefix: PathBuf = comps[..=i].iter().collect();
        // The topmost layer that has the entry decides; an opaque directory
        // or a whiteout above hides the ones below.
        for d in dirs {
            // A parent made opaque in this layer hides lower layers.
            let here = d.join(&prefix);
            match std::fs::symlink_metadata(&here) {
                Ok(m) => {
                    use std::os::unix::fs::FileTypeExt;
                    if m.file_type().is_char_device() {
                        return false; // whiteout
                    }
                    if m.file_type().is_symlink() {
                        hops += 1;
                        if hops > 40 {
                            return false;
                        }
                        let Ok(t) = std::fs::read_link(&here) else {
                            return false;
                        };
                        let t = t.to_string_lossy().into_owned();
                        let mut next: Vec<String> = if t.starts_with('/') {
                            vec![]
                        } else {
                            comps[..i].to_vec()
                        };
                        for c in t.split('/').filter(|c| !c.is_empty() && *c != ".") {
                            if c == ".." {
                                next.pop();
                            } else {
                                next.push(c.to_string());
                            }
                        }
                        next.extend(comps[i + 1..].iter().cloned());
                        comps = next;
                        i = 0;
                        continue 'outer;
                    }
                    if i + 1 == comps.len() {
                        return true;
                    }
                    i += 1;
                    continue 'outer;
                }
                Err(_) => {
                    if opaque_above(d, &comps[..i]) {
                        return false;
                    }
                }
            }
        }
        return false;
    }
    true
}

fn opaque_above(layer: &Path, parents: &[String]) -> bool {
    let mut p = layer.to_path_buf();
    for c in parents {
        p.push(c);
        let mut buf = [0u8; 4];
        let Ok(cp) = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()) else {
            return false;
        };
        // SAFETY: NUL-terminated path and a buffer of the given length.
        let n = unsafe {
            libc::lgetxattr(
                cp.as_ptr(),
                c"trusted.overlay.opaque".as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        if n == 1 && buf[0] == b'y' {
            return true;
        }
    }
    false
}

/// Bytes of partial downloads a pull's own collection keeps for a later
/// pull to resume (an operator's gc keeps none; under a store cap, at
/// most the room it leaves).
const PARTIALS_KEPT: u64 = 1 << 30;

/// What a collection moved aside.
#[derive(Clone, Copy, PartialEq)]
enum Gone {
    Blob,
    Partial,
    Layer,
}

/// The partial downloads in `dir` to keep: the newest, within `room` bytes.
fn partials_within(dir: &Path, room: u64) -> std::collections::HashSet<String> {
    let mut all: Vec<(std::time::SystemTime, u64, String)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let m = e.metadata().ok()?;
            Some((
                m.modified().ok()?,
                m.len(),
                e.file_name().to_string_lossy().into_owned(),
            ))
        })
        .collect();
    all.sort_by_key(|e| std::cmp::Reverse(e.0));
    let mut used = 0u64;
    let mut keep = std::collections::HashSet::new();
    for (_, len, name) in all {
        used = used.saturating_add(len);
        if used > room {
            break;
        }
        keep.insert(name);
    }
    keep
}

/// What pulls and imports in flight hold, by digest hex: blob (and its
/// partial download) and layer, each with how many hold it.
#[derive(Default)]
struct InUse {
    blobs: HashMap<String, usize>,
    layers: HashMap<String, usize>,
}

/// What one pull or import holds (see [`Images::gc`]); let go when dropped.
struct Holds<'a> {
    images: &'a Images,
    blobs: Vec<String>,
    layers: Vec<String>,
}

impl Holds<'_> {
    fn blob(&mut self, d: &Digest) {
        self.hold(false, d);
    }

    fn layer(&mut self, d: &Digest) {
        self.hold(true, d);
    }

    fn hold(&mut self, layer: bool, d: &Digest) {
        let k = d.hex().to_string();
        let mut u = self.images.in_use.lock().unwrap_or_else(|e| e.into_inner());
        let (map, mine) = if layer {
            (&mut u.layers, &mut self.layers)
        } else {
            (&mut u.blobs, &mut self.blobs)
        };
        *map.entry(k.clone()).or_default() += 1;
        mine.push(k);
    }
}

impl Drop for Holds<'_> {
    fn drop(&mut self) {
        let mut u = self.images.in_use.lock().unwrap_or_else(|e| e.into_inner());
        let InUse { blobs, layers } = &mut *u;
        for (m, keys) in [(blobs, &self.blobs), (layers, &self.layers)] {
            for k in keys {
                if let Some(n) = m.get_mut(k) {
                    *n -= 1;
                    if *n == 0 {
                        m.remove(k);
                    }
                }
            }
        }
    }
}

/// A tenant's room while one of its pulls or imports adds layers.
struct QuotaLeft {
    cap: u64,
    left: u64,
    /// Unpacked bytes of layers, by diff_id, from the store's records.
    known: HashMap<String, u64>,
}

impl QuotaLeft {
    /// The unpacked size of the layer at `dir`: from a record, else counted.
    async fn size_of(&mut self, diff_id: &Digest, dir: &Path) -> u64 {
        if let Some(&n) = self.known.get(diff_id.as_str()) {
            return n;
        }
        let d = dir.to_path_buf();
        let n = tokio::task::spawn_blocking(move || du(&d))
            .await
            .unwrap_or(0);
        self.known.insert(diff_id.to_string(), n);
        n
    }

    fn charge(&mut self, tenant: &str, n: u64, diff_id: &Digest) -> Result<()> {
        if n > self.left {
            return Err(ImageError::TenantQuota(format!(
                "layer {} unpacks to {n} bytes; tenant {tenant} has {} left of its {} (--image-tenant-max-bytes, which counts what its images unpack to): delete some with DELETE /v1/images/{{ref}}",
                diff_id.short(),
                self.left,
                self.cap
            )));
        }
        self.left -= n;
        Ok(())
    }
}

/// Bytes under `p` as an unpack counts them as it writes
/// ([`unpack::on_disk`]: a block per entry, a regular file's content in
/// whole blocks, once per inode, so a file hard-linked a thousand times is
/// on disk once), walked with an explicit stack (no recursion, whatever the
/// depth): the store's counter goes down at garbage collection by what it
/// went up (docs/security.md, quota red-team pass).
fn du(p: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0u64;
    let mut seen = std::collections::HashSet::new();
    let mut todo = vec![p.to_path_buf()];
    let mut root = true;
    while let Some(p) = todo.pop() {
        let Ok(m) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        // As the unpack counts (unpack::on_disk): a block per entry (the
        // tree's own root aside), a regular file its content in blocks,
        // once per inode.
        if !root {
            total += if m.is_file() && (m.nlink() < 2 || seen.insert((m.dev(), m.ino()))) {
                unpack::on_disk(m.len())
            } else {
                unpack::BLOCK
            };
        }
        root = false;
        if m.is_dir() {
            if let Ok(rd) = std::fs::read_dir(&p) {
                todo.extend(rd.flatten().map(|e| e.path()));
            }
        }
    }
    total
}

/// Removes a tree whose directories may have been made read-only by the
/// image (`chmod 0555`); root passes anyway, but not across `chattr`-free
/// assumptions, so this stays plain `remove_dir_all`.
fn make_writable_and_remove(p: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(p) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        r => r,
    }
}

/// What the daemon applies to every command in a runtime of an image: the
/// image config's `Env` and `WorkingDir`, and the shell for one-string
/// commands (`None`: the image has none).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunInfo {
    pub image: String,
    pub env: Vec<(String, String)>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    pub shell: Option<Vec<String>>,
}

impl Images {
    /// [`RunInfo`] of a pinned image (`name@sha256:…`), cached: a pinned
    /// image never changes.
    pub fn run_info(&self, pinned: &str) -> Option<Arc<RunInfo>> {
        static CACHE: std::sync::OnceLock<Mutex<HashMap<String, Arc<RunInfo>>>> =
            std::sync::OnceLock::new();
        let cache = CACHE.get_or_init(Default::default);
        let key = format!("{}|{pinned}", self.dir.display());
        if let Some(r) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
            return Some(r.clone());
        }
        let img = self.image(pinned).ok()?;
        let cfg = &img.config.config;
        let info = Arc::new(RunInfo {
            image: pinned.split('@').next().unwrap_or(pinned).to_string(),
            env: cfg
                .env
                .iter()
                .flatten()
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            working_dir: cfg.working_dir.clone().filter(|w| w.starts_with('/')),
            user: cfg.user.clone().filter(|u| !u.is_empty()),
            shell: self.shell(&img),
        });
        let mut c = cache.lock().unwrap_or_else(|e| e.into_inner());
        if c.len() > 4096 {
            c.clear();
        }
        c.insert(key, info.clone());
        Some(info)
    }
}
