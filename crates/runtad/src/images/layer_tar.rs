//! A directory in overlayfs "upper" form (a runtime's writable layer, or a
//! checkpoint's copy of one) written as an OCI image layer: a gzip'd tar with
//! its digest (of the compressed bytes) and diff_id (of the tar).
//!
//! Overlay marks become OCI whiteouts (docs/images.md, Commit): a character
//! device 0/0 is a deleted entry (`.wh.<name>`), a directory with
//! `trusted.overlay.opaque=y` hides everything below it (`.wh..wh..opq`), and
//! other `trusted.overlay.*` attributes are overlay bookkeeping, dropped.
//! Owners, modes, times, other xattrs and hard links are kept.
//!
//! Everything under the directory was written by the runtime's programs, so
//! the walk trusts none of it: each directory is opened relative to its
//! parent's descriptor with `O_NOFOLLOW`, files are opened the same way and
//! checked to be the inode that was listed, symlinks are stored as links and
//! never followed, FIFOs and devices are never opened, and the file data
//! written is bounded (sparse files count at their full size, as a tar stores
//! them).

use std::collections::HashMap;
use std::ffi::{CStr, CString, OsStr};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{openat, OFlag};
use nix::sys::stat::{fstat, fstatat, FileStat, Mode, SFlag};

use super::digest::{Digest, Hasher, HashingWriter};

#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{path}: {source}")]
    Sys { path: String, source: nix::Error },
    #[error(
        "the layer would hold more than {limit} bytes of file data (sparse files count at \
         their full size); the limit is the runtime's disk quota"
    )]
    TooLarge { limit: u64 },
    /// A tree deeper, or a path longer, than an image may hold (a hostile
    /// program's 10,000 nested directories): refused, not walked.
    #[error(
        "the layer has a path deeper than {max_depth} directories or longer than {max_path} bytes \
         ({path}…); an image holds no such path"
    )]
    TooDeep {
        path: String,
        max_depth: usize,
        max_path: usize,
    },
}

/// Directories deep a committed layer may go. The walk keeps one descriptor
/// per level open, so this bounds those too.
pub const MAX_DEPTH: usize = 512;

/// Bytes of one path in a committed layer: what unpacking accepts
/// (`Limits::max_path`), so a commit never makes an image the store refuses.
pub const MAX_PATH: usize = 4096;

/// What was written: the blob file and the two digests an image needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerBlob {
    pub path: PathBuf,
    /// Of the compressed blob (the manifest's descriptor).
    pub digest: Digest,
    /// Of the uncompressed tar (the config's `rootfs.diff_ids`).
    pub diff_id: Digest,
    /// Size of the compressed blob in bytes.
    pub size: u64,
}

/// Decides which entries of the layer are left out (Runta's own files).
/// Gets the path relative to the layer root (no leading `/`), the entry's
/// stat, and the descriptor of its parent directory.
pub type Exclude<'a> = &'a dyn Fn(&[u8], &FileStat, &OwnedFd) -> bool;

const OVERLAY_XATTR: &str = "trusted.overlay.";
const OPAQUE_XATTR: &str = "trusted.overlay.opaque";
const WHITEOUT_XATTR: &str = "trusted.overlay.whiteout";
const WH: &str = ".wh.";
const OPQ: &str = ".wh..wh..opq";

/// Writes the layer of `root` to `out` (gzip'd tar). `max_data` bounds the
/// sum of the regular files' sizes.
pub fn write_layer(
    root: &Path,
    out: &Path,
    max_data: u64,
    exclude: Exclude<'_>,
) -> Result<LayerBlob, LayerError> {
    let file = std::fs::File::create(out)?;
    let compressed = hashing(std::io::BufWriter::with_capacity(1 << 20, file));
    // Level 1: a commit of a large layer is bound by gzip, and registries and
    // pulls care little for the last few percent.
    let gz = flate2::GzBuilder::new().write(compressed, flate2::Compression::fast());
    let tar_out = hashing(gz);
    let mut builder = tar::Builder::new(tar_out);
    builder.mode(tar::HeaderMode::Complete);
    builder.follow_symlinks(false);
    let rootfd = nix::fcntl::open(
        root,
        OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_RDONLY,
        Mode::empty(),
    )
    .map_err(|e| sys(root.as_os_str().as_bytes(), e))?;
    let mut w = Walker {
        builder: &mut builder,
        links: HashMap::new(),
        data: 0,
        max_data,
        exclude,
    };
    w.walk(rootfd)?;
    let tar_out = builder.into_inner()?;
    let diff_id = tar_out.hasher.finish();
    let mut compressed = tar_out.inner.finish()?;
    compressed.flush()?;
    let (digest, size) = (compressed.hasher.finish(), compressed.count);
    let file = compressed.inner.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    Ok(LayerBlob {
        path: out.to_path_buf(),
        digest,
        diff_id,
        size,
    })
}

