//! Isolation backends for Runta.
//!
//! The daemon drives runtimes only through the [`Backend`] trait: create a
//! runtime's filesystem, network and sandbox and start its init (`runta-agent`),
//! then stop, boot, pause, resume, resize and delete it. [`oci::OciBackend`] is
//! the implementation for Linux hosts with an OCI runtime (crun preferred, runc as
//! fallback); a gVisor or microVM backend would implement the same trait. Nothing
//! here knows about tenants, HTTP or the store: callers pass plain specs in and
//! get plain facts back.

pub mod cgroups;
#[cfg(feature = "fake")]
pub mod fake;
pub mod host;
pub mod images;
pub mod ipset;
mod netlink;
pub mod network;
pub mod oci;
mod rootfs;
mod util;

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use uuid::Uuid;

/// What a backend needs to run one runtime.
#[derive(Debug, Clone)]
pub struct RuntimeSpec {
    pub id: Uuid,
    /// Becomes the hostname.
    pub name: String,
    pub image: String,
    /// Checkpoint layers stacked read-only between the image and the runtime's
    /// own writable layer, topmost first (forks of a checkpoint).
    pub layers: Vec<String>,
    /// The layer directories of an OCI image from the daemon's image store,
    /// topmost first (read-only, shared by every runtime of the image).
    /// Empty for built-in images (`base`), which the backend's own
    /// [`images::ImageStore`] provides.
    pub image_layers: Vec<PathBuf>,
    pub vcpus: f64,
    pub memory_limit_mib: u64,
    /// Size of the writable layer in GiB (a hard quota); unlimited when `None`.
    pub disk_gib: Option<u64>,
    pub ip: Ipv4Addr,
    /// Environment of PID 1 (commands get theirs per exec).
    pub env: Vec<(String, String)>,
}

/// Live resource limits that can change without a restart.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    pub vcpus: f64,
    pub memory_limit_mib: u64,
}

/// What the backend sees of a runtime, independent of what the store believes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendState {
    Running {
        pid: u32,
    },
    Paused,
    /// The sandbox exists but its init has exited.
    Stopped,
    /// No sandbox (never started, deleted, or lost with a host reboot).
    Missing,
}

/// How the daemon reaches one runtime's agent: a unix socket that the backend
/// created and bound outside anything the runtime can see, and the cgroup the
/// answering process must live in. The runtime decides neither: see
/// docs/security.md, item 1.
#[derive(Debug, Clone)]
pub struct AgentAddress {
    pub socket: PathBuf,
    /// The runtime's cgroup path, as `/proc/<pid>/cgroup` spells it.
    pub cgroup: String,
}

impl AgentAddress {
    /// Checks that `pid` (from `SO_PEERCRED` on a connection to [`Self::socket`])
    /// is the runtime's init: PID 1 of its own PID namespace, in the runtime's
    /// cgroup. Anything else holding the socket is an impostor.
    pub fn verify_peer(&self, pid: u32) -> Result<(), String> {
        // The peer pid is the listener's, fixed when PID 1 called listen().
        // PID 1 is non-dumpable, so nothing else in the runtime can take its
        // socket and listen again; a new socket (a boot) has a new pid. So a
        // (socket, pid) pair once checked stays checked while the socket
        // lives, and the two /proc reads are skipped on every later call.
        type Checked = std::collections::HashMap<PathBuf, u32>;
        static CHECKED: std::sync::OnceLock<std::sync::Mutex<Checked>> = std::sync::OnceLock::new();
        let checked = CHECKED.get_or_init(Default::default);
        let lock = || checked.lock().unwrap_or_else(|e| e.into_inner());
        if lock().get(&self.socket) == Some(&pid) {
            return Ok(());
        }
        self.check_peer(pid)?;
        let mut m = lock();
        if m.len() >= 65_536 {
            // Sockets of deleted runtimes pile up here; start over rather
            // than grow without bound (the next calls check once more).
            m.clear();
        }
        m.insert(self.socket.clone(), pid);
        Ok(())
    }

    fn check_peer(&self, pid: u32) -> Result<(), String> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .map_err(|e| format!("peer process {pid}: {e}"))?;
        let ns_pid = status
            .lines()
            .find_map(|l| l.strip_prefix("NSpid:"))
            .and_then(|v| v.split_whitespace().last());
        if ns_pid != Some("1") {
            return Err(format!(
                "the process answering on the agent socket (host pid {pid}) is not the runtime's init"
            ));
        }
        let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
            .map_err(|e| format!("peer process {pid}: {e}"))?;
        let inside = cgroups
            .lines()
            .any(|l| l.splitn(3, ':').nth(2) == Some(self.cgroup.as_str()));
        if !inside {
            return Err(format!(
                "the process answering on the agent socket (host pid {pid}) is not in the runtime's cgroup"
            ));
        }
        Ok(())
    }
}

