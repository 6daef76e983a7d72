//! Blocking frame I/O on one daemon connection.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};

use runta_agent::{header, parse_header, tag, Request, Response, HEADER_LEN};

pub struct Conn {
    reader: UnixStream,
    writer: Writer,
}

/// A cloneable, locked writer so output threads can interleave whole frames.
#[derive(Clone)]
pub struct Writer(Arc<Mutex<UnixStream>>);

impl Writer {
    pub fn frame(&self, t: u8, payload: &[u8]) -> io::Result<()> {
        let mut s = self.0.lock().unwrap_or_else(|e| e.into_inner());
        s.write_all(&header(t, payload.len()))?;
        s.write_all(payload)
    }

    pub fn send(&self, r: &Response) -> io::Result<()> {
        let body = serde_json::to_vec(r).map_err(io::Error::other)?;
        self.frame(tag::CONTROL, &body)
    }
}

pub enum Incoming {
    Request(Request),
    Data(Vec<u8>),
    Eof,
}

impl Conn {
    pub fn new(s: UnixStream) -> Self {
        let w = s.try_clone().expect("clone unix stream");
        Conn {
            reader: s,
            writer: Writer(Arc::new(Mutex::new(w))),
        }
    }

    /// A handle that can shut the socket down from another thread.
    pub fn shutdown_handle(&self) -> io::Result<UnixStream> {
        self.reader.try_clone()
    }

    pub fn writer(&self) -> Writer {
        self.writer.clone()
    }

    pub fn send(&self, r: &Response) -> io::Result<()> {
        self.writer.send(r)
    }

    pub fn frame(&self, t: u8, payload: &[u8]) -> io::Result<()> {
        self.writer.frame(t, payload)
    }

    /// Next frame, or `None` when the daemon closed the connection.
    pub fn recv(&mut self) -> io::Result<Option<Incoming>> {
        let mut h = [0u8; HEADER_LEN];
        match self.reader.read_exact(&mut h) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
        let (t, len) = parse_header(&h).map_err(io::Error::other)?;
        let mut buf = vec![0u8; len];
        self.reader.read_exact(&mut buf)?;
        Ok(Some(match t {
            tag::CONTROL => Incoming::Request(
                serde_json::from_slice(&buf)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?,
            ),
            tag::STDIN => Incoming::Data(buf),
            tag::EOF => Incoming::Eof,
            other => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("unexpected frame tag {other}"),
                ))
            }
        }))
    }

    pub fn recv_request(&mut self) -> io::Result<Option<Request>> {
        match self.recv()? {
            None => Ok(None),
            Some(Incoming::Request(r)) => Ok(Some(r)),
            Some(_) => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "expected a request frame first",
            )),
        }
    }
}
