//! Unpacks one layer tar into its own directory, in the form overlayfs reads
//! as a lower layer: a whiteout `.wh.NAME` becomes a character device 0:0 named
//! `NAME`, an opaque marker `.wh..wh..opq` becomes the `trusted.overlay.opaque`
//! attribute on its directory. Stacked as lowers, the layers then show exactly
//! the tree that applying the tars one over another gives (`umoci unpack`).
//!
//! The tar is hostile until proven otherwise. Every entry is created relative
//! to a descriptor of its parent directory, walked one component at a time
//! with `O_NOFOLLOW`: a path with `..`, or one that goes through a symlink
//! (made by an earlier entry), is refused, never followed, so nothing is
//! written outside the layer's directory. Symlinks are stored as given (they
//! are resolved inside the runtime, against its own root). Device nodes are
//! skipped (the rootfs is mounted `nodev`, and a char device 0:0 would read as
//! a whiteout); `trusted.*` attributes from the tar are dropped (they would
//! steer overlayfs). Limits on files (per layer and per image), bytes, path
//! length, extension headers and attribute values stop tar bombs: the tar
//! reader would hold a PAX or GNU long-name header in memory whole, so
//! [`HeaderGuard`] measures each one in the stream before the reader sees it.
//! A zstd layer may be several concatenated frames (as `zstd` or `pzstd`
//! write them); every frame is decoded.
//!
//! Written by hand rather than with `tar::Archive::unpack`: that follows
//! paths by name and knows nothing of overlay whiteouts.

use std::ffi::{CString, OsStr};
use std::io::{self, BufRead, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat, AtFlags, OFlag};
use nix::sys::stat::{fchmod, fstatat, mkdirat, mknodat, Mode, SFlag};
use nix::unistd::{fchown, fchownat, linkat, symlinkat, unlinkat, Gid, Uid, UnlinkatFlags};

use super::digest::{Digest, Hasher, HashingReader, LimitExceeded};
use super::oci::{sniff, Compression};
use super::{ImageError, Limits};

const WHITEOUT: &str = ".wh.";
const OPAQUE: &str = ".wh..wh..opq";
const OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// What unpacking one layer found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Unpacked {
    /// sha256 of the uncompressed tar.
    pub diff_id: Option<Digest>,
    pub files: u64,
    /// Bytes of file contents written.
    pub bytes: u64,
    /// Device nodes left out.
    pub skipped_devices: u64,
}

fn hostile(msg: impl Into<String>) -> ImageError {
    ImageError::Hostile(msg.into())
}

/// What the store counts an entry as taking on disk: its content rounded
/// up to whole blocks, and never less than one block (an inode and a
/// directory entry are not free). [`super::du`] counts a tree the same way.
pub const BLOCK: u64 = 4096;

pub fn on_disk(content: u64) -> u64 {
    content.div_ceil(BLOCK).max(1).saturating_mul(BLOCK)
}

/// Unpacks the layer blob at `blob` (plain, gzip or zstd tar) into `dest`,
/// which must be a new empty directory. `lowers` are the already unpacked
/// layers below this one, topmost first: a hard link to a file that only a
/// lower layer has gets its own copy here (what overlayfs' copy-up does).
/// `budget` is how many bytes the image may still unpack (counted as
/// [`on_disk`] does),
/// `files_left` how many entries (the image's cap less its other layers').
pub fn unpack_layer(
    blob: &Path,
    dest: &Path,
    lowers: &[PathBuf],
    limits: &Limits,
    budget: u64,
    files_left: u64,
) -> Result<Unpacked, ImageError> {
    let decoded = decoder(blob)?;
    // The tar stream itself is bounded too: headers and padding of a million
    // empty files cost bytes without any content.
    let mut reader = HashingReader {
        inner: decoded,
        hasher: Hasher::new(),
        count: 0,
        limit: budget.saturating_add(limits.max_files.saturating_mul(1024)),
    };
    let mut out = Unpacked::default();
    let root = open_dir_path(dest)?;
    let mut w = Writer {
        root,
        lowers,
        limits,
        budget,
        files_left,
        out: &mut out,
    };
    let mut guarded = HeaderGuard::new(&mut reader, limits.max_header_bytes);
    let r = w.run(&mut guarded);
    match r {
        Ok(()) => {}
        Err(ImageError::Io(e)) if e.get_ref().is_some_and(|i| i.is::<LimitExceeded>()) => {
            return Err(ImageError::TooLarge(format!(
                "the layer unpacks to more than the {} bytes left for this image",
                budget
            )))
        }
        Err(e) => return Err(e),
    }
    // The diff_id covers the whole stream, trailing blocks included.
    io::copy(&mut reader, &mut io::sink()).map_err(|e| {
        if e.get_ref().is_some_and(|i| i.is::<LimitExceeded>()) {
            ImageError::TooLarge("the layer's tar stream is larger than allowed".into())
        } else {
            hostile(format!("bad layer stream: {e}"))
        }
    })?;
    out.diff_id = Some(reader.hasher.finish());
    Ok(out)
}

