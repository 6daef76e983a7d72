//! `runta cp SRC DST`: files and folders between this machine and a runtime,
//! either direction, with `docker cp` rules (copying onto an existing folder
//! puts the source inside it; `dir/.` copies the folder's contents).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use reqwest::Method;
use runta_api::{FileEntry, Runtime};
use serde_json::json;

use crate::client::{enc, typed, Client};
use crate::error::{CliError, Result};
use crate::output::{bytes, print_json};

#[derive(Debug, PartialEq)]
pub enum Loc {
    Local(PathBuf),
    Remote { runtime: String, path: String },
}

/// `NAME:/abs/path` is in a runtime; anything else is local (`./a:b` stays local).
pub fn parse_loc(s: &str) -> Result<Loc> {
    if let Some((rt, path)) = s.split_once(':') {
        if !rt.is_empty() && !rt.contains('/') && !rt.starts_with('.') {
            if !path.starts_with('/') {
                return Err(CliError::usage(format!(
                    "{s:?}: the path inside the runtime must be absolute, e.g. {rt}:/tmp/{}",
                    path.trim_start_matches("./")
                )));
            }
            return Ok(Loc::Remote {
                runtime: rt.to_string(),
                path: path.to_string(),
            });
        }
    }
    Ok(Loc::Local(PathBuf::from(s)))
}

#[derive(Default)]
struct Tally {
    files: u64,
    bytes: u64,
}

pub async fn run(c: &Client, src: &str, dst: &str, json: bool) -> Result<()> {
    let (src, dst) = (parse_loc(src)?, parse_loc(dst)?);
    let mut t = Tally::default();
    let dest = match (&src, &dst) {
        (Loc::Local(from), Loc::Remote { runtime, path }) => {
            let r = resolve(c, runtime).await?;
            upload(c, &r, from, path, &mut t).await?;
            format!("{}:{path}", r.name)
        }
        (Loc::Remote { runtime, path }, Loc::Local(to)) => {
            let r = resolve(c, runtime).await?;
            download(c, &r, path, to, &mut t).await?;
            to.display().to_string()
        }
        (Loc::Local(_), Loc::Local(_)) => {
            return Err(CliError::usage(
                "one side of cp must be in a runtime, written NAME:/path (e.g. runta cp ./app worker:/srv/app)",
            ))
        }
        (Loc::Remote { .. }, Loc::Remote { .. }) => {
            return Err(CliError::usage(
                "cp copies between this machine and a runtime; copying between two runtimes is not supported",
            ))
        }
    };
    if json {
        print_json(&json!({"files": t.files, "bytes": t.bytes, "destination": dest}));
    } else {
        println!(
            "copied {} file{} ({}) to {dest}",
            t.files,
            if t.files == 1 { "" } else { "s" },
            bytes(t.bytes)
        );
    }
    Ok(())
}

async fn resolve(c: &Client, name: &str) -> Result<Runtime> {
    let v = c
        .on_runtime(name, |id| async move {
            c.get(&format!("/v1/runtimes/{id}")).await
        })
        .await?;
    typed(v)
}

fn base_name(p: &str) -> Result<&str> {
    let b = p.trim_end_matches('/').rsplit('/').next().unwrap_or("");
    if b.is_empty() || b == "." || b == ".." {
        return Err(CliError::usage(format!("{p:?} names no file or folder")));
    }
    Ok(b)
}

fn join(dir: &str, name: &str) -> String {
    format!("{}/{}", dir.trim_end_matches('/'), name)
}

async fn remote_list(c: &Client, r: &Runtime, path: &str) -> Result<Vec<FileEntry>> {
    let v = c
        .get(&format!(
            "/v1/runtimes/{}/files/list?path={}",
            r.id,
            enc(path)
        ))
        .await?;
    typed(v)
}

async fn remote_is_dir(c: &Client, r: &Runtime, path: &str) -> bool {
    remote_list(c, r, path).await.is_ok()
}

