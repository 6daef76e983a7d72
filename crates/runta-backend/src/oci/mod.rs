//! The OCI backend: runtimes are OCI containers run by crun (or runc), each with
//! an overlay root, a named network namespace and its own cgroup, and
//! `runta-agent` as PID 1.

mod agent_host;
mod bundle;
mod mount_targets;
mod runtime_bin;
mod seccomp;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{debug, warn};
use uuid::Uuid;

pub use bundle::{cpu_quota, CAPABILITIES, CPU_PERIOD_US};
pub use runtime_bin::{hide_unified_cgroup, OciRuntime, RuntimeKind};

use crate::cgroups::{CgroupMode, Cgroups};
use crate::images::ImageStore;
use crate::network::Network;
use crate::rootfs::Layer;
use crate::{
    AgentAddress, Backend, BackendError, BackendState, Limits, Result, RuntimeSpec, Usage,
};

pub struct OciConfig {
    /// Per-runtime folders live here (`<data>/runtimes`).
    pub runtimes_dir: PathBuf,
    /// Checkpoint layers (`<checkpoints_dir>/<id>/layer`).
    pub checkpoints_dir: PathBuf,
    /// Short-path folder for agent sockets (unix socket paths are limited to
    /// 108 bytes, so they cannot live under an arbitrary data dir).
    pub run_root: PathBuf,
    /// The static `runta-agent` binary to run as PID 1.
    pub agent_bin: PathBuf,
    /// Short hex tag unique to this daemon instance (host-side names).
    pub instance: String,
    /// Runtime network is `10.<subnet_octet>.0.0/16`.
    pub subnet_octet: u8,
    pub pids_limit: i64,
    /// Force `crun` or `runc`; detected when `None`.
    pub runtime: Option<RuntimeKind>,
    pub seccomp: bool,
    /// Tune the host: the cgroup `favordynmods` option
    /// ([`crate::cgroups::favor_dynmods`]) and `kernel.pid_max` ([`crate::host`]).
    pub favor_dynmods: bool,
}

pub struct OciBackend {
    oci: OciRuntime,
    cgroups: Cgroups,
    network: Network,
    images: Arc<ImageStore>,
    cfg: OciConfig,
    nofile: u64,
}

impl OciBackend {
    /// Detects the OCI runtime and cgroup layout and prepares the host network.
    pub async fn new(cfg: OciConfig, images: Arc<ImageStore>) -> Result<Self> {
        let mode = CgroupMode::detect();
        if cfg.favor_dynmods {
            match crate::host::raise_pid_max() {
                Ok(n) => debug!("kernel.pid_max is {n}"),
                Err(e) => warn!("could not raise kernel.pid_max (fewer runtimes fit): {e}"),
            }
            if let Err(e) = crate::host::raise_inotify_limits() {
                warn!("could not raise the inotify limits: {e}");
            }
            match crate::cgroups::favor_dynmods(mode).await {
                Ok(true) => debug!("cgroup favordynmods is on"),
                Ok(false) => debug!("no cgroup2 mount for favordynmods; creates stay slower"),
                Err(e) => warn!("could not turn cgroup favordynmods on (creates stay slower): {e}"),
            }
        }
        let oci = OciRuntime::detect(
            cfg.runtime,
            cfg.runtimes_dir.join("..").join("oci-state"),
            mode,
        )?;
        std::fs::create_dir_all(&cfg.runtimes_dir)?;
        std::fs::create_dir_all(&cfg.checkpoints_dir)?;
        let mut cfg = cfg;
        cfg.agent_bin = agent_host::stage_binary(&cfg.run_root, &cfg.agent_bin)?;
        let network = Network::new(&cfg.instance, cfg.subnet_octet);
        network.setup_host().await?;
        // Root lacks CAP_SYS_RESOURCE here: never ask for more than the hard limit.
        let nofile = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
            .map(|(_, hard)| hard.min(1 << 20))
            .unwrap_or(1024);
        Ok(OciBackend {
            oci,
            cgroups: Cgroups::new(mode),
            network,
            images,
            cfg,
            nofile,
        })
    }

    pub fn network(&self) -> &Network {
        &self.network
    }

    pub fn cgroup_path(&self, id: Uuid) -> String {
        format!("/runta-{}/{}", self.cfg.instance, id)
    }

    fn dir(&self, id: Uuid) -> PathBuf {
        self.cfg.runtimes_dir.join(id.to_string())
    }

    fn checkpoint_layer(&self, checkpoint_id: &str) -> PathBuf {
        self.cfg.checkpoints_dir.join(checkpoint_id).join("layer")
    }

    fn run_dir(&self, id: Uuid) -> PathBuf {
        self.cfg.run_root.join(id.to_string())
    }