/// The uncompressed tar stream of the layer blob at `blob` (plain, gzip or
/// zstd, told by its first bytes).
fn decoder(blob: &Path) -> Result<Box<dyn Read>, ImageError> {
    let mut f = std::fs::File::open(blob)?;
    let mut head = [0u8; 4];
    let n = f.read(&mut head)?;
    drop(f);
    let f = std::io::BufReader::with_capacity(1 << 20, std::fs::File::open(blob)?);
    Ok(match sniff(&head[..n]) {
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(f)),
        Compression::Zstd => Box::new(ZstdFrames::new(f)?),
        Compression::None => Box::new(f),
    })
}

/// The diff_id of the layer blob at `blob` (sha256 of its uncompressed
/// tar), nothing written: what checks that a blob really is a layer the
/// store has unpacked already. Reading stops past `limit` bytes.
pub fn diff_id_of(blob: &Path, limit: u64) -> Result<Digest, ImageError> {
    let mut reader = HashingReader {
        inner: decoder(blob)?,
        hasher: Hasher::new(),
        count: 0,
        limit,
    };
    io::copy(&mut reader, &mut io::sink()).map_err(|e| {
        if e.get_ref().is_some_and(|i| i.is::<LimitExceeded>()) {
            ImageError::TooLarge(format!(
                "the layer's tar stream is larger than {limit} bytes"
            ))
        } else {
            hostile(format!("bad layer stream: {e}"))
        }
    })?;
    Ok(reader.hasher.finish())
}

struct Writer<'a> {
    root: OwnedFd,
    lowers: &'a [PathBuf],
    limits: &'a Limits,
    budget: u64,
    files_left: u64,
    out: &'a mut Unpacked,
}

/// The frames of a zstd stream one after another (a single
/// `StreamingDecoder` stops at the end of the first), skippable frames
/// skipped.
struct ZstdFrames<R: BufRead> {
    dec: Option<ruzstd::decoding::StreamingDecoder<R, ruzstd::decoding::FrameDecoder>>,
}

impl<R: BufRead> ZstdFrames<R> {
    fn new(src: R) -> Result<Self, ImageError> {
        Ok(ZstdFrames {
            dec: Self::frame(src).map_err(|e| hostile(format!("bad zstd stream: {e}")))?,
        })
    }

    /// A decoder of the next frame of `src`; `None` at the end of the stream.
    #[allow(clippy::type_complexity)]
    fn frame(
        mut src: R,
    ) -> io::Result<Option<ruzstd::decoding::StreamingDecoder<R, ruzstd::decoding::FrameDecoder>>>
    {
        loop {
            let head = src.fill_buf()?;
            if head.is_empty() {
                return Ok(None);
            }
            // Skippable frame: magic 0x184D2A5? (LE), then a u32 length.
            if head.len() >= 8 && head[1..4] == [0x2a, 0x4d, 0x18] && head[0] & 0xf0 == 0x50 {
                let len = u32::from_le_bytes([head[4], head[5], head[6], head[7]]) as u64;
                src.consume(8);
                let skipped = io::copy(&mut (&mut src).take(len), &mut io::sink())?;
                if skipped != len {
                    return Err(io::Error::other("a skippable zstd frame is cut short"));
                }
                continue;
            }
            return ruzstd::decoding::StreamingDecoder::new(src)
                .map(Some)
                .map_err(|e| io::Error::other(format!("bad zstd frame: {e}")));
        }
    }
}

impl<R: BufRead> Read for ZstdFrames<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        while let Some(dec) = self.dec.as_mut() {
            let n = dec.read(buf)?;
            if n > 0 {
                return Ok(n);
            }
            let src = self.dec.take().expect("some").into_inner();
            self.dec = Self::frame(src)?;
        }
        Ok(0)
    }
}

/// Passes a tar stream through unchanged while following its headers, so
/// an extension header (PAX records, GNU long name or link) larger than
/// `max` fails before the tar reader buffers it whole, and GNU sparse
/// entries (which the store does not unpack) fail at once.
struct HeaderGuard<R> {
    inner: R,
    max: u64,
    /// The header block being gathered.
    block: [u8; 512],
    have: usize,
    /// Bytes of the current entry's data and padding still to pass.
    data_left: u64,
    /// The PAX records of the current extension entry, to learn a `size`
    /// that overrides the next header's.
    pax: Option<Vec<u8>>,
    size_override: Option<u64>,
    /// Past the end-of-archive block: the rest passes unread.
    done: bool,
}

