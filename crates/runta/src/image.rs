//! `runta image`: pull images from registries, list, inspect and remove them,
//! registry logins, garbage collection (docs/images.md).

use std::io::{IsTerminal, Read, Write};
use std::time::Duration;

use clap::Subcommand;
use reqwest::Method;
use runta_api::{Image, ImageGc, ImagePull, PullImageRequest, RegistryLoginRequest};
use serde_json::Value;

use crate::client::{enc, typed, Client};
use crate::error::{CliError, Result};
use crate::output::{age, bytes, print_json, table};

pub const IMAGE_EXAMPLES: &str = "\
Examples:
  runta image pull python:3.12
  runta image pull registry.example:5000/team/app:1.2 --json
  runta image ls
  runta image inspect registry.example:5000/team/app:1.2
  runta image rm registry.example:5000/team/app:1.2     # refused while runtimes use it
  runta image login registry.example:5000 -u ci --password-stdin < token.txt
  runta image gc
  runta run --name app --image registry.example:5000/team/app:1.2   # pulls on first use";

#[derive(Subcommand)]
pub enum ImageCmd {
    /// Pull an image from a registry (progress of bytes and layers)
    #[command(
        after_help = "Examples:\n  runta image pull python:3.12\n  runta image pull 127.0.0.1:5000/team/app:1.2 --json   # one JSON object at the end"
    )]
    Pull {
        /// [registry[:port]/]repository[:tag][@sha256:…]
        #[arg(value_name = "REF")]
        reference: String,
        /// Return once the pull has started
        #[arg(long)]
        no_wait: bool,
    },
    /// List images (`base` first)
    #[command(
        visible_alias = "list",
        after_help = "Examples:\n  runta image ls\n  runta image ls -q\n  runta image ls --json"
    )]
    Ls {
        /// Only print names
        #[arg(short, long)]
        quiet: bool,
    },
    /// Show everything about images, as JSON
    #[command(after_help = "Example:\n  runta image inspect python:3.12")]
    Inspect {
        #[arg(required = true, value_name = "REF")]
        refs: Vec<String>,
    },
    /// Remove your names of images (the admin: any); refused while runtimes or snapshots use them
    #[command(
        visible_alias = "remove",
        after_help = "Example:\n  runta image rm python:3.12"
    )]
    Rm {
        #[arg(required = true, value_name = "REF")]
        refs: Vec<String>,
    },
    /// Store credentials for a registry in the daemon, for your tenant only
    #[command(
        after_help = "Examples:\n  runta image login registry.example:5000 -u ci --password-stdin < token.txt\n  runta image login docker.io -u me            # asks for the password\n\nThe daemon checks them against the registry and keeps them; no command shows the password again."
    )]
    Login {
        /// host[:port] (docker.io for Docker Hub)
        registry: String,
        #[arg(short, long)]
        username: String,
        /// Read the password (or token) from standard input
        #[arg(long)]
        password_stdin: bool,
    },
    /// Forget your credentials for a registry
    Logout { registry: String },
    /// Remove blobs and layers no image references (admin)
    Gc,
    /// Send an image to a registry (admin; uses `runta image login` credentials)
    #[command(
        after_help = "Examples:\n  runta image push localhost/acme/app:1 registry.example:5000/team/app:1\n  runta image push base 127.0.0.1:5000/runta/base:latest"
    )]
    Push {
        /// The image to send (name, reference or digest)
        #[arg(value_name = "NAME")]
        image: String,
        /// Where to: registry[:port]/repository[:tag]
        #[arg(value_name = "REF")]
        reference: String,
    },
    /// Build an image from a Dockerfile (the build log streams; steps are cached)
    #[command(
        after_help = "Examples:\n  runta image build -t app:1 .\n  runta image build -f docker/Dockerfile.prod -t app:1 --build-arg VERSION=2 .\n  runta run --name app --image localhost/<tenant>/app:1"
    )]
    Build {
        /// The Dockerfile [default: DIR/Dockerfile]
        #[arg(short = 'f', long = "file", value_name = "FILE")]
        file: Option<std::path::PathBuf>,
        /// The image's name (a tenant's images are kept under localhost/<tenant>/)
        #[arg(short = 't', long = "tag", value_name = "NAME")]
        tag: String,
        /// NAME=VALUE for an ARG of the Dockerfile (repeatable)
        #[arg(long = "build-arg", value_name = "NAME=VALUE")]
        build_arg: Vec<String>,
        /// Run every step again instead of using the cache
        #[arg(long)]
        no_cache: bool,
        /// The build context
        #[arg(value_name = "DIR")]
        dir: std::path::PathBuf,
    },
}

