//! Running commands and moving files inside a runtime, through its agent.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use runta_agent::ProcessSpec;
use runta_api::{
    validate, ExecRequest, RuntimeStatus, DEFAULT_EXEC_TIMEOUT_SECS, DEFAULT_MAX_OUTPUT_BYTES,
    MAX_EXEC_TIMEOUT_SECS, MAX_MAX_OUTPUT_BYTES,
};
use uuid::Uuid;

use super::exec_output::Held;
use super::{Activity, Error, Manager, Result};
use crate::agent_client::{AgentClient, Stream};
use crate::store::RuntimeRecord;

/// How long past its own `timeout_secs` a buffered exec may take before the
/// agent counts as not answering (the agent kills the command at the timeout
/// and needs a moment to report).
pub const EXEC_DEADLINE_GRACE: Duration = Duration::from_secs(5);
/// Deadline of the `Hello` probe that tells a slow agent from a wedged one.
pub const AGENT_PROBE_DEADLINE: Duration = Duration::from_secs(2);

/// A buffered exec's result with its output already JSON-escaped (see
/// `exec_output`); the API writes it out as an `ExecResult`.
pub struct EncodedExec {
    pub exit_code: i32,
    /// The inside of the JSON string (escaped, no quotes).
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    pub duration_ms: u64,
    pub timed_out: bool,
    /// The output's share of the exec budget, held until the reply is sent.
    pub held: Vec<Held>,
}

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
    pub(super) async fn running(
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
        if r.status == RuntimeStatus::Suspended {
            return Err(Error::FailedPrecondition(format!(
                "cannot {what} in runtime {:?}: it is suspended and its idle policy is suspend_only; start or resume it first",
                r.name
            )));
        }
        if r.status != RuntimeStatus::Running {
            return Err(Error::FailedPrecondition(format!(
                "cannot {what} in runtime {:?}: it is {}",
                r.name, r.status
            )));
        }
        let agent = AgentClient::new(self.backend.agent_address(r.id));
        Ok((r, guard, agent))
    }

    /// The environment of a command: defaults, then the runtime's, then the call's.
    /// An image's `Env` comes after the defaults and before the runtime's own.
    /// With an image `User` there is no default `HOME`: the agent sets `HOME`,
    /// `USER` and `LOGNAME` from the runtime's `/etc/passwd` where none of
    /// these set them (docs/images.md, "User").
    pub(super) fn command_env(
        r: &RuntimeRecord,
        extra: &BTreeMap<String, String>,
        tty: bool,
        ca: bool,
        image: Option<&crate::images::RunInfo>,
    ) -> Vec<(String, String)> {
        let mut env: BTreeMap<String, String> = BTreeMap::new();
        env.insert(
            "PATH".into(),
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        );
        if image.and_then(|i| i.user.as_ref()).is_none() {
            env.insert("HOME".into(), "/root".into());
        }
        env.insert("HOSTNAME".into(), r.name.clone());
        env.insert("LANG".into(), "C.UTF-8".into());
        if tty {
            env.insert("TERM".into(), "xterm-256color".into());
        }
        if let Some(img) = image {
            env.extend(img.env.iter().cloned());
        }
        // The runtime's own CA of secret injection (trust.rs).
        if ca {
            for k in super::trust::CA_VARS {
                env.insert(k.into(), super::trust::BUNDLE.into());
            }
        }
        env.extend(r.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        env.extend(extra.iter().map(|(k, v)| (k.clone(), v.clone())));
        env.into_iter().collect()
    }

    /// Builds the argv: `command` alone runs under `/bin/sh -c`; with `args` it is
    /// the executable.
    pub(super) fn argv(command: &str, args: Option<&Vec<String>>) -> Result<Vec<String>> {
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

    /// The cwd of a command: the caller's, else the image's `WorkingDir`,
    /// else `/root` (`base`) or `/` (an OCI image, as other engines do).
    pub(super) fn default_cwd(
        cwd: Option<String>,
        image: Option<&crate::images::RunInfo>,
    ) -> String {
        cwd.unwrap_or_else(|| match image {
            Some(i) => i.working_dir.clone().unwrap_or_else(|| "/".into()),
            None => "/root".into(),
        })
    }

    /// The user a command runs as: the image's `User`, resolved by the agent
    /// inside the runtime; `None` (root) for `base` and images without one.
    pub(super) fn run_user(image: Option<&crate::images::RunInfo>) -> Option<String> {
        image.and_then(|i| i.user.clone())
    }

    pub(super) fn check_cwd(cwd: Option<&String>) -> Result<()> {
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
    ) -> Result<EncodedExec> {
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
        // Admission before any work: a flood is refused at the door with the
        // envelope, not queued in memory.
        let permit = self.exec_gate.admit(tenant)?;
        let (r, _guard, agent) = self.running(tenant, id_or_name, "exec").await?;
        let ca = self.trust_sync(&r, Some(&agent)).await;
        let t0 = Instant::now();
        // Output counts against this tenant's share of the shared buffer.
        let mut stdout = permit.stream(max_out);
        let mut stderr = permit.stream(max_out);
        let mut sink = |s: Stream, data: &[u8]| match s {
            Stream::Stdout => stdout.push(data),
            Stream::Stderr => stderr.push(data),
        };
        // The agent kills the command at `timeout`; past that plus a grace the
        // agent itself is not answering.
        let deadline = Duration::from_secs(timeout) + EXEC_DEADLINE_GRACE;
        let image = self.run_info(&r);
        let argv = Self::shell_argv(argv, req.args.is_some(), image.as_deref())?;
        let call = agent.exec(
            ProcessSpec {
                argv,
                env: Self::command_env(&r, &req.env, false, ca, image.as_deref()),
                cwd: Some(Self::default_cwd(req.cwd.clone(), image.as_deref())),
                user: Self::run_user(image.as_deref()),
            },
            req.stdin,
            timeout * 1000,
            max_out,
            &mut sink,
        );
        let out = match tokio::time::timeout(deadline, call).await {
            Ok(out) => out?,
            Err(_) => return Err(self.agent_deadline(&r, &agent, "exec", deadline).await),
        };
        self.metrics.observe_exec(t0.elapsed());
        let (stdout, stdout_truncated, h1) = stdout.finish(out.stdout_truncated);
        let (stderr, stderr_truncated, h2) = stderr.finish(out.stderr_truncated);
        drop(permit);
        Ok(EncodedExec {
            exit_code: out.exit_code,
            stdout,
            stderr,
            stdout_truncated,
            stderr_truncated,
            duration_ms: out.duration_ms,
            timed_out: out.timed_out,
            held: vec![h1, h2],
        })
    }

    /// A call ran past its deadline: probe the agent; one that does not answer
    /// a `Hello` either is wedged (stopped under a debugger, livelocked), so the
    /// runtime becomes `error` with the way out in its message (`start` reboots
    /// it, delete removes it) instead of staying `running` and hanging callers.
    pub(super) async fn agent_deadline(
        &self,
        r: &RuntimeRecord,
        agent: &AgentClient,
        what: &str,
        deadline: Duration,
    ) -> Error {
        let alive = matches!(
            tokio::time::timeout(AGENT_PROBE_DEADLINE, agent.hello()).await,
            Ok(Ok(_))
        );
        let secs = deadline.as_secs();
        if alive {
            return Error::DeadlineExceeded(format!(
                "{what} in runtime {:?} got no answer within {secs} s",
                r.name
            ));
        }
        let message = format!(
            "the runtime's agent (PID 1) stopped answering: no reply to {what} within {secs} s \
             nor to a probe within {} s; start the runtime again or delete it",
            AGENT_PROBE_DEADLINE.as_secs()
        );
        let lock = self.lock_for(r.id);
        let _g = lock.lock().await;
        if let Ok(Some(mut cur)) = self.store.get_runtime(r.id) {
            // A runtime paused meanwhile is frozen on purpose, not wedged.
            if cur.status == RuntimeStatus::Running
                && self
                    .set_status(
                        &mut cur,
                        runta_api::StatusEvent::AgentWedged,
                        Some(message.clone()),
                    )
                    .is_ok()
            {
                tracing::warn!(id = %r.id, name = %r.name, "agent wedged: {message}");
            }
        }
        Error::DeadlineExceeded(message)
    }
}
