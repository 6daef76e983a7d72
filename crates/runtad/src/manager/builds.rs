//! Dockerfile builds (docs/images.md, Build): the manager's side. The
//! builder itself is `images/build.rs`; here the context is checked, the
//! Dockerfile is checked against what a build may do (before the answer
//! starts, so a refusal is a plain 4xx naming the line), the images it names
//! are provided from the store, and the result is recorded.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use runta_backend::cgroups::JobLimits;

use runta_backend::images::BASE_IMAGE;
use tokio::sync::mpsc;

use super::{Error, Manager, Result};
use crate::auth::Principal;
use crate::images::build::{self, BuildConfig, BuildSpec, Buildah};
use crate::images::reference::Reference;
use crate::images::{Image, Images};

/// Limits and deadline of every image build (daemon flags `--build-*`).
#[derive(Debug, Clone)]
pub struct BuildSettings {
    pub timeout: Duration,
    /// Processes and threads of one build at once.
    pub pids_max: u64,
    /// Memory of one build (buildah and its steps together).
    pub memory_mib: u64,
    pub cpus: f64,
    /// Where the builds' cgroups are made (`/runta-<instance>-builds`).
    pub cgroup_parent: String,
}

impl Default for BuildSettings {
    fn default() -> Self {
        BuildSettings {
            timeout: Duration::from_secs(1800),
            pids_max: 4096,
            memory_mib: 2048,
            cpus: 1.0,
            cgroup_parent: "/runta-test-builds".into(),
        }
    }
}

/// Builds running at once (each is a buildah process and its containers).
const MAX_BUILDS: usize = 2;

fn permits() -> &'static tokio::sync::Semaphore {
    static S: std::sync::OnceLock<tokio::sync::Semaphore> = std::sync::OnceLock::new();
    S.get_or_init(|| tokio::sync::Semaphore::new(MAX_BUILDS))
}

/// One build at a time per tenant: a tenant's builds queue on its own lock
/// before they take one of the [`MAX_BUILDS`] slots, so no tenant can hold
/// every slot (with endless RUN steps) and stop everyone else's builds.
fn tenant_lock(tenant: &str) -> std::sync::Arc<tokio::sync::Mutex<()>> {
    type Locks = std::sync::Mutex<HashMap<String, std::sync::Arc<tokio::sync::Mutex<()>>>>;
    static L: std::sync::OnceLock<Locks> = std::sync::OnceLock::new();
    let mut m = L
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if m.len() > 4096 {
        m.retain(|_, v| std::sync::Arc::strong_count(v) > 1);
    }
    m.entry(tenant.to_string()).or_default().clone()
}

/// Largest build context accepted (the API refuses larger uploads with 413).
pub const MAX_BUILD_CONTEXT: u64 = 2 << 30;

/// A build whose context is unpacked and whose Dockerfile passed the checks;
/// [`Manager::run_build`] runs it. Its folder goes when it is dropped.
pub struct PreparedBuild {
    tenant: String,
    name: String,
    spec: BuildSpec,
    work: PathBuf,
    ctx: PathBuf,
    df: build::Dockerfile,
}

impl Drop for PreparedBuild {
    fn drop(&mut self) {
        if self.work.exists() {
            let _ = std::fs::remove_dir_all(&self.work);
        }
    }
}

fn dockerfile_error(e: crate::images::ImageError) -> Error {
    match e {
        crate::images::ImageError::Invalid(m) => Error::invalid("dockerfile", m),
        e => e.into(),
    }
}

impl Manager {
    fn builder_config(&self, images: &Images, tenant: &str) -> BuildConfig {
        // runc: crun refuses a cgroup v1/v2 hybrid host when buildah runs it
        // (it cannot hide the empty cgroup2 mount as the backend does).
        let runtime = if Path::new("/usr/sbin/runc").exists() || Path::new("/usr/bin/runc").exists()
        {
            "runc"
        } else {
            "crun"
        };
        let b = &self.cfg.builds;
        BuildConfig {
            dir: build::tenant_dir(&images.dir().join("builder"), tenant),
            max_context_bytes: MAX_BUILD_CONTEXT,
            runtime: runtime.into(),
            limits: JobLimits {
                pids: b.pids_max,
                memory_bytes: b.memory_mib << 20,
                cpus: b.cpus,
            },
            timeout: b.timeout,
            cgroup_parent: b.cgroup_parent.clone(),
        }
    }

    /// Checks a build's name and Dockerfile path before the context uploads.
    pub fn check_build(&self, p: &Principal, name: &str, spec: &BuildSpec) -> Result<()> {
        self.images()?;
        self.own_image_name(p, name)?;
        check_rel(&spec.dockerfile).map(drop)
    }

