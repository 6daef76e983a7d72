//! One function per command.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::time::Duration;

use reqwest::Method;
use runta_api::{
    ApplyResult, CreateRuntimeRequest, Event, PlanAction, RequestsSpec, ResourcesSpec, Runtime,
    RuntimeStatus, UpdateRuntimeRequest,
};
use serde_json::{json, Value};

use crate::client::{typed, Client};
use crate::config;
use crate::error::{CliError, Result};
use crate::output::{age, cpus, cpus_label, print_json, print_json_results, table, Spinner};
use crate::{kv_map, Cli, Cmd, TokenCmd};

pub async fn dispatch(cli: Cli) -> Result<()> {
    let json = cli.json;
    // Commands that need no daemon.
    match &cli.cmd {
        Cmd::Completion { shell } => {
            let mut cmd = crate::command();
            clap_complete::generate(*shell, &mut cmd, "runta", &mut std::io::stdout());
            return Ok(());
        }
        Cmd::Server(a) => return server(&a.args),
        _ => {}
    }
    let settings = config::resolve(cli.endpoint, cli.token)?;
    let c = Client::new(&settings)?;
    c.token()?;
    match cli.cmd {
        Cmd::Run(a) => run(&c, a, json).await,
        Cmd::Ps(a) => ps(&c, a, json).await,
        Cmd::Inspect { names } => inspect(&c, &names).await,
        Cmd::Exec(a) => {
            crate::exec::run(
                &c,
                crate::exec::ExecOpts {
                    name: a.name,
                    argv: a.command,
                    interactive: a.interactive,
                    tty: a.tty,
                    env: kv_map(&a.env),
                    cwd: a.workdir,
                    timeout_secs: a.timeout,
                    json,
                    stdin_data: None,
                },
            )
            .await
        }
        Cmd::Boot(n) => lifecycle(&c, &n.names, "start", json).await,
        Cmd::Pause(n) => lifecycle(&c, &n.names, "pause", json).await,
        Cmd::Resume(n) => lifecycle(&c, &n.names, "resume", json).await,
        Cmd::Shutdown(n) => lifecycle(&c, &n.names, "stop", json).await,
        Cmd::Rm(a) => rm(&c, &a.names, a.force, json).await,
        Cmd::Resize(a) => resize(&c, &a.name, a.memory, a.cpus, json).await,
        Cmd::Cp {
            src,
            dst,
            max_bytes,
        } => crate::cp::run(&c, &src, &dst, max_bytes, json).await,
        Cmd::Apply(f) => deploy(&c, &f.file, "apply", json).await,
        Cmd::Delete(f) => deploy(&c, &f.file, "delete", json).await,
        Cmd::Events(a) => events(&c, &a.name, a.follow, json).await,
        Cmd::Checkpoint(cmd) => crate::checkpoint::run(&c, cmd, json).await,
        Cmd::Secret(cmd) => crate::secret::run(&c, cmd, json).await,
        Cmd::Image(cmd) => crate::image::run(&c, cmd, json).await,
        Cmd::Commit {
            source,
            name,
            snapshot,
        } => crate::image_build::commit(&c, &source, &name, snapshot, json).await,
        Cmd::Egress(cmd) => crate::egress::run(&c, cmd, json).await,
        Cmd::Audits(a) => crate::egress::audits(&c, a, json).await,
        Cmd::Token(TokenCmd::Create { tenant }) => {
            let v = c.post("/v1/tokens", &json!({ "tenant": tenant })).await?;
            if json {
                print_json(&v);
            } else {
                let token = v
                    .get("token")
                    .and_then(Value::as_str)
                    .ok_or_else(|| CliError::failed("the daemon's answer has no token"))?;
                println!("{token}");
            }
            Ok(())
        }
        Cmd::Token(TokenCmd::List { tenant }) => {
            crate::admin::token_list(&c, tenant.as_deref(), json).await
        }
        Cmd::Token(TokenCmd::Revoke { ids }) => crate::admin::token_revoke(&c, &ids, json).await,
        Cmd::Token(TokenCmd::Rotate { id }) => crate::admin::token_rotate(&c, &id, json).await,
        Cmd::Tenant(crate::TenantCmd::Quota(crate::QuotaCmd::Get { tenant })) => {
            crate::admin::quota_get(&c, tenant.as_deref(), json).await
        }
        Cmd::Tenant(crate::TenantCmd::Quota(crate::QuotaCmd::Set(a))) => {
            crate::admin::quota_set(&c, a, json).await
        }
        Cmd::Completion { .. } | Cmd::Server(_) => unreachable!("handled above"),
    }
}