    /// The runtime's resolv.conf: the host's resolvers, less loopback ones
    /// (unreachable from the runtime's network namespace).
    fn resolv_conf() -> String {
        let host = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        let usable: String = host
            .lines()
            .filter(|l| !l.trim_start().starts_with("nameserver 127."))
            .filter(|l| !l.trim_start().starts_with("nameserver ::1"))
            .map(|l| format!("{l}\n"))
            .collect();
        if usable.contains("nameserver") {
            usable
        } else {
            "nameserver 1.1.1.1\n".to_string()
        }
    }

    /// The error as a runtime's owner may see it: host folders and the
    /// instance tag (crun and init-log messages quote them) are replaced by
    /// placeholders. The full message stays in the daemon's log.
    fn scrub(&self, e: BackendError) -> BackendError {
        let clean = |m: String| {
            let mut m = m;
            let places = [
                (self.cfg.run_root.display().to_string(), "<run>"),
                (self.cfg.runtimes_dir.display().to_string(), "<runtimes>"),
                (
                    self.cfg.checkpoints_dir.display().to_string(),
                    "<checkpoints>",
                ),
                (self.images.dir().display().to_string(), "<images>"),
                (self.cfg.instance.clone(), "<instance>"),
            ];
            for (from, to) in places {
                if from.len() > 1 {
                    m = m.replace(&from, to);
                }
            }
            m
        };
        match e {
            BackendError::Command { what, detail } => BackendError::Command {
                what,
                detail: clean(detail),
            },
            BackendError::AgentTimeout(m) => BackendError::AgentTimeout(clean(m)),
            BackendError::Other(m) => BackendError::Other(clean(m)),
            BackendError::Io(io) => BackendError::Other(clean(io.to_string())),
            other => other,
        }
    }

    /// Filesystem, network, config; then the container with the agent as PID 1.
    async fn boot(&self, spec: &RuntimeSpec) -> Result<()> {
        let dir = self.dir(spec.id);
        let run_dir = self.run_dir(spec.id);
        // Host copies of /etc files of older versions: now written inside.
        let _ = std::fs::remove_dir_all(dir.join("etc"));
        if spec.image_layers.is_empty() && !self.images.is_ready(&spec.image) {
            self.images.ensure(&spec.image).await?;
        }
        if let Some(gib) = spec.disk_gib {
            let fs = nix::sys::statvfs::statvfs(&self.cfg.runtimes_dir)
                .map_err(|e| BackendError::Other(format!("statvfs: {e}")))?;
            let total_gib = fs.blocks() as u64 * fs.fragment_size() as u64 / (1 << 30);
            if gib > total_gib {
                return Err(BackendError::Capacity(format!(
                    "resources.requests.disk_gib: {gib} GiB requested, the data disk holds {total_gib} GiB"
                )));
            }
            Layer::create_disk(&dir, gib).await?;
        }
        let layer = Layer::new(&dir);
        let mut lowers: Vec<PathBuf> = spec
            .layers
            .iter()
            .map(|c| self.checkpoint_layer(c))
            .collect();
        if let Some(missing) = lowers.iter().find(|l| !l.is_dir()) {
            return Err(BackendError::Other(format!(
                "checkpoint layer {} is missing",
                missing.display()
            )));
        }
        if spec.image_layers.is_empty() {
            lowers.push(self.images.rootfs(&spec.image));
        } else if let Some(missing) = spec.image_layers.iter().find(|l| !l.is_dir()) {
            return Err(BackendError::Other(format!(
                "image layer {} is missing",
                missing.display()
            )));
        } else {
            lowers.extend(spec.image_layers.iter().cloned());
        }
        layer.mount(&lowers).await?;
        mount_targets::prepare(&layer.merged)?;
        self.network.attach(spec.id, spec.ip).await?;
        let cg = self.cgroup_path(spec.id);
        let netns = self.network.netns_path(spec.id);
        let config = bundle::config(
            spec,
            &bundle::BundlePaths {
                rootfs: &layer.merged,
                agent_bin: &self.cfg.agent_bin,
                netns: &netns,
                cgroups_path: &cg,
            },
            &bundle::Tunables {
                pids_limit: self.cfg.pids_limit,
                nofile: self.nofile,
                seccomp: self.cfg.seccomp.then(seccomp::default_profile),
            },
            &Self::resolv_conf(),
        );
        std::fs::write(
            dir.join("config.json"),
            serde_json::to_vec_pretty(&config).map_err(|e| BackendError::Other(e.to_string()))?,
        )?;
        let socket = agent_host::create(&run_dir)?;
        self.oci.run(spec.id, &dir, &socket).await?;
        // The agent holds the socket now; the daemon reconnects by path.
        drop(socket);
        self.wait_agent(spec.id, Duration::from_secs(10)).await
    }