    /// Unpacks the context tar and checks its Dockerfile: what the build
    /// may do (`build::parse_dockerfile`) and which images it may name
    /// ([`Manager::check_build_image`]). Nothing runs yet.
    pub async fn prepare_build(
        &self,
        p: &Principal,
        name: &str,
        spec: BuildSpec,
        context_tar: &Path,
    ) -> Result<PreparedBuild> {
        let name = self.own_image_name(p, name)?;
        let df_rel = check_rel(&spec.dockerfile)?;
        let images = self.images()?.clone();
        let work = images
            .dir()
            .join("builds")
            .join(uuid::Uuid::new_v4().simple().to_string());
        let ctx = work.join("context");
        std::fs::create_dir_all(&ctx).map_err(|e| Error::Internal(e.to_string()))?;
        let mut prepared = PreparedBuild {
            tenant: p.tenant.clone(),
            name,
            spec,
            work,
            ctx: ctx.clone(),
            df: build::Dockerfile {
                lines: vec![],
                froms: vec![],
                copy_froms: vec![],
            },
        };
        let (tar, c2) = (context_tar.to_path_buf(), ctx.clone());
        tokio::task::spawn_blocking(move || build::unpack_context(&tar, &c2, MAX_BUILD_CONTEXT))
            .await
            .map_err(|e| Error::Internal(e.to_string()))?
            .map_err(|e| match e {
                crate::images::ImageError::TooLarge(m) => Error::ResourceExhausted(m),
                crate::images::ImageError::Invalid(m) => Error::invalid("context", m),
                e => e.into(),
            })?;
        // buildah reads the ignore file on the host, following links: one
        // pointing at a host file would make the file's lines exclude
        // context paths, an oracle for its content.
        for ignore in [".dockerignore", ".containerignore"] {
            let m = std::fs::symlink_metadata(ctx.join(ignore));
            if m.as_ref().is_ok_and(|m| !m.is_file()) {
                return Err(Error::invalid(
                    "context",
                    format!("{ignore} must be a regular file (not a link)"),
                ));
            }
        }
        let df_path = ctx.join(&df_rel);
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
        let df =
            build::parse_dockerfile(&text, &prepared.spec.build_args).map_err(dockerfile_error)?;
        for (image, line) in df.images() {
            self.check_build_image(p, &image, line)?;
        }
        prepared.df = df;
        Ok(prepared)
    }

    /// Whether `p`'s build may name `image` (line `line`): a valid
    /// reference; never another tenant's `localhost/<tenant>/` image; a
    /// `localhost/` name only when the store has it (nothing is pulled from
    /// the daemon host's own loopback); and, when the store has it, no
    /// ONBUILD triggers.
    fn check_build_image(&self, p: &Principal, image: &str, line: usize) -> Result<()> {
        if image == BASE_IMAGE {
            return Ok(());
        }
        let bad = |m: String| Error::invalid("dockerfile", format!("line {line}: {image}: {m}"));
        let r = Reference::parse(image).map_err(|e| bad(e.to_string()))?;
        let own = format!("{}/", p.tenant);
        if r.registry == "localhost"
            && !p.admin
            && r.repository.contains('/')
            && !r.repository.starts_with(&own)
        {
            return Err(bad(
                "another tenant's image; a build names only its own tenant's images (localhost/<tenant>/…) and shared ones".into(),
            ));
        }
        let images = self.images()?;
        match images.image_as((!p.admin).then_some(p.tenant.as_str()), image) {
            Ok(img) => refuse_onbuild(images, &img, line, image),
            Err(_) if r.registry == "localhost" => Err(bad(
                "not in the store (a localhost/ image is never pulled)".into(),
            )),
            Err(_) => Ok(()),
        }
    }

