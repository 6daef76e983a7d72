//! Dockerfile builds, driven through Debian's `buildah` (docs/images.md,
//! Build, says why a builder rather than steps in Runta runtimes).
//!
//! One build: the uploaded context (a tar) is unpacked into a fresh folder,
//! refusing entries that would land outside it; every `FROM` that names an
//! image (not `scratch`, not an earlier stage) is resolved in Runta's store
//! (pulled first if need be), handed to buildah from an OCI layout, and the
//! line is rewritten to that local copy, so buildah never reaches a registry
//! itself and the cache key of every step is the exact image Runta has.
//! `buildah bud --layers` then runs the steps (RUN inside an OCI container
//! under crun or runc, with a memory and process limit), caching each by its
//! inputs in a storage folder of the daemon's own; its log is streamed line
//! by line. The result is pushed to an OCI layout and imported into the store.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::path::{Component, Path, PathBuf};
use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;

use super::digest::Digest;
use super::{ImageError, Result};

/// Settings of the builder (daemon flags `--build-*`).
#[derive(Debug, Clone)]
pub struct BuildConfig {
    /// buildah's storage and run folders live here (`<data>/builds`).
    pub dir: PathBuf,
    /// Memory limit of each RUN step.
    pub memory_mib: u64,
    /// Largest context upload, and the most its files may unpack to.
    pub max_context_bytes: u64,
    /// The OCI runtime buildah runs steps with (`crun` or `runc`).
    pub runtime: String,
}

/// What a caller asks to build.
#[derive(Debug, Clone, Default)]
pub struct BuildSpec {
    /// Where the Dockerfile is in the context (default `Dockerfile`).
    pub dockerfile: String,
    pub build_args: Vec<(String, String)>,
    /// Skip the step cache.
    pub no_cache: bool,
}

/// Unpacks a context tar (plain or gzip) into `dest` (a new empty folder).
/// Absolute paths and `..` are refused by name; a path through a symlink an
/// earlier entry made is refused by the tar reader (it checks every parent
/// against `dest`). Files and their sizes are bounded by `max_bytes`.
pub fn unpack_context(tar_path: &Path, dest: &Path, max_bytes: u64) -> Result<u64> {
    let mut f = std::fs::File::open(tar_path)?;
    let mut head = [0u8; 2];
    let n = f.read(&mut head)?;
    drop(f);
    let f = std::fs::File::open(tar_path)?;
    let reader: Box<dyn Read> = if n == 2 && head == [0x1f, 0x8b] {
        Box::new(flate2::read::GzDecoder::new(f))
    } else {
        Box::new(f)
    };
    let mut a = tar::Archive::new(reader);
    a.set_preserve_permissions(true);
    a.set_preserve_mtime(true);
    a.set_unpack_xattrs(false);
    a.set_overwrite(true);
    let bad = |m: String| ImageError::Invalid(format!("build context: {m}"));
    let mut total: u64 = 0;
    let mut count: u64 = 0;
    for e in a
        .entries()
        .map_err(|e| bad(format!("not a tar archive: {e}")))?
    {
        let mut e = e.map_err(|e| bad(format!("bad tar entry: {e}")))?;
        let path = e
            .path()
            .map_err(|e| bad(format!("bad path: {e}")))?
            .into_owned();
        if path.is_absolute()
            || path
                .components()
                .any(|c| matches!(c, Component::ParentDir | Component::RootDir))
        {
            return Err(bad(format!(
                "{} would land outside the context",
                path.display()
            )));
        }
        use tar::EntryType as T;
        match e.header().entry_type() {
            T::Regular | T::Directory | T::Symlink | T::Link | T::Continuous => {}
            T::GNUSparse => {
                return Err(bad(format!("{}: sparse files are refused", path.display())))
            }
            // Devices and FIFOs have no place in a context; pax/GNU headers
            // are read by the tar reader itself.
            _ => continue,
        }
        if e.header().entry_type() == T::Link {
            if let Ok(Some(t)) = e.link_name() {
                if t.is_absolute() || t.components().any(|c| matches!(c, Component::ParentDir)) {
                    return Err(bad(format!(
                        "{}: a hard link to {} outside the context",
                        path.display(),
                        t.display()
                    )));
                }
            }
        }
        total = total.saturating_add(e.size());
        count += 1;
        if total > max_bytes || count > 1_000_000 {
            return Err(ImageError::TooLarge(format!(
                "the build context unpacks to more than {max_bytes} bytes or a million files"
            )));
        }
        let ok = e
            .unpack_in(dest)
            .map_err(|err| bad(format!("{}: {err}", path.display())))?;
        if !ok {
            return Err(bad(format!(
                "{} would land outside the context",
                path.display()
            )));
        }
    }
    Ok(total)
}

