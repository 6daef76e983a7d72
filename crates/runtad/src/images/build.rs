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
//! under crun or runc, with a memory limit, in a network namespace of the
//! build's own: [`BuildNet`]), caching each by its inputs in the calling
//! tenant's own storage folder; its log is streamed line by line. The result is pushed to an OCI layout and imported into the store.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::path::{Component, Path, PathBuf};
use std::process::Stdio;

use std::time::Duration;

use runta_backend::cgroups::{CgroupMode, JobCgroup, JobLimits};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;

use super::digest::Digest;
use super::{ImageError, Result};

/// Settings of the builder (daemon flags `--build-*`).
#[derive(Debug, Clone)]
pub struct BuildConfig {
    /// buildah's storage and run folders: the calling tenant's own
    /// ([`tenant_dir`]), so no tenant's step cache or intermediate images
    /// are another's.
    pub dir: PathBuf,
    /// Largest context upload, and the most its files may unpack to.
    pub max_context_bytes: u64,
    /// The OCI runtime buildah runs steps with (`crun` or `runc`).
    pub runtime: String,
    /// Limits of each build's cgroup: buildah and every RUN step together.
    pub limits: JobLimits,
    /// Longest a build may run; past it, every process of it is killed.
    pub timeout: Duration,
    /// The cgroup the builds' own cgroups are made under
    /// (`/runta-<instance>-builds`; [`reap_leftovers`] finds them there).
    pub cgroup_parent: String,
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

/// Bounds on what the daemon parses and hands to buildah: the longest
/// logical line (continuations joined), the most instructions, and the most
/// distinct images one Dockerfile may name (each may be pulled).
pub const MAX_LINE: usize = 64 << 10;
pub const MAX_INSTRUCTIONS: usize = 10_000;
pub const MAX_IMAGES: usize = 16;

/// What a `FROM` stands on.
#[derive(Debug, Clone, PartialEq)]
pub enum FromTarget {
    /// An image Runta's store must provide (build args substituted).
    Image(String),
    Scratch,
    /// An earlier stage, by its alias as that stage declared it.
    Stage(String),
}

/// One `FROM` line of a Dockerfile.
#[derive(Debug, Clone, PartialEq)]
pub struct FromLine {
    /// Index of the (logical) line in [`Dockerfile::lines`].
    pub line: usize,
    /// The line's number in the file as written (1-based).
    pub lineno: usize,
    pub target: FromTarget,
    pub alias: Option<String>,
    pub platform: Option<String>,
}

/// A `COPY --from=` that names an image rather than an earlier stage.
#[derive(Debug, Clone, PartialEq)]
pub struct CopyFrom {
    pub line: usize,
    pub lineno: usize,
    pub image: String,
    /// The line's other flags and its sources/destination, kept as written.
    flags: Vec<String>,
    body: String,
}

/// A Dockerfile split into logical lines (continuations joined) and checked
/// against what a build may do (docs/images.md, Build). Every line handed to
/// buildah is one of these lines on one physical line, so buildah reads the
/// same instructions the checks read; every `FROM` line, and every
/// `COPY --from` naming an image, is written out by Runta in full.
#[derive(Debug, Clone)]
pub struct Dockerfile {
    pub lines: Vec<String>,
    pub froms: Vec<FromLine>,
    pub copy_froms: Vec<CopyFrom>,
}

/// Whitespace as buildah's Dockerfile parser splits words on (Go's
/// `unicode.IsSpace` on single bytes; the two non-ASCII ones it counts are
/// UTF-8 continuation bytes, never the start of a word).
fn go_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\x0b' | '\x0c' | '\r')
}

/// The `--flag` words at the start of an instruction's arguments, and the
/// rest. A flag word must be plain ASCII without quotes or backslashes:
/// buildah splits flag words byte by byte and unquotes them, so anything
/// else could make it see a flag these checks did not.
fn leading_flags(rest: &str) -> std::result::Result<(Vec<String>, &str), String> {
    let mut flags = Vec::new();
    let mut s = rest;
    loop {
        s = s.trim_start_matches(go_space);
        if !s.starts_with("--") {
            return Ok((flags, s));
        }
        let end = s.find(go_space).unwrap_or(s.len());
        let w = &s[..end];
        if !w.is_ascii() || w.contains(['"', '\'', '\\', '`']) {
            return Err(format!(
                "the flag {w:?} must be plain ASCII without quotes or backslashes"
            ));
        }
        flags.push(w.to_string());
        s = &s[end..];
    }
}

/// An image reference, a stage alias or a platform as a FROM or `--from`
/// may hold once substituted: nothing a shell or buildah would expand.
fn plain_ref(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 255
        && s.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'/' | b':' | b'@')
        })
}

