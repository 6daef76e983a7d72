//! The manager's side of images: pulls, listing, deletion, registry logins,
//! and resolving a create's `image` to a pinned image (pulled on first use).
//! The store itself is `src/images/`.

use std::sync::Arc;

use runta_api::{ImageGc, ImageLayer, ImagePull, RegistryLogin};
use runta_backend::images::BASE_IMAGE;

use super::{Error, Manager, Result};
use crate::auth::Principal;
use crate::images::{Image, ImageError, Images, PullSnapshot, RunInfo};

impl From<ImageError> for Error {
    fn from(e: ImageError) -> Self {
        use ImageError as E;
        match e {
            E::NotFound(m) => Error::NotFound(m),
            E::Invalid(m) => Error::invalid("image", m),
            E::Registry { .. } => Error::Unavailable(e.to_string()),
            E::Unauthorized(_) => Error::PermissionDenied(e.to_string()),
            E::DigestMismatch { .. } | E::TooLarge(_) | E::Hostile(_) | E::NoPlatform(_) => {
                Error::invalid("image", e.to_string())
            }
            E::InUse { .. } => Error::FailedPrecondition(e.to_string()),
            E::StoreFull(m) => Error::ResourceExhausted(m),
            E::TenantQuota(m) => Error::QuotaExceeded(m),
            E::TooManyPulls { tenant: true, .. } => Error::RateLimited(e.to_string()),
            E::TooManyPulls { tenant: false, .. } => Error::Unavailable(e.to_string()),
            E::Io(_) => Error::Internal(e.to_string()),
            E::Store(s) => s.into(),
        }
    }
}

fn pull_view(s: PullSnapshot) -> ImagePull {
    ImagePull {
        id: s.id,
        reference: s.reference,
        status: s.state.as_str().to_string(),
        layers_total: s.layers_total,
        layers_done: s.layers_done,
        bytes_total: s.bytes_total,
        bytes_done: s.bytes_done,
        digest: s.digest,
        error: s.error,
        started_at: s.started_at,
        finished_at: s.finished_at,
    }
}

/// Users a caller may see: the admin all, a tenant its own.
fn visible(p: &Principal, users: Vec<String>) -> Vec<String> {
    if p.admin {
        return users;
    }
    let own = format!("{}/", p.tenant);
    users
        .into_iter()
        .filter(|u| u.trim_start_matches("checkpoint ").starts_with(&own))
        .collect()
}

fn admin_only(p: &Principal, what: &str) -> Result<()> {
    if p.admin {
        Ok(())
    } else {
        Err(Error::PermissionDenied(format!(
            "{what} needs the admin token (the store's content is shared by every tenant)"
        )))
    }
}

/// The store as `p` sees it: `None` (everything) for the admin, else the
/// tenant's own names and the operator's (docs/images.md, Tenants).
fn scope(p: &Principal) -> Option<&str> {
    (!p.admin).then_some(p.tenant.as_str())
}

impl Manager {
    /// Gives the manager its image store (once, at start).
    pub fn set_images(&self, images: Arc<Images>) {
        let _ = self.images.set(images);
    }

    pub fn images(&self) -> Result<&Arc<Images>> {
        self.images
            .get()
            .ok_or_else(|| Error::Unavailable("this daemon has no image store".into()))
    }

    pub(super) fn image_view(
        &self,
        p: &Principal,
        img: &Image,
        detail: bool,
    ) -> Result<runta_api::Image> {
        let images = self.images()?;
        let users = visible(p, images.users(img)?);
        let cfg = &img.config.config;
        // A tenant sees its own names and the operator's, never another
        // tenant's (they may hold private registry paths or project names).
        let mut names: Vec<String> = img
            .refs
            .iter()
            .filter(|r| p.admin || r.seen_by(&p.tenant))
            .map(|r| r.name.clone())
            .collect();
        names.sort();
        names.dedup();
        Ok(runta_api::Image {
            name: names
                .first()
                .cloned()
                .unwrap_or_else(|| img.digest.to_string()),
            names,
            digest: Some(img.digest.to_string()),
            size_bytes: img.size,
            layers: img.layers.len() as u32,
            created_at: Some(img.created),
            pulled_at: Some(img.pulled_at),
            in_use_by: users,
            builtin: false,
            env: cfg.env.clone().unwrap_or_default(),
            working_dir: cfg.working_dir.clone().filter(|w| !w.is_empty()),
            user: cfg.user.clone().filter(|u| !u.is_empty()),
            shell: images.shell(img),
            layer_digests: if detail {
                img.layers
                    .iter()
                    .map(|l| ImageLayer {
                        digest: l.digest.clone(),
                        diff_id: l.diff_id.clone(),
                        size_bytes: l.size,
                        media_type: l.media_type.clone(),
                    })
                    .collect()
            } else {
                vec![]
            },
        })
    }