struct Walker<'a, 'b, W: Write> {
    builder: &'a mut tar::Builder<W>,
    /// (dev, ino) of files with more than one link → the first path written.
    links: HashMap<(u64, u64), Vec<u8>>,
    data: u64,
    max_data: u64,
    exclude: Exclude<'b>,
}

/// One directory of the walk: its descriptor, its names, the next to write.
struct Frame {
    fd: OwnedFd,
    names: Vec<CString>,
    next: usize,
    /// Length of the walk's path buffer at this directory.
    prefix_len: usize,
}

impl<W: Write> Walker<'_, '_, W> {
    /// Writes every entry under `root`, depth first, with an explicit stack
    /// (no recursion: the tree's depth is the runtime's to choose).
    fn walk(&mut self, root: OwnedFd) -> Result<(), LayerError> {
        let mut path: Vec<u8> = Vec::new();
        let names = list_dir(&root, &path)?;
        let mut stack = vec![Frame {
            fd: root,
            names,
            next: 0,
            prefix_len: 0,
        }];
        while let Some(top) = stack.last_mut() {
            let Some(name) = top.names.get(top.next).cloned() else {
                stack.pop();
                continue;
            };
            top.next += 1;
            path.truncate(top.prefix_len);
            if !path.is_empty() {
                path.push(b'/');
            }
            path.extend_from_slice(name.as_bytes());
            if path.len() + 1 > MAX_PATH {
                return Err(too_deep(&path));
            }
            let depth = stack.len();
            let dirfd = stack.last().map(|f| &f.fd).expect("non-empty");
            if let Some(sub) = self.entry(dirfd, &name, &path)? {
                if depth >= MAX_DEPTH {
                    return Err(too_deep(&path));
                }
                let names = list_dir(&sub, &path)?;
                stack.push(Frame {
                    fd: sub,
                    names,
                    next: 0,
                    prefix_len: path.len(),
                });
            }
        }
        Ok(())
    }

