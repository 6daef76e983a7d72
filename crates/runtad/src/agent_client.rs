//! The daemon's side of the agent protocol (see the `runta-agent` crate): one
//! unix-socket connection per operation, frames read and written with tokio.

use runta_agent::{
    header, parse_header, tag, DirEntry, ProcessSpec, Request, Response, HEADER_LEN,
};
use runta_backend::AgentAddress;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The agent is not reachable (runtime stopped, crashed or frozen).
    #[error("agent unreachable: {0}")]
    Unreachable(std::io::Error),
    #[error("agent protocol: {0}")]
    Protocol(String),
    /// The agent hung up in the middle of a call: the runtime stopped, crashed
    /// or its init was killed.
    #[error("the runtime's agent went away during the call")]
    Closed,
    /// Something other than the runtime's init holds the agent socket.
    #[error("{0}")]
    Impostor(String),
    /// The agent refused the operation (`kind` as in `Response::Error`).
    #[error("{message}")]
    Refused { kind: String, message: String },
}

pub type Result<T> = std::result::Result<T, AgentError>;

fn proto(e: impl std::fmt::Display) -> AgentError {
    AgentError::Protocol(e.to_string())
}

pub struct Frame {
    pub tag: u8,
    pub payload: Vec<u8>,
}

pub struct FrameReader(OwnedReadHalf);
pub struct FrameWriter(OwnedWriteHalf);

impl FrameReader {
    /// Next frame, or `None` at end of stream.
    pub async fn next(&mut self) -> Result<Option<Frame>> {
        let mut h = [0u8; HEADER_LEN];
        match self.0.read_exact(&mut h).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(proto(e)),
        }
        let (t, len) = parse_header(&h).map_err(proto)?;
        let mut payload = vec![0u8; len];
        self.0.read_exact(&mut payload).await.map_err(proto)?;
        Ok(Some(Frame { tag: t, payload }))
    }

    /// [`next`](Self::next) under an idle deadline: for file streams, where
    /// a silent agent must not hold a request open forever (an interactive
    /// exec stream may be silent as long as it likes, so `next` has none).
    pub async fn next_within(&mut self, idle: std::time::Duration) -> Result<Option<Frame>> {
        tokio::time::timeout(idle, self.next())
            .await
            .unwrap_or_else(|_| Err(timed_out(idle)))
    }

    pub async fn response(&mut self) -> Result<Response> {
        match self.next().await? {
            Some(f) if f.tag == tag::CONTROL => {
                let r: Response = serde_json::from_slice(&f.payload).map_err(proto)?;
                if let Response::Error { kind, message } = r {
                    return Err(AgentError::Refused { kind, message });
                }
                Ok(r)
            }
            Some(f) => Err(proto(format!(
                "expected a response, got frame tag {}",
                f.tag
            ))),
            None => Err(AgentError::Closed),
        }
    }
}

impl FrameWriter {
    pub async fn frame(&mut self, t: u8, payload: &[u8]) -> Result<()> {
        let mut buf = Vec::with_capacity(HEADER_LEN + payload.len());
        buf.extend_from_slice(&header(t, payload.len()));
        buf.extend_from_slice(payload);
        self.0.write_all(&buf).await.map_err(proto)
    }

    pub async fn request(&mut self, r: &Request) -> Result<()> {
        let body = serde_json::to_vec(r).map_err(proto)?;
        self.frame(tag::CONTROL, &body).await
    }
}

/// How a buffered exec ended (its output went to the caller's sink).
#[derive(Debug, Default)]
pub struct ExecOutput {
    pub exit_code: i32,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    pub timed_out: bool,
    pub duration_ms: u64,
}

/// Which stream an output chunk of a buffered exec belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

#[derive(Clone)]
pub struct AgentClient {
    addr: AgentAddress,
}

impl AgentClient {
    pub fn new(addr: AgentAddress) -> Self {
        AgentClient { addr }
    }

    /// Connects to the agent's socket (a path the backend owns, which the
    /// runtime cannot see) and checks that the process listening there is the
    /// runtime's own init before a single byte is sent.
    pub async fn connect(&self) -> Result<(FrameReader, FrameWriter)> {
        let s = UnixStream::connect(&self.addr.socket)
            .await
            .map_err(AgentError::Unreachable)?;
        let pid = s
            .peer_cred()
            .map_err(AgentError::Unreachable)?
            .pid()
            .unwrap_or(0)
            .max(0) as u32;
        self.addr.verify_peer(pid).map_err(AgentError::Impostor)?;
        let (r, w) = s.into_split();
        Ok((FrameReader(r), FrameWriter(w)))
    }