/// The error [`HeaderGuard`] fails with.
#[derive(Debug)]
struct HeaderTooLarge(String);

impl std::fmt::Display for HeaderTooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for HeaderTooLarge {}

impl<R: Read> HeaderGuard<R> {
    fn new(inner: R, max: u64) -> Self {
        HeaderGuard {
            inner,
            max,
            block: [0; 512],
            have: 0,
            data_left: 0,
            pax: None,
            size_override: None,
            done: false,
        }
    }

    /// A header block is complete: learn its entry's size.
    fn header(&mut self) -> io::Result<()> {
        let b = &self.block;
        if b.iter().all(|&x| x == 0) {
            self.done = true;
            return Ok(());
        }
        let kind = b[156];
        let raw = &b[124..136];
        let size = if raw[0] & 0x80 != 0 {
            raw[1..]
                .iter()
                .fold(0u64, |a, &x| a.saturating_mul(256).saturating_add(x as u64))
        } else {
            let t: Vec<u8> = raw
                .iter()
                .copied()
                .filter(|c| (b'0'..=b'7').contains(c))
                .collect();
            std::str::from_utf8(&t)
                .ok()
                .and_then(|t| u64::from_str_radix(t, 8).ok())
                .unwrap_or(0)
        };
        let extension = matches!(kind, b'x' | b'g' | b'L' | b'K');
        if kind == b'S' {
            return Err(io::Error::other(HeaderTooLarge(
                "the layer has a GNU sparse entry, which the store does not unpack".into(),
            )));
        }
        let size = if extension {
            if size > self.max {
                return Err(io::Error::other(HeaderTooLarge(format!(
                    "the layer has a tar extension header (PAX or long name) of {size} bytes (at most {}, --image-max-header-bytes)",
                    self.max
                ))));
            }
            self.pax = (kind == b'x').then(Vec::new);
            size
        } else {
            self.pax = None;
            self.size_override.take().unwrap_or(size)
        };
        self.data_left = size.div_ceil(512).saturating_mul(512);
        if self.data_left == 0 {
            self.finish_pax();
        }
        Ok(())
    }

    /// The PAX records are all in: a `size` applies to the next header.
    fn finish_pax(&mut self) {
        let Some(pax) = self.pax.take() else { return };
        let mut rest: &[u8] = &pax;
        while let Some(sp) = rest.iter().position(|&b| b == b' ') {
            let Some(len) = std::str::from_utf8(&rest[..sp])
                .ok()
                .and_then(|l| l.parse::<usize>().ok())
            else {
                break;
            };
            if len <= sp || len > rest.len() {
                break;
            }
            let rec = &rest[sp + 1..len];
            if let Some(v) = rec.strip_prefix(b"size=") {
                let v = v.strip_suffix(b"\n").unwrap_or(v);
                self.size_override = std::str::from_utf8(v).ok().and_then(|v| v.parse().ok());
            }
            rest = &rest[len..];
        }
    }
}

impl<R: Read> Read for HeaderGuard<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.done {
            return self.inner.read(buf);
        }
        if self.data_left > 0 {
            let want = buf
                .len()
                .min(self.data_left.min(usize::MAX as u64) as usize);
            let n = self.inner.read(&mut buf[..want])?;
            if let Some(p) = self.pax.as_mut() {
                p.extend_from_slice(&buf[..n]);
            }
            self.data_left -= n as u64;
            if self.data_left == 0 {
                self.finish_pax();
            }
            return Ok(n);
        }
        // Inside a header block: pass it on as it comes, look at it whole.
        let want = buf.len().min(512 - self.have);
        let n = self.inner.read(&mut buf[..want])?;
        self.block[self.have..self.have + n].copy_from_slice(&buf[..n]);
        self.have += n;
        if self.have == 512 {
            self.have = 0;
            self.header()?;
        }
        Ok(n)
    }
}

/// A tar path split into checked components.
fn components(raw: &[u8], limits: &Limits) -> Result<Vec<Vec<u8>>, ImageError> {
    if raw.len() > limits.max_path {
        return Err(hostile(format!(
            "a path in the layer is {} bytes long (at most {})",
            raw.len(),
            limits.max_path
        )));
    }
    let mut out = Vec::new();
    for c in raw.split(|b| *b == b'/') {
        match c {
            b"" | b"." => continue,
            b".." => {
                return Err(hostile(format!(
                    "the layer has a path with '..': {:?}",
                    String::from_utf8_lossy(raw)
                )))
            }
            _ if c.len() > 255 => {
                return Err(hostile(
                    "a path component in the layer is longer than 255 bytes",
                ))
            }
            _ if c.contains(&0) => return Err(hostile("a path in the layer contains a NUL byte")),
            _ => out.push(c.to_vec()),
        }
    }
    Ok(out)
}