async fn get_runtime(c: &Client, name: &str) -> Result<(Value, Runtime)> {
    let v = c
        .on_runtime(name, |id| async move {
            c.get(&format!("/v1/runtimes/{id}")).await
        })
        .await?;
    Ok((v.clone(), typed(v)?))
}

fn url_lines(r: &Runtime) -> Vec<String> {
    r.publish
        .iter()
        .map(|p| format!("  {}/{} → {}", p.port, p.protocol.as_str(), p.url))
        .collect()
}

pub async fn run(c: &Client, a: crate::RunArgs, json: bool) -> Result<()> {
    let req = CreateRuntimeRequest {
        name: a.name.clone(),
        image: a.image,
        resources: ResourcesSpec {
            requests: RequestsSpec {
                vcpus: a.cpus,
                memory_mib: a.memory,
                disk_gib: a.disk,
            },
            limits: None,
        },
        env: kv_map(&a.env),
        labels: kv_map(&a.label),
        publish: a.publish,
        idle_timeout_secs: a.idle_timeout,
        idle_wakeup: None,
        checkpoint: a.from_checkpoint.clone(),
        egress_policy: crate::egress::policy_from_flags(
            a.egress_mode,
            &a.egress_allow,
            &a.egress_deny,
        ),
    };
    let path = if a.no_wait {
        "/v1/runtimes?wait=false"
    } else {
        "/v1/runtimes"
    };
    let mut spin = Spinner::start(match &a.from_checkpoint {
        Some(s) => format!("restoring {s} into {}…", a.name),
        None => format!("creating {}…", a.name),
    });
    let res = match &a.from_checkpoint {
        // An unknown snapshot: "did you mean", or a unique id prefix.
        Some(snap) => {
            c.on_checkpoint(snap, |checkpoint| {
                let req = CreateRuntimeRequest {
                    checkpoint: Some(checkpoint),
                    ..req.clone()
                };
                async move { c.post(path, &req).await }
            })
            .await
        }
        None => c.post(path, &req).await,
    };
    spin.stop();
    let v = res?;
    if json {
        print_json(&v);
        return Ok(());
    }
    let r: Runtime = typed(v)?;
    println!(
        "{} {} — id {}, {}, {} MiB",
        r.name,
        r.status,
        r.id,
        cpus_label(r.resources.requests.vcpus),
        r.resources.requests.memory_mib
    );
    for l in url_lines(&r) {
        println!("{l}");
    }
    if req.egress_policy.is_some() {
        print!(
            "{}",
            crate::egress::describe("  egress", &r.official.egress_policy)
        );
    }
    if let Some(e) = &r.error {
        eprintln!("runta: the runtime reports an error: {e}");
    }
    Ok(())
}

async fn ps(c: &Client, a: crate::PsArgs, json: bool) -> Result<()> {
    let (raw, all) = c.list_runtimes().await?;
    let shown = |r: &Runtime| {
        a.all
            || matches!(
                r.status,
                RuntimeStatus::Creating
                    | RuntimeStatus::Running
                    | RuntimeStatus::Paused
                    | RuntimeStatus::Suspended
                    | RuntimeStatus::Deleting
            )
    };
    let mut rows: Vec<(&Value, &Runtime)> = raw
        .iter()
        .zip(all.iter())
        .filter(|(_, r)| shown(r))
        .collect();
    rows.sort_by_key(|(_, r)| std::cmp::Reverse(r.created_at));
    if a.quiet {
        for (_, r) in rows {
            println!("{}", r.id);
        }
        return Ok(());
    }
    if json {
        print_json(&Value::Array(
            rows.into_iter().map(|(v, _)| v.clone()).collect(),
        ));
        return Ok(());
    }
    let now = chrono::Utc::now();
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|(_, r)| {
            let id = r.id.to_string();
            vec![
                if a.no_trunc { id } else { id[..8].to_string() },
                r.name.clone(),
                r.status.to_string(),
                cpus(r.resources.requests.vcpus),
                format!("{} MiB", r.resources.requests.memory_mib),
                age(r.created_at, now),
                r.publish
                    .first()
                    .map(|p| p.url.clone())
                    .unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &["ID", "NAME", "STATUS", "CPUS", "MEMORY", "AGE", "URL"],
            &cells
        )
    );
    Ok(())
}

