//! Commit: a runtime's files (its writable layer, and the checkpoint layers a
//! fork stacks under it) become new layers over the runtime's image, written
//! as an OCI image layout that the store imports like any other
//! (docs/images.md, Commit).
//!
//! What Runta itself put in the writable layer is left out, so an image made
//! from a runtime holds only what the runtime's programs did: `/.runta` (the
//! agent's mount point and bookkeeping), `/etc/hostname` (always the
//! runtime's name), and `/etc/hosts` / `/etc/resolv.conf` while they still
//! carry the agent's marker line (a user who took one over keeps it).

use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use nix::fcntl::{openat, OFlag};
use nix::sys::stat::{FileStat, Mode, SFlag};
use serde_json::{json, Value};

use super::digest::Digest;
use super::layer_tar::{write_layer, LayerBlob, LayerError};
use super::oci;
use super::{Image, ImageError, Images};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    #[error(transparent)]
    Layer(#[from] LayerError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("the image the runtime runs is unreadable: {0}")]
    BadBase(String),
}

/// The image a commit starts from, as the store has it.
pub struct Base<'a> {
    pub manifest: &'a [u8],
    pub config: &'a [u8],
    /// Where the store keeps a blob.
    pub blob_path: &'a dyn Fn(&Digest) -> PathBuf,
}

/// What a commit wrote into the layout.
#[derive(Debug)]
pub struct Committed {
    pub manifest_digest: Digest,
    pub layers: Vec<LayerBlob>,
}

/// True for the entries Runta itself writes into a runtime's layer.
pub fn runta_owned(path: &[u8], st: &FileStat, parent: &OwnedFd) -> bool {
    if path == runta_agent::RUNTA_DIR.as_bytes() || path == b"etc/hostname" {
        return true;
    }
    if let Some(name) = path.strip_prefix(b"etc/") {
        if name.ends_with(b".runta-new") && !name.contains(&b'/') {
            return true;
        }
        if name == b"hosts" || name == b"resolv.conf" {
            let regular = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFREG;
            return regular && starts_with_marker(parent, name);
        }
    }
    false
}

fn starts_with_marker(parent: &OwnedFd, name: &[u8]) -> bool {
    let Ok(name) = std::ffi::CString::new(name) else {
        return false;
    };
    let Ok(fd) = openat(
        parent,
        name.as_c_str(),
        OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) else {
        return false;
    };
    let want = runta_agent::MANAGED_ETC_MARKER.len() + 1;
    let mut head = Vec::with_capacity(want);
    let _ = std::fs::File::from(fd)
        .take(want as u64)
        .read_to_end(&mut head);
    head.strip_suffix(b"\n").unwrap_or(&head) == runta_agent::MANAGED_ETC_MARKER.as_bytes()
}