fn alias_ok(s: &str) -> bool {
    s.len() <= 128
        && s.as_bytes().first().is_some_and(u8::is_ascii_alphabetic)
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The sources of a COPY/ADD body (shell form or JSON form).
fn copy_sources(body: &str) -> Vec<String> {
    let words: Vec<String> = if body.trim_start().starts_with('[') {
        serde_json::from_str::<Vec<String>>(body.trim()).unwrap_or_else(|_| {
            body.split(go_space)
                .filter(|w| !w.is_empty())
                .map(str::to_string)
                .collect()
        })
    } else {
        body.split(go_space)
            .filter(|w| !w.is_empty())
            .map(str::to_string)
            .collect()
    };
    let n = words.len().saturating_sub(1);
    words.into_iter().take(n).collect()
}

/// Reads and checks a Dockerfile. Build args declared before the first
/// `FROM` (`ARG NAME=default`, overridden by `build_args`) are substituted
/// in `FROM` lines as `$NAME`, `${NAME}`, `${NAME:-word}`, `${NAME:+word}`.
/// Errors name the line (`line N: …`).
pub fn parse_dockerfile(text: &str, build_args: &[(String, String)]) -> Result<Dockerfile> {
    // buildah drops a byte-order mark; a FROM behind one must not hide.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut lines: Vec<String> = Vec::new();
    let mut starts: Vec<usize> = Vec::new();
    let mut cur = String::new();
    let mut start = 0;
    let too_long = |n: usize| {
        ImageError::Invalid(format!(
            "line {n}: longer than {MAX_LINE} bytes (continuations joined)"
        ))
    };
    for (i, raw) in text.lines().enumerate() {
        let t = raw.trim_end();
        if cur.is_empty() && t.trim_start().starts_with('#') {
            lines.push(t.to_string());
            starts.push(i + 1);
            continue;
        }
        if cur.is_empty() {
            start = i + 1;
        }
        if let Some(s) = t.strip_suffix('\\') {
            cur.push_str(s);
            cur.push(' ');
        } else {
            cur.push_str(t);
            lines.push(std::mem::take(&mut cur).trim_end().to_string());
            starts.push(start);
        }
        if cur.len() > MAX_LINE || lines.last().is_some_and(|l| l.len() > MAX_LINE) {
            return Err(too_long(start));
        }
    }
    if !cur.is_empty() {
        lines.push(cur.trim_end().to_string());
        starts.push(start);
    }
    let given: HashMap<&str, &str> = build_args
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let mut args: HashMap<String, String> = HashMap::new();
    let mut froms: Vec<FromLine> = Vec::new();
    let mut copy_froms = Vec::new();
    // Aliases of the stages so far: lowercase -> as declared.
    let mut aliases: HashMap<String, String> = HashMap::new();
    let mut count = 0;
    for (i, l) in lines.iter().enumerate() {
        let n = starts[i];
        let bad = |m: String| ImageError::Invalid(format!("line {n}: {m}"));
        let s = l.trim_start();
        if s.is_empty() {
            continue;
        }
        if let Some(c) = s.strip_prefix('#') {
            // The one parser directive that changes how lines are read.
            if let Some((k, v)) = c.split_once('=') {
                if k.trim().eq_ignore_ascii_case("escape") && v.trim() != "\\" {
                    return Err(bad(
                        "the `escape` parser directive is refused (only `\\` continues a line here)"
                            .into(),
                    ));
                }
            }
            continue;
        }
        count += 1;
        if count > MAX_INSTRUCTIONS {
            return Err(bad(format!("more than {MAX_INSTRUCTIONS} instructions")));
        }
        if s.ends_with('\\') {
            return Err(bad("the file ends in a line continuation".into()));
        }
        let (kw, rest) = match s.find(go_space) {
            Some(e) => (&s[..e], &s[e..]),
            None => (s, ""),
        };
        if !kw.is_ascii() {
            return Err(bad(format!("unknown instruction {kw:?}")));
        }
        let kw = kw.to_ascii_uppercase();
        if froms.is_empty() && kw != "ARG" && kw != "FROM" {
            return Err(bad(format!("{kw} before the first FROM")));
        }
        match kw.as_str() {
            "ARG" if froms.is_empty() => {
                for w in rest.split(go_space).filter(|w| !w.is_empty()) {
                    let (k, v) = w.split_once('=').unwrap_or((w, ""));
                    let v = given
                        .get(k)
                        .map(|s| s.to_string())
                        .unwrap_or_else(|| v.trim_matches('"').to_string());
                    args.insert(k.to_string(), v);
                }
            }
            "FROM" => {
                let (flags, body) = leading_flags(rest).map_err(bad)?;
                let mut platform = None;
                for f in flags {
                    match f.strip_prefix("--platform=") {
                        Some(v) if platform.is_none() && plain_platform(v) => {
                            platform = Some(v.to_string())
                        }
                        _ => return Err(bad(format!("FROM does not take {f:?}"))),
                    }
                }
                let words: Vec<&str> = body.split(go_space).filter(|w| !w.is_empty()).collect();
                let (image, alias) = match words.as_slice() {
                    [img] => (*img, None),
                    [img, as_, a] if as_.eq_ignore_ascii_case("as") => (*img, Some(*a)),
                    _ => return Err(bad("expected `FROM image [AS name]`".into())),
                };
                let image = substitute(image, &args).map_err(bad)?;
                if !plain_ref(&image) {
                    return Err(bad(format!(
                        "FROM {image:?} is not an image reference or a stage name"
                    )));
                }
                let target = if image.eq_ignore_ascii_case("scratch") {
                    FromTarget::Scratch
                } else if let Some(a) = aliases.get(&image.to_ascii_lowercase()) {
                    FromTarget::Stage(a.clone())
                } else {
                    FromTarget::Image(image)
                };
                if let Some(a) = alias {
                    if !alias_ok(a) || a.eq_ignore_ascii_case("scratch") {
                        return Err(bad(format!(
                            "the stage name {a:?} must be a letter then letters, digits, '.', '_', '-'"
                        )));
                    }
                    if aliases
                        .insert(a.to_ascii_lowercase(), a.to_string())
                        .is_some()
                    {
                        return Err(bad(format!("a second stage named {a:?}")));
                    }
                }
                froms.push(FromLine {
                    line: i,
                    lineno: n,
                    target,
                    alias: alias.map(str::to_string),
                    platform,
                });
            }
            "RUN" => {
                let (flags, body) = leading_flags(rest).map_err(bad)?;
                if let Some(f) = flags.first() {
                    return Err(bad(format!(
                        "RUN {f}: RUN flags (--mount, --network, --security) are refused: they reach the build host's files, caches, secrets and networks"
                    )));
                }
                if body.starts_with("<<") {
                    return Err(bad(
                        "heredocs (`RUN <<EOF`) are not supported by this builder (it would read their lines as instructions)"
                            .into(),
                    ));
                }
            }
            "COPY" | "ADD" => {
                let (flags, body) = leading_flags(rest).map_err(bad)?;
                if body.starts_with("<<") {
                    return Err(bad(format!(
                        "heredocs (`{kw} <<EOF`) are not supported by this builder"
                    )));
                }
                let mut from = None;
                let mut others = Vec::new();
                let mut seen = HashSet::new();
                for f in &flags {
                    let (name, val) = f[2..].split_once('=').unwrap_or((&f[2..], ""));
                    if !seen.insert(name.to_string()) {
                        return Err(bad(format!("{kw} {f}: the flag is given twice")));
                    }
                    match name {
                        "chown" | "chmod" if !val.is_empty() => others.push(f.clone()),
                        "from" if kw == "COPY" => from = Some(val.to_string()),
                        _ => {
                            return Err(bad(format!(
                                "{kw} {f}: refused (a build takes --chown, --chmod and, for COPY, --from)"
                            )))
                        }
                    }
                }
                for src in copy_sources(body) {
                    // What buildah sees once quotes and escapes are gone.
                    let bare: String = src
                        .chars()
                        .filter(|c| !matches!(c, '"' | '\'' | '\\'))
                        .collect();
                    let lower = bare.to_ascii_lowercase();
                    if lower.contains("://") || lower.starts_with("git@") {
                        return Err(bad(format!(
                            "{kw} {src}: remote sources are refused (the daemon host would fetch them); download in a RUN step instead"
                        )));
                    }
                    if kw == "ADD" && bare.contains('$') {
                        return Err(bad(format!(
                            "ADD {src}: a variable in an ADD source is refused (it could name a URL the daemon host would fetch); use COPY, or download in a RUN step"
                        )));
                    }
                }
                if let Some(v) = from {
                    let stage = froms.len() - 1;
                    if !plain_ref(&v) {
                        return Err(bad(format!(
                            "COPY --from={v}: must name an earlier stage or an image (no variables)"
                        )));
                    }
                    if v.bytes().all(|b| b.is_ascii_digit()) {
                        if !v.parse::<usize>().is_ok_and(|k| k < stage) {
                            return Err(bad(format!(
                                "COPY --from={v}: there is no earlier stage {v}"
                            )));
                        }
                    } else if let Some(a) = aliases.get(&v.to_ascii_lowercase()) {
                        let cur = froms.last().and_then(|f| f.alias.as_deref());
                        if cur.is_some_and(|c| c.eq_ignore_ascii_case(a)) {
                            return Err(bad(format!("COPY --from={v}: the stage itself")));
                        }
                        let mut fl = others.clone();
                        fl.push(format!("--from={a}"));
                        copy_froms.push(CopyFrom {
                            line: i,
                            lineno: n,
                            image: String::new(),
                            flags: fl,
                            body: body.to_string(),
                        });
                    } else {
                        copy_froms.push(CopyFrom {
                            line: i,
                            lineno: n,
                            image: v,
                            flags: others,
                            body: body.to_string(),
                        });
                    }
                }
            }
            "ONBUILD" => {
                return Err(bad(
                    "ONBUILD is refused (its steps would run in later builds unchecked)".into(),
                ))
            }
            "ARG" | "ENV" | "LABEL" | "EXPOSE" | "WORKDIR" | "USER" | "VOLUME" | "CMD"
            | "ENTRYPOINT" | "SHELL" | "STOPSIGNAL" | "HEALTHCHECK" | "MAINTAINER" => {}
            _ => return Err(bad(format!("unknown instruction {kw}"))),
        }
    }
    if froms.is_empty() {
        return Err(ImageError::Invalid(
            "the Dockerfile has no FROM line".into(),
        ));
    }
    let d = Dockerfile {
        lines,
        froms,
        copy_froms,
    };
    if d.images().len() > MAX_IMAGES {
        return Err(ImageError::Invalid(format!(
            "the Dockerfile names more than {MAX_IMAGES} images"
        )));
    }
    Ok(d)
}

/// `--platform=` values: a platform, or buildah's own platform args.
fn plain_platform(v: &str) -> bool {
    matches!(
        v,
        "$BUILDPLATFORM" | "${BUILDPLATFORM}" | "$TARGETPLATFORM" | "${TARGETPLATFORM}"
    ) || (!v.is_empty()
        && v.len() <= 64
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'_' | b'.' | b'-')))
}