async fn inspect(c: &Client, names: &[String]) -> Result<()> {
    let mut out = Vec::new();
    for n in names {
        out.push(get_runtime(c, n).await?.0);
    }
    if out.len() == 1 {
        print_json(&out[0]);
    } else {
        print_json(&Value::Array(out));
    }
    Ok(())
}

fn past(action: &str) -> &'static str {
    match action {
        "start" => "booted",
        "stop" => "shut down",
        "pause" => "paused",
        "resume" => "resumed",
        _ => "done",
    }
}

async fn lifecycle(c: &Client, names: &[String], action: &str, json: bool) -> Result<()> {
    let mut out = Vec::new();
    let doing = match action {
        "start" => "booting",
        "stop" => "shutting down",
        "pause" => "pausing",
        _ => "resuming",
    };
    let mut spin = Spinner::start(format!("{doing} {}…", names.join(" ")));
    for n in names {
        let res = c
            .on_runtime(n, |id| async move {
                c.call(
                    Method::POST,
                    &format!("/v1/runtimes/{id}/{action}"),
                    Some(&json!({})),
                )
                .await
            })
            .await;
        let v = match res {
            Ok(v) => v,
            Err(e) => {
                spin.stop();
                return Err(e);
            }
        };
        let r: Runtime = typed(v.clone())?;
        spin.stop();
        if !json {
            println!("{} {} (status {})", r.name, past(action), r.status);
        }
        out.push(v);
    }
    print_json_results(out, json);
    Ok(())
}

async fn rm(c: &Client, names: &[String], force: bool, json: bool) -> Result<()> {
    let mut out = Vec::new();
    for n in names {
        let r = match get_runtime(c, n).await {
            Ok((_, r)) => r,
            Err(e) if force && e.is_not_found() => {
                out.push(json!({"name": n, "deleted": false}));
                continue;
            }
            Err(e) => return Err(e),
        };
        // Like the official client's `runtime.delete()`: processes get SIGTERM
        // and the daemon's grace (its shutdown) before the delete kills what
        // is left. -f skips the grace: the delete kills at once.
        if !force
            && matches!(
                r.status,
                RuntimeStatus::Running | RuntimeStatus::Paused | RuntimeStatus::Suspended
            )
        {
            match c
                .post(&format!("/v1/runtimes/{}/stop", r.id), &json!({}))
                .await
            {
                Ok(_) => {}
                // Gone or changed meanwhile: the delete below says what is true.
                Err(e) if e.is_not_found() || e.is_conflict() => {}
                Err(e) => return Err(e),
            }
        }
        let rb = c.request(Method::DELETE, &format!("/v1/runtimes/{}", r.id))?;
        match c.send(rb).await {
            Ok(_) => {}
            Err(e) if force && e.is_not_found() => {}
            Err(e) => return Err(e),
        }
        if !json {
            println!("{}", r.name);
        }
        out.push(json!({"name": r.name, "id": r.id, "deleted": true}));
    }
    print_json_results(out, json);
    Ok(())
}

async fn resize(
    c: &Client,
    name: &str,
    memory: Option<u64>,
    vcpus: Option<f64>,
    json: bool,
) -> Result<()> {
    let req = UpdateRuntimeRequest {
        resources: Some(ResourcesSpec {
            requests: RequestsSpec {
                vcpus,
                memory_mib: memory,
                disk_gib: None,
            },
            limits: None,
        }),
        ..Default::default()
    };
    let v = c
        .on_runtime(name, |id| {
            let req = &req;
            async move {
                c.call(Method::PATCH, &format!("/v1/runtimes/{id}"), Some(req))
                    .await
            }
        })
        .await?;
    if json {
        print_json(&v);
        return Ok(());
    }
    let r: Runtime = typed(v)?;
    println!(
        "{} resized: {}, {} MiB",
        r.name,
        cpus_label(r.resources.requests.vcpus),
        r.resources.requests.memory_mib
    );
    Ok(())
}