    /// Writes one entry; a directory's descriptor comes back for the walk
    /// to descend into.
    fn entry(
        &mut self,
        dirfd: &OwnedFd,
        name: &CStr,
        path: &[u8],
    ) -> Result<Option<OwnedFd>, LayerError> {
        let st = match fstatat(dirfd, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            // Gone since the listing (a stopped runtime has no writers; a
            // checkpoint none either): nothing to write.
            Err(nix::Error::ENOENT) => return Ok(None),
            Err(e) => return Err(sys(path, e)),
        };
        if (self.exclude)(path, &st, dirfd) {
            return Ok(None);
        }
        let kind = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
        let xattrs = read_xattrs(dirfd, name);
        if kind == SFlag::S_IFCHR && st.st_rdev == 0 || is_xattr_whiteout(kind, &st, &xattrs) {
            return self.whiteout(path).map(|()| None);
        }
        let mut h = header(&st);
        let kept: Vec<(String, Vec<u8>)> = xattrs
            .iter()
            .filter(|(k, _)| !k.starts_with(OVERLAY_XATTR))
            .cloned()
            .collect();
        match kind {
            SFlag::S_IFDIR => {
                let opaque = xattrs
                    .iter()
                    .any(|(k, v)| k == OPAQUE_XATTR && v.as_slice() == b"y");
                let fd = openat(
                    dirfd,
                    name,
                    OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_RDONLY,
                    Mode::empty(),
                )
                .map_err(|e| sys(path, e))?;
                h.set_entry_type(tar::EntryType::Directory);
                h.set_size(0);
                self.pax(&kept)?;
                let mut p = path.to_vec();
                p.push(b'/');
                self.builder
                    .append_data(&mut h, OsStr::from_bytes(&p), std::io::empty())?;
                if opaque {
                    let mut opq = path.to_vec();
                    opq.push(b'/');
                    opq.extend_from_slice(OPQ.as_bytes());
                    self.marker(&opq)?;
                }
                return Ok(Some(fd));
            }
            SFlag::S_IFREG => {
                if st.st_nlink > 1 {
                    let key = (st.st_dev, st.st_ino);
                    if let Some(first) = self.links.get(&key) {
                        let first = first.clone();
                        h.set_entry_type(tar::EntryType::Link);
                        h.set_size(0);
                        self.builder.append_link(
                            &mut h,
                            OsStr::from_bytes(path),
                            OsStr::from_bytes(&first),
                        )?;
                        return Ok(None);
                    }
                }
                let size = st.st_size.max(0) as u64;
                self.data = self.data.saturating_add(size);
                if self.data > self.max_data {
                    return Err(LayerError::TooLarge {
                        limit: self.max_data,
                    });
                }
                let fd = openat(
                    dirfd,
                    name,
                    OFlag::O_RDONLY
                        | OFlag::O_NOFOLLOW
                        | OFlag::O_NONBLOCK
                        | OFlag::O_NOCTTY
                        | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| sys(path, e))?;
                let now = fstat(&fd).map_err(|e| sys(path, e))?;
                if now.st_ino != st.st_ino || now.st_dev != st.st_dev {
                    return Err(sys(path, nix::Error::ESTALE));
                }
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(size);
                self.pax(&kept)?;
                // Exactly `size` bytes: a file that shrank under us is padded
                // with zeros, one that grew is cut, so the header never lies.
                let data = std::fs::File::from(fd)
                    .take(size)
                    .chain(std::io::repeat(0))
                    .take(size);
                self.builder
                    .append_data(&mut h, OsStr::from_bytes(path), data)?;
                if st.st_nlink > 1 {
                    self.links.insert((st.st_dev, st.st_ino), path.to_vec());
                }
            }
            SFlag::S_IFLNK => {
                let target = nix::fcntl::readlinkat(dirfd, name).map_err(|e| sys(path, e))?;
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_size(0);
                self.builder
                    .append_link(&mut h, OsStr::from_bytes(path), &target)?;
            }
            SFlag::S_IFCHR | SFlag::S_IFBLK | SFlag::S_IFIFO => {
                let t = match kind {
                    SFlag::S_IFCHR => tar::EntryType::Char,
                    SFlag::S_IFBLK => tar::EntryType::Block,
                    _ => tar::EntryType::Fifo,
                };
                h.set_entry_type(t);
                h.set_size(0);
                if kind != SFlag::S_IFIFO {
                    h.set_device_major(libc::major(st.st_rdev))?;
                    h.set_device_minor(libc::minor(st.st_rdev))?;
                }
                self.pax(&kept)?;
                self.builder
                    .append_data(&mut h, OsStr::from_bytes(path), std::io::empty())?;
            }
            // Sockets have no place in an image.
            _ => {}
        }
        Ok(None)
    }

    fn whiteout(&mut self, path: &[u8]) -> Result<(), LayerError> {
        let (dir, name) = match path.iter().rposition(|&b| b == b'/') {
            Some(i) => (&path[..=i], &path[i + 1..]),
            None => (&b""[..], path),
        };
        let mut wh = dir.to_vec();
        wh.extend_from_slice(WH.as_bytes());
        wh.extend_from_slice(name);
        self.marker(&wh)
    }

    /// An empty regular file carrying a whiteout name.
    fn marker(&mut self, path: &[u8]) -> Result<(), LayerError> {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o600);
        h.set_size(0);
        h.set_mtime(0);
        self.builder
            .append_data(&mut h, OsStr::from_bytes(path), std::io::empty())?;
        Ok(())
    }

    fn pax(&mut self, xattrs: &[(String, Vec<u8>)]) -> Result<(), LayerError> {
        if xattrs.is_empty() {
            return Ok(());
        }
        let keys: Vec<(String, &[u8])> = xattrs
            .iter()
            .map(|(k, v)| (format!("SCHILY.xattr.{k}"), v.as_slice()))
            .collect();
        self.builder
            .append_pax_extensions(keys.iter().map(|(k, v)| (k.as_str(), *v)))?;
        Ok(())
    }
}

fn header(st: &FileStat) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_mode(st.st_mode & 0o7777);
    h.set_uid(st.st_uid as u64);
    h.set_gid(st.st_gid as u64);
    h.set_mtime(st.st_mtime.max(0) as u64);
    h
}

/// A zero-size regular file marked `trusted.overlay.whiteout` is the other
/// whiteout form overlayfs knows (for layers that cannot hold devices).
fn is_xattr_whiteout(kind: SFlag, st: &FileStat, xattrs: &[(String, Vec<u8>)]) -> bool {
    kind == SFlag::S_IFREG && st.st_size == 0 && xattrs.iter().any(|(k, _)| k == WHITEOUT_XATTR)
}

