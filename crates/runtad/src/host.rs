//! What the daemon learns from (or puts on) the host at start-up, apart from
//! the flags in `config.rs`: the instance tag of a data dir, a free runtime
//! subnet, the host's memory, and the agent binary installed into the data dir.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// A short tag unique to a data dir: names this daemon's bridge, netns, cgroups.
pub fn instance_tag(data_dir: &Path) -> String {
    let d = Sha256::digest(data_dir.to_string_lossy().as_bytes());
    d.iter().take(3).map(|b| format!("{b:02x}")).collect()
}

/// 10.N.0.0/16 with N in 100..=199, from the instance tag, so two daemons on one
/// host rarely collide (and `--subnet-octet` settles it when they do).
/// A daemon keeps the octet its bridge already has (runtime addresses are
/// stored); otherwise it takes the first one from its hash that no interface uses.
pub fn default_subnet_octet(tag: &str) -> u8 {
    let own = std::process::Command::new("ip")
        .args(["-4", "-o", "addr", "show", "dev", &format!("rtb-{tag}")])
        .output()
        .ok()
        .and_then(|out| {
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            text.split_whitespace()
                .find_map(|w| w.strip_prefix("10.")?.split('.').next()?.parse::<u8>().ok())
        });
    if let Some(o) = own {
        return o;
    }
    let start = u32::from_str_radix(tag, 16).unwrap_or(0) % 100;
    (0..100)
        .map(|i| 100 + ((start + i) % 100) as u8)
        .find(|o| !runta_backend::network::subnet_taken(*o))
        .unwrap_or(100 + start as u8)
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
pub fn install_agent(agent_bin: Option<&Path>, data_dir: &Path) -> Result<PathBuf, String> {
    let src = match agent_bin {
        Some(p) => p.to_path_buf(),
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