/// One `FROM` line of a Dockerfile.
#[derive(Debug, Clone, PartialEq)]
pub struct FromLine {
    /// Index of the (logical) line in [`Dockerfile::lines`].
    pub line: usize,
    /// The image, with build args substituted.
    pub image: String,
    pub alias: Option<String>,
    /// `--platform=…` and other flags, kept as written.
    pub flags: Vec<String>,
}

/// A Dockerfile split into logical lines (continuations joined), enough to
/// find and rewrite its `FROM` lines; buildah parses the rest.
#[derive(Debug, Clone)]
pub struct Dockerfile {
    pub lines: Vec<String>,
    pub froms: Vec<FromLine>,
}

/// Reads the Dockerfile's `FROM` lines. Build args declared before the
/// first `FROM` (`ARG NAME=default`, overridden by `build_args`) are
/// substituted in them as `$NAME` / `${NAME}`.
pub fn parse_dockerfile(text: &str, build_args: &[(String, String)]) -> Result<Dockerfile> {
    let mut lines: Vec<String> = Vec::new();
    let mut cur = String::new();
    for raw in text.lines() {
        let t = raw.trim_end();
        if cur.is_empty() && t.trim_start().starts_with('#') {
            lines.push(raw.to_string());
            continue;
        }
        if let Some(s) = t.strip_suffix('\\') {
            cur.push_str(s);
            cur.push(' ');
            continue;
        }
        cur.push_str(t);
        lines.push(std::mem::take(&mut cur));
    }
    if !cur.is_empty() {
        lines.push(cur);
    }
    let given: HashMap<&str, &str> = build_args
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let mut args: HashMap<String, String> = HashMap::new();
    let mut froms = Vec::new();
    let mut stages: HashSet<String> = HashSet::new();
    for (i, l) in lines.iter().enumerate() {
        let mut words = l.split_whitespace();
        let Some(kw) = words.next() else { continue };
        if kw.starts_with('#') {
            continue;
        }
        let kw = kw.to_ascii_uppercase();
        if kw == "ARG" && froms.is_empty() {
            for w in words {
                let (k, v) = w.split_once('=').unwrap_or((w, ""));
                let v = given
                    .get(k)
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| v.trim_matches('"').to_string());
                args.insert(k.to_string(), v);
            }
        } else if kw == "FROM" {
            let rest: Vec<&str> = words.collect();
            let mut flags = Vec::new();
            let mut it = rest.iter().peekable();
            while let Some(w) = it.peek() {
                if w.starts_with("--") {
                    flags.push(w.to_string());
                    it.next();
                } else {
                    break;
                }
            }
            let Some(image) = it.next() else {
                return Err(ImageError::Invalid(format!(
                    "Dockerfile line {}: FROM needs an image",
                    i + 1
                )));
            };
            let alias = match (it.next(), it.next()) {
                (Some(a), Some(name)) if a.eq_ignore_ascii_case("as") => Some(name.to_string()),
                (None, _) => None,
                _ => {
                    return Err(ImageError::Invalid(format!(
                        "Dockerfile line {}: expected `FROM image [AS name]`",
                        i + 1
                    )))
                }
            };
            let image = substitute(image, &args);
            if let Some(a) = &alias {
                stages.insert(a.to_ascii_lowercase());
            }
            froms.push(FromLine {
                line: i,
                image,
                alias,
                flags,
            });
        }
    }
    if froms.is_empty() {
        return Err(ImageError::Invalid(
            "the Dockerfile has no FROM line".into(),
        ));
    }
    // A FROM naming an earlier stage stays as it is.
    let mut seen: HashSet<String> = HashSet::new();
    for f in &mut froms {
        if seen.contains(&f.image.to_ascii_lowercase()) {
            f.flags.push("--runta-stage".into());
        }
        if let Some(a) = &f.alias {
            seen.insert(a.to_ascii_lowercase());
        }
    }
    let _ = stages;
    Ok(Dockerfile { lines, froms })
}