fn cstr(b: &[u8]) -> CString {
    // Components are checked free of NUL bytes.
    CString::new(b.to_vec()).unwrap_or_default()
}

fn open_dir_path(p: &Path) -> Result<OwnedFd, ImageError> {
    nix::fcntl::open(
        p,
        OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_RDONLY,
        Mode::empty(),
    )
    .map_err(|e| ImageError::Io(io::Error::other(format!("open {}: {e}", p.display()))))
}

fn open_dir_at<Fd: AsFd>(dir: Fd, name: &[u8]) -> nix::Result<OwnedFd> {
    openat(
        dir,
        cstr(name).as_c_str(),
        OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_RDONLY,
        Mode::empty(),
    )
}

fn errno(what: &str, path: &[u8], e: Errno) -> ImageError {
    ImageError::Io(io::Error::other(format!(
        "{what} {:?}: {e}",
        String::from_utf8_lossy(path)
    )))
}

/// Walks `comps` from `root`, never following a symlink; a component that is
/// a symlink or not a directory is refused.
fn walk(root: &OwnedFd, comps: &[Vec<u8>], full: &[u8]) -> Result<OwnedFd, ImageError> {
    walk_with(root, comps, full, |_, _| Ok(None))
}

/// [`walk`], calling `missing(dir, i)` for a component `i` that does not
/// exist: it makes it (and returns `Some`) or gives up (`None`: ENOENT).
fn walk_with(
    root: &OwnedFd,
    comps: &[Vec<u8>],
    full: &[u8],
    mut missing: impl FnMut(&OwnedFd, usize) -> Result<Option<()>, ImageError>,
) -> Result<OwnedFd, ImageError> {
    let mut cur = root.try_clone()?;
    for (i, c) in comps.iter().enumerate() {
        let next = match open_dir_at(&cur, c) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => match missing(&cur, i)? {
                Some(()) => open_dir_at(&cur, c).map_err(|e| errno("open", full, e))?,
                None => return Err(errno("open", full, Errno::ENOENT)),
            },
            Err(Errno::ELOOP) | Err(Errno::ENOTDIR) => {
                return Err(hostile(format!(
                    "the layer writes {:?} through a symlink or a file ({:?} is not a directory)",
                    String::from_utf8_lossy(full),
                    String::from_utf8_lossy(c)
                )))
            }
            Err(e) => return Err(errno("open", full, e)),
        };
        cur = next;
    }
    Ok(cur)
}

/// What is at `name` in `dir` (not following a symlink), if anything.
fn kind_at(dir: &OwnedFd, name: &[u8]) -> Option<SFlag> {
    fstatat(dir, cstr(name).as_c_str(), AtFlags::AT_SYMLINK_NOFOLLOW)
        .ok()
        .map(|st| SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT)
}

/// Removes whatever is at `name` in `dir` (a directory with all it holds),
/// with an explicit stack: the depth is the layer's to choose.
fn remove_at(dir: &OwnedFd, name: &[u8]) -> Result<(), ImageError> {
    match kind_at(dir, name) {
        None => return Ok(()),
        Some(SFlag::S_IFDIR) => {}
        Some(_) => {
            return unlinkat(dir, cstr(name).as_c_str(), UnlinkatFlags::NoRemoveDir)
                .map_err(|e| errno("remove", name, e))
        }
    }
    // Each level: its descriptor and the name it has in the level above.
    let top = open_dir_at(dir, name).map_err(|e| errno("open", name, e))?;
    let mut stack: Vec<(OwnedFd, Vec<u8>)> = vec![(top, name.to_vec())];
    while let Some((fd, _)) = stack.last() {
        let mut d = nix::dir::Dir::from_fd(fd.try_clone()?).map_err(|e| errno("read", name, e))?;
        let mut sub: Option<Vec<u8>> = None;
        for e in d.iter().flatten() {
            let n = e.file_name().to_bytes();
            if n == b"." || n == b".." {
                continue;
            }
            match kind_at(fd, n) {
                Some(SFlag::S_IFDIR) => {
                    sub = Some(n.to_vec());
                    break;
                }
                Some(_) => unlinkat(fd, cstr(n).as_c_str(), UnlinkatFlags::NoRemoveDir)
                    .map_err(|e| errno("remove", n, e))?,
                None => {}
            }
        }
        match sub {
            Some(n) => {
                let next = open_dir_at(fd, &n).map_err(|e| errno("open", &n, e))?;
                stack.push((next, n));
            }
            None => {
                let (_, n) = stack.pop().expect("non-empty");
                let parent = stack.last().map(|(f, _)| f).unwrap_or(dir);
                unlinkat(parent, cstr(&n).as_c_str(), UnlinkatFlags::RemoveDir)
                    .map_err(|e| errno("remove", &n, e))?;
            }
        }
    }
    Ok(())
}