/// Writes an OCI image layout at `out` (which must not exist): the base
/// image's blobs (hard-linked from the store, copied where that fails), one
/// new layer per directory of `dirs` (bottom first, overlayfs upper form),
/// and a new config and manifest. With no `base`, the image has only the new
/// layers (the first of `dirs` is then a plain root filesystem).
pub fn write_layout(
    base: Option<&Base<'_>>,
    dirs: &[PathBuf],
    max_data: u64,
    created_by: &str,
    out: &Path,
) -> Result<Committed, CommitError> {
    let blobs = out.join("blobs").join("sha256");
    std::fs::create_dir_all(&blobs)?;
    std::fs::write(out.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    let (mut manifest, mut config) = match base {
        Some(b) => {
            let m: Value = serde_json::from_slice(b.manifest)
                .map_err(|e| CommitError::BadBase(format!("manifest: {e}")))?;
            let c: Value = serde_json::from_slice(b.config)
                .map_err(|e| CommitError::BadBase(format!("config: {e}")))?;
            (m, c)
        }
        None => (
            json!({"schemaVersion": 2, "layers": []}),
            json!({"architecture": oci::PLATFORM_ARCH, "os": oci::PLATFORM_OS,
                   "config": {"Env": [DEFAULT_PATH]},
                   "rootfs": {"type": "layers", "diff_ids": []}}),
        ),
    };
    // Base layers: into the layout, and as OCI types (a Docker v2 base
    // becomes an OCI manifest; the digests stay the same).
    let mut layer_descs: Vec<Value> = Vec::new();
    if let Some(b) = base {
        let parsed: oci::Manifest = serde_json::from_value(manifest.clone())
            .map_err(|e| CommitError::BadBase(format!("manifest: {e}")))?;
        for l in &parsed.layers {
            let d = Digest::parse(&l.digest).map_err(|e| CommitError::BadBase(e.to_string()))?;
            link_or_copy(&(b.blob_path)(&d), &blobs.join(d.hex()))?;
            let mt = match l.media_type.as_str() {
                oci::DOCKER_LAYER_GZIP => oci::OCI_LAYER_GZIP,
                other => other,
            };
            layer_descs.push(json!({"mediaType": mt, "digest": l.digest, "size": l.size}));
        }
    }
    let mut new_layers = Vec::new();
    for (i, dir) in dirs.iter().enumerate() {
        let tmp = blobs.join(format!(".layer-{i}.tmp"));
        let blob = write_layer(dir, &tmp, max_data, &runta_owned)?;
        let path = blobs.join(blob.digest.hex());
        std::fs::rename(&tmp, &path)?;
        layer_descs.push(json!({"mediaType": oci::OCI_LAYER_GZIP,
                                "digest": blob.digest.as_str(), "size": blob.size}));
        new_layers.push(LayerBlob { path, ..blob });
    }
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    {
        let c = config
            .as_object_mut()
            .ok_or_else(|| CommitError::BadBase("config".into()))?;
        c.insert("created".into(), json!(now));
        let rootfs = c
            .entry("rootfs")
            .or_insert_with(|| json!({"type": "layers", "diff_ids": []}));
        let ids = rootfs
            .as_object_mut()
            .and_then(|r| {
                r.entry("diff_ids")
                    .or_insert_with(|| json!([]))
                    .as_array_mut()
            })
            .ok_or_else(|| CommitError::BadBase("config: rootfs.diff_ids".into()))?;
        for l in &new_layers {
            ids.push(json!(l.diff_id.as_str()));
        }
        let history = c.entry("history").or_insert_with(|| json!([]));
        if let Some(h) = history.as_array_mut() {
            for _ in &new_layers {
                h.push(json!({"created": now, "created_by": created_by}));
            }
        }
    }
    let config_bytes =
        serde_json::to_vec(&config).map_err(|e| CommitError::BadBase(e.to_string()))?;
    let config_digest = Digest::of(&config_bytes);
    std::fs::write(blobs.join(config_digest.hex()), &config_bytes)?;
    {
        let m = manifest
            .as_object_mut()
            .ok_or_else(|| CommitError::BadBase("manifest".into()))?;
        m.insert("schemaVersion".into(), json!(2));
        m.insert("mediaType".into(), json!(oci::OCI_MANIFEST));
        m.insert(
            "config".into(),
            json!({"mediaType": oci::OCI_CONFIG, "digest": config_digest.as_str(),
                   "size": config_bytes.len()}),
        );
        m.insert("layers".into(), Value::Array(layer_descs));
    }
    let manifest_bytes =
        serde_json::to_vec(&manifest).map_err(|e| CommitError::BadBase(e.to_string()))?;
    let manifest_digest = Digest::of(&manifest_bytes);
    std::fs::write(blobs.join(manifest_digest.hex()), &manifest_bytes)?;
    let index = json!({"schemaVersion": 2, "mediaType": oci::OCI_INDEX, "manifests": [{
        "mediaType": oci::OCI_MANIFEST, "digest": manifest_digest.as_str(),
        "size": manifest_bytes.len(),
        "platform": {"architecture": oci::PLATFORM_ARCH, "os": oci::PLATFORM_OS}}]});
    std::fs::write(
        out.join("index.json"),
        serde_json::to_vec(&index).unwrap_or_default(),
    )?;
    Ok(Committed {
        manifest_digest,
        layers: new_layers,
    })
}

/// `PATH` of an image made from a plain root filesystem (what `base`
/// runtimes get).
const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The name the built-in `base` is imported under, the first time a runtime
/// of `base` is committed or a Dockerfile builds `FROM base`.
pub const BASE_IMPORT_NAME: &str = "localhost/runta/base:latest";

impl Images {
    /// Writes the layout of a commit of `dirs` (bottom first) over `base`
    /// into a new folder of the store and returns it (blocking work: call
    /// from `spawn_blocking`). The caller keeps the source still meanwhile.
    pub fn write_commit(
        &self,
        base: Option<&Image>,
        dirs: &[PathBuf],
        max_data: u64,
        created_by: &str,
    ) -> Result<PathBuf, CommitError> {
        let out = self
            .dir()
            .join("commits")
            .join(uuid::Uuid::new_v4().simple().to_string());
        std::fs::create_dir_all(out.parent().unwrap_or(&out))?;
        let (manifest, config) = match base {
            Some(img) => {
                let cfg = Digest::parse(&img.manifest.config.digest)
                    .map_err(|e| CommitError::BadBase(e.to_string()))?;
                (
                    std::fs::read(self.blob_path(&img.digest))?,
                    std::fs::read(self.blob_path(&cfg))?,
                )
            }
            None => (Vec::new(), Vec::new()),
        };
        let blob_path = |d: &Digest| self.blob_path(d);
        let b = Base {
            manifest: &manifest,
            config: &config,
            blob_path: &blob_path,
        };
        match write_layout(base.map(|_| &b), dirs, max_data, created_by, &out) {
            Ok(_) => Ok(out),
            Err(e) => {
                let _ = std::fs::remove_dir_all(&out);
                Err(e)
            }
        }
    }

    /// Writes `img` as it is (same manifest, so same digest) as an OCI
    /// layout at `out`, its blobs hard-linked from the store.
    pub fn export_layout(&self, img: &Image, out: &Path) -> Result<(), CommitError> {
        let blobs = out.join("blobs").join("sha256");
        std::fs::create_dir_all(&blobs)?;
        std::fs::write(out.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        let mut digests = vec![img.digest.clone()];
        for d in
            std::iter::once(&img.manifest.config.digest).chain(img.layers.iter().map(|l| &l.digest))
        {
            digests.push(Digest::parse(d).map_err(|e| CommitError::BadBase(e.to_string()))?);
        }
        for d in &digests {
            link_or_copy(&self.blob_path(d), &blobs.join(d.hex()))?;
        }
        let size = std::fs::metadata(self.blob_path(&img.digest))?.len();
        let mt = img
            .manifest
            .media_type
            .clone()
            .unwrap_or_else(|| oci::OCI_MANIFEST.to_string());
        let index = json!({"schemaVersion": 2, "manifests": [{
            "mediaType": mt, "digest": img.digest.as_str(), "size": size}]});
        std::fs::write(
            out.join("index.json"),
            serde_json::to_vec(&index).unwrap_or_default(),
        )?;
        Ok(())
    }

    /// Imports a layout [`Images::write_commit`] wrote under `tenant`'s
    /// `name`, then removes the folder.
    pub async fn import_commit(
        &self,
        tenant: &str,
        layout: &Path,
        name: &str,
    ) -> Result<Image, ImageError> {
        let r = self.import_oci_layout_as(tenant, layout, name).await;
        let l = layout.to_path_buf();
        let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(l)).await;
        r
    }

    /// The built-in `base` as an image of the store ([`BASE_IMPORT_NAME`]):
    /// its root filesystem tarred into one layer, once.
    pub async fn ensure_base(self: &Arc<Self>, rootfs: &Path) -> Result<Image, ImageError> {
        let lock = self.lock_for(BASE_IMPORT_NAME);
        let _g = lock.lock().await;
        if let Ok(img) = self.image(BASE_IMPORT_NAME) {
            return Ok(img);
        }
        let (me, root) = (self.clone(), rootfs.to_path_buf());
        let max = self.limits().max_image_bytes;
        let layout = tokio::task::spawn_blocking(move || {
            me.write_commit(None, &[root], max, "runta base image (debootstrap)")
        })
        .await
        .map_err(|e| ImageError::Io(std::io::Error::other(e.to_string())))?
        .map_err(|e| ImageError::Invalid(format!("import the base image: {e}")))?;
        self.import_commit(crate::auth::ADMIN_TENANT, &layout, BASE_IMPORT_NAME)
            .await
    }
}

fn link_or_copy(from: &Path, to: &Path) -> std::io::Result<()> {
    if to.exists() {
        return Ok(());
    }
    match std::fs::hard_link(from, to) {
        Ok(()) => Ok(()),
        Err(_) => std::fs::copy(from, to).map(drop),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp() -> PathBuf {
        std::env::temp_dir().join(format!("commit-{}", uuid::Uuid::new_v4().simple()))
    }

    #[test]
    fn runta_files_are_left_out_and_user_edits_kept() {
        let t = tmp();
        let up = t.join("upper");
        std::fs::create_dir_all(up.join(".runta")).unwrap();
        std::fs::create_dir_all(up.join("etc")).unwrap();
        std::fs::write(up.join(".runta/etc-managed"), b"/etc/hosts\n").unwrap();
        std::fs::write(up.join("etc/hostname"), b"rt\n").unwrap();
        let managed = format!("{}\nnameserver 1.1.1.1\n", runta_agent::MANAGED_ETC_MARKER);
        std::fs::write(up.join("etc/resolv.conf"), &managed).unwrap();
        std::fs::write(up.join("etc/hosts"), b"10.0.0.1 mine\n").unwrap();
        std::fs::write(up.join("etc/app.conf"), b"x=1\n").unwrap();
        let out = t.join("layout");
        let c = write_layout(None, std::slice::from_ref(&up), 1 << 20, "test", &out).unwrap();
        let f = std::fs::File::open(&c.layers[0].path).unwrap();
        let mut a = tar::Archive::new(flate2::read::GzDecoder::new(f));
        let mut names: Vec<String> = a
            .entries()
            .unwrap()
            .map(|e| String::from_utf8_lossy(&e.unwrap().path_bytes()).into_owned())
            .collect();
        names.sort();
        assert_eq!(names, vec!["etc/", "etc/app.conf", "etc/hosts"]);
        let index: Value =
            serde_json::from_slice(&std::fs::read(out.join("index.json")).unwrap()).unwrap();
        let md = index["manifests"][0]["digest"].as_str().unwrap();
        let m: Value = serde_json::from_slice(
            &std::fs::read(out.join("blobs/sha256").join(&md[7..])).unwrap(),
        )
        .unwrap();
        let cd = m["config"]["digest"].as_str().unwrap();
        let cfg: Value = serde_json::from_slice(
            &std::fs::read(out.join("blobs/sha256").join(&cd[7..])).unwrap(),
        )
        .unwrap();
        assert_eq!(
            cfg["rootfs"]["diff_ids"][0].as_str().unwrap(),
            c.layers[0].diff_id.as_str()
        );
        assert_eq!(m["layers"].as_array().unwrap().len(), 1);
        std::fs::remove_dir_all(&t).unwrap();
    }
}