fn substitute(s: &str, args: &HashMap<String, String>) -> String {
    let mut out = String::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'$' {
            let (name, next) = if b.get(i + 1) == Some(&b'{') {
                match s[i + 2..].find('}') {
                    Some(end) => (&s[i + 2..i + 2 + end], i + 3 + end),
                    None => ("", i + 1),
                }
            } else {
                let end = s[i + 1..]
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .map(|e| i + 1 + e)
                    .unwrap_or(s.len());
                (&s[i + 1..end], end)
            };
            if !name.is_empty() {
                out.push_str(args.get(name).map(String::as_str).unwrap_or(""));
                i = next;
                continue;
            }
        }
        out.push(b[i] as char);
        i += 1;
    }
    out
}

impl FromLine {
    /// Whether this FROM names an image Runta must provide.
    pub fn is_image(&self) -> bool {
        !self.flags.iter().any(|f| f == "--runta-stage")
            && !self.image.eq_ignore_ascii_case("scratch")
    }
}

impl Dockerfile {
    /// The Dockerfile with each image FROM rewritten through `local` (the
    /// name buildah knows the store's copy by).
    pub fn rewritten(&self, local: &HashMap<String, String>) -> String {
        let mut out = self.lines.clone();
        for f in &self.froms {
            if !f.is_image() {
                continue;
            }
            let Some(l) = local.get(&f.image) else {
                continue;
            };
            let flags: Vec<&str> = f
                .flags
                .iter()
                .map(String::as_str)
                .filter(|x| *x != "--runta-stage")
                .collect();
            let mut line = String::from("FROM ");
            for fl in flags {
                line.push_str(fl);
                line.push(' ');
            }
            line.push_str(l);
            if let Some(a) = &f.alias {
                line.push_str(" AS ");
                line.push_str(a);
            }
            out[f.line] = line;
        }
        let mut s = out.join("\n");
        s.push('\n');
        s
    }
}

/// The name buildah keeps the store's image `manifest` under.
pub fn local_name(manifest: &Digest) -> String {
    format!("localhost/runta-from:{}", &manifest.hex()[..32])
}

/// Mount points under `dir` (deepest first), read from the kernel's mount
/// table: the paths there are already resolved, so a symlink cannot make a
/// mount outside `dir` look like one of ours.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut found: Vec<PathBuf> = table
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| PathBuf::from(unescape_mount_path(m)))
        .filter(|m| m.starts_with(dir) && m != dir)
        .collect();
    found.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    found.dedup();
    found
}

/// `/proc/self/mountinfo` writes space, tab, newline and `\` as `\ooo`.
fn unescape_mount_path(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = u16::from(b[i + 1] - b'0') * 64
                + u16::from(b[i + 2] - b'0') * 8
                + u16::from(b[i + 3] - b'0');
            out.push(v as u8);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Detaches every mount under `dir` (buildah's overlay and shm mounts a
/// build or a killed daemon left), deepest first, never following a symlink
/// at the mount point. Returns how many were detached.
pub fn unmount_under(dir: &Path) -> usize {
    let mut n = 0;
    // A mount stacked on another shows up again once the top one is gone.
    for _ in 0..4 {
        let found = mounts_under(dir);
        if found.is_empty() {
            break;
        }
        for m in found {
            let Ok(c) = std::ffi::CString::new(m.as_os_str().as_encoded_bytes()) else {
                continue;
            };
            // SAFETY: a valid C string; umount2 reads it only.
            let r = unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH | libc::UMOUNT_NOFOLLOW) };
            if r == 0 {
                n += 1;
            } else {
                tracing::warn!(path = %m.display(), "unmount a builder mount: {}", std::io::Error::last_os_error());
            }
        }
    }
    n
}

/// The buildah process, with the daemon's storage.
pub struct Buildah {
    cfg: BuildConfig,
}

impl Buildah {
    pub fn new(cfg: BuildConfig) -> Self {
        Buildah { cfg }
    }

    pub fn config(&self) -> &BuildConfig {
        &self.cfg
    }