fn fsetxattr(fd: BorrowedFd<'_>, name: &str, value: &[u8]) -> io::Result<()> {
    let n = CString::new(name).map_err(io::Error::other)?;
    // SAFETY: valid descriptor, NUL-terminated name, value pointer and length
    // from one slice.
    let r = unsafe {
        libc::fsetxattr(
            fd.as_raw_fd(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Owner, mode (setuid bits last: chown clears them), attributes and mtime
/// of a file or directory this layer made.
fn finish_meta(fd: &OwnedFd, meta: &Meta) -> Result<(), ImageError> {
    fchown(
        fd,
        Some(Uid::from_raw(meta.uid)),
        Some(Gid::from_raw(meta.gid)),
    )
    .map_err(|e| errno("chown", &meta.path, e))?;
    fchmod(fd, Mode::from_bits_truncate(meta.mode & 0o7777))
        .map_err(|e| errno("chmod", &meta.path, e))?;
    for (k, v) in &meta.xattrs {
        fsetxattr(fd.as_fd(), k, v).map_err(|e| {
            ImageError::Io(io::Error::other(format!(
                "set attribute {k} on {:?}: {e}",
                String::from_utf8_lossy(&meta.path)
            )))
        })?;
    }
    let t = nix::sys::time::TimeSpec::new(meta.mtime as i64, 0);
    let _ = nix::sys::stat::futimens(fd, &t, &t);
    Ok(())
}

struct Meta {
    path: Vec<u8>,
    uid: u32,
    gid: u32,
    mode: u32,
    mtime: u64,
    xattrs: Vec<(String, Vec<u8>)>,
}

impl Writer<'_> {
    /// Opens the parent directories of an entry, making the ones this layer
    /// lacks. A made directory takes its owner and mode from the topmost
    /// lower layer that has it (as if the layer were applied over the
    /// others), else root 0755.
    fn parents(&self, comps: &[Vec<u8>], full: &[u8]) -> Result<OwnedFd, ImageError> {
        walk_with(&self.root, comps, full, |dir, i| {
            let c = &comps[i];
            let (mode, uid, gid) = self.lower_dir_meta(&comps[..=i]).unwrap_or((0o755, 0, 0));
            match mkdirat(dir, cstr(c).as_c_str(), Mode::from_bits_truncate(0o700)) {
                Ok(()) => {}
                Err(Errno::EEXIST) => return Ok(Some(())),
                Err(e) => return Err(errno("create directory for", full, e)),
            }
            let fd = open_dir_at(dir, c).map_err(|e| errno("open", full, e))?;
            fchown(&fd, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))
                .map_err(|e| errno("chown", full, e))?;
            fchmod(&fd, Mode::from_bits_truncate(mode & 0o7777))
                .map_err(|e| errno("chmod", full, e))?;
            Ok(Some(()))
        })
    }

    /// (mode, uid, gid) of the directory at `comps` in the topmost lower
    /// layer that has it; `None` when a layer hides it or none has it.
    fn lower_dir_meta(&self, comps: &[Vec<u8>]) -> Option<(u32, u32, u32)> {
        let (name, parents) = comps.split_last()?;
        for lower in self.lowers {
            let Ok(lroot) = open_dir_path(lower) else {
                continue;
            };
            let Ok(p) = walk(&lroot, parents, b"") else {
                continue;
            };
            match kind_at(&p, name) {
                Some(SFlag::S_IFDIR) => {
                    let st =
                        fstatat(&p, cstr(name).as_c_str(), AtFlags::AT_SYMLINK_NOFOLLOW).ok()?;
                    return Some((st.st_mode, st.st_uid, st.st_gid));
                }
                Some(_) => return None,
                None => continue,
            }
        }
        None
    }

    fn run<R: Read>(&mut self, reader: &mut R) -> Result<(), ImageError> {
        let mut ar = tar::Archive::new(reader);
        let entries = ar
            .entries()
            .map_err(|e| hostile(format!("the layer is not a tar: {e}")))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| hostile(format!("bad tar entry: {e}")))?;
            self.out.files += 1;
            if self.out.files > self.limits.max_files {
                return Err(ImageError::TooLarge(format!(
                    "the layer has more than {} entries (--image-max-files)",
                    self.limits.max_files
                )));
            }
            if self.out.files > self.files_left {
                return Err(ImageError::TooLarge(format!(
                    "the image has more than {} entries in all its layers (--image-max-total-files)",
                    self.limits.max_total_files
                )));
            }
            self.entry(&mut entry)?;
        }
        Ok(())
    }

    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<(), ImageError> {
        let raw = entry.path_bytes().into_owned();
        let comps = components(&raw, self.limits)?;
        let Some((name, parents)) = comps.split_last() else {
            // The layer's root itself ("./"): nothing to make.
            return Ok(());
        };
        let h = entry.header().clone();
        let kind = h.entry_type();
        let mut meta = Meta {
            path: raw.clone(),
            uid: h.uid().unwrap_or(0) as u32,
            gid: h.gid().unwrap_or(0) as u32,
            mode: h.mode().unwrap_or(0o644),
            mtime: h.mtime().unwrap_or(0),
            xattrs: Vec::new(),
        };
        if let Ok(Some(pax)) = entry.pax_extensions() {
            for ext in pax.flatten() {
                let Ok(key) = ext.key() else { continue };
                if let Some(x) = key.strip_prefix("SCHILY.xattr.") {
                    if ext.value_bytes().len() as u64 > self.limits.max_xattr_bytes {
                        return Err(ImageError::TooLarge(format!(
                            "the layer gives {:?} an attribute {x:?} of {} bytes (at most {}, --image-max-xattr-bytes)",
                            String::from_utf8_lossy(&raw),
                            ext.value_bytes().len(),
                            self.limits.max_xattr_bytes
                        )));
                    }
                    // trusted.* would steer overlayfs (opaque, redirect).
                    if !x.starts_with("trusted.") && x.len() < 256 {
                        meta.xattrs
                            .push((x.to_string(), ext.value_bytes().to_vec()));
                    }
                } else if key == "uid" {
                    if let Some(v) = ext.value().ok().and_then(|v| v.parse().ok()) {
                        meta.uid = v;
                    }
                } else if key == "gid" {
                    if let Some(v) = ext.value().ok().and_then(|v| v.parse().ok()) {
                        meta.gid = v;
                    }
                }
            }
        }
        let parent = self.parents(parents, &raw)?;
        let name_str = name.as_slice();
        // Whiteouts: for the layers below, never a file of this one.
        if name_str == OPAQUE.as_bytes() {
            fsetxattr(parent.as_fd(), OPAQUE_XATTR, b"y")?;
            return Ok(());
        }
        // Every entry costs at least a block (and an inode): a layer of
        // nothing but empty directories or links is not free.
        let regular = matches!(kind, tar::EntryType::Regular | tar::EntryType::Continuous);
        let blocks = if regular {
            on_disk(h.size().unwrap_or(0))
        } else {
            BLOCK
        };
        if blocks > self.budget.saturating_sub(self.out.bytes) {
            return Err(ImageError::TooLarge(format!(
                "the layer unpacks to more than the {} bytes allowed for this image (each entry counts at least {BLOCK} bytes)",
                self.budget
            )));
        }
        if let Some(hidden) = name_str.strip_prefix(WHITEOUT.as_bytes()) {
            if hidden.is_empty() || hidden == b"." || hidden == b".." {
                return Err(hostile("the layer has an empty whiteout"));
            }
            self.out.bytes += BLOCK;
            remove_at(&parent, hidden)?;
            mknodat(
                &parent,
                cstr(hidden).as_c_str(),
                SFlag::S_IFCHR,
                Mode::empty(),
                0,
            )
            .map_err(|e| errno("make whiteout", &raw, e))?;
            return Ok(());
        }
        let cname = cstr(name_str);
        if !regular {
            self.out.bytes += BLOCK;
        }
        match kind {
            tar::EntryType::Directory => {
                match kind_at(&parent, name_str) {
                    Some(SFlag::S_IFDIR) => {}
                    Some(_) => {
                        remove_at(&parent, name_str)?;
                        mkdirat(&parent, cname.as_c_str(), Mode::from_bits_truncate(0o700))
                            .map_err(|e| errno("create directory", &raw, e))?;
                    }
                    None => mkdirat(&parent, cname.as_c_str(), Mode::from_bits_truncate(0o700))
                        .map_err(|e| errno("create directory", &raw, e))?,
                }
                let fd = open_dir_at(&parent, name_str).map_err(|e| errno("open", &raw, e))?;
                finish_meta(&fd, &meta)?;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                remove_at(&parent, name_str)?;
                let fd = openat(
                    &parent,
                    cname.as_c_str(),
                    OFlag::O_CREAT
                        | OFlag::O_EXCL
                        | OFlag::O_WRONLY
                        | OFlag::O_NOFOLLOW
                        | OFlag::O_CLOEXEC,
                    Mode::from_bits_truncate(0o600),
                )
                .map_err(|e| errno("create", &raw, e))?;
                // SAFETY: `fd` is a fresh descriptor we own; the File takes it.
                let mut file =
                    unsafe { std::fs::File::from_raw_fd(std::os::fd::IntoRawFd::into_raw_fd(fd)) };
                // Checked above against the budget, in blocks.
                let size = h.size().unwrap_or(0);
                let n = io::copy(&mut entry.take(size), &mut file).map_err(|e| {
                    hostile(format!(
                        "read {:?} from the layer: {e}",
                        String::from_utf8_lossy(&raw)
                    ))
                })?;
                self.out.bytes += on_disk(n);
                file.flush()?;
                let fd: OwnedFd = file.into();
                finish_meta(&fd, &meta)?;
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| hostile("a symlink in the layer has no target"))?
                    .into_owned();
                if target.contains(&0) || target.len() > self.limits.max_path {
                    return Err(hostile("a symlink target in the layer is too long"));
                }
                remove_at(&parent, name_str)?;
                symlinkat(OsStr::from_bytes(&target), &parent, cname.as_c_str())
                    .map_err(|e| errno("create symlink", &raw, e))?;
                fchownat(
                    &parent,
                    cname.as_c_str(),
                    Some(Uid::from_raw(meta.uid)),
                    Some(Gid::from_raw(meta.gid)),
                    AtFlags::AT_SYMLINK_NOFOLLOW,
                )
                .map_err(|e| errno("chown", &raw, e))?;
            }
            tar::EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| hostile("a hard link in the layer has no target"))?
                    .into_owned();
                let tcomps = components(&target, self.limits)?;
                let Some((tname, tparents)) = tcomps.split_last() else {
                    return Err(hostile("a hard link in the layer points at the root"));
                };
                let tparent = self.parents(tparents, &target)?;
                if kind_at(&tparent, tname).is_none() {
                    self.copy_up(&tcomps, &tparent, tname, &target)?;
                }
                if kind_at(&tparent, tname) == Some(SFlag::S_IFDIR) {
                    return Err(hostile("a hard link in the layer points at a directory"));
                }
                remove_at(&parent, name_str)?;
                linkat(
                    &tparent,
                    cstr(tname).as_c_str(),
                    &parent,
                    cname.as_c_str(),
                    AtFlags::empty(),
                )
                .map_err(|e| errno("create hard link", &raw, e))?;
            }
            tar::EntryType::Fifo => {
                remove_at(&parent, name_str)?;
                mknodat(
                    &parent,
                    cname.as_c_str(),
                    SFlag::S_IFIFO,
                    Mode::from_bits_truncate(meta.mode & 0o777),
                    0,
                )
                .map_err(|e| errno("create fifo", &raw, e))?;
                fchownat(
                    &parent,
                    cname.as_c_str(),
                    Some(Uid::from_raw(meta.uid)),
                    Some(Gid::from_raw(meta.gid)),
                    AtFlags::AT_SYMLINK_NOFOLLOW,
                )
                .map_err(|e| errno("chown", &raw, e))?;
            }
            tar::EntryType::Char | tar::EntryType::Block => {
                self.out.skipped_devices += 1;
            }
            // Headers the tar reader already applied, or that carry nothing.
            tar::EntryType::XGlobalHeader | tar::EntryType::XHeader => {}
            other => {
                return Err(hostile(format!(
                    "the layer has an entry of unsupported type {other:?} at {:?}",
                    String::from_utf8_lossy(&raw)
                )))
            }
        }
        Ok(())
    }

    /// A hard link to a file this layer does not have: copy the file from the
    /// topmost lower layer that has it, so both names exist here.
    fn copy_up(
        &mut self,
        tcomps: &[Vec<u8>],
        tparent: &OwnedFd,
        tname: &[u8],
        target: &[u8],
    ) -> Result<(), ImageError> {
        let (tn, tp) = tcomps.split_last().expect("non-empty");
        for lower in self.lowers {
            let lroot = open_dir_path(lower)?;
            let Ok(lparent) = walk(&lroot, tp, target) else {
                continue;
            };
            let Some(kind) = kind_at(&lparent, tn) else {
                continue;
            };
            if kind == SFlag::S_IFCHR {
                break; // a whiteout: the file is gone
            }
            if kind != SFlag::S_IFREG {
                return Err(hostile(format!(
                    "a hard link in the layer points at {:?}, which is not a regular file below",
                    String::from_utf8_lossy(target)
                )));
            }
            let src = openat(
                &lparent,
                cstr(tn).as_c_str(),
                OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| errno("open", target, e))?;
            let st = nix::sys::stat::fstat(&src).map_err(|e| errno("stat", target, e))?;
            // The copy is content of this layer like any other: within what
            // the image (and its tenant) may still unpack.
            if on_disk(st.st_size.max(0) as u64) > self.budget.saturating_sub(self.out.bytes) {
                return Err(ImageError::TooLarge(format!(
                    "the layer unpacks to more than the {} bytes allowed for this image (a hard link copies {:?} up from a layer below)",
                    self.budget,
                    String::from_utf8_lossy(target)
                )));
            }
            let dst = openat(
                tparent,
                cstr(tname).as_c_str(),
                OFlag::O_CREAT
                    | OFlag::O_EXCL
                    | OFlag::O_WRONLY
                    | OFlag::O_NOFOLLOW
                    | OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(0o600),
            )
            .map_err(|e| errno("create", target, e))?;
            let mut s = std::fs::File::from(src);
            let mut d = std::fs::File::from(dst);
            self.out.bytes += on_disk(io::copy(&mut s, &mut d)?);
            let dfd: OwnedFd = d.into();
            let meta = Meta {
                path: target.to_vec(),
                uid: st.st_uid,
                gid: st.st_gid,
                mode: st.st_mode,
                mtime: st.st_mtime.max(0) as u64,
                xattrs: Vec::new(),
            };
            return finish_meta(&dfd, &meta);
        }
        Err(hostile(format!(
            "a hard link in the layer points at {:?}, which does not exist",
            String::from_utf8_lossy(target)
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(entries: &[(&str, tar::EntryType, &[u8], &str)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, kind, data, link) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_mode(0o644);
            h.set_size(data.len() as u64);
            {
                let g = h.as_gnu_mut().unwrap();
                g.name[..name.len()].copy_from_slice(name.as_bytes());
                g.linkname[..link.len()].copy_from_slice(link.as_bytes());
            }
            h.set_cksum();
            b.append(&h, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn unpack(
        entries: &[(&str, tar::EntryType, &[u8], &str)],
    ) -> (PathBuf, Result<Unpacked, ImageError>) {
        let base =
            std::env::temp_dir().join(format!("runta-unpack-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(base.join("out")).unwrap();
        std::fs::write(base.join("blob"), tar_of(entries)).unwrap();
        let r = unpack_layer(
            &base.join("blob"),
            &base.join("out"),
            &[],
            &Limits::default(),
            1 << 20,
            u64::MAX,
        );
        (base, r)
    }

    #[test]
    fn whiteouts_become_overlay_whiteouts() {
        use std::os::unix::fs::FileTypeExt;
        let (base, r) = unpack(&[
            ("d/.wh.gone", tar::EntryType::Regular, b"", ""),
            ("d/.wh..wh..opq", tar::EntryType::Regular, b"", ""),
            ("d/kept", tar::EntryType::Regular, b"k", ""),
        ]);
        let out = r.unwrap();
        assert!(out.diff_id.is_some());
        let m = std::fs::symlink_metadata(base.join("out/d/gone")).unwrap();
        assert!(m.file_type().is_char_device());
        assert_eq!(std::fs::read(base.join("out/d/kept")).unwrap(), b"k");
        let _ = std::fs::remove_dir_all(base);
    }

    #[test]
    fn escapes_are_refused() {
        for entries in [
            vec![("../x", tar::EntryType::Regular, &b"x"[..], "")],
            vec![
                ("l", tar::EntryType::Symlink, &b""[..], "/"),
                ("l/tmp/x", tar::EntryType::Regular, &b"x"[..], ""),
            ],
            vec![("h", tar::EntryType::Link, &b""[..], "../../etc/passwd")],
        ] {
            let (base, r) = unpack(&entries);
            assert!(
                matches!(r, Err(ImageError::Hostile(_))),
                "{entries:?}: {r:?}"
            );
            let _ = std::fs::remove_dir_all(base);
        }
    }

    #[test]
    fn content_past_the_budget_is_refused() {
        let big = vec![0u8; 2 << 20];
        let (base, r) = unpack(&[("big", tar::EntryType::Regular, &big, "")]);
        assert!(matches!(r, Err(ImageError::TooLarge(_))), "{r:?}");
        let _ = std::fs::remove_dir_all(base);
    }
}
