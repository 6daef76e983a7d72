//! Dockerfile builds (docs/images.md, Build): the manager's side. The
//! builder itself is `images/build.rs`; here the context is checked, the
//! `FROM` images are provided from the store, and the result is recorded.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use runta_backend::images::BASE_IMAGE;
use tokio::sync::mpsc;

use super::{Error, Manager, Result};
use crate::auth::Principal;
use crate::images::build::{self, BuildConfig, BuildSpec, Buildah};
use crate::images::Image;

/// Builds running at once (each is a buildah process and its containers).
const MAX_BUILDS: usize = 2;

fn permits() -> &'static tokio::sync::Semaphore {
    static S: std::sync::OnceLock<tokio::sync::Semaphore> = std::sync::OnceLock::new();
    S.get_or_init(|| tokio::sync::Semaphore::new(MAX_BUILDS))
}

/// Largest build context accepted (the API refuses larger uploads with 413).
pub const MAX_BUILD_CONTEXT: u64 = 2 << 30;

impl Manager {
    fn builder(&self) -> Result<Buildah> {
        let images = self.images()?;
        // runc: crun refuses a cgroup v1/v2 hybrid host when buildah runs it
        // (it cannot hide the empty cgroup2 mount as the backend does).
        let runtime = if Path::new("/usr/sbin/runc").exists() || Path::new("/usr/bin/runc").exists()
        {
            "runc"
        } else {
            "crun"
        };
        Ok(Buildah::new(BuildConfig {
            dir: images.dir().join("builder"),
            memory_mib: self.cfg.default_memory_mib.max(2048),
            max_context_bytes: MAX_BUILD_CONTEXT,
            runtime: runtime.into(),
        }))
    }

    /// Checks a build's name and Dockerfile path before the context uploads.
    pub fn check_build(&self, p: &Principal, name: &str, spec: &BuildSpec) -> Result<()> {
        self.images()?;
        self.own_image_name(p, name)?;
        check_rel(&spec.dockerfile).map(drop)
    }

