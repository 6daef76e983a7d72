//! The peers measured side by side with Runta: `podman` (with runc, as the
//! Debian package runs it) and raw `crun` on an OCI bundle, both on the same
//! base image rootfs as Runta (through an overlay: the image is never written).

use std::path::{Path, PathBuf};
use std::process::Stdio;

use runta_backend::cgroups::CgroupMode;
use runta_backend::oci::hide_unified_cgroup;
use serde_json::{json, Value};
use tokio::process::Command;

use crate::mem::Footprint;
use crate::system::{Handle, System};

/// Runs a command to completion; its stdout on success, stderr in the error.
async fn run(mut cmd: Command) -> Result<String, String> {
    let what = format!("{:?}", cmd.as_std());
    let out = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .await
        .map_err(|e| format!("{what}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{what}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

pub struct Podman {
    /// `--rootfs` argument: the base rootfs with `:O`, so podman mounts a
    /// private overlay per container over the read-only image.
    rootfs: String,
    memory_mib: u64,
    cpus: String,
}

impl Podman {
    pub fn new(rootfs: &Path, memory_mib: u64, vcpus: f64) -> Self {
        Podman {
            rootfs: format!("{}:O", rootfs.display()),
            memory_mib,
            cpus: vcpus.to_string(),
        }
    }

    fn cmd(args: &[&str]) -> Command {
        let mut c = Command::new("podman");
        c.args(args);
        c
    }
}

impl System for Podman {
    fn name(&self) -> &'static str {
        "podman"
    }

    async fn create(&self, name: &str) -> Result<Handle, String> {
        let mem = format!("{}m", self.memory_mib);
        // Options first: podman stops parsing options at the rootfs argument.
        // Root lacks CAP_SYS_RESOURCE here, so rlimits stay below the hard limits.
        run(Self::cmd(&[
            "run",
            "-d",
            "--runtime",
            "runc",
            "--network",
            "none",
            "--memory",
            &mem,
            "--cpus",
            &self.cpus,
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=4096:4096",
            "--label",
            "runta-bench=1",
            "--name",
            name,
            "--rootfs",
            &self.rootfs,
            "sleep",
            "infinity",
        ]))
        .await?;
        Ok(Handle(name.to_string()))
    }

    async fn exec_true(&self, h: &Handle) -> Result<(), String> {
        run(Self::cmd(&["exec", &h.0, "true"])).await.map(|_| ())
    }

    async fn pause(&self, h: &Handle) -> Result<(), String> {
        run(Self::cmd(&["pause", &h.0])).await.map(|_| ())
    }

    async fn resume(&self, h: &Handle) -> Result<(), String> {
        run(Self::cmd(&["unpause", &h.0])).await.map(|_| ())
    }

    async fn delete(&self, h: &Handle) -> Result<(), String> {
        run(Self::cmd(&["rm", "-f", "-t", "0", &h.0]))
            .await
            .map(|_| ())
    }

    async fn footprint(&self, handles: &[Handle]) -> Footprint {
        let mut f = Footprint::default();
        for chunk in handles.chunks(50) {
            let mut args = vec!["inspect", "--format", "{{.State.Pid}} {{.State.ConmonPid}}"];
            args.extend(chunk.iter().map(|h| h.0.as_str()));
            let out = run(Self::cmd(&args)).await.unwrap_or_default();
            let mut seen = 0;
            for line in out.lines() {
                let p: Vec<u32> = line
                    .split_whitespace()
                    .filter_map(|x| x.parse().ok())
                    .collect();
                if let [pid, conmon] = p[..] {
                    f.add_runtime(pid, &[conmon]);
                    seen += 1;
                }
            }
            f.missing += chunk.len() - seen;
        }
        f
    }
}

/// True on cgroup v1 hosts that also mount an (empty) cgroup2 at
/// `/sys/fs/cgroup/unified`, which crun refuses to work with.
pub fn hybrid_cgroups() -> bool {
    CgroupMode::detect() == (CgroupMode::V1 { hybrid: true })
}

pub struct Crun {
    /// Overlay mount over the base rootfs, shared by the bench's containers.
    rootfs: PathBuf,
    /// Bundles (one `config.json` per container) and crun's state root.
    work: PathBuf,
    template: Value,
    memory_mib: u64,
    vcpus: f64,
    hide_unified: bool,
}

impl Crun {
    pub async fn new(
        rootfs: PathBuf,
        work: PathBuf,
        memory_mib: u64,
        vcpus: f64,
    ) -> Result<Self, String> {
        let spec_dir = work.join("spec");
        std::fs::create_dir_all(&spec_dir).map_err(|e| e.to_string())?;
        let _ = std::fs::remove_file(spec_dir.join("config.json"));
        let mut c = Command::new("crun");
        c.arg("spec").current_dir(&spec_dir);
        run(c).await?;
        let template: Value = serde_json::from_slice(
            &std::fs::read(spec_dir.join("config.json")).map_err(|e| e.to_string())?,
        )
        .map_err(|e| e.to_string())?;
        std::fs::create_dir_all(work.join("state")).map_err(|e| e.to_string())?;
        Ok(Crun {
            rootfs,
            work,
            template,
            memory_mib,
            vcpus,
            hide_unified: hybrid_cgroups(),
        })
    }

    /// `crun --root <state> …`, on hybrid hosts in a private mount namespace with
    /// `/sys/fs/cgroup/unified` detached (SPEC §2), done between fork and exec.
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("crun");
        c.arg("--root").arg(self.work.join("state")).args(args);
        if self.hide_unified {
            hide_unified_cgroup(&mut c);
        }
        c
    }

    fn bundle(&self, id: &str) -> PathBuf {
        self.work.join("bundles").join(id)
    }

    fn init_pid(&self, id: &str) -> Option<u32> {
        std::fs::read_to_string(self.bundle(id).join("init.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }
}

impl System for Crun {
    fn name(&self) -> &'static str {
        "crun"
    }

    /// Writes the bundle (outside the timed part): same rootfs, same limits.
    fn prepare(&self, id: &str) -> Result<(), String> {
        let mut cfg = self.template.clone();
        cfg["process"]["args"] = json!(["sleep", "infinity"]);
        cfg["process"]["terminal"] = json!(false);
        cfg["root"] = json!({"path": self.rootfs, "readonly": false});
        cfg["hostname"] = json!(id);
        cfg["linux"]["cgroupsPath"] = json!(format!("/runta-bench-crun/{id}"));
        cfg["linux"]["resources"] = json!({
            "memory": {"limit": self.memory_mib * 1024 * 1024},
            "cpu": {"quota": (self.vcpus * 100_000.0).round() as i64, "period": 100_000},
        });
        let dir = self.bundle(id);
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        std::fs::write(
            dir.join("config.json"),
            serde_json::to_vec(&cfg).map_err(|e| e.to_string())?,
        )
        .map_err(|e| e.to_string())
    }

    async fn create(&self, id: &str) -> Result<Handle, String> {
        let bundle = self.bundle(id);
        let errlog = bundle.join("crun.err");
        let err = std::fs::File::create(&errlog).map_err(|e| e.to_string())?;
        // The container's stdio is inherited: no pipes, or waiting for EOF hangs.
        let status = self
            .cmd(&["create", "--bundle"])
            .arg(&bundle)
            .arg("--pid-file")
            .arg(bundle.join("init.pid"))
            .arg(id)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .status()
            .await
            .map_err(|e| e.to_string())?;
        if !status.success() {
            return Err(format!(
                "crun create {id}: {}",
                std::fs::read_to_string(&errlog).unwrap_or_default().trim()
            ));
        }
        run(self.cmd(&["start", id])).await?;
        Ok(Handle(id.to_string()))
    }

    async fn exec_true(&self, h: &Handle) -> Result<(), String> {
        run(self.cmd(&["exec", &h.0, "true"])).await.map(|_| ())
    }

    async fn pause(&self, h: &Handle) -> Result<(), String> {
        run(self.cmd(&["pause", &h.0])).await.map(|_| ())
    }

    async fn resume(&self, h: &Handle) -> Result<(), String> {
        run(self.cmd(&["resume", &h.0])).await.map(|_| ())
    }

    async fn delete(&self, h: &Handle) -> Result<(), String> {
        let r = run(self.cmd(&["delete", "-f", &h.0])).await.map(|_| ());
        let _ = std::fs::remove_dir_all(self.bundle(&h.0));
        r
    }

    async fn footprint(&self, handles: &[Handle]) -> Footprint {
        let mut f = Footprint::default();
        for h in handles {
            match self.init_pid(&h.0) {
                Some(pid) => f.add_runtime(pid, &[]),
                None => f.missing += 1,
            }
        }
        f
    }
}
