//! The agent protocol, shared by `runta-agent` (inside a runtime) and `runtad`.
//!
//! One unix-socket connection carries one operation. Every message is a frame:
//! a 1-byte tag, a 4-byte big-endian length and that many payload bytes. Control
//! frames carry JSON ([`Request`] from the daemon, [`Response`] from the agent);
//! data frames carry raw bytes, so command output never needs escaping. This crate
//! has no I/O runtime of its own so the agent stays small and synchronous; the
//! daemon reads the same frames with tokio.

use serde::{Deserialize, Serialize};

/// Bumped whenever a message changes incompatibly; exchanged in `Hello`.
pub const PROTOCOL_VERSION: u32 = 1;

/// Largest payload either side accepts in one frame.
pub const MAX_FRAME: usize = 4 * 1024 * 1024;

pub const HEADER_LEN: usize = 5;

/// First line of the `/etc` files the agent writes at boot (hosts,
/// resolv.conf). While it is there the file is Runta's, rewritten at every
/// boot, and left out of a commit (docs/images.md); a user who removes it
/// keeps their own version.
pub const MANAGED_ETC_MARKER: &str =
    "# Managed by Runta at boot; delete this line to keep your own edits.";

/// The folder in every runtime's root that holds the agent's mount point and
/// its bookkeeping; never part of an image made from a runtime.
pub const RUNTA_DIR: &str = ".runta";

/// The most entries one folder listing returns; a larger folder is refused
/// (`too_large`) rather than buffered whole by the daemon.
pub const MAX_DIR_ENTRIES: usize = 100_000;

/// Entries per `Dir` part: even 1,000 names of 255 control characters
/// (escaped six-fold in JSON) stay under 2 MiB, half of [`MAX_FRAME`].
pub const DIR_PART: usize = 1_000;

/// Frame tags.
pub mod tag {
    /// JSON `Request` or `Response`.
    pub const CONTROL: u8 = 1;
    /// Bytes for the process's stdin, or the content of a file being written.
    pub const STDIN: u8 = 2;
    /// Bytes the process wrote to stdout, or the content of a file being read.
    pub const STDOUT: u8 = 3;
    pub const STDERR: u8 = 4;
    /// End of the data stream in this direction (stdin closed / file complete).
    pub const EOF: u8 = 5;
}

/// Encodes a frame header for `len` payload bytes.
pub fn header(tag: u8, len: usize) -> [u8; HEADER_LEN] {
    let n = (len as u32).to_be_bytes();
    [tag, n[0], n[1], n[2], n[3]]
}

/// Splits a frame header into tag and payload length, rejecting oversized frames.
pub fn parse_header(h: &[u8; HEADER_LEN]) -> Result<(u8, usize), String> {
    let len = u32::from_be_bytes([h[1], h[2], h[3], h[4]]) as usize;
    if len > MAX_FRAME {
        return Err(format!(
            "frame of {len} bytes exceeds the {MAX_FRAME}-byte limit"
        ));
    }
    Ok((h[0], len))
}

/// One process to run. The environment is complete, except that with a
/// `user` the agent adds `HOME`, `USER` and `LOGNAME` from the runtime's
/// `/etc/passwd` where `env` has none.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ProcessSpec {
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: Option<String>,
    /// The image config's `User` (`name`, `uid`, `name:group`, `uid:gid`, …),
    /// resolved by the agent in the runtime's own `/etc/passwd` and
    /// `/etc/group`; `None` runs the command as the agent's root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    Hello,
    /// Buffered exec: the agent answers with one STDOUT frame, one STDERR frame
    /// and a `Done` response.
    Exec {
        process: ProcessSpec,
        stdin: Option<String>,
        timeout_ms: u64,
        max_output_bytes: u64,
    },
    /// Streaming exec: `Started`, then data frames both ways, then `Exited`.
    Spawn {
        process: ProcessSpec,
        tty: bool,
        rows: u16,
        cols: u16,
    },
    /// Only valid on a `Spawn` connection.
    Resize {
        rows: u16,
        cols: u16,
    },
    /// Only valid on a `Spawn` connection; sent to the process group.
    Signal {
        signal: i32,
    },
    /// Answered by `FileInfo`, STDOUT frames and EOF.
    ReadFile {
        path: String,
    },
    /// Followed by STDIN frames and EOF from the daemon; answered by `Written`.
    WriteFile {
        path: String,
        mode: Option<u32>,
        /// The image's `User`: a new file (and any folder made for it) is
        /// owned by that user; `None` leaves it root's. A replaced file
        /// keeps its owner either way.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        user: Option<String>,
    },
    ListDir {
        path: String,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DirEntry {
    pub name: String,
    pub kind: String,
    pub size: u64,
    pub mode: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Response {
    Hello {
        version: u32,
        pid: u32,
    },
    Done {
        exit_code: i32,
        stdout_truncated: bool,
        stderr_truncated: bool,
        timed_out: bool,
        duration_ms: u64,
    },
    Started {
        pid: u32,
    },
    Exited {
        exit_code: i32,
    },
    FileInfo {
        size: u64,
    },
    Written {
        size: u64,
    },
    /// One part of a listing: a large folder comes in several parts (each
    /// well under [`MAX_FRAME`]), the last with `more: false`.
    Dir {
        entries: Vec<DirEntry>,
        #[serde(default)]
        more: bool,
    },
    /// `kind`: `not_found`, `is_directory`, `not_directory`, `permission_denied`,
    /// `invalid_argument`, `too_large` or `io`.
    Error {
        kind: String,
        message: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_roundtrip_and_limit() {
        let h = header(tag::STDOUT, 1234);
        assert_eq!(parse_header(&h).unwrap(), (tag::STDOUT, 1234));
        let big = header(tag::STDOUT, MAX_FRAME + 1);
        assert!(parse_header(&big).is_err());
    }

    #[test]
    fn request_json_shape() {
        let r = Request::Signal { signal: 2 };
        let s = serde_json::to_string(&r).unwrap();
        assert_eq!(s, r#"{"op":"signal","signal":2}"#);
        assert_eq!(serde_json::from_str::<Request>(&s).unwrap(), r);
    }
}