/// `$NAME`, `${NAME}`, `${NAME:-word}`, `${NAME:+word}` from `args` (an
/// unknown name is empty, as in Docker); any other form is refused rather
/// than read differently from buildah.
fn substitute(s: &str, args: &HashMap<String, String>) -> std::result::Result<String, String> {
    let name_ok = |n: &str| {
        n.as_bytes()
            .first()
            .is_some_and(|b| b.is_ascii_alphabetic() || *b == b'_')
            && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    };
    let unsupported = || {
        format!("FROM {s:?}: only $NAME, ${{NAME}}, ${{NAME:-word}} and ${{NAME:+word}} are substituted")
    };
    let mut out = String::new();
    let mut rest = s;
    while let Some(p) = rest.find('$') {
        out.push_str(&rest[..p]);
        let after = &rest[p + 1..];
        if let Some(inner) = after.strip_prefix('{') {
            let end = inner.find('}').ok_or_else(unsupported)?;
            let expr = &inner[..end];
            let (name, op) = match expr.find(":-").or_else(|| expr.find(":+")) {
                Some(k) => (&expr[..k], Some((&expr[k..k + 2], &expr[k + 2..]))),
                None => (expr, None),
            };
            if !name_ok(name) {
                return Err(unsupported());
            }
            let val = args.get(name).map(String::as_str).unwrap_or("");
            match op {
                None => out.push_str(val),
                Some((_, w)) if w.contains(['$', '{', '}']) => return Err(unsupported()),
                Some((":-", w)) => out.push_str(if val.is_empty() { w } else { val }),
                Some((_, w)) => out.push_str(if val.is_empty() { "" } else { w }),
            }
            rest = &inner[end + 1..];
        } else {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            let name = &after[..end];
            if !name_ok(name) {
                return Err(unsupported());
            }
            out.push_str(args.get(name).map(String::as_str).unwrap_or(""));
            rest = &after[end..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

impl Dockerfile {
    /// Every image the Dockerfile names (FROM and `COPY --from`), once each,
    /// with the line that first names it.
    pub fn images(&self) -> Vec<(String, usize)> {
        let mut out: Vec<(String, usize)> = Vec::new();
        let froms = self.froms.iter().filter_map(|f| match &f.target {
            FromTarget::Image(i) => Some((i.clone(), f.lineno)),
            _ => None,
        });
        let copies = self
            .copy_froms
            .iter()
            .filter(|c| !c.image.is_empty())
            .map(|c| (c.image.clone(), c.lineno));
        for (i, n) in froms.chain(copies) {
            if !out.iter().any(|(o, _)| *o == i) {
                out.push((i, n));
            }
        }
        out
    }

    /// The Dockerfile buildah runs: each image (FROM or `COPY --from`)
    /// rewritten through `local` (the name buildah knows the store's copy
    /// by), every FROM written out in full. `None` if an image is missing
    /// from `local`.
    pub fn rewritten(&self, local: &HashMap<String, String>) -> Option<String> {
        let mut out = self.lines.clone();
        for f in &self.froms {
            let target = match &f.target {
                FromTarget::Image(i) => local.get(i)?.as_str(),
                FromTarget::Scratch => "scratch",
                FromTarget::Stage(a) => a.as_str(),
            };
            let mut line = String::from("FROM ");
            if let Some(p) = &f.platform {
                line.push_str(&format!("--platform={p} "));
            }
            line.push_str(target);
            if let Some(a) = &f.alias {
                line.push_str(" AS ");
                line.push_str(a);
            }
            out[f.line] = line;
        }
        for c in &self.copy_froms {
            let mut flags = c.flags.clone();
            if !c.image.is_empty() {
                flags.push(format!("--from={}", local.get(&c.image)?));
            }
            out[c.line] = format!("COPY {} {}", flags.join(" "), c.body);
        }
        let mut s = out.join("\n");
        s.push('\n');
        Some(s)
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

/// Destinations a RUN step never reaches, besides the daemon host itself
/// (its INPUT is closed to the build) and every subnet the host is directly
/// on: loopback, "this" network, private ranges, carrier-grade NAT (the
/// build links themselves), link-local (the metadata address), benchmark
/// (test networks), multicast and reserved.
const DENIED: &[&str] = &[
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "224.0.0.0/4",
    "240.0.0.0/4",
];

async fn sh(cmd: &str, args: &[&str]) -> Result<String> {
    let out = tokio::process::Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| ImageError::Invalid(format!("build network: {cmd}: {e}")))?;
    if !out.status.success() {
        return Err(ImageError::Invalid(format!(
            "build network: {cmd} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The network a build's RUN steps get: a namespace of its own joined to
/// the host by a veth pair on a /30 of `100.127.0.0/16`, masqueraded out,
/// with the host, other runtimes, the host's own subnets and every private,
/// link-local and reserved range denied (only the host's resolvers on port
/// 53 are let through, so names resolve). buildah joins it with
/// `--network ns:<path>`. Removed by [`BuildNet::remove`].
pub struct BuildNet {
    ns: String,
    host_if: String,
    chain: String,
    subnet: String,
}

impl BuildNet {
    pub async fn create() -> Result<BuildNet> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let used = sh("ip", &["-4", "-o", "addr", "show"]).await?;
        // A /30 no interface is on.
        let mut k: u32 = u32::from_str_radix(&id[..4], 16).unwrap_or(0) % 16384;
        let mut base;
        let mut tries = 0;
        loop {
            base = (k * 4) as u16;
            let prefix = format!(" 100.127.{}.", base >> 8);
            let last = (base & 0xff) as u8;
            let clash = used.lines().any(|l| {
                l.find(&prefix).is_some_and(|p| {
                    let rest = &l[p + prefix.len()..];
                    rest.split(['/', ' '])
                        .next()
                        .and_then(|o| o.parse::<u8>().ok())
                        .is_some_and(|o| o & 0xfc == last)
                })
            });
            if !clash {
                break;
            }
            tries += 1;
            if tries > 64 {
                return Err(ImageError::Invalid(
                    "build network: no free /30 in 100.127.0.0/16".into(),
                ));
            }
            k = (k + 1) % 16384;
        }
        let addr = |n: u16| format!("100.127.{}.{}", (base + n) >> 8, (base + n) & 0xff);
        let net = BuildNet {
            ns: format!("rtbuild-{}", &id[..12]),
            host_if: format!("rbh{}", &id[..9]),
            chain: format!("RTB-{}", &id[..9]),
            subnet: format!("{}/30", addr(0)),
        };
        if let Err(e) = net.setup(&addr(1), &addr(2)).await {
            net.remove().await;
            return Err(e);
        }
        Ok(net)
    }

    /// What [`BuildNet::from_record`] needs to find the network again (a
    /// line the daemon keeps beside the build while it runs, so a daemon
    /// killed mid-build removes it at its next start).
    pub fn record(&self) -> String {
        format!(
            "{} {} {} {}\n",
            self.ns, self.host_if, self.chain, self.subnet
        )
    }

    /// The network a [`BuildNet::record`] line names; `None` for anything
    /// that is not exactly such a line (only names of this shape are ever
    /// removed).
    pub fn from_record(line: &str) -> Option<BuildNet> {
        let f: Vec<&str> = line.split_whitespace().collect();
        let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
        let [ns, host_if, chain, subnet] = f.as_slice() else {
            return None;
        };
        let ok = ns.strip_prefix("rtbuild-").is_some_and(|h| hex(h, 12))
            && host_if.strip_prefix("rbh").is_some_and(|h| hex(h, 9))
            && chain.strip_prefix("RTB-").is_some_and(|h| hex(h, 9))
            && subnet
                .strip_suffix("/30")
                .and_then(|a| a.parse::<std::net::Ipv4Addr>().ok())
                .is_some_and(|a| a.octets()[..2] == [100, 127] && a.octets()[3] & 3 == 0);
        ok.then(|| BuildNet {
            ns: ns.to_string(),
            host_if: host_if.to_string(),
            chain: chain.to_string(),
            subnet: subnet.to_string(),
        })
    }

    /// The namespace's name (`rtbuild-<12 hex>`; the host link is
    /// `rbh<first 9>`, the rules' chain `RTB-<first 9>`).
    pub fn name(&self) -> &str {
        &self.ns
    }

    pub fn netns_path(&self) -> String {
        format!("/run/netns/{}", self.ns)
    }

    async fn setup(&self, host_ip: &str, inside_ip: &str) -> Result<()> {
        let (ns, h) = (self.ns.as_str(), self.host_if.as_str());
        let peer = format!("rbp{}", &self.host_if[3..]);
        sh("ip", &["netns", "add", ns]).await?;
        sh(
            "ip",
            &["link", "add", h, "type", "veth", "peer", "name", &peer],
        )
        .await?;
        sh("ip", &["link", "set", &peer, "netns", ns]).await?;
        let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{h}/disable_ipv6"), "1");
        sh("ip", &["addr", "add", &format!("{host_ip}/30"), "dev", h]).await?;
        sh("ip", &["link", "set", h, "up"]).await?;
        for a in [
            vec!["-n", ns, "link", "set", "lo", "up"],
            vec![
                "-n",
                ns,
                "addr",
                "add",
                &format!("{inside_ip}/30"),
                "dev",
                &peer,
            ],
            vec!["-n", ns, "link", "set", &peer, "up"],
            vec!["-n", ns, "route", "add", "default", "via", host_ip],
        ] {
            sh("ip", &a).await?;
        }
        let _ = sh(
            "ip",
            &[
                "netns",
                "exec",
                ns,
                "sysctl",
                "-q",
                "-w",
                "net.ipv6.conf.all.disable_ipv6=1",
            ],
        )
        .await;
        std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")?;
        // The host's own subnets (its LANs), read from its link routes.
        let routes = sh("ip", &["-4", "route", "show", "scope", "link"]).await?;
        let mut denied: Vec<String> = DENIED.iter().map(|s| s.to_string()).collect();
        denied.extend(
            routes
                .lines()
                .filter_map(|l| l.split_whitespace().next())
                .filter(|d| d.contains('/') && *d != self.subnet)
                .map(str::to_string),
        );
        let resolvers: Vec<String> = std::fs::read_to_string("/etc/resolv.conf")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().strip_prefix("nameserver"))
            .map(|a| a.trim().to_string())
            .filter(|a| {
                a.parse::<std::net::Ipv4Addr>()
                    .is_ok_and(|ip| !ip.is_loopback())
            })
            .collect();
        let c = self.chain.as_str();
        sh("iptables", &["-w", "-N", c]).await?;
        for r in &resolvers {
            for proto in ["udp", "tcp"] {
                sh(
                    "iptables",
                    &[
                        "-w", "-A", c, "-d", r, "-p", proto, "--dport", "53", "-j", "ACCEPT",
                    ],
                )
                .await?;
            }
        }
        for d in &denied {
            sh("iptables", &["-w", "-A", c, "-d", d, "-j", "DROP"]).await?;
        }
        sh("iptables", &["-w", "-A", c, "-j", "ACCEPT"]).await?;
        // Inserted first, so no other chain's ACCEPT comes before them.
        sh(
            "iptables",
            &["-w", "-I", "FORWARD", "1", "-o", h, "-j", "DROP"],
        )
        .await?;
        sh(
            "iptables",
            &[
                "-w",
                "-I",
                "FORWARD",
                "1",
                "-o",
                h,
                "-m",
                "conntrack",
                "--ctstate",
                "RELATED,ESTABLISHED",
                "-j",
                "ACCEPT",
            ],
        )
        .await?;
        sh("iptables", &["-w", "-I", "FORWARD", "1", "-i", h, "-j", c]).await?;
        sh(
            "iptables",
            &["-w", "-I", "INPUT", "1", "-i", h, "-j", "DROP"],
        )
        .await?;
        sh(
            "iptables",
            &[
                "-w",
                "-t",
                "nat",
                "-I",
                "POSTROUTING",
                "1",
                "-s",
                &self.subnet,
                "!",
                "-o",
                h,
                "-j",
                "MASQUERADE",
            ],
        )
        .await?;
        Ok(())
    }

    /// Removes the namespace, the veth pair and the rules; missing pieces
    /// are fine.
    pub async fn remove(&self) {
        let (h, c) = (self.host_if.as_str(), self.chain.as_str());
        let rules: [Vec<&str>; 5] = [
            vec!["-w", "-D", "FORWARD", "-o", h, "-j", "DROP"],
            vec![
                "-w",
                "-D",
                "FORWARD",
                "-o",
                h,
                "-m",
                "conntrack",
                "--ctstate",
                "RELATED,ESTABLISHED",
                "-j",
                "ACCEPT",
            ],
            vec!["-w", "-D", "FORWARD", "-i", h, "-j", c],
            vec!["-w", "-D", "INPUT", "-i", h, "-j", "DROP"],
            vec![
                "-w",
                "-t",
                "nat",
                "-D",
                "POSTROUTING",
                "-s",
                &self.subnet,
                "!",
                "-o",
                h,
                "-j",
                "MASQUERADE",
            ],
        ];
        for r in rules {
            while sh("iptables", &r).await.is_ok() {}
        }
        let _ = sh("iptables", &["-w", "-F", c]).await;
        let _ = sh("iptables", &["-w", "-X", c]).await;
        let _ = sh("ip", &["link", "del", h]).await;
        let _ = sh("ip", &["netns", "del", &self.ns]).await;
    }
}

/// A build's cgroup ([`JobCgroup`]): made before buildah starts, killed
/// and removed when the build ends, however it ends (dropped too: a caller
/// that went away takes the build's processes with it).
pub struct BuildJob {
    cg: Option<JobCgroup>,
}

impl BuildJob {
    /// The cgroup `<parent>/<name>` with the config's limits.
    pub fn create(cfg: &BuildConfig, name: &str) -> Result<BuildJob> {
        let rel = format!("{}/{name}", cfg.cgroup_parent.trim_end_matches('/'));
        let cg = JobCgroup::create(CgroupMode::detect(), &rel, &cfg.limits).map_err(|e| {
            ImageError::Io(std::io::Error::new(e.kind(), format!("build cgroup: {e}")))
        })?;
        Ok(BuildJob { cg: Some(cg) })
    }

    fn cg(&self) -> &JobCgroup {
        self.cg
            .as_ref()
            .expect("a build job has its cgroup until dropped")
    }

    pub fn rel(&self) -> &str {
        self.cg().rel()
    }

    fn work_rel(&self, name: &str) -> String {
        self.cg().work_rel(name)
    }

    /// Makes `cmd`'s process join the job between fork and exec: the
    /// `cgroup.procs` files are opened here, and the child writes `0`
    /// (itself) to each before it runs anything, so not one of its
    /// children starts outside.
    fn start_inside(&self, cmd: &mut tokio::process::Command) -> Result<()> {
        use std::os::fd::{AsRawFd, OwnedFd};
        let fds: Vec<OwnedFd> = self
            .cg()
            .leader_procs()
            .iter()
            .map(|p| {
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(p)
                    .map(OwnedFd::from)
                    .map_err(|e| {
                        ImageError::Io(std::io::Error::new(
                            e.kind(),
                            format!("{}: {e}", p.display()),
                        ))
                    })
            })
            .collect::<Result<_>>()?;
        let raw: Vec<i32> = fds.iter().map(|f| f.as_raw_fd()).collect();
        // SAFETY: the closure runs in the child between fork and exec and
        // only calls write(2), which is async-signal-safe; the descriptors
        // stay open in the parent (`fds` lives in the closure) until the
        // command is dropped.
        unsafe {
            cmd.pre_exec(move || {
                let _keep = &fds;
                for fd in &raw {
                    if libc::write(*fd, b"0".as_ptr().cast(), 1) != 1 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        Ok(())
    }

    /// Kills every process of the build (its steps' too).
    pub async fn kill(&self) {
        let cg = JobCgroup::existing(CgroupMode::detect(), self.rel());
        let _ = tokio::task::spawn_blocking(move || cg.kill()).await;
    }
}

impl Drop for BuildJob {
    fn drop(&mut self) {
        if let Some(cg) = self.cg.take() {
            // Killing waits for the processes to go: not on this thread,
            // which may be one of the runtime's workers.
            std::thread::spawn(move || {
                cg.kill();
                cg.remove();
            });
        }
    }
}

/// Ends what a daemon killed mid-build left: every process of every build
/// cgroup under `cgroup_parent` and the cgroups, and the network named in
/// each `<builds>/<id>/net` record (then the build's folder). Runs at
/// start, before any build; returns how many builds were cleaned.
pub async fn reap_leftovers(cgroup_parent: &str, builds: &Path) -> usize {
    let mode = CgroupMode::detect();
    let mut n = 0;
    for rel in JobCgroup::leftovers(mode, cgroup_parent) {
        let cg = JobCgroup::existing(mode, &rel);
        let _ = tokio::task::spawn_blocking(move || {
            cg.kill();
            cg.remove();
        })
        .await;
        n += 1;
    }
    let parent = JobCgroup::existing(mode, cgroup_parent);
    parent.remove();
    if let Ok(rd) = std::fs::read_dir(builds) {
        for e in rd.flatten() {
            let dir = e.path();
            if let Some(net) = std::fs::read_to_string(dir.join("net"))
                .ok()
                .and_then(|l| BuildNet::from_record(&l))
            {
                net.remove().await;
                n += 1;
            }
            let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(dir)).await;
        }
    }
    n
}

/// Removes the builds' parent cgroup when no build is left in it (at
/// daemon stop).
pub fn remove_job_parent(cgroup_parent: &str) {
    JobCgroup::existing(CgroupMode::detect(), cgroup_parent).remove();
}

/// The builder folder of `tenant` under `root` (`<root>/t-<name>`, the
/// name hashed when it is not plain lowercase letters, digits, `-`, `_`).
pub fn tenant_dir(root: &Path, tenant: &str) -> PathBuf {
    let plain = !tenant.is_empty()
        && tenant.len() <= 64
        && tenant
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_'));
    if plain {
        root.join(format!("t-{tenant}"))
    } else {
        root.join(format!("h-{}", &Digest::of(tenant.as_bytes()).hex()[..32]))
    }
}

/// The buildah process, with the calling tenant's storage.
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

    /// Unmounts what buildah left mounted, only while no build runs (a
    /// build's containers are mounted): buildah's own `umount --all` for
    /// every tenant's storage under `root`, then a detach of anything still
    /// mounted under `root`.
    pub async fn release_all(root: &Path, template: &BuildConfig) {
        let Ok(rd) = std::fs::read_dir(root) else {
            return;
        };
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                let b = Buildah::new(BuildConfig {
                    dir: e.path(),
                    ..template.clone()
                });
                let _ = b.run(&["umount".into(), "--all".into()]).await;
                // Working containers of builds that were stopped half way
                // (a deadline, a caller gone, a daemon killed).
                let _ = b.run(&["rm".into(), "--all".into()]).await;
            }
        }
        let dir = root.to_path_buf();
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
    /// result as an OCI layout at `out`. RUN steps run in `net`; buildah and
    /// every process it starts run in the build's own cgroup (`job`, made
    /// with [`BuildJob::create`]), within the config's deadline.
    #[allow(clippy::too_many_arguments)]
    pub async fn build(
        &self,
        context: &Path,
        dockerfile: &Path,
        spec: &BuildSpec,
        tag: &str,
        out: &Path,
        net: &BuildNet,
        job: &BuildJob,
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
            // Each step's own limit: the build's (they share it anyway).
            format!("{}m", self.cfg.limits.memory_bytes >> 20),
            // buildah gives each step's container this very cgroup (and
            // runc removes it when the step ends): one below the build's,
            // so the build's limits hold whatever the step's own are.
            "--cgroup-parent".into(),
            job.work_rel("step"),
            // RUN steps join the build's own restricted namespace: buildah's
            // own network would reach the daemon host's ports, its private
            // networks, other runtimes and the metadata address
            // (docs/security.md, Image builds red-team pass).
            "--network".into(),
            format!("ns:{}", net.netns_path()),
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
        let mut cmd = tokio::process::Command::new("buildah");
        cmd.args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        job.start_inside(&mut cmd)?;
        let mut child = cmd
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
        let status = match tokio::time::timeout(self.cfg.timeout, child.wait()).await {
            Ok(s) => s?,
            Err(_) => {
                job.kill().await;
                let _ = child.wait().await;
                let secs = self.cfg.timeout.as_secs();
                let m = format!("the build ran past its deadline ({secs} s) and was stopped");
                let _ = log.send(format!("runta: {m}")).await;
                return Err(ImageError::Invalid(m));
            }
        };
        // What a step left running (a daemon of its own) ends with the build.
        job.kill().await;
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
        let df = "ARG BASE=base\n# comment\nFROM ${BASE} AS build\nRUN echo a \\\n  b\nFROM build\nFROM --platform=linux/amd64 python:3.12\nCOPY --from=build /a /a\nCOPY --from=0 /b /b\nCOPY --chown=1:1 --from=alpine:3 /c /c\n";
        let d = parse_dockerfile(df, &[]).unwrap();
        let t: Vec<&FromTarget> = d.froms.iter().map(|f| &f.target).collect();
        assert_eq!(
            t,
            vec![
                &FromTarget::Image("base".into()),
                &FromTarget::Stage("build".into()),
                &FromTarget::Image("python:3.12".into())
            ]
        );
        assert_eq!(
            d.images(),
            vec![
                ("base".to_string(), 3),
                ("python:3.12".to_string(), 7),
                ("alpine:3".to_string(), 10)
            ]
        );
        let mut m = HashMap::new();
        for (k, v) in [("base", "aa"), ("python:3.12", "bb"), ("alpine:3", "cc")] {
            m.insert(k.to_string(), format!("localhost/runta-from:{v}"));
        }
        let out = d.rewritten(&m).unwrap();
        assert!(
            out.contains("FROM localhost/runta-from:aa AS build\n"),
            "{out}"
        );
        assert!(out.contains("\nFROM build\n"), "{out}");
        assert!(
            out.contains("FROM --platform=linux/amd64 localhost/runta-from:bb\n"),
            "{out}"
        );
        assert!(out.contains("RUN echo a    b\n"), "{out}");
        assert!(out.contains("COPY --from=build /a /a\n"), "{out}");
        assert!(out.contains("COPY --from=0 /b /b\n"), "{out}");
        assert!(
            out.contains("COPY --chown=1:1 --from=localhost/runta-from:cc /c /c\n"),
            "{out}"
        );
        m.remove("alpine:3");
        assert!(d.rewritten(&m).is_none(), "every image must be provided");
        let d2 = parse_dockerfile(df, &[("BASE".into(), "alpine:3".into())]).unwrap();
        assert_eq!(d2.froms[0].target, FromTarget::Image("alpine:3".into()));
        assert!(parse_dockerfile("RUN x\n", &[]).is_err());
        let d3 =
            parse_dockerfile("ARG V\nFROM ${V:-base}\nFROM ${V:+other}scratch\n", &[]).unwrap();
        assert_eq!(d3.froms[0].target, FromTarget::Image("base".into()));
        assert_eq!(d3.froms[1].target, FromTarget::Scratch);
    }

    /// Each line must be refused, naming its line number.
    #[test]
    fn lines_that_reach_outside_are_refused() {
        let bad = [
            (
                "FROM base\nRUN --mount=type=bind,source=/,target=/h cat /h/etc/shadow\n",
                2,
                "RUN flags",
            ),
            ("FROM base\nRUN   --network=host true\n", 2, "RUN flags"),
            (
                "FROM base\nRUN\x0b--security=insecure true\n",
                2,
                "RUN flags",
            ),
            (
                "FROM base\nRUN \\\n --mount=type=cache,target=/c true\n",
                2,
                "RUN flags",
            ),
            (
                "FROM base\nADD http://169.254.169.254/latest/meta-data/ /m\n",
                2,
                "remote",
            ),
            (
                "FROM base\nADD [\"https://127.0.0.1:8080/x\", \"/x\"]\n",
                2,
                "remote",
            ),
            ("FROM base\nADD h\"ttp:\"//10.0.0.1/x /x\n", 2, "remote"),
            ("FROM base\nADD git@github.com:a/b.git /x\n", 2, "remote"),
            (
                "FROM base\nARG U=http://127.0.0.1/\nADD $U /x\n",
                3,
                "variable",
            ),
            ("FROM base\nCOPY http://127.0.0.1/x /x\n", 2, "remote"),
            ("FROM base\nCOPY --from=$X /a /a\n", 2, "--from"),
            ("FROM base\nCOPY --from=1 /a /a\n", 2, "no earlier stage"),
            (
                "FROM base AS a\nCOPY --from=a /a /a\n",
                2,
                "the stage itself",
            ),
            ("FROM base\nCOPY --link /a /a\n", 2, "refused"),
            ("FROM base\nADD --from=x /a /a\n", 2, "refused"),
            (
                "FROM base\nCOPY --chown=1\u{e0}--from=x /a /a\n",
                2,
                "plain ASCII",
            ),
            ("FROM base\nONBUILD RUN true\n", 2, "ONBUILD"),
            ("FROM base\nRUN <<EOF\ncat /etc/shadow\nEOF\n", 2, "heredoc"),
            ("# escape=`\nFROM base\n", 1, "escape"),
            ("FROM --network=host base\n", 1, "does not take"),
            ("ARG B=\"base\nRUN x\"\nFROM $B\n", 2, "RUN before"),
            ("FROM ${B:?x}\n", 1, "only $NAME"),
            ("FROM base AS localhost/x\n", 1, "stage name"),
            ("FROM base\nFROOM x\n", 2, "unknown instruction"),
            ("FROM base\nRUN echo \\\\\n", 2, "continuation"),
        ];
        for (df, line, what) in bad {
            let e = parse_dockerfile(df, &[]).expect_err(df).to_string();
            assert!(
                e.contains(&format!("line {line}:")) && e.contains(what),
                "{df:?}: {e}"
            );
        }
        // A build arg cannot put a line, a space or a flag into a FROM.
        for v in [
            "base\nRUN --mount=type=bind,source=/,target=/h true",
            "base AS x",
            "--platform=x base",
        ] {
            let e = parse_dockerfile("ARG B\nFROM $B\n", &[("B".into(), v.into())])
                .expect_err(v)
                .to_string();
            assert!(e.contains("line 2:"), "{v:?}: {e}");
        }
        // A byte-order mark does not hide a FROM from the rewrite.
        let d = parse_dockerfile("\u{feff}FROM localhost/runta-build:x\n", &[]).unwrap();
        assert_eq!(
            d.froms[0].target,
            FromTarget::Image("localhost/runta-build:x".into())
        );
        // A long line and a huge file.
        let long = format!("FROM base\nRUN echo {}\n", "a".repeat(MAX_LINE));
        assert!(parse_dockerfile(&long, &[])
            .unwrap_err()
            .to_string()
            .contains("line 2:"));
        let many = format!("FROM base\n{}", "ENV A=1\n".repeat(MAX_INSTRUCTIONS));
        assert!(parse_dockerfile(&many, &[]).is_err());
        // `# syntax=` is a comment to this builder: accepted, nothing fetched.
        assert!(parse_dockerfile("# syntax=docker/dockerfile:1\nFROM base\n", &[]).is_ok());
        // Ordinary flags and shell text that merely contains `--` pass.
        parse_dockerfile(
            "FROM base\nRUN curl --mount x || true\nCOPY --chown=0:0 --chmod=644 a /a\nADD a.tar.gz /x\nCOPY $SRC /y\n",
            &[],
        )
        .unwrap();
    }

    #[test]
    fn only_a_build_network_record_names_what_a_restart_removes() {
        let good = "rtbuild-0123456789ab rbh012345678 RTB-012345678 100.127.3.4/30\n";
        let net = BuildNet::from_record(good).expect("a record of BuildNet::record");
        assert_eq!(net.record(), good);
        assert_eq!(net.name(), "rtbuild-0123456789ab");
        for bad in [
            "",
            "rtbuild-0123456789ab rbh012345678 RTB-012345678",
            "rtbuild-../../etc rbh012345678 RTB-012345678 100.127.3.4/30",
            "rtbuild-0123456789ab eth0 RTB-012345678 100.127.3.4/30",
            "rtbuild-0123456789ab rbh012345678 FORWARD 100.127.3.4/30",
            "rtbuild-0123456789ab rbh012345678 RTB-012345678 0.0.0.0/0",
            "rtbuild-0123456789ab rbh012345678 RTB-012345678 100.127.3.5/30",
            "rtbuild-0123456789ab rbh012345678 RTB-012345678 100.127.3.4/30 extra",
            "rtbuild-0123456789ab rbh01234567g RTB-012345678 100.127.3.4/30",
        ] {
            assert!(BuildNet::from_record(bad).is_none(), "{bad:?}");
        }
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