    fn base_view(&self, p: &Principal) -> Result<runta_api::Image> {
        let users = visible(p, self.store.image_users(&[BASE_IMAGE.to_string()], "-")?);
        Ok(runta_api::Image {
            name: BASE_IMAGE.into(),
            names: vec![BASE_IMAGE.into()],
            digest: None,
            size_bytes: 0,
            layers: 1,
            created_at: None,
            pulled_at: None,
            in_use_by: users,
            builtin: true,
            env: vec![],
            working_dir: None,
            user: None,
            shell: Some(vec!["/bin/sh".into(), "-c".into()]),
            layer_digests: vec![],
        })
    }

    /// `GET /v1/images`: `base` first, then the store's images by name.
    pub fn list_images(&self, p: &Principal) -> Result<Vec<runta_api::Image>> {
        let mut out = vec![self.base_view(p)?];
        if let Some(images) = self.images.get() {
            for img in images.list()? {
                if crate::images::visible_to(&img, scope(p)) {
                    out.push(self.image_view(p, &img, false)?);
                }
            }
        }
        Ok(out)
    }

    pub fn get_image(&self, p: &Principal, r: &str) -> Result<runta_api::Image> {
        if r == BASE_IMAGE {
            return self.base_view(p);
        }
        let img = self.images()?.image_as(scope(p), r)?;
        self.image_view(p, &img, true)
    }

    /// Starts a pull for the caller's tenant, with its credentials (or joins
    /// its running pull of the same reference).
    pub fn pull_image(&self, p: &Principal, reference: &str) -> Result<ImagePull> {
        if reference == BASE_IMAGE {
            return Err(Error::invalid(
                "reference",
                "base is built in (runtad --prepare-image), not pulled",
            ));
        }
        let pull = self
            .images()?
            .start_pull(&p.tenant, reference)
            .map_err(|e| match e {
                ImageError::Invalid(m) => Error::invalid("reference", m),
                e => e.into(),
            })?;
        Ok(pull_view(pull.snapshot()))
    }

    pub fn image_pull(&self, p: &Principal, id: &str) -> Result<ImagePull> {
        self.images()?
            .pull_status(scope(p), id)
            .map(pull_view)
            .ok_or_else(|| {
                Error::NotFound(format!(
                    "no pull {id:?} (pulls are kept while the daemon runs)"
                ))
            })
    }

    /// `DELETE /v1/images/{ref}`: a tenant removes its own names (another
    /// tenant's image is not found), the admin any; 409 naming who uses it.
    pub async fn delete_image(&self, p: &Principal, r: &str) -> Result<runta_api::Image> {
        if r == BASE_IMAGE {
            return Err(Error::FailedPrecondition(
                "base is the built-in image; it cannot be deleted".into(),
            ));
        }
        let images = self.images()?;
        let img = images.image_as(scope(p), r)?;
        let view = self.image_view(p, &img, false)?;
        images.delete_as(scope(p), r).await?;
        Ok(view)
    }

    pub async fn gc_images(&self, p: &Principal) -> Result<ImageGc> {
        admin_only(p, "image garbage collection")?;
        let r = self.images()?.gc().await?;
        Ok(ImageGc {
            images: r.images,
            blobs: r.blobs,
            layers: r.layers,
            bytes_freed: r.bytes,
        })
    }

