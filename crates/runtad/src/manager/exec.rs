//! Running commands and moving files inside a runtime, through its agent.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use runta_agent::ProcessSpec;
use runta_api::{
    validate, ExecRequest, ExecResult, RuntimeStatus, DEFAULT_EXEC_TIMEOUT_SECS,
    DEFAULT_MAX_OUTPUT_BYTES, MAX_EXEC_TIMEOUT_SECS, MAX_MAX_OUTPUT_BYTES,
};
use uuid::Uuid;

use super::{Activity, Error, Manager, Result};
use crate::agent_client::AgentClient;
use crate::store::RuntimeRecord;

/// Held while a command runs (or a file moves): the idle policy never suspends
/// a runtime with one outstanding.
pub struct ExecGuard {
    manager: Arc<Manager>,
    id: Uuid,
}

impl Drop for ExecGuard {
    fn drop(&mut self) {
        let mut a = self
            .manager
            .activity
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(e) = a.get_mut(&self.id) {
            e.in_flight = e.in_flight.saturating_sub(1);
            e.last_active = Instant::now();
        }
    }
}

impl Manager {
    pub fn begin_activity(self: &Arc<Self>, id: Uuid) -> ExecGuard {
        let mut a = self.activity.lock().unwrap_or_else(|e| e.into_inner());
        let e = a.entry(id).or_insert(Activity {
            in_flight: 0,
            last_active: Instant::now(),
        });
        e.in_flight += 1;
        e.last_active = Instant::now();
        ExecGuard {
            manager: self.clone(),
            id,
        }
    }

    /// Resolves a runtime that must be running for `what`, waking it if the idle
    /// policy suspended it; returns it with an activity guard and its agent.
    pub async fn running(
        self: &Arc<Self>,
        tenant: &str,
        id_or_name: &str,
        what: &str,
    ) -> Result<(RuntimeRecord, ExecGuard, AgentClient)> {
        let id = self.find(tenant, id_or_name)?.id;
        // Count the activity first, then read the status: the idle scan cannot
        // suspend it after this point, and a suspension before it is seen.
        let guard = self.begin_activity(id);
        let mut r = self
            .store
            .get_runtime(id)?
            .ok_or_else(|| Error::NotFound(format!("no runtime named {id_or_name:?}")))?;
        if r.status == RuntimeStatus::Suspended {
            r = self.wake_if_suspended(r.id).await?;
        }
        if r.status != RuntimeStatus::Running {
            return Err(Error::FailedPrecondition(format!(
                "cannot {what} in runtime {:?}: it is {}",
                r.name, r.status
            )));
        }
        let agent = AgentClient::new(&self.backend.agent_socket(r.id));
        Ok((r, guard, agent))
    }

    /// The environment of a command: defaults, then the runtime's, then the call's.
    pub fn command_env(
        r: &RuntimeRecord,
        extra: &BTreeMap<String, String>,
        tty: bool,
    ) -> Vec<(String, String)> {
        let mut env: BTreeMap<String, String> = BTreeMap::new();
        env.insert(
            "PATH".into(),
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        );
        env.insert("HOME".into(), "/root".into());
        env.insert("HOSTNAME".into(), r.name.clone());
        env.insert("LANG".into(), "C.UTF-8".into());
        if tty {
            env.insert("TERM".into(), "xterm-256color".into());
        }
        env.extend(r.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        env.extend(extra.iter().map(|(k, v)| (k.clone(), v.clone())));
        env.into_iter().collect()
    }

    /// Builds the argv: `command` alone runs under `/bin/sh -c`; with `args` it is
    /// the executable.
    pub fn argv(command: &str, args: Option<&Vec<String>>) -> Result<Vec<String>> {
        if command.is_empty() {
            return Err(Error::invalid("command", "must not be empty"));
        }
        if command.contains('\0') || args.is_some_and(|a| a.iter().any(|x| x.contains('\0'))) {
            return Err(Error::invalid("command", "contains a NUL byte"));
        }
        Ok(match args {
            Some(a) => std::iter::once(command.to_string())
                .chain(a.iter().cloned())
                .collect(),
            None => vec!["/bin/sh".into(), "-c".into(), command.into()],
        })
    }

    pub fn check_cwd(cwd: Option<&String>) -> Result<()> {
        if let Some(c) = cwd {
            validate::runtime_path("cwd", c)?;
        }
        Ok(())
    }

    pub async fn exec(
        self: &Arc<Self>,
        tenant: &str,
        id_or_name: &str,
        req: ExecRequest,
    ) -> Result<ExecResult> {
        let argv = Self::argv(&req.command, req.args.as_ref())?;
        Self::check_cwd(req.cwd.as_ref())?;
        validate::env("env", &req.env)?;
        let timeout = req.timeout_secs.unwrap_or(DEFAULT_EXEC_TIMEOUT_SECS);
        if timeout == 0 || timeout > MAX_EXEC_TIMEOUT_SECS {
            return Err(Error::invalid(
                "timeout_secs",
                format!("must be between 1 and {MAX_EXEC_TIMEOUT_SECS}"),
            ));
        }
        let max_out = req.max_output_bytes.unwrap_or(DEFAULT_MAX_OUTPUT_BYTES);
        if max_out > MAX_MAX_OUTPUT_BYTES {
            return Err(Error::invalid(
                "max_output_bytes",
                format!("must be at most {MAX_MAX_OUTPUT_BYTES}"),
            ));
        }
        if req
            .stdin
            .as_ref()
            .is_some_and(|s| s.len() > 16 * 1024 * 1024)
        {
            return Err(Error::invalid("stdin", "must be at most 16 MiB"));
        }
        let (r, _guard, agent) = self.running(tenant, id_or_name, "exec").await?;
        let t0 = Instant::now();
        let out = agent
            .exec(
                ProcessSpec {
                    argv,
                    env: Self::command_env(&r, &req.env, false),
                    cwd: Some(req.cwd.clone().unwrap_or_else(|| "/root".into())),
                },
                req.stdin,
                timeout * 1000,
                max_out,
            )
            .await?;
        self.metrics.observe_exec(t0.elapsed());
        Ok(ExecResult {
            exit_code: out.exit_code,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            stdout_truncated: out.stdout_truncated,
            stderr_truncated: out.stderr_truncated,
            duration_ms: out.duration_ms,
            timed_out: out.timed_out,
        })
    }
}