    /// Runs a buffered exec. Output is handed to `sink` frame by frame as it
    /// arrives, so the daemon never holds it raw (the caller bounds what it keeps).
    pub async fn exec(
        &self,
        process: ProcessSpec,
        stdin: Option<String>,
        timeout_ms: u64,
        max_output_bytes: u64,
        sink: &mut (dyn FnMut(Stream, &[u8]) + Send),
    ) -> Result<ExecOutput> {
        let (mut r, mut w) = self.connect().await?;
        w.request(&Request::Exec {
            process,
            stdin,
            timeout_ms,
            max_output_bytes,
        })
        .await?;
        // The agent caps each stream; refuse anything beyond that plus slack so
        // a misbehaving agent cannot stream without end.
        let limit = max_output_bytes.saturating_add(64 * 1024);
        let (mut n_out, mut n_err) = (0u64, 0u64);
        loop {
            let f = r.next().await?.ok_or(AgentError::Closed)?;
            let (stream, seen) = match f.tag {
                tag::STDOUT => (Stream::Stdout, &mut n_out),
                tag::STDERR => (Stream::Stderr, &mut n_err),
                tag::CONTROL => {
                    match serde_json::from_slice::<Response>(&f.payload).map_err(proto)? {
                        Response::Done {
                            exit_code,
                            stdout_truncated,
                            stderr_truncated,
                            timed_out,
                            duration_ms,
                        } => {
                            return Ok(ExecOutput {
                                exit_code,
                                stdout_truncated,
                                stderr_truncated,
                                timed_out,
                                duration_ms,
                            });
                        }
                        Response::Error { kind, message } => {
                            return Err(AgentError::Refused { kind, message })
                        }
                        other => return Err(proto(format!("unexpected {other:?}"))),
                    }
                }
                t => return Err(proto(format!("unexpected frame tag {t}"))),
            };
            *seen += f.payload.len() as u64;
            if *seen > limit {
                return Err(proto("agent sent more output than the cap allows"));
            }
            sink(stream, &f.payload);
        }
    }

    /// Asks the agent who it is: the liveness probe after a call ran past its
    /// deadline (the caller puts a deadline on it).
    pub async fn hello(&self) -> Result<u32> {
        let (mut r, mut w) = self.connect().await?;
        w.request(&Request::Hello).await?;
        match r.response().await? {
            Response::Hello { version, .. } => Ok(version),
            other => Err(proto(format!("unexpected {other:?}"))),
        }
    }

    /// Opens a file for reading: returns its size and the reader positioned at
    /// its first content frame (STDOUT frames, then EOF).
    pub async fn read_file(&self, path: &str) -> Result<(u64, FrameReader)> {
        within(OPEN_DEADLINE, async {
            let (mut r, mut w) = self.connect().await?;
            w.request(&Request::ReadFile { path: path.into() }).await?;
            match r.response().await? {
                Response::FileInfo { size } => Ok((size, r)),
                other => Err(proto(format!("unexpected {other:?}"))),
            }
        })
        .await
    }

    /// Starts a file upload; send STDIN frames then EOF on the writer, then read
    /// `Written` from the reader.
    pub async fn write_file(
        &self,
        path: &str,
        mode: Option<u32>,
        user: Option<String>,
    ) -> Result<(FrameReader, FrameWriter)> {
        within(OPEN_DEADLINE, async {
            let (r, mut w) = self.connect().await?;
            w.request(&Request::WriteFile {
                path: path.into(),
                mode,
                user,
            })
            .await?;
            Ok((r, w))
        })
        .await
    }

    pub async fn list_dir(&self, path: &str) -> Result<Vec<DirEntry>> {
        within(OPEN_DEADLINE, async {
            let (mut r, mut w) = self.connect().await?;
            w.request(&Request::ListDir { path: path.into() }).await?;
            let mut all = Vec::new();
            loop {
                match r.response().await? {
                    Response::Dir { entries, more } => {
                        // A hostile agent cannot make the daemon hold more
                        // than an honest one would send.
                        if all.len() + entries.len() > runta_agent::MAX_DIR_ENTRIES {
                            return Err(proto("the agent listed more entries than allowed"));
                        }
                        all.extend(entries);
                        if !more {
                            return Ok(all);
                        }
                    }
                    other => return Err(proto(format!("unexpected {other:?}"))),
                }
            }
        })
        .await
    }

    /// Starts a streaming process. The reader then yields `Started` (or, when
    /// the command cannot start, a STDERR frame and `Exited`), output frames, and
    /// finally `Exited`.
    pub async fn spawn(
        &self,
        process: ProcessSpec,
        tty: bool,
        rows: u16,
        cols: u16,
    ) -> Result<(FrameReader, FrameWriter)> {
        let (r, mut w) = self.connect().await?;
        w.request(&Request::Spawn {
            process,
            tty,
            rows,
            cols,
        })
        .await?;
        Ok((r, w))
    }
}

/// Deadline of opening a file or listing a folder (docs/security.md, item 9):
/// the agent answers these at once unless it is wedged.
pub const OPEN_DEADLINE: std::time::Duration = std::time::Duration::from_secs(30);

fn timed_out(d: std::time::Duration) -> AgentError {
    AgentError::Unreachable(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!("the agent did not answer within {} s", d.as_secs()),
    ))
}

async fn within<T>(
    d: std::time::Duration,
    f: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    tokio::time::timeout(d, f)
        .await
        .unwrap_or_else(|_| Err(timed_out(d)))
}
