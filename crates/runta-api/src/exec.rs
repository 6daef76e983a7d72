//! Exec bodies: the buffered route and the WebSocket frames.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub const DEFAULT_EXEC_TIMEOUT_SECS: u64 = 60;
pub const MAX_EXEC_TIMEOUT_SECS: u64 = 24 * 3600;
pub const DEFAULT_MAX_OUTPUT_BYTES: u64 = 1024 * 1024;
pub const MAX_MAX_OUTPUT_BYTES: u64 = 64 * 1024 * 1024;

/// `POST /v1/runtimes/{id}/exec`. With `args` absent `command` runs under
/// `/bin/sh -c`; with `args` present `command` is the executable.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecRequest {
    pub command: String,
    pub args: Option<Vec<String>>,
    pub cwd: Option<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    pub stdin: Option<String>,
    pub timeout_secs: Option<u64>,
    pub max_output_bytes: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ExecResult {
    pub exit_code: i32,
    pub stdout: String,
    pub stderr: String,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    pub duration_ms: u64,
    pub timed_out: bool,
}

/// Frames a client sends on `GET /v1/runtimes/{id}/exec/ws` (text frames, JSON).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientFrame {
    Start {
        command: String,
        #[serde(default)]
        args: Option<Vec<String>>,
        #[serde(default)]
        env: BTreeMap<String, String>,
        #[serde(default)]
        cwd: Option<String>,
        #[serde(default)]
        tty: bool,
        #[serde(default)]
        rows: Option<u16>,
        #[serde(default)]
        cols: Option<u16>,
    },
    Stdin {
        data_base64: String,
    },
    Resize {
        rows: u16,
        cols: u16,
    },
    Signal {
        /// A number or a name such as `SIGINT` / `INT`.
        signal: serde_json::Value,
    },
    CloseStdin,
    /// The official client's answer to the server's heartbeat on `/exec/stream`
    /// (accepted on both routes; nothing happens).
    Heartbeat,
}

/// Frames the server sends on the exec WebSocket.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    Stdout { data_base64: String },
    Stderr { data_base64: String },
    Exit { exit_code: i32 },
    Error { code: String, message: String },
}
