//! `runta commit`, `runta image push` and `runta image build`: images made
//! from runtimes, Dockerfiles, and sent to registries (docs/images.md).

use std::path::{Path, PathBuf};

use futures_util::StreamExt;
use reqwest::Method;
use runta_api::{BuildEvent, CommitRequest, Image, ImagePush, PushImageRequest};

use crate::client::{enc, typed, Client};
use crate::error::{CliError, Result};
use crate::output::print_json;

fn ref_path(r: &str) -> String {
    r.split('/').map(enc).collect::<Vec<_>>().join("/")
}

/// `runta commit RUNTIME NAME` (`--snapshot`: NAME of a snapshot instead).
pub async fn commit(
    c: &Client,
    source: &str,
    name: &str,
    snapshot: bool,
    json: bool,
) -> Result<()> {
    let route = if snapshot { "checkpoints" } else { "runtimes" };
    let v = c
        .post(
            &format!("/v1/{route}/{}/commit", enc(source)),
            &CommitRequest { name: name.into() },
        )
        .await?;
    if json {
        print_json(&v);
        return Ok(());
    }
    let img: Image = typed(v)?;
    println!("{} {}", img.name, img.digest.unwrap_or_default());
    Ok(())
}

/// `runta image push NAME REF`.
pub async fn push(c: &Client, image: &str, reference: &str, json: bool) -> Result<()> {
    let v = c
        .call(
            Method::POST,
            &format!("/v1/images/{}/push", ref_path(image)),
            Some(&PushImageRequest {
                reference: reference.into(),
            }),
        )
        .await?;
    if json {
        print_json(&v);
        return Ok(());
    }
    let p: ImagePush = typed(v)?;
    println!(
        "pushed {} {} ({} blobs uploaded, {} already there)",
        p.reference, p.digest, p.uploaded, p.skipped
    );
    Ok(())
}

pub struct BuildArgs {
    pub file: Option<PathBuf>,
    pub tag: String,
    pub dir: PathBuf,
    pub build_args: Vec<String>,
    pub no_cache: bool,
}

/// Name the Dockerfile gets in the uploaded context when it lives outside it.
const OUTSIDE_DOCKERFILE: &str = ".runta-Dockerfile";

/// `runta image build -f Dockerfile -t NAME DIR`: the folder is sent as a
/// tar (symlinks as links, never followed), the build log printed as it
/// comes (stderr; `--json`: every event as a JSON line on stdout), and the
/// image's name and digest printed at the end.
pub async fn build(c: &Client, a: BuildArgs, json: bool) -> Result<()> {
    if !a.dir.is_dir() {
        return Err(CliError::usage(format!(
            "{} is not a folder (the build context)",
            a.dir.display()
        )));
    }
    let dir = a
        .dir
        .canonicalize()
        .map_err(|e| CliError::usage(format!("{}: {e}", a.dir.display())))?;
    let file = a.file.clone().unwrap_or_else(|| dir.join("Dockerfile"));
    let file = file
        .canonicalize()
        .map_err(|e| CliError::usage(format!("the Dockerfile {}: {e}", file.display())))?;
    let tmp = std::env::temp_dir().join(format!("runta-context-{}.tar", std::process::id()));
    let r = build_with(c, &a, &dir, &file, &tmp, json).await;
    let _ = std::fs::remove_file(&tmp);
    r
}

async fn build_with(
    c: &Client,
    a: &BuildArgs,
    dir: &Path,
    file: &Path,
    tmp: &Path,
    json: bool,
) -> Result<()> {
    let (dockerfile, outside) = match file.strip_prefix(dir) {
        Ok(rel) => (rel.to_string_lossy().into_owned(), false),
        Err(_) => (OUTSIDE_DOCKERFILE.to_string(), true),
    };
    tar(&["--numeric-owner", "-C"], dir, &["-cf"], tmp, &["."])?;
    if outside {
        let parent = file.parent().unwrap_or(Path::new("/"));
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let transform = format!("s,^{},{OUTSIDE_DOCKERFILE},", regex_escape(&name));
        tar(
            &["--numeric-owner", "--transform", &transform, "-C"],
            parent,
            &["-rf"],
            tmp,
            &[&name],
        )?;
    }
    let mut q: Vec<(String, String)> = vec![
        ("name".into(), a.tag.clone()),
        ("dockerfile".into(), dockerfile),
    ];
    for b in &a.build_args {
        if !b.contains('=') {
            return Err(CliError::usage(format!(
                "--build-arg {b:?}: expected NAME=VALUE"
            )));
        }
        q.push(("build_arg".into(), b.clone()));
    }
    if a.no_cache {
        q.push(("no_cache".into(), "true".into()));
    }
    let query: String = q
        .iter()
        .map(|(k, v)| format!("{k}={}", enc(v)))
        .collect::<Vec<_>>()
        .join("&");
    let body = tokio::fs::read(tmp)
        .await
        .map_err(|e| CliError::failed(format!("read the context tar: {e}")))?;
    let rb = c
        .request(Method::POST, &format!("/v1/images/builds?{query}"))?
        .header("content-type", "application/x-tar")
        .body(body);
    let resp = c.send(rb).await?;
    let mut stream = resp.bytes_stream();
    let mut buf: Vec<u8> = Vec::new();
    let mut outcome: Option<BuildEvent> = None;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| c.transport(e))?;
        buf.extend_from_slice(&chunk);
        while let Some(i) = buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buf.drain(..=i).collect();
            let Ok(ev) = serde_json::from_slice::<BuildEvent>(&line) else {
                continue;
            };
            if json {
                println!("{}", String::from_utf8_lossy(&line).trim_end());
            }
            match ev {
                BuildEvent::Log { line } => {
                    if !json {
                        eprintln!("{line}");
                    }
                }
                other => outcome = Some(other),
            }
        }
    }
    match outcome {
        Some(BuildEvent::Done { image }) => {
            if !json {
                println!("{} {}", image.name, image.digest.unwrap_or_default());
            }
            Ok(())
        }
        Some(BuildEvent::Error { code, message }) => Err(CliError::Failed {
            code: serde_json::from_value(serde_json::Value::String(code))
                .unwrap_or(runta_api::ErrorCode::Internal),
            message,
        }),
        _ => Err(CliError::unavailable(
            "the daemon ended the build answer without a result",
        )),
    }
}

fn tar(pre: &[&str], dir: &Path, op: &[&str], archive: &Path, what: &[&str]) -> Result<()> {
    let out = std::process::Command::new("tar")
        .args(pre)
        .arg(dir)
        .args(op)
        .arg(archive)
        .args(what)
        .output()
        .map_err(|e| CliError::failed(format!("run tar: {e}")))?;
    if !out.status.success() {
        return Err(CliError::failed(format!(
            "tar of the build context failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            if "\\^$.*[],".contains(c) {
                vec!['\\', c]
            } else {
                vec![c]
            }
        })
        .collect()
}