    /// Checks the credentials against the registry, then stores them for
    /// the caller's tenant only: its pulls use them, no other tenant's.
    pub async fn registry_login(
        &self,
        p: &Principal,
        req: runta_api::RegistryLoginRequest,
    ) -> Result<RegistryLogin> {
        let registry = crate::images::registry_login_key(req.registry.trim());
        if registry.is_empty()
            || registry.len() > 255
            || !registry
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
        {
            return Err(Error::invalid("registry", "must be host or host:port"));
        }
        if req.username.is_empty() || req.username.len() > 255 || req.username.contains(':') {
            return Err(Error::invalid(
                "username",
                "must be 1 to 255 characters without ':'",
            ));
        }
        if req.password.is_empty() || req.password.len() > 4096 {
            return Err(Error::invalid("password", "must be 1 to 4096 characters"));
        }
        self.images()?
            .check_login(&registry, &req.username, &req.password)
            .await?;
        let l = crate::store::RegistryLogin {
            tenant: p.tenant.clone(),
            registry: registry.clone(),
            username: req.username,
            secret: req.password,
            created_at: crate::store::now(),
        };
        self.store.put_registry_login(&l)?;
        Ok(RegistryLogin {
            registry: l.registry,
            username: l.username,
            created_at: l.created_at,
        })
    }

    /// The caller's tenant's logins (the admin's are the admin tenant's).
    pub fn registry_logins(&self, p: &Principal) -> Result<Vec<RegistryLogin>> {
        Ok(self
            .store
            .list_registry_logins(&p.tenant)?
            .into_iter()
            .map(|l| RegistryLogin {
                registry: l.registry,
                username: l.username,
                created_at: l.created_at,
            })
            .collect())
    }

    pub fn registry_logout(&self, p: &Principal, registry: &str) -> Result<()> {
        if self
            .store
            .delete_registry_login(&p.tenant, &crate::images::registry_login_key(registry))?
        {
            Ok(())
        } else {
            Err(Error::NotFound(format!(
                "no login for registry {registry:?}"
            )))
        }
    }

    /// The `image` of a create, pinned: `base` (and other built-in folder
    /// images) as they are; anything else the store's image, pulled first if
    /// missing (waiting at most the pull timeout). Returns `name@digest` and
    /// what was pulled, if anything.
    pub(super) async fn resolve_image(
        &self,
        tenant: &str,
        image: &str,
    ) -> Result<(String, Option<PullSnapshot>)> {
        let Some(images) = self.images.get() else {
            self.backend.ensure_image(image).await?;
            return Ok((image.to_string(), None));
        };
        if image == BASE_IMAGE {
            self.backend.ensure_image(image).await?;
            return Ok((image.to_string(), None));
        }
        // A folder image dropped into the images dir by hand (one word).
        let plain = !image.contains(['/', '@', ':']);
        let scope = (tenant != crate::auth::ADMIN_TENANT).then_some(tenant);
        if plain
            && images.image_as(scope, image).is_err()
            && self.backend.ensure_image(image).await.is_ok()
        {
            return Ok((image.to_string(), None));
        }
        let (img, pulled) = images
            .ensure_as(tenant, image, images.limits().pull_wait)
            .await?;
        Ok((img.pinned(image), pulled))
    }

    /// The store's image a runtime record names (`name@digest`), if it is
    /// one (`None` for `base`).
    pub(super) fn runtime_image(&self, image: &str) -> Option<Image> {
        if image == BASE_IMAGE || !image.contains("@sha256:") {
            return None;
        }
        self.images.get()?.image(image).ok()
    }
}

impl Manager {
    /// The image settings commands in runtime `r` get (`None` for `base`).
    pub(super) fn run_info(&self, r: &crate::store::RuntimeRecord) -> Option<Arc<RunInfo>> {
        if r.image == BASE_IMAGE || !r.image.contains("@sha256:") {
            return None;
        }
        self.images.get()?.run_info(&r.image)
    }

    /// A one-string command's argv under the image's shell; a clear error
    /// when the image has none.
    pub(super) fn shell_argv(
        argv: Vec<String>,
        has_args: bool,
        run: Option<&RunInfo>,
    ) -> Result<Vec<String>> {
        let Some(run) = run.filter(|_| !has_args) else {
            return Ok(argv);
        };
        match &run.shell {
            Some(sh) if sh == &["/bin/sh", "-c"] => Ok(argv),
            Some(sh) => Ok(sh.iter().cloned().chain(argv.into_iter().skip(2)).collect()),
            None => Err(Error::invalid(
                "command",
                format!(
                    "image {} has no /bin/sh: give the program in `command` and its arguments in `args`",
                    run.image
                ),
            )),
        }
    }
}
