//! The daemon's side of the agent protocol (see the `runta-agent` crate): one
//! unix-socket connection per operation, frames read and written with tokio.

use std::path::{Path, PathBuf};

use runta_agent::{
    header, parse_header, tag, DirEntry, ProcessSpec, Request, Response, HEADER_LEN,
};
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
            None => Err(proto("agent closed the connection")),
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

/// Captured result of a buffered exec.
#[derive(Debug, Default)]
pub struct ExecOutput {
    pub exit_code: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    pub timed_out: bool,
    pub duration_ms: u64,
}

#[derive(Clone)]
pub struct AgentClient {
    socket: PathBuf,
}

impl AgentClient {
    pub fn new(socket: &Path) -> Self {
        AgentClient {
            socket: socket.to_path_buf(),
        }
    }

    pub async fn connect(&self) -> Result<(FrameReader, FrameWriter)> {
        let s = UnixStream::connect(&self.socket)
            .await
            .map_err(AgentError::Unreachable)?;
        let (r, w) = s.into_split();
        Ok((FrameReader(r), FrameWriter(w)))
    }

    pub async fn exec(
        &self,
        process: ProcessSpec,
        stdin: Option<String>,
        timeout_ms: u64,
        max_output_bytes: u64,
    ) -> Result<ExecOutput> {
        let (mut r, mut w) = self.connect().await?;
        w.request(&Request::Exec {
            process,
            stdin,
            timeout_ms,
            max_output_bytes,
        })
        .await?;
        let mut out = ExecOutput::default();
        // The agent caps each stream; refuse anything beyond that plus slack so
        // a misbehaving agent cannot make the daemon buffer without bound.
        let limit = max_output_bytes as usize + 64 * 1024;
        loop {
            let f = r
                .next()
                .await?
                .ok_or_else(|| proto("agent closed the connection during exec"))?;
            match f.tag {
                tag::STDOUT => append(&mut out.stdout, &f.payload, limit)?,
                tag::STDERR => append(&mut out.stderr, &f.payload, limit)?,
                tag::CONTROL => {
                    match serde_json::from_slice::<Response>(&f.payload).map_err(proto)? {
                        Response::Done {
                            exit_code,
                            stdout_truncated,
                            stderr_truncated,
                            timed_out,
                            duration_ms,
                        } => {
                            out.exit_code = exit_code;
                            out.stdout_truncated = stdout_truncated;
                            out.stderr_truncated = stderr_truncated;
                            out.timed_out = timed_out;
                            out.duration_ms = duration_ms;
                            return Ok(out);
                        }
                        Response::Error { kind, message } => {
                            return Err(AgentError::Refused { kind, message })
                        }
                        other => return Err(proto(format!("unexpected {other:?}"))),
                    }
                }
                t => return Err(proto(format!("unexpected frame tag {t}"))),
            }
        }
    }

    /// Opens a file for reading: returns its size and the reader positioned at
    /// its first content frame (STDOUT frames, then EOF).
    pub async fn read_file(&self, path: &str) -> Result<(u64, FrameReader)> {
        let (mut r, mut w) = self.connect().await?;
        w.request(&Request::ReadFile { path: path.into() }).await?;
        match r.response().await? {
            Response::FileInfo { size } => Ok((size, r)),
            other => Err(proto(format!("unexpected {other:?}"))),
        }
    }

    /// Starts a file upload; send STDIN frames then EOF on the writer, then read
    /// `Written` from the reader.
    pub async fn write_file(
        &self,
        path: &str,
        mode: Option<u32>,
    ) -> Result<(FrameReader, FrameWriter)> {
        let (r, mut w) = self.connect().await?;
        w.request(&Request::WriteFile {
            path: path.into(),
            mode,
        })
        .await?;
        Ok((r, w))
    }

    pub async fn list_dir(&self, path: &str) -> Result<Vec<DirEntry>> {
        let (mut r, mut w) = self.connect().await?;
        w.request(&Request::ListDir { path: path.into() }).await?;
        match r.response().await? {
            Response::Dir { entries } => Ok(entries),
            other => Err(proto(format!("unexpected {other:?}"))),
        }
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

fn append(buf: &mut Vec<u8>, data: &[u8], limit: usize) -> Result<()> {
    if buf.len() + data.len() > limit {
        return Err(proto("agent sent more output than the cap allows"));
    }
    buf.extend_from_slice(data);
    Ok(())
}
