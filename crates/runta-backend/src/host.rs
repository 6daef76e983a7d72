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