    /// Builds the Dockerfile of the context tar at `context_tar` and stores
    /// the result as `name`; every log line goes to `log`.
    pub async fn build_image(
        &self,
        p: &Principal,
        name: &str,
        spec: BuildSpec,
        context_tar: &Path,
        log: mpsc::Sender<String>,
    ) -> Result<runta_api::Image> {
        let name = self.own_image_name(p, name)?;
        let df_rel = check_rel(&spec.dockerfile)?;
        let images = self.images()?.clone();
        let buildah = self.builder()?;
        let permit = permits()
            .acquire()
            .await
            .map_err(|_| Error::Unavailable("the builder is shutting down".into()))?;
        let work = images
            .dir()
            .join("builds")
            .join(uuid::Uuid::new_v4().simple().to_string());
        let r = self
            .build_in(p, &name, &spec, &df_rel, context_tar, &work, &buildah, &log)
            .await;
        let w = work.clone();
        let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(w)).await;
        // buildah leaves its step containers' overlays mounted: the last
        // build to finish (it then holds every permit, so none starts
        // meanwhile) unmounts them, success or failure.
        drop(permit);
        if let Ok(all) = permits().try_acquire_many(MAX_BUILDS as u32) {
            buildah.release().await;
            drop(all);
        }
        r
    }

    #[allow(clippy::too_many_arguments)]
    async fn build_in(
        &self,
        p: &Principal,
        name: &str,
        spec: &BuildSpec,
        df_rel: &Path,
        context_tar: &Path,
        work: &Path,
        buildah: &Buildah,
        log: &mpsc::Sender<String>,
    ) -> Result<runta_api::Image> {
        let images = self.images()?.clone();
        let ctx = work.join("context");
        std::fs::create_dir_all(&ctx).map_err(|e| Error::Internal(e.to_string()))?;
        let (tar, c2, max) = (
            context_tar.to_path_buf(),
            ctx.clone(),
            buildah.config().max_context_bytes,
        );
        tokio::task::spawn_blocking(move || build::unpack_context(&tar, &c2, max))
            .await
            .map_err(|e| Error::Internal(e.to_string()))?
            .map_err(|e| match e {
                crate::images::ImageError::TooLarge(m) => Error::ResourceExhausted(m),
                crate::images::ImageError::Invalid(m) => Error::invalid("context", m),
                e => e.into(),
            })?;
        let df_path = ctx.join(df_rel);
        // The Dockerfile is read by the daemon: it must be a plain file of
        // the context, not a link to anything of the host's.
        let inside = df_path
            .canonicalize()
            .ok()
            .zip(ctx.canonicalize().ok())
            .is_some_and(|(f, c)| f.starts_with(c));
        let meta = std::fs::symlink_metadata(&df_path).ok();
        if !inside
            || !meta.as_ref().is_some_and(|m| m.is_file())
            || meta.is_some_and(|m| m.len() > 1 << 20)
        {
            return Err(Error::invalid(
                "dockerfile",
                format!(
                    "{} is not a regular file of the context (at most 1 MiB)",
                    df_rel.display()
                ),
            ));
        }
        let text = std::fs::read_to_string(&df_path)
            .map_err(|e| Error::invalid("dockerfile", e.to_string()))?;
        let df = build::parse_dockerfile(&text, &spec.build_args)
            .map_err(|e| Error::invalid("dockerfile", e.to_string()))?;
        let mut local: HashMap<String, String> = HashMap::new();
        for f in df.froms.iter().filter(|f| f.is_image()) {
            if local.contains_key(&f.image) {
                continue;
            }
            let img = self.resolve_from(&f.image, log).await?;
            let lname = build::local_name(&img.digest);
            if !buildah.has(&lname).await {
                let dir = work.join(format!("from-{}", img.digest.short()));
                let (im, i2, d2) = (images.clone(), img.clone(), dir.clone());
                tokio::task::spawn_blocking(move || im.export_layout(&i2, &d2))
                    .await
                    .map_err(|e| Error::Internal(e.to_string()))?
                    .map_err(|e| Error::Internal(format!("export {}: {e}", f.image)))?;
                buildah.load(&dir, &lname).await.map_err(build_error)?;
            }
            let _ = log
                .send(format!("runta: FROM {} is {}", f.image, img.digest))
                .await;
            local.insert(f.image.clone(), lname);
        }
        let rewritten = work.join("Dockerfile.runta");
        std::fs::write(&rewritten, df.rewritten(&local))
            .map_err(|e| Error::Internal(e.to_string()))?;
        let out = work.join("out");
        let tag = format!("localhost/runta-build:{}", uuid::Uuid::new_v4().simple());
        buildah
            .build(&ctx, &rewritten, spec, &tag, &out, log)
            .await
            .map_err(build_error)?;
        let img = images.import_oci_layout(&out, name).await?;
        let _ = log
            .send(format!("runta: stored {name} as {}", img.digest))
            .await;
        tracing::info!(tenant = %p.tenant, name, digest = %img.digest, "image built");
        let mut view = self.image_view(p, &img, true)?;
        view.name = name.to_string();
        Ok(view)
    }

    /// The store's image a `FROM` names: `base` imported once, anything else
    /// pulled on first use.
    async fn resolve_from(&self, r: &str, log: &mpsc::Sender<String>) -> Result<Image> {
        let images = self.images()?.clone();
        if r == BASE_IMAGE {
            let rootfs = self.backend.image_rootfs(r).ok_or_else(|| {
                Error::FailedPrecondition("the base image is not prepared".into())
            })?;
            return Ok(images.ensure_base(&rootfs).await?);
        }
        if images.image(r).is_err() {
            let _ = log.send(format!("runta: pulling {r}")).await;
        }
        let (img, _) = images
            .ensure(r, images.limits().pull_wait)
            .await
            .map_err(|e| Error::invalid("dockerfile", format!("FROM {r}: {e}")))?;
        Ok(img)
    }
}

fn check_rel(p: &str) -> Result<PathBuf> {
    let p = if p.is_empty() { "Dockerfile" } else { p };
    let path = PathBuf::from(p);
    if path.is_absolute()
        || path
            .components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)))
    {
        return Err(Error::invalid(
            "dockerfile",
            "must be a path inside the context, without `..`",
        ));
    }
    Ok(path)
}

fn build_error(e: crate::images::ImageError) -> Error {
    match e {
        crate::images::ImageError::Invalid(m) => Error::FailedPrecondition(m),
        e => e.into(),
    }
}
