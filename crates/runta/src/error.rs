//! The CLI's error type and how errors reach the user: one clear line on stderr
//! (or the API error object with `--json`) and an exit code: 1 for API and
//! runtime failures, 2 for usage.

use runta_api::{ErrorBody, ErrorCode, ErrorDetail};

pub type Result<T, E = CliError> = std::result::Result<T, E>;

/// An error answer from the daemon.
#[derive(Debug)]
pub struct ApiError {
    pub status: u16,
    pub body: ErrorBody,
    /// A friendlier line to print instead of the daemon's message.
    pub human: Option<String>,
}

#[derive(Debug)]
pub enum CliError {
    /// Wrong invocation or incomplete setup: exit 2.
    Usage(String),
    /// The daemon said no: exit 1.
    Api(ApiError),
    /// Something failed on this side (daemon unreachable, local file): exit 1.
    Failed { code: ErrorCode, message: String },
    /// Leave with this exit code and print nothing (exec passes the remote code on).
    Exit(i32),
}

impl CliError {
    pub fn usage(msg: impl Into<String>) -> Self {
        CliError::Usage(msg.into())
    }

    pub fn failed(msg: impl Into<String>) -> Self {
        CliError::Failed {
            code: ErrorCode::Internal,
            message: msg.into(),
        }
    }

    pub fn unavailable(msg: impl Into<String>) -> Self {
        CliError::Failed {
            code: ErrorCode::Unavailable,
            message: msg.into(),
        }
    }

    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Usage(_) => 2,
            CliError::Api(_) | CliError::Failed { .. } => 1,
            CliError::Exit(c) => *c,
        }
    }

    /// Is this the daemon saying "not found"?
    pub fn is_not_found(&self) -> bool {
        matches!(self, CliError::Api(e) if e.body.error.code == ErrorCode::NotFound)
    }

    /// Is this the daemon refusing an action in the runtime's current status?
    pub fn is_conflict(&self) -> bool {
        matches!(self, CliError::Api(e) if e.body.error.code == ErrorCode::FailedPrecondition)
    }

    /// Is this the daemon rejecting the value of `field` (422)?
    pub fn is_invalid_field(&self, field: &str) -> bool {
        matches!(self, CliError::Api(e)
            if e.body.error.code == ErrorCode::InvalidArgument
                && e.body.error.field.as_deref() == Some(field))
    }

    /// The one human line.
    pub fn human(&self) -> Option<String> {
        match self {
            CliError::Usage(m) => Some(m.clone()),
            CliError::Api(e) => Some(e.human.clone().unwrap_or_else(|| api_line(e))),
            CliError::Failed { message, .. } => Some(message.clone()),
            CliError::Exit(_) => None,
        }
    }

    /// The `--json` form: the API error object (synthesised for local errors).
    pub fn json(&self) -> Option<serde_json::Value> {
        let body = match self {
            CliError::Api(e) => {
                let mut v = serde_json::to_value(&e.body).unwrap_or_default();
                if let Some(h) = &e.human {
                    v["error"]["hint"] = serde_json::Value::String(h.clone());
                }
                return Some(v);
            }
            CliError::Usage(m) => local_body(ErrorCode::InvalidArgument, m),
            CliError::Failed { code, message } => local_body(*code, message),
            CliError::Exit(_) => return None,
        };
        serde_json::to_value(body).ok()
    }

    /// Prints the error (if any) and returns the exit code.
    pub fn report(&self, json: bool) -> i32 {
        if json {
            if let Some(v) = self.json() {
                eprintln!("{v}");
            }
        } else if let Some(line) = self.human() {
            eprintln!("error: {line}");
        }
        self.exit_code()
    }
}

fn local_body(code: ErrorCode, message: &str) -> ErrorBody {
    ErrorBody {
        error: ErrorDetail {
            code,
            message: message.to_string(),
            field: None,
        },
        request_id: String::new(),
    }
}

/// The daemon's message, with a hint on what to do for the common cases.
fn api_line(e: &ApiError) -> String {
    let d = &e.body.error;
    let mut line = d.message.clone();
    if let Some(f) = &d.field {
        if !line.contains(f.as_str()) {
            line = format!("{f}: {line}");
        }
    }
    match d.code {
        ErrorCode::Unauthenticated => {
            line.push_str(" — check RUNTA_TOKEN (or --token / the config file)")
        }
        ErrorCode::PermissionDenied => {
            line.push_str(" — this needs a token that is allowed to do it (admin commands need the admin token from <data-dir>/admin-token)")
        }
        ErrorCode::ResourceExhausted | ErrorCode::Unavailable if e.status == 503 => {
            line.push_str(" — free capacity (runta rm, runta shutdown) or ask for less")
        }
        ErrorCode::FailedPrecondition if line.ends_with("it is paused") => {
            line.push_str(" — resume it with `runta resume`")
        }
        ErrorCode::FailedPrecondition if line.ends_with("it is shutdown") => {
            line.push_str(" — boot it with `runta boot`")
        }
        _ => {}
    }
    line
}

impl From<std::io::Error> for CliError {
    fn from(e: std::io::Error) -> Self {
        CliError::failed(e.to_string())
    }
}