fn shq(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

async fn put_file(
    c: &Client,
    r: &Runtime,
    local: &Path,
    remote: &str,
    t: &mut Tally,
) -> Result<()> {
    let meta = tokio::fs::metadata(local)
        .await
        .map_err(|e| CliError::failed(format!("{}: {e}", local.display())))?;
    let file = tokio::fs::File::open(local)
        .await
        .map_err(|e| CliError::failed(format!("{}: {e}", local.display())))?;
    let mode = meta.permissions().mode() & 0o7777;
    let rb = c
        .request(
            Method::PUT,
            &format!(
                "/v1/runtimes/{}/files?path={}&mode={:04o}",
                r.id,
                enc(remote),
                mode
            ),
        )?
        .header("content-type", "application/octet-stream")
        .header("content-length", meta.len())
        .body(reqwest::Body::from(file));
    c.send(rb).await.map_err(|e| with_path(e, remote))?;
    t.files += 1;
    t.bytes += meta.len();
    Ok(())
}

fn with_path(e: CliError, path: &str) -> CliError {
    match e {
        CliError::Api(mut a) => {
            if !a.body.error.message.contains(path) {
                a.body.error.message = format!("{path}: {}", a.body.error.message);
            }
            CliError::Api(a)
        }
        other => other,
    }
}

async fn upload(c: &Client, r: &Runtime, from: &Path, to: &str, t: &mut Tally) -> Result<()> {
    let meta = std::fs::metadata(from)
        .map_err(|e| CliError::failed(format!("{}: {e}", from.display())))?;
    let from_s = from.to_string_lossy().to_string();
    if meta.is_file() {
        let target = if to.ends_with('/') || remote_is_dir(c, r, to).await {
            join(to, base_name(&from_s)?)
        } else {
            to.to_string()
        };
        return put_file(c, r, from, &target, t).await;
    }
    if !meta.is_dir() {
        return Err(CliError::failed(format!(
            "{}: only regular files and folders can be copied",
            from.display()
        )));
    }
    let contents_only = from_s.ends_with("/.");
    let target = if !contents_only && remote_is_dir(c, r, to).await {
        join(to, base_name(&from_s)?)
    } else {
        to.trim_end_matches('/').to_string()
    };
    let target = if target.is_empty() {
        "/".to_string()
    } else {
        target
    };
    // Files go through the files API (parents are created); empty folders and
    // symbolic links are made with one shell command at the end.
    let mut script = Vec::new();
    let mut stack = vec![(from.to_path_buf(), target.clone())];
    let mut any_file = false;
    while let Some((dir, rdir)) = stack.pop() {
        let mut entries: Vec<_> = std::fs::read_dir(&dir)
            .map_err(|e| CliError::failed(format!("{}: {e}", dir.display())))?
            .collect::<std::io::Result<_>>()
            .map_err(|e| CliError::failed(format!("{}: {e}", dir.display())))?;
        entries.sort_by_key(|e| e.file_name());
        if entries.is_empty() {
            script.push(format!("mkdir -p -- {}", shq(&rdir)));
        }
        for e in entries {
            let name = e.file_name().to_string_lossy().to_string();
            let lpath = e.path();
            let rpath = join(&rdir, &name);
            let ft = e
                .file_type()
                .map_err(|err| CliError::failed(format!("{}: {err}", lpath.display())))?;
            if ft.is_symlink() {
                let dest = std::fs::read_link(&lpath)?;
                script.push(format!(
                    "mkdir -p -- {} && ln -sfn -- {} {}",
                    shq(&rdir),
                    shq(&dest.to_string_lossy()),
                    shq(&rpath)
                ));
            } else if ft.is_dir() {
                stack.push((lpath, rpath));
            } else if ft.is_file() {
                put_file(c, r, &lpath, &rpath, t).await?;
                any_file = true;
            } else {
                eprintln!(
                    "runta: skipping {} (not a file, folder or link)",
                    lpath.display()
                );
            }
        }
    }
    let _ = any_file;
    if !script.is_empty() {
        let res = crate::exec::sh(c, &r.id.to_string(), &script.join(" && ")).await?;
        if res.exit_code != 0 {
            return Err(CliError::failed(format!(
                "creating folders and links in {}: {}",
                r.name,
                res.stderr.trim()
            )));
        }
    }
    Ok(())
}

async fn get_file(
    c: &Client,
    r: &Runtime,
    remote: &str,
    local: &Path,
    mode: Option<u32>,
    t: &mut Tally,
) -> Result<()> {
    use tokio::io::AsyncWriteExt;
    let rb = c.request(
        Method::GET,
        &format!("/v1/runtimes/{}/files?path={}", r.id, enc(remote)),
    )?;
    let mut resp = c.send(rb).await.map_err(|e| with_path(e, remote))?;
    if let Some(parent) = local.parent().filter(|p| !p.as_os_str().is_empty()) {
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(|e| CliError::failed(format!("{}: {e}", parent.display())))?;
    }
    let mut f = tokio::fs::File::create(local)
        .await
        .map_err(|e| CliError::failed(format!("{}: {e}", local.display())))?;
    while let Some(chunk) = resp.chunk().await.map_err(|e| c.transport(e))? {
        f.write_all(&chunk).await?;
        t.bytes += chunk.len() as u64;
    }
    f.flush().await?;
    if let Some(m) = mode {
        let _ =
            tokio::fs::set_permissions(local, std::fs::Permissions::from_mode(m & 0o7777)).await;
    }
    t.files += 1;
    Ok(())
}

async fn download(c: &Client, r: &Runtime, from: &str, to: &Path, t: &mut Tally) -> Result<()> {
    let listing = remote_list(c, r, from).await;
    let Ok(top) = listing else {
        // Not a folder: a file (or the file read says why not).
        let target = if to.is_dir() {
            to.join(base_name(from)?)
        } else {
            to.to_path_buf()
        };
        return get_file(c, r, from, &target, None, t).await;
    };
    let contents_only = from.ends_with("/.");
    let target = if to.is_dir() && !contents_only {
        to.join(base_name(from)?)
    } else {
        to.to_path_buf()
    };
    std::fs::create_dir_all(&target)
        .map_err(|e| CliError::failed(format!("{}: {e}", target.display())))?;
    let mut stack = vec![(from.trim_end_matches("/.").to_string(), target, Some(top))];
    while let Some((rdir, ldir, listed)) = stack.pop() {
        let entries = match listed {
            Some(l) => l,
            None => remote_list(c, r, &rdir).await?,
        };
        std::fs::create_dir_all(&ldir)
            .map_err(|e| CliError::failed(format!("{}: {e}", ldir.display())))?;
        for e in entries {
            if e.name == "." || e.name == ".." {
                continue;
            }
            let rpath = join(&rdir, &e.name);
            let lpath = ldir.join(&e.name);
            match e.kind.as_str() {
                "dir" => stack.push((rpath, lpath, None)),
                "file" => get_file(c, r, &rpath, &lpath, Some(e.mode), t).await?,
                "symlink" => {
                    let res = crate::exec::sh(
                        c,
                        &r.id.to_string(),
                        &format!("readlink -- {}", shq(&rpath)),
                    )
                    .await?;
                    let dest = res.stdout.trim_end_matches('\n');
                    if res.exit_code == 0 && !dest.is_empty() {
                        let _ = std::fs::remove_file(&lpath);
                        std::os::unix::fs::symlink(dest, &lpath).map_err(|err| {
                            CliError::failed(format!("{}: {err}", lpath.display()))
                        })?;
                    } else {
                        eprintln!("runta: skipping link {rpath}");
                    }
                }
                _ => eprintln!("runta: skipping {rpath} (not a file, folder or link)"),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations() {
        assert_eq!(
            parse_loc("worker:/tmp/x").unwrap(),
            Loc::Remote {
                runtime: "worker".into(),
                path: "/tmp/x".into()
            }
        );
        assert_eq!(parse_loc("./a:b").unwrap(), Loc::Local("./a:b".into()));
        assert_eq!(parse_loc("dir/x").unwrap(), Loc::Local("dir/x".into()));
        assert!(parse_loc("worker:tmp").is_err());
    }
}