/// Usage counters from the runtime's cgroup.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    pub memory_bytes: u64,
    pub cpu_nanos: u64,
    pub oom_kills: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("image {0:?} does not exist")]
    ImageNotFound(String),
    #[error("image {0:?} is not ready: {1}")]
    ImageBuild(String, String),
    #[error("{what}: {detail}")]
    Command { what: String, detail: String },
    /// The host cannot give what was asked (e.g. a disk larger than the disk).
    #[error("{0}")]
    Capacity(String),
    #[error("the runtime's agent did not come up: {0}")]
    AgentTimeout(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Other(String),
}

pub type Result<T, E = BackendError> = std::result::Result<T, E>;

#[async_trait::async_trait]
pub trait Backend: Send + Sync + 'static {
    /// Short name for logs and `/metrics`, e.g. `oci/crun`.
    fn name(&self) -> String;

    /// Makes sure `image` is available, building it first if it is a built-in.
    async fn ensure_image(&self, image: &str) -> Result<()>;

    /// Prepares the filesystem layer and network for a new runtime and starts it.
    async fn create(&self, spec: &RuntimeSpec) -> Result<()>;

    /// Boots a runtime whose sandbox is stopped or missing; its files are kept.
    async fn start(&self, spec: &RuntimeSpec) -> Result<()>;

    /// Shuts a runtime down (SIGTERM, then SIGKILL after `grace`), keeping its files.
    async fn stop(&self, id: Uuid, grace: Duration) -> Result<()>;

    async fn pause(&self, id: Uuid) -> Result<()>;

    async fn resume(&self, id: Uuid) -> Result<()>;

    /// Applies new limits to a running or paused runtime without restarting it.
    async fn update(&self, id: Uuid, limits: Limits) -> Result<()>;

    /// Removes everything: processes, sandbox, cgroups, network, files.
    async fn delete(&self, id: Uuid) -> Result<()>;

    async fn state(&self, id: Uuid) -> Result<BackendState>;

    fn usage(&self, id: Uuid) -> Option<Usage>;

    /// Cheap liveness check (no process spawned): does the runtime still have
    /// processes? Used by the once-a-second monitor.
    fn is_alive(&self, id: Uuid) -> bool;

    /// Saves the runtime's files as checkpoint `checkpoint_id`: the runtime is
    /// frozen while its writable layer is copied (left paused if it was), so
    /// the copy is consistent. Returns the checkpoint's size in bytes.
    async fn checkpoint(&self, id: Uuid, checkpoint_id: &str) -> Result<u64>;

    /// Frees a checkpoint's files. The caller makes sure no runtime uses it.
    async fn delete_checkpoint(&self, checkpoint_id: &str) -> Result<()>;

    /// The runtime's writable layer (overlayfs upper form) on the host, for a
    /// commit: a shut-down runtime's quota disk is mounted for the time of
    /// the call ([`Backend::release_writable_layer`] ends it). The caller
    /// freezes a running runtime first.
    async fn writable_layer(&self, _id: Uuid) -> Result<PathBuf> {
        Err(BackendError::Other(
            "this backend cannot export a runtime's files".into(),
        ))
    }

    /// Undoes what [`Backend::writable_layer`] mounted for a runtime that is
    /// not running.
    async fn release_writable_layer(&self, _id: Uuid) -> Result<()> {
        Ok(())
    }

    /// The root filesystem folder of a built-in (folder) image such as
    /// `base`, for turning it into an image layer.
    fn image_rootfs(&self, _image: &str) -> Option<PathBuf> {
        None
    }

    /// A checkpoint's saved layer (overlayfs upper form) on the host.
    fn checkpoint_layer_dir(&self, _checkpoint_id: &str) -> Option<PathBuf> {
        None
    }

    /// Removes host-wide set-up (bridge, firewall chains) once no runtime is
    /// left; called on a clean daemon shutdown.
    async fn shutdown_host(&self);

    /// Where the daemon reaches the runtime's agent, and who must answer there.
    fn agent_address(&self, id: Uuid) -> AgentAddress;

    /// Waits until the agent answers on its socket.
    async fn wait_agent(&self, id: Uuid, timeout: Duration) -> Result<()>;
}
