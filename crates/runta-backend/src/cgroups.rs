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

/// Limits of a [`JobCgroup`].
#[derive(Debug, Clone, Copy)]
pub struct JobLimits {
    /// Most processes (and threads) at once.
    pub pids: u64,
    pub memory_bytes: u64,
    /// CPU time per wall time (1.0 = one core).
    pub cpus: f64,
}

/// The v1 controllers a job's processes are placed in (each one's own
/// hierarchy on a v1 host).
const JOB_V1_CONTROLLERS: [&str; 5] = ["memory", "pids", "cpu", "cpuacct", "freezer"];

/// A cgroup for work of the daemon's own that runs programs it does not
/// trust (an image build's `RUN` steps): the limits hold for every process
/// of the job together, [`JobCgroup::kill`] ends all of them (however they
/// forked, daemonized or re-parented), and a daemon that died mid-job finds
/// the job again by its folder ([`JobCgroup::leftovers`]).
///
/// The job's first process joins the leaf `<rel>/leader` (cgroup v2 allows
/// processes only in leaves). What it runs for others goes below
/// `<rel>/work` ([`JobCgroup::work_rel`], e.g. an OCI runtime's container
/// cgroup), whose process limit keeps a reserve for the leader: a fork bomb
/// in the work cannot stop the leader from forking its tools and failing
/// cleanly.
pub struct JobCgroup {
    cg: Cgroups,
    rel: String,
}

impl JobCgroup {
    /// Makes the cgroup `rel` (e.g. `/runta-x-builds/<id>`) with `limits`.
    pub fn create(mode: CgroupMode, rel: &str, limits: &JobLimits) -> std::io::Result<JobCgroup> {
        let job = JobCgroup {
            cg: Cgroups::new(mode),
            rel: format!("/{}", rel.trim_matches('/')),
        };
        if let Err(e) = job.make(limits) {
            job.remove();
            return Err(e);
        }
        Ok(job)
    }

    /// A job already on the host (for [`JobCgroup::kill`] and removal).
    pub fn existing(mode: CgroupMode, rel: &str) -> JobCgroup {
        JobCgroup {
            cg: Cgroups::new(mode),
            rel: format!("/{}", rel.trim_matches('/')),
        }
    }

    pub fn rel(&self) -> &str {
        &self.rel
    }

    /// A cgroup path below `<rel>/work` for the job's work (made and
    /// removed by whoever runs it there).
    pub fn work_rel(&self, name: &str) -> String {
        format!("{}/work/{name}", self.rel)
    }

    /// Processes the leader keeps for itself out of the job's limit.
    fn leader_reserve(pids: u64) -> u64 {
        (pids / 4).clamp(64, 256).min(pids / 2)
    }

    fn make(&self, l: &JobLimits) -> std::io::Result<()> {
        let period: u64 = 100_000;
        let quota = ((l.cpus.max(0.01) * period as f64) as u64).max(1000);
        let work_pids = l.pids.saturating_sub(Self::leader_reserve(l.pids)).max(1);
        let w = |p: PathBuf, v: String| {
            std::fs::write(&p, v)
                .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", p.display())))
        };
        match self.cg.mode {
            CgroupMode::V2 => {
                let rel = self.rel.trim_start_matches('/');
                // Every folder on the way gets the controllers for its
                // children (the root has them: the backend's runtimes need them).
                let mut dir = self.cg.root.clone();
                for part in rel.split('/') {
                    dir.push(part);
                    std::fs::create_dir_all(&dir)?;
                    w(
                        dir.join("cgroup.subtree_control"),
                        "+memory +pids +cpu".into(),
                    )?;
                }
                w(dir.join("pids.max"), l.pids.to_string())?;
                w(dir.join("memory.max"), l.memory_bytes.to_string())?;
                let _ = w(dir.join("memory.swap.max"), "0".into());
                w(dir.join("cpu.max"), format!("{quota} {period}"))?;
                std::fs::create_dir_all(dir.join("leader"))?;
                let work = dir.join("work");
                std::fs::create_dir_all(&work)?;
                w(
                    work.join("cgroup.subtree_control"),
                    "+memory +pids +cpu".into(),
                )?;
                w(work.join("pids.max"), work_pids.to_string())?;
            }
            CgroupMode::V1 { .. } => {
                for c in JOB_V1_CONTROLLERS {
                    std::fs::create_dir_all(self.cg.file(c, &self.rel, "leader"))?;
                    std::fs::create_dir_all(self.cg.file(c, &self.rel, "work"))?;
                }
                w(
                    self.cg
                        .file("pids", &format!("{}/work", self.rel), "pids.max"),
                    work_pids.to_string(),
                )?;
                w(
                    self.cg.file("pids", &self.rel, "pids.max"),
                    l.pids.to_string(),
                )?;
                w(
                    self.cg.file("memory", &self.rel, "memory.limit_in_bytes"),
                    l.memory_bytes.to_string(),
                )?;
                // Absent when the kernel has no swap accounting.
                let _ = w(
                    self.cg
                        .file("memory", &self.rel, "memory.memsw.limit_in_bytes"),
                    l.memory_bytes.to_string(),
                );
                w(
                    self.cg.file("cpu", &self.rel, "cpu.cfs_period_us"),
                    period.to_string(),
                )?;
                w(
                    self.cg.file("cpu", &self.rel, "cpu.cfs_quota_us"),
                    quota.to_string(),
                )?;
            }
        }
        Ok(())
    }