    /// Waits until no process is left in the runtime's cgroup (read from the
    /// cgroup, no process spawned per poll).
    async fn wait_empty(&self, id: Uuid, timeout: Duration) -> bool {
        let cg = self.cgroup_path(id);
        let deadline = Instant::now() + timeout;
        while self.cgroups.has_processes(&cg) {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        true
    }

    /// Ends the container (whatever its state) and removes it from the OCI runtime.
    async fn destroy_container(&self, id: Uuid, grace: Duration) -> Result<()> {
        let state = self.oci.state(id).await?;
        if state == BackendState::Missing {
            return Ok(());
        }
        if state == BackendState::Paused {
            // Frozen processes can neither act on SIGTERM nor die of SIGKILL.
            self.set_frozen(id, false).await?;
        }
        if !grace.is_zero() && matches!(state, BackendState::Running { .. } | BackendState::Paused)
        {
            // SIGTERM to PID 1: the agent passes it to every process and exits
            // when they are gone (or when the grace ends, below).
            let _ = self.oci.kill(id, "TERM", false).await;
            self.wait_empty(id, grace).await;
        }
        // `delete --force` SIGKILLs whatever is left and removes the container.
        self.oci.delete(id).await?;
        if !self.wait_empty(id, Duration::from_secs(10)).await {
            warn!(%id, "processes survived delete --force");
        }
        Ok(())
    }

    /// Freezes or thaws every process by writing the cgroup freezer directly
    /// (what `crun pause` does, without a process per call); crun reads the
    /// same state back. Falls back to the OCI runtime if the file is missing.
    async fn set_frozen(&self, id: Uuid, frozen: bool) -> Result<()> {
        let cg = self.cgroup_path(id);
        match self.cgroups.set_frozen(&cg, frozen) {
            Ok(()) => {
                let deadline = Instant::now() + Duration::from_secs(5);
                while self.cgroups.is_frozen(&cg) != Some(frozen) {
                    if Instant::now() >= deadline {
                        return Err(BackendError::Other(format!(
                            "the runtime did not {} in 5 s",
                            if frozen { "freeze" } else { "thaw" }
                        )));
                    }
                    tokio::time::sleep(Duration::from_micros(200)).await;
                }
                Ok(())
            }
            Err(_) if frozen => self.oci.pause(id).await,
            Err(_) => self.oci.resume(id).await,
        }
    }
}

#[async_trait::async_trait]
impl Backend for OciBackend {
    fn name(&self) -> String {
        format!("oci/{}", self.oci.kind().as_str())
    }

    async fn ensure_image(&self, image: &str) -> Result<()> {
        self.images.ensure(image).await
    }

    async fn create(&self, spec: &RuntimeSpec) -> Result<()> {
        let started = Instant::now();
        let r = self.boot(spec).await;
        if let Err(e) = &r {
            warn!(id = %spec.id, "create failed, cleaning up: {e}");
            let _ = self.delete(spec.id).await;
        }
        debug!(id = %spec.id, ms = started.elapsed().as_millis() as u64, "created");
        r.map_err(|e| self.scrub(e))
    }

    async fn start(&self, spec: &RuntimeSpec) -> Result<()> {
        // A stale container record (init died, host rebooted) is removed first.
        self.destroy_container(spec.id, Duration::ZERO).await?;
        let r = self.boot(spec).await;
        if let Err(e) = &r {
            warn!(id = %spec.id, "boot failed: {e}");
            let _ = self.destroy_container(spec.id, Duration::ZERO).await;
        }
        r.map_err(|e| self.scrub(e))
    }

    async fn stop(&self, id: Uuid, grace: Duration) -> Result<()> {
        self.destroy_container(id, grace).await?;
        // A shut-down runtime is only files: no mount, no network left.
        self.network.detach(id).await;
        Layer::new(&self.dir(id)).unmount()
    }

    async fn pause(&self, id: Uuid) -> Result<()> {
        self.set_frozen(id, true).await
    }

    async fn resume(&self, id: Uuid) -> Result<()> {
        self.set_frozen(id, false).await
    }

    async fn update(&self, id: Uuid, limits: Limits) -> Result<()> {
        self.oci
            .update(
                id,
                limits.memory_limit_mib * 1024 * 1024,
                cpu_quota(limits.vcpus),
            )
            .await
    }

    async fn delete(&self, id: Uuid) -> Result<()> {
        self.destroy_container(id, Duration::ZERO).await?;
        self.network.detach(id).await;
        let dir = self.dir(id);
        Layer::new(&dir).unmount()?;
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        let _ = std::fs::remove_dir_all(self.run_dir(id));
        self.cgroups.remove(&self.cgroup_path(id));
        Ok(())
    }

