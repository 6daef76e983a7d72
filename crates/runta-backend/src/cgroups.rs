//! cgroup v1 and v2 behind one interface, chosen by looking at the host.

use std::path::{Path, PathBuf};

use crate::Usage;

const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupMode {
    /// Unified hierarchy only.
    V2,
    /// Legacy controllers, possibly with an (empty) cgroup2 at
    /// `/sys/fs/cgroup/unified` that crun refuses to work with.
    V1 { hybrid: bool },
}

impl CgroupMode {
    pub fn detect() -> Self {
        if fs_magic("/sys/fs/cgroup") == Some(CGROUP2_SUPER_MAGIC) {
            return CgroupMode::V2;
        }
        CgroupMode::V1 {
            hybrid: fs_magic("/sys/fs/cgroup/unified") == Some(CGROUP2_SUPER_MAGIC),
        }
    }
}

/// Turns on the kernel's `favordynmods` cgroup option (Linux ≥ 6.0) by
/// remounting the host's cgroup2 hierarchy with it. Moving a process into a
/// cgroup (what the OCI runtime does once per v1 controller for every new
/// runtime) otherwise waits for an RCU grace period on a global lock: about
/// 10 ms per create here. The price is slightly costlier fork and exit
/// everywhere on the host. The option holds until the next reboot. Returns
/// whether it is on; `Ok(false)` when there is no cgroup2 mount to set it on.
pub async fn favor_dynmods(mode: CgroupMode) -> std::io::Result<bool> {
    let target = match mode {
        CgroupMode::V2 => "/sys/fs/cgroup",
        CgroupMode::V1 { hybrid: true } => "/sys/fs/cgroup/unified",
        CgroupMode::V1 { hybrid: false } => return Ok(false),
    };
    let on = || {
        std::fs::read_to_string("/proc/self/mounts")
            .unwrap_or_default()
            .lines()
            .any(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.len() > 3
                    && f[1] == target
                    && f[2] == "cgroup2"
                    && f[3].split(',').any(|o| o == "favordynmods")
            })
    };
    if on() {
        return Ok(true);
    }
    // mount(8) keeps the mount's other options on a remount.
    crate::util::run("mount", &["-o", "remount,favordynmods", target], None)
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(on())
}

fn fs_magic(path: &str) -> Option<i64> {
    nix::sys::statfs::statfs(path)
        .ok()
        .map(|s| s.filesystem_type().0)
}

/// Reads usage of the cgroup at `rel` (the OCI `cgroupsPath`, e.g. `/runta-x/<id>`).
pub struct Cgroups {
    mode: CgroupMode,
    root: PathBuf,
}

impl Cgroups {
    pub fn new(mode: CgroupMode) -> Self {
        Cgroups {
            mode,
            root: PathBuf::from("/sys/fs/cgroup"),
        }
    }

    pub fn mode(&self) -> CgroupMode {
        self.mode
    }

    fn file(&self, controller: &str, rel: &str, name: &str) -> PathBuf {
        let rel = rel.trim_start_matches('/');
        match self.mode {
            CgroupMode::V2 => self.root.join(rel).join(name),
            CgroupMode::V1 { .. } => self.root.join(controller).join(rel).join(name),
        }
    }

    pub fn usage(&self, rel: &str) -> Option<Usage> {
        match self.mode {
            CgroupMode::V2 => {
                let current = read_u64(&self.file("", rel, "memory.current"))?;
                let inactive =
                    stat_field(&self.file("", rel, "memory.stat"), "inactive_file").unwrap_or(0);
                let cpu_us = stat_field(&self.file("", rel, "cpu.stat"), "usage_usec").unwrap_or(0);
                let ooms =
                    stat_field(&self.file("", rel, "memory.events"), "oom_kill").unwrap_or(0);
                Some(Usage {
                    memory_bytes: current.saturating_sub(inactive),
                    cpu_nanos: cpu_us * 1000,
                    oom_kills: ooms,
                })
            }
            CgroupMode::V1 { .. } => {
                let usage = read_u64(&self.file("memory", rel, "memory.usage_in_bytes"))?;
                let inactive = stat_field(
                    &self.file("memory", rel, "memory.stat"),
                    "total_inactive_file",
                )
                .unwrap_or(0);
                let cpu = read_u64(&self.file("cpuacct", rel, "cpuacct.usage")).unwrap_or(0);
                let ooms = stat_field(&self.file("memory", rel, "memory.oom_control"), "oom_kill")
                    .unwrap_or(0);
                Some(Usage {
                    memory_bytes: usage.saturating_sub(inactive),
                    cpu_nanos: cpu,
                    oom_kills: ooms,
                })
            }
        }
    }