async fn deploy(c: &Client, file: &str, verb: &str, json: bool) -> Result<()> {
    let text = if file == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s)?;
        s
    } else {
        std::fs::read_to_string(file).map_err(|e| CliError::failed(format!("{file}: {e}")))?
    };
    let body: Value = serde_json::from_str(&text)
        .map_err(|e| CliError::failed(format!("{file}: not valid JSON: {e}")))?;
    let mut spin = Spinner::start(format!("{verb} {file}…"));
    let res = c.post(&format!("/v1/{verb}"), &body).await;
    spin.stop();
    let v = res?;
    if json {
        print_json(&v);
        return Ok(());
    }
    let result: ApplyResult = typed(v)?;
    let width = result.plan.iter().map(|l| l.name.len()).max().unwrap_or(0);
    for line in &result.plan {
        let action = match line.action {
            PlanAction::Created => "created",
            PlanAction::Updated => "updated",
            PlanAction::Unchanged => "unchanged",
            PlanAction::Deleted => "deleted",
            PlanAction::NotFound => "not found",
        };
        let mut l = format!("{:width$}  {action}", line.name);
        if !line.changes.is_empty() {
            l.push_str(&format!(" ({})", line.changes.join(", ")));
        }
        if let Some(r) = &line.runtime {
            for u in url_lines(r) {
                l.push('\n');
                l.push_str(&u);
            }
        }
        println!("{l}");
    }
    Ok(())
}

async fn events(c: &Client, name: &str, follow: bool, json: bool) -> Result<()> {
    let r = get_runtime(c, name).await?.1;
    let mut after = 0i64;
    let mut first = true;
    loop {
        let mut batch_raw = Vec::new();
        loop {
            let path = format!("/v1/runtimes/{}/events?limit=100&after={after}", r.id);
            let resp = c.send(c.request(Method::GET, &path)?).await?;
            let page: Value = resp.json().await.map_err(|e| c.transport(e))?;
            let data = page
                .get("data")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let more = page
                .pointer("/pagination/has_more")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            for e in &data {
                if let Some(id) = e.get("id").and_then(Value::as_i64) {
                    after = after.max(id);
                }
            }
            batch_raw.extend(data);
            if !more {
                break;
            }
        }
        if json && !follow {
            print_json(&Value::Array(batch_raw));
            return Ok(());
        }
        let evs: Vec<Event> = batch_raw
            .iter()
            .cloned()
            .map(typed)
            .collect::<Result<_>>()?;
        if json {
            for v in &batch_raw {
                println!("{v}");
            }
        } else {
            let rows: Vec<Vec<String>> = evs
                .iter()
                .map(|e| {
                    vec![
                        e.created_at
                            .with_timezone(&chrono::Local)
                            .format("%Y-%m-%d %H:%M:%S")
                            .to_string(),
                        e.kind.clone(),
                        e.message.clone().unwrap_or_default(),
                    ]
                })
                .collect();
            let t = table(&["TIME", "EVENT", "MESSAGE"], &rows);
            if first {
                print!("{t}");
            } else {
                for line in t.lines().skip(1) {
                    println!("{line}");
                }
            }
        }
        first = false;
        if !follow {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// `runtad` next to this executable (or `RUNTAD_BIN`, or on PATH).
fn find_runtad() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("RUNTAD_BIN").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(PathBuf::from))
    {
        let p = dir.join("runtad");
        if p.is_file() {
            return Some(p);
        }
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("runtad"))
            .find(|p| p.is_file())
    })
}

fn server(args: &[String]) -> Result<()> {
    let bin = find_runtad();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        let mut cmd = crate::command();
        cmd.build();
        if let Some(sc) = cmd.find_subcommand_mut("server") {
            let _ = sc.print_help();
        }
        if let Some(bin) = &bin {
            println!(
                "\nrunta server passes its arguments to {}:\n",
                bin.display()
            );
            let _ = std::process::Command::new(bin).arg("--help").status();
        }
        return Ok(());
    }
    let Some(bin) = bin else {
        let here = std::env::current_exe()
            .ok()
            .and_then(|e| e.parent().map(|p| p.display().to_string()))
            .unwrap_or_default();
        return Err(CliError::failed(format!(
            "runtad not found next to runta (in {here}) or on PATH — build it with scripts/build.sh or set RUNTAD_BIN"
        )));
    };
    let err = std::process::Command::new(&bin).args(args).exec();
    Err(CliError::failed(format!(
        "cannot run {}: {err}",
        bin.display()
    )))
}
