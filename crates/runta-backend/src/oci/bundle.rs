//! The OCI `config.json` of a runtime.

use std::path::Path;

use serde_json::{json, Value};

use super::agent_host::AGENT_FD;
use crate::RuntimeSpec;

/// The capability set processes keep (Podman's default; no NET_RAW, no SYS_ADMIN).
pub const CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_NET_BIND_SERVICE",
    "CAP_SETFCAP",
    "CAP_SETGID",
    "CAP_SETPCAP",
    "CAP_SETUID",
    "CAP_SYS_CHROOT",
];

/// CFS period. 10 ms rather than the usual 100 ms: a runtime spending its whole
/// quota on every core at once then blocks its neighbours for at most a few
/// milliseconds, not tens.
pub const CPU_PERIOD_US: u64 = 10_000;

pub fn cpu_quota(vcpus: f64) -> i64 {
    ((vcpus * CPU_PERIOD_US as f64).round() as i64).max(1000)
}

pub struct BundlePaths<'a> {
    pub rootfs: &'a Path,
    pub agent_bin: &'a Path,
    pub netns: &'a Path,
    pub cgroups_path: &'a str,
}

pub struct Tunables {
    pub pids_limit: i64,
    pub nofile: u64,
    pub seccomp: Option<Value>,
}

/// `resolv` is the runtime's resolv.conf, which the agent writes at boot.
pub fn config(spec: &RuntimeSpec, p: &BundlePaths<'_>, t: &Tunables, resolv: &str) -> Value {
    let mem = (spec.memory_limit_mib * 1024 * 1024) as i64;
    let mut env: Vec<String> = vec![
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        format!("HOSTNAME={}", spec.name),
        "HOME=/root".into(),
    ];
    env.extend(spec.env.iter().map(|(k, v)| format!("{k}={v}")));
    let bind = |src: &Path, dst: &str, ro: bool| {
        let mut opts = vec!["rbind", "nosuid", "nodev"];
        if ro {
            opts.push("ro");
        }
        json!({"destination": dst, "type": "bind", "source": src, "options": opts})
    };
    let mut linux = json!({
        "namespaces": [
            {"type": "pid"},
            {"type": "ipc"},
            {"type": "uts"},
            {"type": "mount"},
            {"type": "cgroup"},
            {"type": "network", "path": p.netns}
        ],
        "cgroupsPath": p.cgroups_path,
        "resources": {
            "devices": [
                {"allow": false, "access": "rwm"},
                {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
                {"allow": true, "type": "c", "major": 1, "minor": 5, "access": "rwm"},
                {"allow": true, "type": "c", "major": 1, "minor": 7, "access": "rwm"},
                {"allow": true, "type": "c", "major": 1, "minor": 8, "access": "rwm"},
                {"allow": true, "type": "c", "major": 1, "minor": 9, "access": "rwm"},
                {"allow": true, "type": "c", "major": 5, "minor": 0, "access": "rwm"},
                {"allow": true, "type": "c", "major": 5, "minor": 2, "access": "rwm"},
                {"allow": true, "type": "c", "major": 136, "access": "rwm"}
            ],
            "memory": {"limit": mem},
            "cpu": {"quota": cpu_quota(spec.vcpus), "period": CPU_PERIOD_US},
            "pids": {"limit": t.pids_limit}
        },
        "maskedPaths": [
            "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
            "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
            "/sys/firmware", "/sys/devices/virtual/powercap",
            // All of /sys/kernel in one mount (each masked path costs a mount
            // at every boot): debugfs, the allocator state per cache (slab),
            // a physical address (vmcoreinfo), the idle-page bitmap.
            "/sys/kernel",
            // Physical page maps and kernel allocator state: root-readable on
            // the host and of no use to a runtime but to an attacker.
            "/proc/kpageflags", "/proc/kpagecount", "/proc/kpagecgroup",
            "/proc/vmallocinfo", "/proc/slabinfo", "/proc/pagetypeinfo"
        ],
        "readonlyPaths": [
            "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"
        ]
    });
    if let Some(s) = &t.seccomp {
        linux["seccomp"] = s.clone();
    }
    json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": 0, "gid": 0},
            // The agent listens on the socket the daemon made (descriptor 3)
            // and writes /etc/hostname, /etc/hosts and /etc/resolv.conf
            // inside the runtime: no host file or folder is mounted writable.
            "args": [
                "/.runta/agent", "--listen-fd", AGENT_FD.to_string(),
                "--hostname", spec.name, "--ip", spec.ip.to_string(), "--resolv", resolv
            ],
            "env": env,
            "cwd": "/",
            "capabilities": {
                "bounding": CAPABILITIES,
                "effective": CAPABILITIES,
                "permitted": CAPABILITIES
            },
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": t.nofile, "soft": t.nofile}],
            "noNewPrivileges": true,
            "oomScoreAdj": 500
        },
        "root": {"path": p.rootfs, "readonly": false},
        "hostname": spec.name,
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]},
            bind(p.agent_bin, "/.runta/agent", true)
        ],
        "linux": linux
    })
}
