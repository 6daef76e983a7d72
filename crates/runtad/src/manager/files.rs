//! Files inside a runtime, through its agent: a download counted against what
//! the agent announced, an upload framed to the agent, a folder listing. The
//! API keeps the HTTP side (query parsing, body limits, the download limit).

use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream::BoxStream;
use runta_agent::{tag, Response as AgentResponse};
use runta_api::FileEntry;

use super::{Error, ExecGuard, Manager, Result};
use crate::agent_client::{AgentError, FrameReader, FrameWriter};

/// An opened file: its size as the agent announced it, and its bytes once the
/// caller says how many it serves.
pub struct FileDownload {
    pub size: u64,
    reader: FrameReader,
    guard: ExecGuard,
}

/// An upload under way; dropping it before [`finish`](Self::finish) makes the
/// agent discard the partial file.
pub struct FileUpload {
    reader: FrameReader,
    writer: FrameWriter,
    _guard: ExecGuard,
}

/// What the agent's content frames may add up to. The agent announced `size`;
/// a hostile agent sending more (or fewer) bytes is cut off, never relayed.
struct Relay {
    size: u64,
    served: u64,
    sent: u64,
    received: u64,
}

enum Step {
    Send(Bytes),
    Done,
    Fail(&'static str),
}

impl Relay {
    fn content(&mut self, payload: Vec<u8>) -> Step {
        self.received += payload.len() as u64;
        if self.received > self.size {
            return Step::Fail("the agent sent more bytes than the file's size");
        }
        let room = self.served - self.sent;
        if room == 0 {
            return Step::Done;
        }
        let mut b = Bytes::from(payload);
        b.truncate(room.min(b.len() as u64) as usize);
        self.sent += b.len() as u64;
        Step::Send(b)
    }

    fn eof(&self) -> Step {
        if self.sent < self.served {
            Step::Fail("file stream ended early")
        } else {
            Step::Done
        }
    }
}

impl Manager {
    pub async fn read_file(
        self: &Arc<Self>,
        tenant: &str,
        id_or_name: &str,
        path: &str,
    ) -> Result<FileDownload> {
        let (_r, guard, agent) = self.running(tenant, id_or_name, "read files").await?;
        let (size, reader) = agent.read_file(path).await?;
        Ok(FileDownload {
            size,
            reader,
            guard,
        })
    }

    pub async fn write_file(
        self: &Arc<Self>,
        tenant: &str,
        id_or_name: &str,
        path: &str,
        mode: Option<u32>,
    ) -> Result<FileUpload> {
        let (r, guard, agent) = self.running(tenant, id_or_name, "write files").await?;
        // New files belong to the user commands run as (docs/images.md, "User").
        let user = Self::run_user(self.run_info(&r).as_deref());
        let (reader, writer) = agent.write_file(path, mode, user).await?;
        Ok(FileUpload {
            reader,
            writer,
            _guard: guard,
        })
    }

    pub async fn list_files(
        self: &Arc<Self>,
        tenant: &str,
        id_or_name: &str,
        path: &str,
    ) -> Result<Vec<FileEntry>> {
        let (_r, _guard, agent) = self.running(tenant, id_or_name, "list files").await?;
        let entries = agent.list_dir(path).await?;
        Ok(entries
            .into_iter()
            .map(|e| FileEntry {
                name: e.name,
                kind: e.kind,
                size: e.size,
                mode: e.mode,
            })
            .collect())
    }
}

impl FileDownload {
    /// The first `served` bytes (at most `size`); the stream fails if the
    /// agent sends more than it announced or ends short. The runtime counts
    /// as active until the stream is dropped.
    pub fn into_stream(self, served: u64) -> BoxStream<'static, std::io::Result<Bytes>> {
        let relay = Relay {
            size: self.size,
            served: served.min(self.size),
            sent: 0,
            received: 0,
        };
        let st = Some((self.reader, self.guard, relay));
        Box::pin(futures_util::stream::unfold(st, |st| async move {
            let (mut r, g, mut relay) = st?;
            loop {
                let step = match r.next().await {
                    Ok(Some(f)) if f.tag == tag::STDOUT => relay.content(f.payload),
                    Ok(Some(f)) if f.tag == tag::EOF => relay.eof(),
                    Ok(_) => Step::Fail("file stream ended early"),
                    Err(_) => Step::Fail("the agent broke off the file stream"),
                };
                match step {
                    Step::Send(b) if b.is_empty() => continue,
                    Step::Send(b) => return Some((Ok(b), Some((r, g, relay)))),
                    // Dropping the reader closes the agent's connection, so
                    // it stops reading the rest of a file served in part.
                    Step::Done => return None,
                    Step::Fail(why) => {
                        tracing::warn!(size = relay.size, received = relay.received, "{why}");
                        return Some((Err(std::io::Error::other(why)), None));
                    }
                }
            }
        }))
    }
}

impl FileUpload {
    /// Sends the next bytes of the file.
    pub async fn push(&mut self, chunk: &[u8]) -> Result<()> {
        for part in chunk.chunks(1024 * 1024) {
            if let Err(e) = self.writer.frame(tag::STDIN, part).await {
                // The agent may have refused the path: prefer its reason.
                return Err(match self.reader.response().await {
                    Err(refused @ AgentError::Refused { .. }) => Error::from(refused),
                    _ => Error::from(e),
                });
            }
        }
        Ok(())
    }

    /// Ends the file; it replaces the old one only once the agent says so.
    pub async fn finish(mut self) -> Result<()> {
        self.writer.frame(tag::EOF, b"").await?;
        match self.reader.response().await? {
            AgentResponse::Written { .. } => Ok(()),
            other => Err(Error::Internal(format!("unexpected agent reply {other:?}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relay(size: u64, served: u64) -> Relay {
        Relay {
            size,
            served,
            sent: 0,
            received: 0,
        }
    }

    #[test]
    fn a_hostile_agent_cannot_send_more_than_it_announced() {
        let mut r = relay(4, 4);
        assert!(matches!(r.content(vec![1, 2, 3]), Step::Send(b) if b.len() == 3));
        assert!(matches!(r.content(vec![4, 5]), Step::Fail(_)));
        let mut r = relay(4, 4);
        assert!(matches!(r.content(vec![1]), Step::Send(_)));
        assert!(matches!(r.eof(), Step::Fail(_)), "short stream is an error");
    }

    #[test]
    fn a_prefix_stops_at_max_bytes() {
        let mut r = relay(10, 3);
        assert!(matches!(r.content(vec![0; 2]), Step::Send(b) if b.len() == 2));
        assert!(matches!(r.content(vec![0; 4]), Step::Send(b) if b.len() == 1));
        assert!(matches!(r.content(vec![0; 4]), Step::Done));
    }
}