/// The names in a directory, sorted (the same tree gives the same digest).
fn list_dir(dirfd: &OwnedFd, path: &[u8]) -> Result<Vec<CString>, LayerError> {
    let fd = dirfd.try_clone()?;
    let mut d = nix::dir::Dir::from_fd(fd).map_err(|e| sys(path, e))?;
    let mut names: Vec<CString> = Vec::new();
    for e in d.iter() {
        let e = e.map_err(|e| sys(path, e))?;
        let n = e.file_name();
        if n.to_bytes() == b"." || n.to_bytes() == b".." {
            continue;
        }
        names.push(n.to_owned());
    }
    names.sort();
    Ok(names)
}

/// The entry's extended attributes, read through `/proc/self/fd/<dir>/<name>`
/// with the `l*` calls, so the final name is never followed. Attributes that
/// cannot be read (or names that are not UTF-8) are left out.
fn read_xattrs(dirfd: &OwnedFd, name: &CStr) -> Vec<(String, Vec<u8>)> {
    let mut p = format!("/proc/self/fd/{}/", dirfd.as_raw_fd()).into_bytes();
    p.extend_from_slice(name.to_bytes());
    let Ok(path) = CString::new(p) else {
        return Vec::new();
    };
    let mut list = vec![0u8; 4096];
    // SAFETY: the buffer is as long as we say; the path is NUL-terminated.
    let n = unsafe { libc::llistxattr(path.as_ptr(), list.as_mut_ptr().cast(), list.len()) };
    if n <= 0 {
        return Vec::new();
    }
    list.truncate(n as usize);
    let mut out = Vec::new();
    for key in list.split(|&b| b == 0).filter(|k| !k.is_empty()) {
        let Ok(kstr) = std::str::from_utf8(key) else {
            continue;
        };
        let Ok(ck) = CString::new(key) else { continue };
        let mut val = vec![0u8; 65536];
        // SAFETY: as above.
        let m = unsafe {
            libc::lgetxattr(
                path.as_ptr(),
                ck.as_ptr(),
                val.as_mut_ptr().cast(),
                val.len(),
            )
        };
        if m < 0 {
            continue;
        }
        val.truncate(m as usize);
        out.push((kstr.to_string(), val));
    }
    out.sort();
    out
}

fn too_deep(path: &[u8]) -> LayerError {
    LayerError::TooDeep {
        path: String::from_utf8_lossy(&path[..path.len().min(120)]).into_owned(),
        max_depth: MAX_DEPTH,
        max_path: MAX_PATH,
    }
}

fn sys(path: &[u8], source: nix::Error) -> LayerError {
    LayerError::Sys {
        path: String::from_utf8_lossy(path).into_owned(),
        source,
    }
}

