//! Host memory accounting for the density benchmark: what each idle runtime
//! costs the host, read from cgroups, /proc and /proc/meminfo.

use serde::Serialize;

/// Memory held by a set of idle runtimes.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Footprint {
    /// Runtimes accounted for.
    pub runtimes: usize,
    /// Runtimes whose init pid could not be found.
    pub missing: usize,
    /// Sum of the runtimes' cgroup charge: anonymous memory, page cache and
    /// kernel memory charged to the runtime (v1: `total_rss`, `total_cache`
    /// and `memory.kmem.usage_in_bytes`; v2: `memory.current`). Not v1's
    /// `memory.usage_in_bytes`: it also counts charges taken ahead in per-CPU
    /// batches (up to 64 pages per CPU), about 0.2 MiB per idle cgroup here
    /// that no page backs.
    pub cgroup_usage_kib: u64,
    /// Anonymous memory inside the runtimes' cgroups (v1 `total_rss`, v2 `anon`).
    pub cgroup_anon_kib: u64,
    /// PSS of per-runtime helper processes outside the runtime's cgroup
    /// (podman's `conmon`; Runta and crun have none).
    pub helpers_pss_kib: u64,
    /// RSS of the daemon (Runta only).
    pub daemon_rss_kib: Option<u64>,
}

impl Footprint {
    pub fn add_runtime(&mut self, init_pid: u32, helpers: &[u32]) {
        self.runtimes += 1;
        match cgroup_of(init_pid) {
            Some(cg) => {
                self.cgroup_usage_kib += cg.usage_bytes / 1024;
                self.cgroup_anon_kib += cg.anon_bytes / 1024;
            }
            None => self.missing += 1,
        }
        for p in helpers {
            self.helpers_pss_kib += pss_kib(*p).unwrap_or(0);
        }
    }
}

struct CgroupMem {
    usage_bytes: u64,
    anon_bytes: u64,
}

fn read_u64(p: &str) -> Option<u64> {
    std::fs::read_to_string(p).ok()?.trim().parse().ok()
}

fn stat_field(p: &str, key: &str) -> Option<u64> {
    std::fs::read_to_string(p)
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok())
}

/// The memory cgroup of a process (v1 `memory` controller or the v2 hierarchy).
fn cgroup_of(pid: u32) -> Option<CgroupMem> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, ctrls, path) = (parts.next()?, parts.next()?, parts.next()?);
        if ctrls.split(',').any(|c| c == "memory") {
            let dir = format!("/sys/fs/cgroup/memory{path}");
            let stat = format!("{dir}/memory.stat");
            let anon = stat_field(&stat, "total_rss")?;
            let cache = stat_field(&stat, "total_cache").unwrap_or(0);
            let kernel = read_u64(&format!("{dir}/memory.kmem.usage_in_bytes")).unwrap_or(0);
            return Some(CgroupMem {
                usage_bytes: anon + cache + kernel,
                anon_bytes: anon,
            });
        }
    }
    // cgroup v2: the single "0::/path" line.
    let path = text.lines().find_map(|l| l.strip_prefix("0::"))?;
    let dir = format!("/sys/fs/cgroup{path}");
    Some(CgroupMem {
        usage_bytes: read_u64(&format!("{dir}/memory.current"))?,
        anon_bytes: stat_field(&format!("{dir}/memory.stat"), "anon").unwrap_or(0),
    })
}

fn status_field_kib(pid: u32, key: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| {
            l.strip_prefix(key)?
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .ok()
        })
}

pub fn rss_kib(pid: u32) -> Option<u64> {
    status_field_kib(pid, "VmRSS:")
}

pub fn pss_kib(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .ok()?
        .lines()
        .find_map(|l| {
            l.strip_prefix("Pss:")?
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .ok()
        })
}

/// MemTotal − MemAvailable: host-wide memory in use (noisy on a shared host).
pub fn host_used_kib() -> u64 {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let get = |k: &str| {
        text.lines()
            .find_map(|l| {
                l.strip_prefix(k)?
                    .trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .unwrap_or(0)
    };
    get("MemTotal:").saturating_sub(get("MemAvailable:"))
}
