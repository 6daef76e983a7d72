//! Daemon settings (flags and environment) and the small host facts they need.

use std::path::{Path, PathBuf};

use clap::Parser;
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, Parser)]
#[command(
    name = "runtad",
    version,
    about = "The Runta daemon: isolated runtimes behind a REST API"
)]
pub struct Config {
    /// Where the store, runtimes' files and the admin token live.
    #[arg(long, env = "RUNTA_DATA_DIR", default_value = "/var/lib/runta")]
    pub data_dir: PathBuf,
    /// Address of the REST API.
    #[arg(long, env = "RUNTA_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// Image store: a read-only cache shared by every daemon on the host, so a
    /// daemon on a fresh data dir does not build the base image again.
    #[arg(
        long,
        env = "RUNTA_IMAGES_DIR",
        default_value = "/var/lib/runta/images"
    )]
    pub images_dir: PathBuf,
    /// Debian mirror for building `base`; default: the one apt uses.
    #[arg(long, env = "RUNTA_DEBIAN_MIRROR")]
    pub debian_mirror: Option<String>,
    /// `crun` or `runc`; detected when absent (crun preferred).
    #[arg(long, env = "RUNTA_OCI_RUNTIME")]
    pub oci_runtime: Option<String>,
    /// The static runta-agent binary; default: next to this executable.
    #[arg(long, env = "RUNTA_AGENT_BIN")]
    pub agent_bin: Option<PathBuf>,
    /// Runtime network 10.N.0.0/16; default derived from the data dir.
    #[arg(long, env = "RUNTA_SUBNET_OCTET")]
    pub subnet_octet: Option<u8>,
    /// Process limit per runtime (fork bombs stop here).
    #[arg(long, default_value_t = 1024)]
    pub pids_limit: i64,
    /// Memory that runtimes may reserve in total; default host memory × overcommit.
    #[arg(long, env = "RUNTA_CAPACITY_MEMORY_MIB")]
    pub capacity_memory_mib: Option<u64>,
    #[arg(long, default_value_t = 1.0)]
    pub memory_overcommit: f64,
    /// Disk quota (GiB) for runtimes that do not ask for one; 0 = unlimited.
    #[arg(long, env = "RUNTA_DEFAULT_DISK_GIB", default_value_t = 0)]
    pub default_disk_gib: u64,
    /// Seconds between SIGTERM and SIGKILL on stop.
    #[arg(long, default_value_t = 10)]
    pub stop_grace_secs: u64,
    /// Turn the default seccomp profile off (debugging only).
    #[arg(long)]
    pub no_seccomp: bool,
    /// Do not build the base image at start-up (it is built on first use).
    #[arg(long)]
    pub no_prebuild: bool,
    /// Published ports answer at `<uuid>.<domain>`.
    #[arg(long, env = "RUNTA_INGRESS_DOMAIN", default_value = "runta.localhost")]
    pub ingress_domain: String,
    #[arg(long, env = "RUNTA_INGRESS_HTTPS_PORT", default_value_t = 8443)]
    pub ingress_https_port: u16,
    #[arg(long, env = "RUNTA_INGRESS_HTTP_PORT", default_value_t = 8081)]
    pub ingress_http_port: u16,
    /// Build the base image into the image store, then exit (for install scripts).
    #[arg(long)]
    pub prepare_image: bool,
    /// Log as JSON lines instead of text.
    #[arg(long, env = "RUNTA_LOG_JSON")]
    pub log_json: bool,
}

/// A short tag unique to a data dir: names this daemon's bridge, netns, cgroups.
pub fn instance_tag(data_dir: &Path) -> String {
    let d = Sha256::digest(data_dir.to_string_lossy().as_bytes());
    d.iter().take(3).map(|b| format!("{b:02x}")).collect()
}

/// 10.N.0.0/16 with N in 100..=199, from the instance tag, so two daemons on one
/// host rarely collide (and `--subnet-octet` settles it when they do).
pub fn default_subnet_octet(tag: &str) -> u8 {
    let n = u32::from_str_radix(tag, 16).unwrap_or(0);
    100 + (n % 100) as u8
}

pub fn host_memory_mib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map(|kb| kb / 1024)
        .unwrap_or(1024)
}

/// Copies the agent into `<data>/bin` (runtimes bind-mount it from there, so a
/// rebuilt binary elsewhere never changes under a running runtime).
pub fn install_agent(cfg: &Config, data_dir: &Path) -> Result<PathBuf, String> {
    let src = match &cfg.agent_bin {
        Some(p) => p.clone(),
        None => find_agent().ok_or(
            "runta-agent not found next to runtad; build it (scripts/build.sh) or pass --agent-bin",
        )?,
    };
    let bin_dir = data_dir.join("bin");
    std::fs::create_dir_all(&bin_dir).map_err(|e| format!("create {}: {e}", bin_dir.display()))?;
    let dst = bin_dir.join("runta-agent");
    let new = std::fs::read(&src).map_err(|e| format!("read agent {}: {e}", src.display()))?;
    let same = std::fs::read(&dst).map(|old| old == new).unwrap_or(false);
    if !same {
        // Write beside and rename: running runtimes keep the old inode.
        let tmp = bin_dir.join(".runta-agent.new");
        std::fs::write(&tmp, &new).map_err(|e| format!("install agent: {e}"))?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| e.to_string())?;
        std::fs::rename(&tmp, &dst).map_err(|e| format!("install agent: {e}"))?;
    }
    Ok(dst)
}

fn find_agent() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?;
    // In a cargo target dir the static build lives under the target triple;
    // a `runta-agent` beside runtad there is a dynamic dev build, so the static
    // one wins. Installed layouts have only the sibling.
    let candidates = [
        dir.join("../x86_64-unknown-linux-gnu/release/runta-agent"),
        dir.join("../../x86_64-unknown-linux-gnu/release/runta-agent"),
        dir.join("runta-agent"),
    ];
    candidates.into_iter().find(|p| p.is_file())
}