pub async fn run(c: &Client, cmd: ImageCmd, json: bool) -> Result<()> {
    match cmd {
        ImageCmd::Pull { reference, no_wait } => pull(c, &reference, no_wait, json).await,
        ImageCmd::Ls { quiet } => ls(c, quiet, json).await,
        ImageCmd::Push { image, reference } => {
            crate::image_build::push(c, &image, &reference, json).await
        }
        ImageCmd::Build {
            file,
            tag,
            build_arg,
            no_cache,
            dir,
        } => {
            let a = crate::image_build::BuildArgs {
                file,
                tag,
                dir,
                build_args: build_arg,
                no_cache,
            };
            crate::image_build::build(c, a, json).await
        }
        ImageCmd::Inspect { refs } => {
            let mut out = Vec::new();
            for r in refs {
                out.push(c.get(&format!("/v1/images/{}", ref_path(&r))).await?);
            }
            print_json(&Value::Array(out));
            Ok(())
        }
        ImageCmd::Rm { refs } => {
            for r in refs {
                let v = c
                    .call(
                        Method::DELETE,
                        &format!("/v1/images/{}", ref_path(&r)),
                        None::<&()>,
                    )
                    .await?;
                if json {
                    print_json(&v);
                } else {
                    println!("{r}");
                }
            }
            Ok(())
        }
        ImageCmd::Login {
            registry,
            username,
            password_stdin,
        } => {
            let password = read_password(password_stdin)?;
            let v = c
                .post(
                    "/v1/images/logins",
                    &RegistryLoginRequest {
                        registry: registry.clone(),
                        username,
                        password,
                    },
                )
                .await?;
            if json {
                print_json(&v);
            } else {
                println!("logged in to {registry}");
            }
            Ok(())
        }
        ImageCmd::Logout { registry } => {
            c.call(
                Method::DELETE,
                &format!("/v1/images/logins/{}", enc(&registry)),
                None::<&()>,
            )
            .await?;
            if !json {
                println!("logged out of {registry}");
            }
            Ok(())
        }
        ImageCmd::Gc => {
            let v = c.post("/v1/images/gc", &serde_json::json!({})).await?;
            if json {
                print_json(&v);
                return Ok(());
            }
            let g: ImageGc = typed(v)?;
            println!(
                "freed {} ({} layers, {} blobs, {} unnamed images)",
                bytes(g.bytes_freed),
                g.layers,
                g.blobs,
                g.images
            );
            Ok(())
        }
    }
}

/// A reference as a path under `/v1/images/`: its slashes stay (the route
/// takes the rest of the path), everything else is encoded.
fn ref_path(r: &str) -> String {
    r.split('/').map(enc).collect::<Vec<_>>().join("/")
}

fn read_password(from_stdin: bool) -> Result<String> {
    let mut s = String::new();
    if from_stdin || !std::io::stdin().is_terminal() {
        std::io::stdin()
            .read_to_string(&mut s)
            .map_err(|e| CliError::failed(format!("read the password: {e}")))?;
    } else {
        eprint!("Password: ");
        let _ = std::io::stderr().flush();
        // No echo control without a terminal crate: say so rather than pretend.
        std::io::stdin()
            .read_line(&mut s)
            .map_err(|e| CliError::failed(format!("read the password: {e}")))?;
    }
    let s = s.trim_end_matches(['\n', '\r']).to_string();
    if s.is_empty() {
        return Err(CliError::usage("the password is empty".to_string()));
    }
    Ok(s)
}

async fn pull(c: &Client, reference: &str, no_wait: bool, json: bool) -> Result<()> {
    let v = c
        .post(
            "/v1/images/pulls",
            &PullImageRequest {
                reference: reference.to_string(),
            },
        )
        .await?;
    let mut p: ImagePull = typed(v.clone())?;
    if no_wait {
        if json {
            print_json(&v);
        } else {
            println!("pull {} of {} started", p.id, p.reference);
        }
        return Ok(());
    }
    let tty = std::io::stderr().is_terminal() && !json;
    let mut last_line = String::new();
    let last = loop {
        let v = c.get(&format!("/v1/images/pulls/{}", enc(&p.id))).await?;
        p = typed(v.clone())?;
        if !json {
            let line = format!(
                "{}: {} / {} · layers {}/{}",
                p.reference,
                bytes(p.bytes_done),
                bytes(p.bytes_total),
                p.layers_done,
                p.layers_total
            );
            if tty {
                eprint!("\r\x1b[K{line}");
            } else if line != last_line && p.status != "running" {
                eprintln!("{line}");
            }
            last_line = line;
        }
        if p.status != "running" {
            break v;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    if tty {
        eprintln!();
    }
    if p.status != "succeeded" {
        if json {
            print_json(&last);
        }
        return Err(CliError::failed(format!(
            "pull of {} failed: {}",
            p.reference,
            p.error.unwrap_or_default()
        )));
    }
    if json {
        print_json(&last);
    } else {
        println!("{} {}", p.reference, p.digest.unwrap_or_default());
    }
    Ok(())
}

async fn ls(c: &Client, quiet: bool, json: bool) -> Result<()> {
    let v = c.get("/v1/images").await?;
    if json {
        print_json(&v);
        return Ok(());
    }
    let all: Vec<Image> = typed(v)?;
    if quiet {
        for i in all {
            println!("{}", i.name);
        }
        return Ok(());
    }
    let now = chrono::Utc::now();
    let rows: Vec<Vec<String>> = all
        .iter()
        .map(|i| {
            vec![
                i.name.clone(),
                i.digest
                    .as_deref()
                    .map(|d| d.trim_start_matches("sha256:").chars().take(12).collect())
                    .unwrap_or_else(|| "built-in".into()),
                if i.builtin {
                    "-".into()
                } else {
                    bytes(i.size_bytes)
                },
                i.layers.to_string(),
                i.created_at
                    .map(|t| age(t, now))
                    .unwrap_or_else(|| "-".into()),
                if i.in_use_by.is_empty() {
                    "-".into()
                } else {
                    i.in_use_by.join(",")
                },
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &["NAME", "DIGEST", "SIZE", "LAYERS", "CREATED", "IN USE BY"],
            &rows
        )
    );
    Ok(())
}