    /// The memory limit in force, in bytes (for tests and `inspect`).
    pub fn memory_limit(&self, rel: &str) -> Option<u64> {
        match self.mode {
            CgroupMode::V2 => read_u64(&self.file("", rel, "memory.max")),
            CgroupMode::V1 { .. } => read_u64(&self.file("memory", rel, "memory.limit_in_bytes")),
        }
    }

    /// Removes the runtime's cgroup directories left behind (after the OCI runtime
    /// deleted the container they are empty).
    pub fn remove(&self, rel: &str) {
        let rel = rel.trim_start_matches('/');
        match self.mode {
            CgroupMode::V2 => {
                let _ = std::fs::remove_dir(self.root.join(rel));
            }
            CgroupMode::V1 { .. } => {
                if let Ok(rd) = std::fs::read_dir(&self.root) {
                    for c in rd.flatten() {
                        let _ = std::fs::remove_dir(c.path().join(rel));
                    }
                }
            }
        }
    }

    /// True if the cgroup has at least one process (read from the pids
    /// controller on v1, the unified tree on v2).
    pub fn has_processes(&self, rel: &str) -> bool {
        let procs = match self.mode {
            CgroupMode::V2 => self.file("", rel, "cgroup.procs"),
            CgroupMode::V1 { .. } => self.file("pids", rel, "cgroup.procs"),
        };
        std::fs::read_to_string(procs)
            .map(|s| !s.trim().is_empty())
            .unwrap_or(false)
    }

    /// Freezes (or thaws) every process of the cgroup.
    pub fn set_frozen(&self, rel: &str, frozen: bool) -> std::io::Result<()> {
        match self.mode {
            CgroupMode::V2 => std::fs::write(
                self.file("", rel, "cgroup.freeze"),
                if frozen { "1" } else { "0" },
            ),
            CgroupMode::V1 { .. } => std::fs::write(
                self.file("freezer", rel, "freezer.state"),
                if frozen { "FROZEN" } else { "THAWED" },
            ),
        }
    }

    /// Whether the cgroup is completely frozen (`None` if it cannot be read).
    pub fn is_frozen(&self, rel: &str) -> Option<bool> {
        match self.mode {
            CgroupMode::V2 => {
                stat_field(&self.file("", rel, "cgroup.events"), "frozen").map(|v| v == 1)
            }
            CgroupMode::V1 { .. } => {
                std::fs::read_to_string(self.file("freezer", rel, "freezer.state"))
                    .ok()
                    .map(|s| s.trim() == "FROZEN")
            }
        }
    }

    /// True if any controller still has a directory for `rel`.
    pub fn exists(&self, rel: &str) -> bool {
        let rel = rel.trim_start_matches('/');
        match self.mode {
            CgroupMode::V2 => self.root.join(rel).exists(),
            CgroupMode::V1 { .. } => std::fs::read_dir(&self.root)
                .map(|rd| rd.flatten().any(|c| c.path().join(rel).exists()))
                .unwrap_or(false),
        }
    }
}

fn read_u64(p: &Path) -> Option<u64> {
    std::fs::read_to_string(p).ok()?.trim().parse().ok()
}

fn stat_field(p: &Path, key: &str) -> Option<u64> {
    let s = std::fs::read_to_string(p).ok()?;
    s.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}
