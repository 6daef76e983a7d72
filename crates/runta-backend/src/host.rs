//! Host-wide settings the daemon raises at start (skipped with
//! `--no-host-tuning`, see docs/operations.md).

/// The PID space systemd sets on current distributions (`kernel.pid_max`), the
/// largest the kernel allows on 64-bit hosts.
pub const PID_MAX: u64 = 4_194_304;

/// Raises `kernel.pid_max` to [`PID_MAX`] if it is lower, so the sum of the
/// runtimes' process limits (which admission keeps below it) is bounded by
/// memory (`threads-max`) rather than by the 32,768 default. Returns the value
/// in force afterwards.
pub fn raise_pid_max() -> std::io::Result<u64> {
    let path = "/proc/sys/kernel/pid_max";
    let now: u64 = std::fs::read_to_string(path)?
        .trim()
        .parse()
        .map_err(std::io::Error::other)?;
    if now >= PID_MAX {
        return Ok(now);
    }
    std::fs::write(path, PID_MAX.to_string())?;
    Ok(PID_MAX)
}

/// Per-uid inotify budgets the daemon raises to (if lower).
pub const INOTIFY_INSTANCES: u64 = 1_048_576;
pub const INOTIFY_WATCHES: u64 = 4_194_304;

/// Raises `fs.inotify.max_user_instances` and `max_user_watches`. They are
/// counted per uid, and without a user namespace every runtime is the host's
/// uid 0: at the default 128 instances one runtime could take every inotify
/// instance from the others and from the host's own root services. Raised this
/// far, the kernel memory those objects cost (charged to the runtime's memory
/// cgroup) runs out long before the count does.
pub fn raise_inotify_limits() -> std::io::Result<()> {
    for (path, want) in [
        ("/proc/sys/fs/inotify/max_user_instances", INOTIFY_INSTANCES),
        ("/proc/sys/fs/inotify/max_user_watches", INOTIFY_WATCHES),
    ] {
        let now: u64 = std::fs::read_to_string(path)?
            .trim()
            .parse()
            .map_err(std::io::Error::other)?;
        if now < want {
            std::fs::write(path, want.to_string())?;
        }
    }
    Ok(())
}