    fn base_args(&self) -> Vec<String> {
        vec![
            "--root".into(),
            self.cfg.dir.join("storage").display().to_string(),
            "--runroot".into(),
            self.cfg.dir.join("run").display().to_string(),
            "--storage-driver".into(),
            "overlay".into(),
            "--cgroup-manager".into(),
            "cgroupfs".into(),
        ]
    }

    async fn run(&self, args: &[String]) -> Result<String> {
        let out = tokio::process::Command::new("buildah")
            .args(self.base_args())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|e| ImageError::Invalid(format!("run buildah (is it installed?): {e}")))?;
        if !out.status.success() {
            return Err(ImageError::Invalid(format!(
                "buildah {}: {}",
                args.first().map(String::as_str).unwrap_or(""),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Unmounts what buildah left mounted: its own `umount --all` first,
    /// then a detach of anything still mounted under the builder's folder.
    /// Only while no build runs (a build's containers are mounted).
    pub async fn release(&self) {
        let _ = self.run(&["umount".into(), "--all".into()]).await;
        let dir = self.cfg.dir.clone();
        let n = tokio::task::spawn_blocking(move || unmount_under(&dir))
            .await
            .unwrap_or(0);
        if n > 0 {
            tracing::debug!(n, "builder mounts detached");
        }
    }

    /// Whether buildah already has `name`.
    pub async fn has(&self, name: &str) -> bool {
        self.run(&[
            "inspect".into(),
            "--type".into(),
            "image".into(),
            name.into(),
        ])
        .await
        .is_ok()
    }

    /// Loads the OCI layout `dir` into buildah's storage as `name`.
    pub async fn load(&self, dir: &Path, name: &str) -> Result<()> {
        let out = self
            .run(&[
                "pull".into(),
                "--quiet".into(),
                format!("oci:{}", dir.display()),
            ])
            .await?;
        let id = out.lines().last().unwrap_or("").trim().to_string();
        self.run(&["tag".into(), id, name.into()]).await.map(drop)
    }

    /// Runs `buildah bud` on `context` with the (rewritten) Dockerfile at
    /// `dockerfile`, sending every output line to `log`; then writes the
    /// result as an OCI layout at `out`.
    pub async fn build(
        &self,
        context: &Path,
        dockerfile: &Path,
        spec: &BuildSpec,
        tag: &str,
        out: &Path,
        log: &mpsc::Sender<String>,
    ) -> Result<()> {
        let mut args = self.base_args();
        args.extend([
            "bud".into(),
            "--layers".into(),
            // `--pull` takes an optional value: `--pull never` would read
            // `never` as the context.
            "--pull=never".into(),
            "--isolation".into(),
            "oci".into(),
            "--runtime".into(),
            self.cfg.runtime.clone(),
            "--memory".into(),
            format!("{}m", self.cfg.memory_mib),
            "--format".into(),
            "oci".into(),
            "-f".into(),
            dockerfile.display().to_string(),
            "-t".into(),
            tag.into(),
        ]);
        if spec.no_cache {
            args.push("--no-cache".into());
        }
        for (k, v) in &spec.build_args {
            args.push("--build-arg".into());
            args.push(format!("{k}={v}"));
        }
        args.push(context.display().to_string());
        let mut child = tokio::process::Command::new("buildah")
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| ImageError::Invalid(format!("run buildah (is it installed?): {e}")))?;
        let (Some(so), Some(se)) = (child.stdout.take(), child.stderr.take()) else {
            return Err(ImageError::Invalid("buildah: no output pipes".into()));
        };
        let pump = |r: Box<dyn tokio::io::AsyncRead + Unpin + Send>, tx: mpsc::Sender<String>| {
            tokio::spawn(async move {
                let mut lines = BufReader::new(r).lines();
                let mut last = Vec::new();
                while let Ok(Some(l)) = lines.next_line().await {
                    last.push(l.clone());
                    if last.len() > 5 {
                        last.remove(0);
                    }
                    let _ = tx.send(l).await;
                }
                last
            })
        };
        let a = pump(Box::new(so), log.clone());
        let b = pump(Box::new(se), log.clone());
        let status = child.wait().await?;
        let _ = a.await;
        let tail = b.await.unwrap_or_default();
        if !status.success() {
            return Err(ImageError::Invalid(format!(
                "the build failed: {}",
                tail.join(" | ")
            )));
        }
        self.run(&[
            "push".into(),
            "--quiet".into(),
            "--format".into(),
            "oci".into(),
            tag.into(),
            format!("oci:{}", out.display()),
        ])
        .await?;
        // The tag is only a handle; the steps stay cached under their own ids.
        let _ = self.run(&["untag".into(), tag.into()]).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_lines_are_found_and_rewritten() {
        let df = "ARG BASE=base\n# comment\nFROM ${BASE} AS build\nRUN echo a \\\n  b\nFROM build\nFROM --platform=linux/amd64 python:3.12\nCOPY --from=build /a /a\n";
        let d = parse_dockerfile(df, &[]).unwrap();
        let imgs: Vec<(&str, bool)> = d
            .froms
            .iter()
            .map(|f| (f.image.as_str(), f.is_image()))
            .collect();
        assert_eq!(
            imgs,
            vec![("base", true), ("build", false), ("python:3.12", true)]
        );
        let mut m = HashMap::new();
        m.insert("base".to_string(), "localhost/runta-from:aa".to_string());
        m.insert(
            "python:3.12".to_string(),
            "localhost/runta-from:bb".to_string(),
        );
        let out = d.rewritten(&m);
        assert!(
            out.contains("FROM localhost/runta-from:aa AS build\n"),
            "{out}"
        );
        assert!(out.contains("FROM build\n"), "{out}");
        assert!(
            out.contains("FROM --platform=linux/amd64 localhost/runta-from:bb\n"),
            "{out}"
        );
        assert!(out.contains("RUN echo a    b\n"), "{out}");
        let d2 = parse_dockerfile(df, &[("BASE".into(), "alpine:3".into())]).unwrap();
        assert_eq!(d2.froms[0].image, "alpine:3");
        assert!(parse_dockerfile("RUN x\n", &[]).is_err());
    }

    #[test]
    fn hostile_contexts_are_refused() {
        let t = std::env::temp_dir().join(format!("ctx-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&t).unwrap();
        let mk = |entries: &[(&str, tar::EntryType, &str)]| {
            let p = t.join(format!("{}.tar", uuid::Uuid::new_v4().simple()));
            let mut b = tar::Builder::new(std::fs::File::create(&p).unwrap());
            for (name, kind, link) in entries {
                let mut h = tar::Header::new_gnu();
                h.set_entry_type(*kind);
                h.set_mode(0o644);
                h.set_size(if *kind == tar::EntryType::Regular {
                    1
                } else {
                    0
                });
                // Written raw: the tar writer refuses `..` itself.
                h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
                if !link.is_empty() {
                    h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
                }
                h.set_cksum();
                let data: &[u8] = if *kind == tar::EntryType::Regular {
                    b"x"
                } else {
                    b""
                };
                b.append(&h, data).unwrap();
            }
            b.finish().unwrap();
            p
        };
        use tar::EntryType as T;
        for (i, bad) in [
            vec![("../escape", T::Regular, "")],
            vec![("/abs", T::Regular, "")],
            vec![("l", T::Symlink, "/etc"), ("l/passwd", T::Regular, "")],
            vec![("h", T::Link, "../../etc/shadow")],
        ]
        .into_iter()
        .enumerate()
        {
            let dest = t.join(format!("d{i}"));
            std::fs::create_dir_all(&dest).unwrap();
            let r = unpack_context(&mk(&bad), &dest, 1 << 20);
            assert!(r.is_err(), "case {i} was accepted");
        }
        assert!(std::fs::read_to_string("/etc/passwd").unwrap().len() > 1);
        let dest = t.join("ok");
        std::fs::create_dir_all(&dest).unwrap();
        let good = mk(&[("a", T::Regular, ""), ("l", T::Symlink, "/etc")]);
        unpack_context(&good, &dest, 1 << 20).unwrap();
        assert_eq!(
            std::fs::read_link(dest.join("l")).unwrap(),
            Path::new("/etc")
        );
        let dest = t.join("big");
        std::fs::create_dir_all(&dest).unwrap();
        assert!(matches!(
            unpack_context(&good, &dest, 0),
            Err(ImageError::TooLarge(_))
        ));
        std::fs::remove_dir_all(&t).unwrap();
    }
}
