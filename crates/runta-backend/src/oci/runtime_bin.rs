//! Invoking the OCI runtime binary (crun or runc).
//!
//! crun refuses a cgroup v1 host that also mounts an (empty) cgroup2 at
//! `/sys/fs/cgroup/unified` ("cgroups in hybrid mode not supported"). On such
//! hosts every crun invocation runs in a private mount namespace in which that
//! mount is detached; this is done in the child between fork and exec, with
//! async-signal-safe calls only.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde_json::Value;
use tokio::process::Command;
use uuid::Uuid;

use super::agent_host::AGENT_FD;
use crate::cgroups::CgroupMode;
use crate::{BackendError, BackendState, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuntimeKind {
    Crun,
    Runc,
}

impl RuntimeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RuntimeKind::Crun => "crun",
            RuntimeKind::Runc => "runc",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "crun" => Some(RuntimeKind::Crun),
            "runc" => Some(RuntimeKind::Runc),
            _ => None,
        }
    }
}

/// Makes `cmd` run in a private mount namespace in which the (empty) cgroup2
/// at `/sys/fs/cgroup/unified` is detached: crun refuses hybrid hosts otherwise
/// (docs/operations.md, "cgroups"). Done in the child between fork and exec, with async-signal-safe
/// calls only; the host's mounts are untouched.
pub fn hide_unified_cgroup(cmd: &mut Command) {
    // SAFETY: only async-signal-safe libc calls with static C strings.
    unsafe {
        cmd.pre_exec(|| {
            if libc::unshare(libc::CLONE_NEWNS) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::mount(
                std::ptr::null(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            // Not mounted is fine (nothing to hide).
            libc::umount2(c"/sys/fs/cgroup/unified".as_ptr(), libc::MNT_DETACH);
            Ok(())
        });
    }
}

pub struct OciRuntime {
    kind: RuntimeKind,
    binary: PathBuf,
    state_root: PathBuf,
    hide_unified: bool,
}

fn find_binary(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

impl OciRuntime {
    pub fn detect(
        prefer: Option<RuntimeKind>,
        state_root: PathBuf,
        mode: CgroupMode,
    ) -> Result<Self> {
        let order: Vec<RuntimeKind> = match prefer {
            Some(k) => vec![k],
            None => vec![RuntimeKind::Crun, RuntimeKind::Runc],
        };
        for kind in order {
            if let Some(binary) = find_binary(kind.as_str()) {
                std::fs::create_dir_all(&state_root)?;
                let state_root = state_root.canonicalize()?;
                return Ok(OciRuntime {
                    kind,
                    binary,
                    state_root,
                    hide_unified: kind == RuntimeKind::Crun
                        && mode == (CgroupMode::V1 { hybrid: true }),
                });
            }
        }
        Err(BackendError::Other(
            "no OCI runtime found: install crun (preferred) or runc".into(),
        ))
    }

    pub fn kind(&self) -> RuntimeKind {
        self.kind
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.binary);
        cmd.arg("--root").arg(&self.state_root);
        if self.hide_unified {
            hide_unified_cgroup(&mut cmd);
        }
        cmd.stdin(Stdio::null());
        cmd
    }

    async fn exec(&self, what: &str, args: &[&str]) -> Result<String> {
        let out = self
            .command()
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .await
            .map_err(|e| BackendError::Command {
                what: format!("{} {what}", self.kind.as_str()),
                detail: e.to_string(),
            })?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(BackendError::Command {
                what: format!("{} {what}", self.kind.as_str()),
                detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            })
        }
    }

    /// Creates and starts the container detached; its init keeps running when
    /// the daemon exits. The init's stdout/stderr go to `<bundle>/init.log`.
    /// `agent_socket` becomes descriptor [`AGENT_FD`] of the container's init.
    pub async fn run(&self, id: Uuid, bundle: &Path, agent_socket: &OwnedFd) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(bundle.join("init.log"))?;
        let id_s = id.to_string();
        let mut cmd = self.command();
        let sock = agent_socket.as_raw_fd();
        // SAFETY: dup2/fcntl only, async-signal-safe, between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if sock == AGENT_FD {
                    // dup2 onto itself keeps close-on-exec: clear it by hand.
                    let flags = libc::fcntl(sock, libc::F_GETFD);
                    if flags < 0 || libc::fcntl(sock, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0
                    {
                        return Err(std::io::Error::last_os_error());
                    }
                } else if libc::dup2(sock, AGENT_FD) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let status = cmd
            .arg("run")
            .arg("--detach")
            .arg("--preserve-fds")
            .arg("1")
            .arg("--bundle")
            .arg(bundle)
            .arg("--pid-file")
            .arg(bundle.join("init.pid"))
            .arg(&id_s)
            .stdout(log.try_clone()?)
            .stderr(log)
            .status()
            .await?;
        if status.success() {
            Ok(())
        } else {
            let log = std::fs::read_to_string(bundle.join("init.log")).unwrap_or_default();
            Err(BackendError::Command {
                what: format!("{} run", self.kind.as_str()),
                detail: log.lines().rev().take(3).collect::<Vec<_>>().join(" | "),
            })
        }
    }

    pub async fn state(&self, id: Uuid) -> Result<BackendState> {
        let id_s = id.to_string();
        if !self.state_root.join(&id_s).exists() {
            return Ok(BackendState::Missing);
        }
        let out = match self.exec("state", &["state", &id_s]).await {
            Ok(o) => o,
            Err(BackendError::Command { detail, .. })
                if detail.contains("does not exist") || detail.contains("not exist") =>
            {
                return Ok(BackendState::Missing)
            }
            Err(e) => return Err(e),
        };
        let v: Value = serde_json::from_str(&out)
            .map_err(|e| BackendError::Other(format!("parse state: {e}")))?;
        let pid = v["pid"].as_u64().unwrap_or(0) as u32;
        Ok(match v["status"].as_str().unwrap_or("") {
            "running" => BackendState::Running { pid },
            "paused" => BackendState::Paused,
            "created" => BackendState::Running { pid },
            _ => BackendState::Stopped,
        })
    }

    pub async fn kill(&self, id: Uuid, signal: &str, all: bool) -> Result<()> {
        let id_s = id.to_string();
        let mut args = vec!["kill"];
        if all {
            args.push("--all");
        }
        args.push(&id_s);
        args.push(signal);
        self.exec("kill", &args).await.map(|_| ())
    }

    pub async fn delete(&self, id: Uuid) -> Result<()> {
        let id_s = id.to_string();
        match self.exec("delete", &["delete", "--force", &id_s]).await {
            Ok(_) => Ok(()),
            Err(BackendError::Command { detail, .. }) if detail.contains("not exist") => Ok(()),
            Err(e) => Err(e),
        }
    }

    pub async fn pause(&self, id: Uuid) -> Result<()> {
        self.exec("pause", &["pause", &id.to_string()])
            .await
            .map(|_| ())
    }

    pub async fn resume(&self, id: Uuid) -> Result<()> {
        self.exec("resume", &["resume", &id.to_string()])
            .await
            .map(|_| ())
    }

    pub async fn update(&self, id: Uuid, memory_bytes: u64, cpu_quota: i64) -> Result<()> {
        let mem = memory_bytes.to_string();
        let quota = cpu_quota.to_string();
        let period = super::CPU_PERIOD_US.to_string();
        self.exec(
            "update",
            &[
                "update",
                "--memory",
                &mem,
                "--cpu-quota",
                &quota,
                "--cpu-period",
                &period,
                &id.to_string(),
            ],
        )
        .await
        .map(|_| ())
    }
}