    /// Runs a prepared build and stores the result under its name; every
    /// log line goes to `log`.
    pub async fn run_build(
        &self,
        p: &Principal,
        prepared: PreparedBuild,
        log: mpsc::Sender<String>,
    ) -> Result<runta_api::Image> {
        let images = self.images()?.clone();
        let cfg = self.builder_config(&images, &prepared.tenant);
        let buildah = Buildah::new(cfg.clone());
        let mine = tenant_lock(&prepared.tenant);
        let _mine = mine.lock().await;
        let permit = permits()
            .acquire()
            .await
            .map_err(|_| Error::Unavailable("the builder is shutting down".into()))?;
        let r = self.build_in(p, &prepared, &buildah, &log).await;
        let w = prepared.work.clone();
        let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(w)).await;
        // buildah leaves its step containers' overlays mounted: the last
        // build to finish (it then holds every permit, so none starts
        // meanwhile) unmounts them in every tenant's storage.
        drop(permit);
        if let Ok(all) = permits().try_acquire_many(MAX_BUILDS as u32) {
            Buildah::release_all(&images.dir().join("builder"), &cfg).await;
            drop(all);
        }
        r
    }

    async fn build_in(
        &self,
        p: &Principal,
        b: &PreparedBuild,
        buildah: &Buildah,
        log: &mpsc::Sender<String>,
    ) -> Result<runta_api::Image> {
        let images = self.images()?.clone();
        std::fs::create_dir_all(&buildah.config().dir)
            .map_err(|e| Error::Internal(e.to_string()))?;
        let mut local: HashMap<String, String> = HashMap::new();
        for (image, line) in b.df.images() {
            let img = self.resolve_from(p, &image, line, log).await?;
            refuse_onbuild(&images, &img, line, &image)?;
            let lname = build::local_name(&img.digest);
            if !buildah.has(&lname).await {
                let dir = b.work.join(format!("from-{}", img.digest.short()));
                let (im, i2, d2) = (images.clone(), img.clone(), dir.clone());
                tokio::task::spawn_blocking(move || im.export_layout(&i2, &d2))
                    .await
                    .map_err(|e| Error::Internal(e.to_string()))?
                    .map_err(|e| Error::Internal(format!("export {image}: {e}")))?;
                buildah.load(&dir, &lname).await.map_err(build_error)?;
            }
            let _ = log.send(format!("runta: {image} is {}", img.digest)).await;
            local.insert(image, lname);
        }
        let text = b
            .df
            .rewritten(&local)
            .ok_or_else(|| Error::Internal("an image of the Dockerfile was not loaded".into()))?;
        let rewritten = b.work.join("Dockerfile.runta");
        std::fs::write(&rewritten, text).map_err(|e| Error::Internal(e.to_string()))?;
        let out = b.work.join("out");
        let tag = format!("localhost/runta-build:{}", uuid::Uuid::new_v4().simple());
        let id = b
            .work
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let job = build::BuildJob::create(buildah.config(), &id).map_err(build_error)?;
        let net = build::BuildNet::create().await.map_err(build_error)?;
        // Beside the build, so a daemon killed now removes the network at
        // its next start (build::reap_leftovers).
        let _ = std::fs::write(b.work.join("net"), net.record());
        let _ = log
            .send(format!("runta: RUN steps in network {}", net.name()))
            .await;
        let r = buildah
            .build(&b.ctx, &rewritten, &b.spec, &tag, &out, &net, &job, log)
            .await;
        drop(job);
        net.remove().await;
        r.map_err(build_error)?;
        let name = b.name.as_str();
        // The building tenant's, whatever its name looks like.
        let img = images.import_oci_layout_as(&b.tenant, &out, name).await?;
        let _ = log
            .send(format!("runta: stored {name} as {}", img.digest))
            .await;
        tracing::info!(tenant = %p.tenant, name, digest = %img.digest, "image built");
        let mut view = self.image_view(p, &img, true)?;
        view.name = name.to_string();
        Ok(view)
    }

    /// The store's image a `FROM` or `COPY --from` names, as the building
    /// tenant sees it (its own names, then the operator's; pulled with its
    /// own credentials): `base` imported once, anything else pulled on
    /// first use.
    async fn resolve_from(
        &self,
        p: &Principal,
        r: &str,
        line: usize,
        log: &mpsc::Sender<String>,
    ) -> Result<Image> {
        let images = self.images()?.clone();
        if r == BASE_IMAGE {
            let rootfs = self.backend.image_rootfs(r).ok_or_else(|| {
                Error::FailedPrecondition("the base image is not prepared".into())
            })?;
            return Ok(images.ensure_base(&rootfs).await?);
        }
        let scope = (!p.admin).then_some(p.tenant.as_str());
        if images.image_as(scope, r).is_err() {
            let _ = log.send(format!("runta: pulling {r}")).await;
        }
        let (img, _) = images
            .ensure_as(&p.tenant, r, images.limits().pull_wait)
            .await
            .map_err(|e| Error::invalid("dockerfile", format!("line {line}: {r}: {e}")))?;
        Ok(img)
    }
}

/// An image whose config carries ONBUILD triggers is refused: buildah would
/// run them as steps of this build, and they never went through the checks.
fn refuse_onbuild(images: &Images, img: &Image, line: usize, name: &str) -> Result<()> {
    let Ok(d) = crate::images::digest::Digest::parse(&img.manifest.config.digest) else {
        return Ok(());
    };
    let raw = std::fs::read(images.blob_path(&d)).map_err(|e| Error::Internal(e.to_string()))?;
    let v: serde_json::Value = serde_json::from_slice(&raw).unwrap_or_default();
    // buildah decodes the config with Go's JSON, whose field names match
    // in any case: look at every spelling, one level down.
    let triggers = v.as_object().into_iter().flatten().any(|(_, c)| {
        c.as_object().into_iter().flatten().any(|(k, t)| {
            k.eq_ignore_ascii_case("onbuild") && t.as_array().is_some_and(|a| !a.is_empty())
        })
    });
    if triggers {
        return Err(Error::invalid(
            "dockerfile",
            format!(
                "line {line}: image {name} has ONBUILD triggers, which a build here refuses to run"
            ),
        ));
    }
    Ok(())
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
