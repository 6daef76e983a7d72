//! `runta snapshot` (alias `runta checkpoint`): save a runtime's files as a
//! checkpoint (the API's and the official client's word; the CLI has always
//! said snapshot, and keeps both), list and delete them, and start new
//! runtimes from them. In the code it is a checkpoint throughout.

use reqwest::Method;
use runta_api::{Checkpoint, CreateCheckpointRequest};
use serde_json::{json, Value};

use crate::client::{enc, typed, Client};
use crate::error::Result;
use crate::output::{age, bytes, print_json, print_json_results, table, Spinner};
use crate::CheckpointCmd;

pub async fn run(c: &Client, cmd: CheckpointCmd, json: bool) -> Result<()> {
    match cmd {
        CheckpointCmd::Create { runtime, name } => create(c, &runtime, &name, json).await,
        CheckpointCmd::Ls(a) => ls(c, a.quiet, a.no_trunc, json).await,
        CheckpointCmd::Restore(a) => crate::commands::run(c, a.into(), json).await,
        CheckpointCmd::Rm { names } => rm(c, &names, json).await,
    }
}

async fn create(c: &Client, runtime: &str, name: &str, json: bool) -> Result<()> {
    let req = CreateCheckpointRequest {
        name: name.to_string(),
    };
    let mut spin = Spinner::start(format!("saving {runtime} as {name}…"));
    let res = c
        .on_runtime(runtime, |id| {
            let req = &req;
            async move { c.post(&format!("/v1/runtimes/{id}/checkpoints"), req).await }
        })
        .await;
    spin.stop();
    let v = res?;
    if json {
        print_json(&v);
        return Ok(());
    }
    let s: Checkpoint = typed(v)?;
    println!(
        "{} saved from {} — id {}, {}",
        s.name,
        s.source_runtime_name,
        s.id,
        bytes(s.size_bytes)
    );
    Ok(())
}

async fn ls(c: &Client, quiet: bool, no_trunc: bool, json: bool) -> Result<()> {
    let (raw, all) = c.list_checkpoints().await?;
    let mut rows: Vec<(Value, Checkpoint)> = raw.into_iter().zip(all).collect();
    rows.sort_by_key(|(_, s)| std::cmp::Reverse(s.created_at));
    if quiet {
        for (_, s) in rows {
            println!("{}", s.id);
        }
        return Ok(());
    }
    if json {
        print_json(&Value::Array(rows.into_iter().map(|(v, _)| v).collect()));
        return Ok(());
    }
    let now = chrono::Utc::now();
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|(_, s)| {
            let id = s.id.to_string();
            vec![
                if no_trunc { id } else { id[..8].to_string() },
                s.name.clone(),
                s.source_runtime_name.clone(),
                bytes(s.size_bytes),
                age(s.created_at, now),
            ]
        })
        .collect();
    print!(
        "{}",
        table(&["ID", "NAME", "SOURCE", "SIZE", "AGE"], &cells)
    );
    Ok(())
}

async fn rm(c: &Client, names: &[String], json: bool) -> Result<()> {
    let mut out = Vec::new();
    for n in names {
        let v = c
            .on_checkpoint(n, |r| async move {
                c.get(&format!("/v1/checkpoints/{}", enc(&r))).await
            })
            .await?;
        let s: Checkpoint = typed(v)?;
        c.call(
            Method::DELETE,
            &format!("/v1/checkpoints/{}", s.id),
            None::<&()>,
        )
        .await?;
        if !json {
            println!("{}", s.name);
        }
        out.push(json!({"name": s.name, "id": s.id, "deleted": true}));
    }
    print_json_results(out, json);
    Ok(())
}