    /// The `cgroup.procs` files of the leader leaf, one per hierarchy: a
    /// process that writes `0` to each (between fork and exec, through
    /// descriptors opened before the fork) starts inside the job, so not one
    /// of its children is ever outside.
    pub fn leader_procs(&self) -> Vec<PathBuf> {
        let leader = format!("{}/leader", self.rel);
        match self.cg.mode {
            CgroupMode::V2 => vec![self.cg.file("", &leader, "cgroup.procs")],
            CgroupMode::V1 { .. } => JOB_V1_CONTROLLERS
                .iter()
                .map(|c| self.cg.file(c, &leader, "cgroup.procs"))
                .collect(),
        }
    }

    /// Every process of the job, in every cgroup under it.
    pub fn pids(&self) -> Vec<i32> {
        let top = match self.cg.mode {
            CgroupMode::V2 => self.cg.file("", &self.rel, ""),
            CgroupMode::V1 { .. } => self.cg.file("pids", &self.rel, ""),
        };
        let mut out = Vec::new();
        let mut dirs = vec![top];
        while let Some(d) = dirs.pop() {
            if let Ok(s) = std::fs::read_to_string(d.join("cgroup.procs")) {
                out.extend(s.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
            }
            if let Ok(rd) = std::fs::read_dir(&d) {
                dirs.extend(
                    rd.flatten()
                        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                        .map(|e| e.path()),
                );
            }
        }
        out
    }

    /// Kills every process of the job and waits (up to about 2 s) until
    /// none is left; returns whether none is. On v2 the kernel does it at
    /// once (`cgroup.kill`); on v1 the job is frozen first, so nothing forks
    /// between the reading of the list and the signals.
    pub fn kill(&self) -> bool {
        let v2_kill = matches!(self.cg.mode, CgroupMode::V2)
            && std::fs::write(self.cg.file("", &self.rel, "cgroup.kill"), "1").is_ok();
        let freezer = self.cg.file("freezer", &self.rel, "freezer.state");
        for round in 0..200 {
            let pids = self.pids();
            if pids.is_empty() {
                return true;
            }
            if !v2_kill || round > 0 {
                // v1: a frozen job cannot fork while it is signalled; the
                // signals land when it thaws.
                let frozen = !matches!(self.cg.mode, CgroupMode::V2)
                    && std::fs::write(&freezer, "FROZEN").is_ok();
                for p in self.pids() {
                    // Only a job's own processes are listed; a pid of 0 or
                    // below would signal groups.
                    if p > 1 {
                        let _ = nix::sys::signal::kill(
                            nix::unistd::Pid::from_raw(p),
                            nix::sys::signal::Signal::SIGKILL,
                        );
                    }
                }
                if frozen {
                    let _ = std::fs::write(&freezer, "THAWED");
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        self.pids().is_empty()
    }

    /// Removes the job's cgroups, children first (they must be empty), in
    /// every hierarchy (what the job ran may have made cgroups in all of
    /// them, not only the ones the job has limits in).
    pub fn remove(&self) {
        for top in self.cg.all_hierarchies(&self.rel) {
            remove_tree(&top);
        }
    }

    /// The jobs under `parent` (e.g. `/runta-x-builds`) that are on the
    /// host, as the `rel` of each.
    pub fn leftovers(mode: CgroupMode, parent: &str) -> Vec<String> {
        let parent = format!("/{}", parent.trim_matches('/'));
        let mut out: Vec<String> = Cgroups::new(mode)
            .all_hierarchies(&parent)
            .iter()
            .filter_map(|d| std::fs::read_dir(d).ok())
            .flat_map(|rd| rd.flatten())
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| format!("{parent}/{}", e.file_name().to_string_lossy()))
            .collect();
        out.sort();
        out.dedup();
        out
    }
}

impl Cgroups {
    /// The folder of `rel` in every hierarchy of the host (one on v2).
    fn all_hierarchies(&self, rel: &str) -> Vec<PathBuf> {
        let rel = rel.trim_start_matches('/');
        match self.mode {
            CgroupMode::V2 => vec![self.root.join(rel)],
            CgroupMode::V1 { .. } => std::fs::read_dir(&self.root)
                .map(|rd| rd.flatten().map(|c| c.path().join(rel)).collect())
                .unwrap_or_default(),
        }
    }
}

/// Removes a cgroup folder and the cgroups below it, deepest first (a
/// cgroup folder goes with `rmdir`, never with its control files).
fn remove_tree(dir: &Path) {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&e.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}
