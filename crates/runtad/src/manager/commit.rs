//! Making images from runtimes: commit (a runtime's or a checkpoint's files
//! as new layers over its image) and push (docs/images.md).

use std::path::PathBuf;
use std::sync::Arc;

use runta_api::RuntimeStatus;
use runta_backend::images::BASE_IMAGE;

use super::{Error, Manager, Result};
use crate::auth::Principal;
use crate::images::{Image, Images};

impl Manager {
    /// The name an image made by `p` is stored under: the admin's as given;
    /// a tenant's under `localhost/<tenant>/`, so no tenant can put an image
    /// under a name another tenant's runtimes would resolve (`python:3.12`).
    pub(super) fn own_image_name(&self, p: &Principal, name: &str) -> Result<String> {
        let name = name.trim();
        if name.is_empty() || name.len() > 200 {
            return Err(Error::invalid("name", "must be 1 to 200 characters"));
        }
        let full = if p.admin {
            name.to_string()
        } else {
            let prefix = format!("localhost/{}/", p.tenant);
            if name.starts_with(&prefix) {
                name.to_string()
            } else {
                format!("{prefix}{name}")
            }
        };
        crate::images::check_name(&full).map_err(|e| Error::invalid("name", e.to_string()))?;
        Ok(full)
    }

    /// The store image a runtime of `image` stands on (`base` imported once).
    /// A runtime's image is pinned by digest and was the tenant's to use at
    /// create, so it is looked up as the admin sees the store.
    async fn base_image(&self, images: &Arc<Images>, image: &str) -> Result<Image> {
        if image == BASE_IMAGE || !image.contains(['/', ':', '@']) {
            let rootfs = self.backend.image_rootfs(image).ok_or_else(|| {
                Error::FailedPrecondition(format!("image {image:?} has no files on this host"))
            })?;
            if image == BASE_IMAGE {
                return Ok(images.ensure_base(&rootfs).await?);
            }
        }
        Ok(images.image(image)?)
    }

    /// `POST /v1/runtimes/{id}/commit`: the runtime's writable layer (and
    /// the checkpoint layers it stands on) as a new image named `name`. A
    /// running runtime is frozen while its files are read and thawed after;
    /// a paused or shut-down one stays as it is.
    pub async fn commit_runtime(
        &self,
        p: &Principal,
        runtime: &str,
        name: &str,
    ) -> Result<runta_api::Image> {
        let images = self.images()?.clone();
        let name = self.own_image_name(p, name)?;
        let (_g, r) = self.locked(&p.tenant, runtime).await?;
        let frozen_by_us = match r.status {
            RuntimeStatus::Running => true,
            RuntimeStatus::Paused | RuntimeStatus::Suspended | RuntimeStatus::Shutdown => false,
            s => {
                return Err(Error::FailedPrecondition(format!(
                    "cannot commit runtime {:?}: it is {s}",
                    r.name
                )))
            }
        };
        let base = self.base_image(&images, &r.image).await?;
        let mut dirs = self.checkpoint_dirs(&r.layers)?;
        let upper = self.backend.writable_layer(r.id).await?;
        dirs.push(upper);
        let max_data = r
            .disk_gib
            .map(|g| g << 30)
            .unwrap_or(images.limits().max_image_bytes);
        if frozen_by_us {
            self.backend.pause(r.id).await?;
        }
        let created_by = format!("runta commit {}", r.name);
        let (im, b) = (images.clone(), base.clone());
        let written = tokio::task::spawn_blocking(move || {
            im.write_commit(Some(&b), &dirs, max_data, &created_by)
        })
        .await;
        if frozen_by_us {
            if let Err(e) = self.backend.resume(r.id).await {
                tracing::warn!(id = %r.id, "thaw after commit: {e}");
            }
        }
        if r.status == RuntimeStatus::Shutdown {
            let _ = self.backend.release_writable_layer(r.id).await;
        }
        let layout = written
            .map_err(|e| Error::Internal(e.to_string()))?
            .map_err(commit_error)?;
        let img = images.import_commit(&p.tenant, &layout, &name).await?;
        self.event(
            &r,
            runta_api::EventKind::Committed,
            Some(&format!("image {name:?} ({})", img.digest)),
        );
        // `name` first: the same content under two names is one image.
        let mut view = self.image_view(p, &img, true)?;
        view.name = name;
        Ok(view)
    }

    /// `POST /v1/checkpoints/{id}/commit`: a checkpoint's layers over its
    /// image, as a new image.
    pub async fn commit_checkpoint(
        &self,
        p: &Principal,
        checkpoint: &str,
        name: &str,
    ) -> Result<runta_api::Image> {
        let images = self.images()?.clone();
        let name = self.own_image_name(p, name)?;
        let c = self.find_checkpoint(&p.tenant, checkpoint)?;
        let base = self.base_image(&images, &c.image).await?;
        let dirs = self.checkpoint_dirs(&c.layers)?;
        let created_by = format!("runta commit checkpoint {}", c.name);
        let max = images.limits().max_image_bytes;
        let (im, b) = (images.clone(), base.clone());
        let layout =
            tokio::task::spawn_blocking(move || im.write_commit(Some(&b), &dirs, max, &created_by))
                .await
                .map_err(|e| Error::Internal(e.to_string()))?
                .map_err(commit_error)?;
        let img = images.import_commit(&p.tenant, &layout, &name).await?;
        // `name` first: the same content under two names is one image.
        let mut view = self.image_view(p, &img, true)?;
        view.name = name;
        Ok(view)
    }

    /// Checkpoint layer folders, bottom first (records keep them topmost first).
    fn checkpoint_dirs(&self, layers: &[String]) -> Result<Vec<PathBuf>> {
        layers
            .iter()
            .rev()
            .map(|c| {
                self.backend
                    .checkpoint_layer_dir(c)
                    .ok_or_else(|| Error::Internal(format!("checkpoint layer {c} is missing")))
            })
            .collect()
    }

    /// `POST /v1/images/{ref}/push` (admin: it uses the daemon's logins).
    pub async fn push_image(
        &self,
        p: &Principal,
        image: &str,
        target: &str,
    ) -> Result<runta_api::ImagePush> {
        if !p.admin {
            return Err(Error::PermissionDenied(
                "pushing an image needs the admin token (it uses the daemon's registry logins)"
                    .into(),
            ));
        }
        let images = self.images()?.clone();
        let source = if image == BASE_IMAGE {
            let rootfs = self.backend.image_rootfs(image).ok_or_else(|| {
                Error::FailedPrecondition("the base image is not prepared".into())
            })?;
            images.ensure_base(&rootfs).await?;
            crate::images::commit::BASE_IMPORT_NAME.to_string()
        } else {
            image.to_string()
        };
        let r = images.push(&source, target).await.map_err(|e| match e {
            crate::images::ImageError::Invalid(m) => Error::invalid("reference", m),
            e => e.into(),
        })?;
        Ok(runta_api::ImagePush {
            reference: r.reference,
            digest: r.digest,
            uploaded: r.uploaded,
            skipped: r.skipped,
            bytes_uploaded: r.bytes,
        })
    }
}

fn commit_error(e: crate::images::commit::CommitError) -> Error {
    use crate::images::commit::CommitError as C;
    use crate::images::layer_tar::LayerError as L;
    match e {
        C::Layer(L::TooLarge { .. }) => Error::ResourceExhausted(e.to_string()),
        C::Layer(L::TooDeep { .. }) => Error::invalid("runtime", e.to_string()),
        e => Error::Internal(format!("commit: {e}")),
    }
}