fn hashing<W: Write>(inner: W) -> HashingWriter<W> {
    HashingWriter {
        inner,
        hasher: Hasher::new(),
        count: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn entries(blob: &Path) -> Vec<(String, tar::EntryType, Vec<u8>, Option<String>)> {
        let f = std::fs::File::open(blob).unwrap();
        let mut a = tar::Archive::new(flate2::read::GzDecoder::new(f));
        let mut out = Vec::new();
        for e in a.entries().unwrap() {
            let mut e = e.unwrap();
            let p = String::from_utf8_lossy(&e.path_bytes()).into_owned();
            let t = e.header().entry_type();
            let link = e
                .link_name_bytes()
                .map(|l| String::from_utf8_lossy(&l).into_owned());
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            out.push((p, t, data, link));
        }
        out
    }

    fn no_exclude(_: &[u8], _: &FileStat, _: &OwnedFd) -> bool {
        false
    }

    #[test]
    fn whiteouts_links_and_odd_names() {
        let t = std::env::temp_dir().join(format!("layer-tar-{}", uuid::Uuid::new_v4().simple()));
        let up = t.join("upper");
        std::fs::create_dir_all(up.join("d/sub")).unwrap();
        std::fs::write(up.join("d/a"), b"hello").unwrap();
        std::fs::hard_link(up.join("d/a"), up.join("d/b")).unwrap();
        std::fs::write(up.join("line\nbreak"), b"x").unwrap();
        std::os::unix::fs::symlink("/etc/shadow", up.join("out")).unwrap();
        std::fs::set_permissions(up.join("d/a"), std::fs::Permissions::from_mode(0o4755)).unwrap();
        let long = "n".repeat(200);
        std::fs::write(up.join("d").join(&long), b"long").unwrap();
        // A whiteout as overlayfs makes it (needs root: mknod of 0/0).
        let wh = CString::new(up.join("gone").as_os_str().as_bytes()).unwrap();
        // SAFETY: plain syscall on an owned path.
        let root = unsafe { libc::mknod(wh.as_ptr(), libc::S_IFCHR | 0o600, 0) } == 0;
        let opaque = CString::new(up.join("d/sub").as_os_str().as_bytes()).unwrap();
        let k = CString::new(OPAQUE_XATTR).unwrap();
        // SAFETY: as above.
        let opq = root
            && unsafe { libc::setxattr(opaque.as_ptr(), k.as_ptr(), b"y".as_ptr().cast(), 1, 0) }
                == 0;
        let blob = write_layer(&up, &t.join("layer.tar.gz"), 1 << 20, &no_exclude).unwrap();
        assert_ne!(blob.digest, blob.diff_id);
        let e = entries(&blob.path);
        let find = |p: &str| e.iter().find(|x| x.0 == p).cloned();
        assert_eq!(find("d/a").unwrap().2, b"hello");
        let b = find("d/b").unwrap();
        assert_eq!((b.1, b.3.as_deref()), (tar::EntryType::Link, Some("d/a")));
        assert_eq!(find("line\nbreak").unwrap().2, b"x");
        let out = find("out").unwrap();
        assert_eq!(
            (out.1, out.3.as_deref()),
            (tar::EntryType::Symlink, Some("/etc/shadow"))
        );
        assert_eq!(find(&format!("d/{long}")).unwrap().2, b"long");
        if root {
            assert!(find(".wh.gone").is_some(), "{e:?}");
            assert!(find("gone").is_none());
        }
        if opq {
            assert!(find("d/sub/.wh..wh..opq").is_some(), "{e:?}");
        }
        // Same tree, same digest.
        let again = write_layer(&up, &t.join("again.tar.gz"), 1 << 20, &no_exclude).unwrap();
        assert_eq!((again.digest, again.diff_id), (blob.digest, blob.diff_id));
        std::fs::remove_dir_all(&t).unwrap();
    }

    #[test]
    fn sparse_files_count_at_full_size() {
        let t = std::env::temp_dir().join(format!("layer-tar-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&t).unwrap();
        let up = t.join("upper");
        std::fs::create_dir_all(&up).unwrap();
        let f = std::fs::File::create(up.join("sparse")).unwrap();
        f.set_len(1 << 40).unwrap();
        let r = write_layer(&up, &t.join("l.tar.gz"), 1 << 30, &no_exclude);
        assert!(matches!(r, Err(LayerError::TooLarge { .. })), "{r:?}");
        std::fs::remove_dir_all(&t).unwrap();
    }

    #[test]
    fn a_tree_too_deep_is_refused_without_recursion() {
        let t = std::env::temp_dir().join(format!("layer-tar-{}", uuid::Uuid::new_v4().simple()));
        let up = t.join("upper");
        std::fs::create_dir_all(&up).unwrap();
        // Deeper than PATH_MAX allows by name: made relative to each level.
        let mut fd =
            nix::fcntl::open(&up, OFlag::O_DIRECTORY | OFlag::O_RDONLY, Mode::empty()).unwrap();
        for _ in 0..3000 {
            nix::sys::stat::mkdirat(&fd, c"d", Mode::from_bits_truncate(0o755)).unwrap();
            fd = openat(
                &fd,
                c"d",
                OFlag::O_DIRECTORY | OFlag::O_RDONLY,
                Mode::empty(),
            )
            .unwrap();
        }
        let r = write_layer(&up, &t.join("l.tar.gz"), 1 << 20, &no_exclude);
        assert!(matches!(r, Err(LayerError::TooDeep { .. })), "{r:?}");
        let _ = std::process::Command::new("rm").arg("-rf").arg(&t).status();
    }

    #[test]
    fn excluded_entries_are_left_out() {
        let t = std::env::temp_dir().join(format!("layer-tar-{}", uuid::Uuid::new_v4().simple()));
        let up = t.join("upper");
        std::fs::create_dir_all(up.join(".runta")).unwrap();
        std::fs::write(up.join(".runta/agent"), b"").unwrap();
        std::fs::write(up.join("keep"), b"k").unwrap();
        let ex = |p: &[u8], _: &FileStat, _: &OwnedFd| p == b".runta";
        let blob = write_layer(&up, &t.join("l.tar.gz"), 1 << 20, &ex).unwrap();
        let names: Vec<String> = entries(&blob.path).into_iter().map(|e| e.0).collect();
        assert_eq!(names, vec!["keep".to_string()]);
        std::fs::remove_dir_all(&t).unwrap();
    }
}