    async fn state(&self, id: Uuid) -> Result<BackendState> {
        self.oci.state(id).await
    }

    fn usage(&self, id: Uuid) -> Option<Usage> {
        self.cgroups.usage(&self.cgroup_path(id))
    }

    fn is_alive(&self, id: Uuid) -> bool {
        self.cgroups.has_processes(&self.cgroup_path(id))
    }

    async fn checkpoint(&self, id: Uuid, checkpoint_id: &str) -> Result<u64> {
        let layer = Layer::new(&self.dir(id));
        if !layer.is_mounted() {
            return Err(BackendError::Other(
                "the runtime's files are not mounted (is it running?)".into(),
            ));
        }
        let target = self.cfg.checkpoints_dir.join(checkpoint_id);
        let tmp = self
            .cfg
            .checkpoints_dir
            .join(format!(".{checkpoint_id}.new"));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp)?;
        let was_running = matches!(self.oci.state(id).await?, BackendState::Running { .. });
        if was_running {
            self.set_frozen(id, true).await?;
        }
        // `cp -a` keeps owners, modes, times, xattrs (overlay's opaque-dir marks)
        // and whiteouts, so the copy stacks as a lower layer exactly as it was;
        // reflinks share blocks where the file system can.
        let copied = crate::util::run(
            "cp",
            &[
                "-a",
                "--reflink=auto",
                &format!("{}/.", layer.upper.display()),
                &tmp.join("layer").to_string_lossy(),
            ],
            None,
        )
        .await;
        if was_running {
            self.set_frozen(id, false).await?;
        }
        if let Err(e) = copied {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
        let size = crate::util::run("du", &["-sb", &tmp.to_string_lossy()], None)
            .await
            .ok()
            .and_then(|o| o.split_whitespace().next().and_then(|n| n.parse().ok()))
            .unwrap_or(0);
        std::fs::rename(&tmp, &target)?;
        Ok(size)
    }

    async fn delete_checkpoint(&self, checkpoint_id: &str) -> Result<()> {
        let dir = self.cfg.checkpoints_dir.join(checkpoint_id);
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        Ok(())
    }

    async fn writable_layer(&self, id: Uuid) -> Result<PathBuf> {
        let dir = self.dir(id);
        if !dir.is_dir() {
            return Err(BackendError::Other("the runtime has no files".into()));
        }
        let layer = Layer::new(&dir);
        layer.mount_disk().await.map_err(|e| self.scrub(e))?;
        Ok(layer.upper.clone())
    }

    async fn release_writable_layer(&self, id: Uuid) -> Result<()> {
        let layer = Layer::new(&self.dir(id));
        if !layer.is_mounted() {
            layer.unmount()?;
        }
        Ok(())
    }

    fn image_rootfs(&self, image: &str) -> Option<PathBuf> {
        Some(self.images.rootfs(image)).filter(|p| p.is_dir())
    }

    fn checkpoint_layer_dir(&self, checkpoint_id: &str) -> Option<PathBuf> {
        Some(self.checkpoint_layer(checkpoint_id)).filter(|p| p.is_dir())
    }

    async fn shutdown_host(&self) {
        self.network.teardown_host().await;
        agent_host::unstage_binary(&self.cfg.run_root);
        // The instance's parent cgroup (empty once no runtime is left).
        self.cgroups
            .remove(&format!("/runta-{}", self.cfg.instance));
    }

    fn agent_address(&self, id: Uuid) -> AgentAddress {
        AgentAddress {
            socket: self.run_dir(id).join("agent.sock"),
            cgroup: self.cgroup_path(id),
        }
    }

    async fn wait_agent(&self, id: Uuid, timeout: Duration) -> Result<()> {
        let addr = self.agent_address(id);
        let deadline = Instant::now() + timeout;
        // Poll every millisecond: the agent listens within a few ms of start,
        // and a backing-off poll would find it late.
        let delay = Duration::from_millis(1);
        loop {
            let answered = match tokio::net::UnixStream::connect(&addr.socket).await {
                Ok(s) => s.peer_cred().and_then(|c| {
                    let pid = c.pid().unwrap_or(0).max(0) as u32;
                    addr.verify_peer(pid).map_err(std::io::Error::other)
                }),
                Err(e) => Err(e),
            };
            match answered {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() >= deadline => {
                    let log =
                        std::fs::read_to_string(self.dir(id).join("init.log")).unwrap_or_default();
                    return Err(BackendError::AgentTimeout(format!(
                        "{e}; init log: {}",
                        log.lines().rev().take(5).collect::<Vec<_>>().join(" | ")
                    )));
                }
                Err(_) => {
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }
}
