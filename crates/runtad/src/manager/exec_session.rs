//! Interactive commands: one process inside a runtime with its stdin, output,
//! terminal size and signals, for the exec WebSocket routes. The agent's frame
//! tags and requests stay here; the API sees typed inputs and outputs and
//! speaks its own WebSocket frames (docs/api.md, "Exec").

use std::collections::BTreeMap;
use std::sync::Arc;

use runta_agent::{tag, ProcessSpec, Request as AgentRequest, Response as AgentResponse};
use runta_api::validate;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{Error, ExecGuard, Manager, Result};
use crate::agent_client::{AgentClient, FrameWriter};
use crate::store::RuntimeRecord;

/// A running runtime, resolved and counted as active, before any command runs:
/// the routes resolve first so a wrong name is a 404 before the upgrade.
pub struct ExecSession {
    r: RuntimeRecord,
    guard: ExecGuard,
    agent: AgentClient,
    /// The runtime has a CA of secret injection (`trust.rs`).
    ca: bool,
    /// The image's settings for commands (`None` for `base`).
    image: Option<std::sync::Arc<crate::images::RunInfo>>,
}

/// What to start: the `start` frame's fields.
#[derive(Debug, Clone, Default)]
pub struct ExecStart {
    pub command: String,
    pub args: Option<Vec<String>>,
    pub env: BTreeMap<String, String>,
    pub cwd: Option<String>,
    pub tty: bool,
    pub rows: Option<u16>,
    pub cols: Option<u16>,
}

/// What the caller sends to a running command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecInput {
    Stdin(Vec<u8>),
    Resize { rows: u16, cols: u16 },
    Signal(i32),
    CloseStdin,
}

/// What a running command sends back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecOutput {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    /// The last output of a command.
    Exited(i32),
    /// The agent reported a failure (`code` is its error kind).
    Error {
        code: String,
        message: String,
    },
}

/// A started command. Dropping it closes the agent connection, which hangs up
/// the process if it is still running.
pub struct ExecProcess {
    writer: FrameWriter,
    output: mpsc::Receiver<ExecOutput>,
    reader: JoinHandle<()>,
    _guard: ExecGuard,
}

fn agent_gone() -> Error {
    Error::Unavailable("the runtime's agent went away".into())
}

impl Manager {
    /// Resolves a runtime that must be running for an interactive command,
    /// waking it if the idle policy suspended it.
    pub async fn exec_session(
        self: &Arc<Self>,
        tenant: &str,
        id_or_name: &str,
    ) -> Result<ExecSession> {
        let (r, guard, agent) = self.running(tenant, id_or_name, "exec").await?;
        let ca = self.trust_sync(&r, Some(&agent)).await;
        let image = self.run_info(&r);
        Ok(ExecSession {
            r,
            guard,
            agent,
            ca,
            image,
        })
    }
}

impl ExecSession {
    pub async fn start(self, s: ExecStart) -> Result<ExecProcess> {
        let argv = Manager::argv(&s.command, s.args.as_ref())?;
        let argv = Manager::shell_argv(argv, s.args.is_some(), self.image.as_deref())?;
        Manager::check_cwd(s.cwd.as_ref())?;
        validate::env("env", &s.env)?;
        let (mut ar, writer) = self
            .agent
            .spawn(
                ProcessSpec {
                    argv,
                    env: Manager::command_env(
                        &self.r,
                        &s.env,
                        s.tty,
                        self.ca,
                        self.image.as_deref(),
                    ),
                    cwd: Some(Manager::default_cwd(s.cwd, self.image.as_deref())),
                    user: Manager::run_user(self.image.as_deref()),
                },
                s.tty,
                s.rows.unwrap_or(24),
                s.cols.unwrap_or(80),
            )
            .await?;
        // Frame reads are not cancel-safe: read the agent in its own task, so
        // `output` can sit in a select! beside the caller's socket.
        let (tx, output) = mpsc::channel(64);
        let reader = tokio::spawn(async move {
            while let Ok(Some(f)) = ar.next().await {
                let out = match f.tag {
                    tag::STDOUT => ExecOutput::Stdout(f.payload),
                    tag::STDERR => ExecOutput::Stderr(f.payload),
                    tag::CONTROL => match serde_json::from_slice::<AgentResponse>(&f.payload) {
                        Ok(AgentResponse::Exited { exit_code }) => ExecOutput::Exited(exit_code),
                        Ok(AgentResponse::Error { kind, message }) => ExecOutput::Error {
                            code: kind,
                            message,
                        },
                        _ => continue,
                    },
                    _ => continue,
                };
                let last = matches!(out, ExecOutput::Exited(_));
                if tx.send(out).await.is_err() || last {
                    break;
                }
            }
        });
        Ok(ExecProcess {
            writer,
            output,
            reader,
            _guard: self.guard,
        })
    }
}

impl ExecProcess {
    /// The next output; `None` once the agent is gone without an exit.
    /// Cancel-safe.
    pub async fn output(&mut self) -> Option<ExecOutput> {
        self.output.recv().await
    }

    pub async fn send(&mut self, input: ExecInput) -> Result<()> {
        let sent = match input {
            ExecInput::Stdin(d) => self.writer.frame(tag::STDIN, &d).await,
            ExecInput::Resize { rows, cols } => {
                self.writer
                    .request(&AgentRequest::Resize { rows, cols })
                    .await
            }
            ExecInput::Signal(signal) => {
                self.writer.request(&AgentRequest::Signal { signal }).await
            }
            ExecInput::CloseStdin => self.writer.frame(tag::EOF, b"").await,
        };
        sent.map_err(|_| agent_gone())
    }
}

impl Drop for ExecProcess {
    fn drop(&mut self) {
        self.reader.abort();
    }
}
