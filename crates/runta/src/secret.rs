//! `runta secret`: tenant secrets (write-only values) and the rules that
//! inject them at egress. See docs/cli.md, "Secrets".
//!
//! A value never comes from a flag (it would be in the shell history and in
//! `ps`): it comes from an environment variable, stdin or a prompt that does
//! not echo.

use std::io::{IsTerminal, Read};

use clap::{ArgGroup, Args, Subcommand};
use reqwest::Method;
use runta_api::{Secret, SecretBinding};
use serde_json::{json, Value};

use crate::client::{enc, typed, Client};
use crate::error::{CliError, Result};
use crate::output::{age, print_json, print_json_results, table};

pub const EXAMPLES: &str = "\
Examples:
  OPENAI_API_KEY=sk-… runta secret add openai --value-env OPENAI_API_KEY
  pass show gh | runta secret add github --value-stdin
  runta secret add stripe --prompt
  runta secret rule add agent --host api.openai.com --path '/v1/*' --credential openai \\
      --inject-header Authorization --inject-value 'Bearer ${credential}'
  runta secret rule add agent --host maps.example.com --credential maps --inject-param key
  runta secret rule add agent -f rules.json
  runta secret rule add --default --host api.github.com --credential github --inject-header Authorization --inject-value 'token ${credential}'
  runta secret rule list agent
  runta secret list

Values are write-only: no command, response or log shows them again. The runtime never
holds them: the egress gateway adds them to requests for the bound hosts only.";

#[derive(Subcommand)]
pub enum SecretCmd {
    /// Store a secret (its value from an env var, stdin or a prompt)
    Add(AddArgs),
    /// List secrets (never their values)
    #[command(visible_alias = "ls")]
    List {
        /// Ids only
        #[arg(short, long)]
        quiet: bool,
    },
    /// Delete secrets and every rule that injects them
    #[command(visible_alias = "rm")]
    Delete {
        /// Secret names or ids
        #[arg(required = true, value_name = "NAME")]
        names: Vec<String>,
    },
    /// Injection rules: which host gets which secret, where
    #[command(subcommand)]
    Rule(RuleCmd),
}

#[derive(Args)]
#[command(group(ArgGroup::new("source").required(true).args(["value_env", "value_stdin", "prompt"])))]
pub struct AddArgs {
    /// [A-Za-z0-9][A-Za-z0-9_.-]{0,62}
    #[arg(value_name = "NAME")]
    pub name: String,
    /// Read the value from this environment variable
    #[arg(long, value_name = "VAR")]
    pub value_env: Option<String>,
    /// Read the value from stdin (one trailing newline is dropped)
    #[arg(long)]
    pub value_stdin: bool,
    /// Ask for the value on the terminal, without echo
    #[arg(long)]
    pub prompt: bool,
    /// Kept with the secret for the official clients (runtad reads values from memory)
    #[arg(long, value_name = "N")]
    pub cache_ttl_secs: Option<i64>,
    /// Replace the value if the secret exists (otherwise that is an error)
    #[arg(long)]
    pub replace: bool,
}

#[derive(Subcommand)]
pub enum RuleCmd {
    /// Add rules to a runtime (or, with --default, to every runtime of the tenant)
    Add(RuleAddArgs),
    /// List a runtime's rules, every runtime's, or (--default) the tenant's defaults
    #[command(visible_alias = "ls")]
    List {
        #[arg(value_name = "RUNTIME")]
        runtime: Option<String>,
        /// The tenant's default rules
        #[arg(long, conflicts_with = "runtime")]
        default: bool,
    },
    /// Delete rules by id
    #[command(visible_alias = "rm")]
    Delete {
        #[arg(required = true, value_name = "RULE_ID")]
        ids: Vec<String>,
        /// The rules are tenant defaults
        #[arg(long)]
        default: bool,
    },
}

#[derive(Args)]
#[command(group(ArgGroup::new("target").args(["inject_header", "inject_param"]).multiple(false)))]
pub struct RuleAddArgs {
    /// Runtime name or id (absent with --default)
    #[arg(value_name = "RUNTIME", required_unless_present = "default")]
    pub runtime: Option<String>,
    /// A tenant default: applies to every runtime, present and future
    #[arg(long, conflicts_with = "runtime")]
    pub default: bool,
    /// Rules from a JSON file: an array of {host, path?, credential, header | param, value?}
    /// (or the API's {host, path?, secret, injection}); all added at once or none
    #[arg(short = 'f', long = "file", value_name = "FILE", conflicts_with_all = ["host", "path", "credential", "inject_header", "inject_param", "inject_value"])]
    pub file: Option<String>,
    /// api.example.com or *.example.com
    #[arg(long, value_name = "HOST", required_unless_present = "file")]
    pub host: Option<String>,
    /// /v1/* , an exact path, or every path when absent
    #[arg(long, value_name = "PATH")]
    pub path: Option<String>,
    /// The secret's name or id
    #[arg(long, value_name = "NAME", required_unless_present = "file")]
    pub credential: Option<String>,
    /// Set this request header
    #[arg(long, value_name = "HEADER")]
    pub inject_header: Option<String>,
    /// Set this query parameter
    #[arg(long, value_name = "PARAM")]
    pub inject_param: Option<String>,
    /// Template with ${credential} [default: ${credential}]
    #[arg(long, value_name = "TEMPLATE")]
    pub inject_value: Option<String>,
}

pub async fn run(c: &Client, cmd: SecretCmd, json: bool) -> Result<()> {
    match cmd {
        SecretCmd::Add(a) => add(c, a, json).await,
        SecretCmd::List { quiet } => list(c, quiet, json).await,
        SecretCmd::Delete { names } => delete(c, &names, json).await,
        SecretCmd::Rule(RuleCmd::Add(a)) => rule_add(c, a, json).await,
        SecretCmd::Rule(RuleCmd::List { runtime, default }) => {
            rule_list(c, runtime.as_deref(), default, json).await
        }
        SecretCmd::Rule(RuleCmd::Delete { ids, default }) => {
            rule_delete(c, &ids, default, json).await
        }
    }
}

fn strip_newline(mut s: String) -> String {
    if s.ends_with('\n') {
        s.pop();
        if s.ends_with('\r') {
            s.pop();
        }
    }
    s
}

/// Reads a line from the controlling terminal with echo off.
fn prompt(name: &str) -> Result<String> {
    use nix::sys::termios::{tcgetattr, tcsetattr, LocalFlags, SetArg};
    use std::io::{BufRead, Write};
    use std::os::fd::AsFd;
    let tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .map_err(|_| {
            CliError::usage("--prompt needs a terminal; use --value-env or --value-stdin")
        })?;
    let saved = tcgetattr(tty.as_fd()).map_err(|e| CliError::usage(format!("--prompt: {e}")))?;
    let mut quiet = saved.clone();
    quiet.local_flags.remove(LocalFlags::ECHO);
    quiet.local_flags.insert(LocalFlags::ECHONL);
    tcsetattr(tty.as_fd(), SetArg::TCSANOW, &quiet)
        .map_err(|e| CliError::usage(format!("--prompt: {e}")))?;
    let mut w = &tty;
    let _ = write!(w, "value for {name}: ");
    let _ = w.flush();
    let mut line = String::new();
    let read = std::io::BufReader::new(&tty).read_line(&mut line);
    let _ = tcsetattr(tty.as_fd(), SetArg::TCSANOW, &saved);
    read.map_err(|e| CliError::usage(format!("--prompt: {e}")))?;
    Ok(strip_newline(line))
}

fn value_of(a: &AddArgs) -> Result<String> {
    let v = if let Some(var) = &a.value_env {
        std::env::var(var).map_err(|_| {
            CliError::usage(format!(
                "--value-env {var}: the variable is not set (or not UTF-8)"
            ))
        })?
    } else if a.value_stdin {
        if std::io::stdin().is_terminal() {
            eprintln!("reading the value from stdin (end with Ctrl-D)…");
        }
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .map_err(|e| CliError::usage(format!("--value-stdin: {e}")))?;
        strip_newline(s)
    } else {
        prompt(&a.name)?
    };
    if v.is_empty() {
        return Err(CliError::usage("the value is empty"));
    }
    Ok(v)
}

async fn add(c: &Client, a: AddArgs, json: bool) -> Result<()> {
    let value = value_of(&a)?;
    let v = if a.replace {
        let mut body = json!({ "value": value });
        if let Some(t) = a.cache_ttl_secs {
            body["cache_ttl_secs"] = json!(t);
        }
        c.call(
            Method::PUT,
            &format!("/v1/secrets/{}", enc(&a.name)),
            Some(&body),
        )
        .await?
    } else {
        let mut body = json!({ "name": a.name, "value": value });
        if let Some(t) = a.cache_ttl_secs {
            body["cache_ttl_secs"] = json!(t);
        }
        c.post("/v1/secrets", &body).await.map_err(|e| {
            if matches!(&e, CliError::Api(api) if api.body.error.code == runta_api::ErrorCode::AlreadyExists) {
                CliError::failed(format!(
                    "secret '{}' exists; add --replace to change its value",
                    a.name
                ))
            } else {
                e
            }
        })?
    };
    drop(value);
    if json {
        print_json(&v);
        return Ok(());
    }
    let s: Secret = typed(v)?;
    println!("{} stored — id {}, stub {}", s.name, s.id, s.stub);
    Ok(())
}

async fn list(c: &Client, quiet: bool, json: bool) -> Result<()> {
    let v = c.get("/v1/secrets").await?;
    if json {
        print_json(&v);
        return Ok(());
    }
    let all: Vec<Secret> = typed(v)?;
    if quiet {
        for s in all {
            println!("{}", s.id);
        }
        return Ok(());
    }
    let now = chrono::Utc::now();
    let rows: Vec<Vec<String>> = all
        .iter()
        .map(|s| {
            vec![
                s.id.to_string()[..8].to_string(),
                s.name.clone(),
                s.stub.clone(),
                age(s.updated_at, now),
            ]
        })
        .collect();
    print!("{}", table(&["ID", "NAME", "STUB", "UPDATED"], &rows));
    Ok(())
}

async fn delete(c: &Client, names: &[String], json: bool) -> Result<()> {
    let mut out = Vec::new();
    for n in names {
        c.call(
            Method::DELETE,
            &format!("/v1/secrets/{}", enc(n)),
            None::<&()>,
        )
        .await
        .map_err(|e| {
            if e.is_not_found() {
                CliError::failed(format!("no secret named '{n}' — see `runta secret list`"))
            } else {
                e
            }
        })?;
        if !json {
            println!("{n}");
        }
        out.push(json!({"name": n, "deleted": true}));
    }
    print_json_results(out, json);
    Ok(())
}

/// One rule of a `-f` file, in the CLI's words or the API's.
fn rule_from_file(i: usize, v: &Value) -> Result<Value> {
    let bad = |m: &str| CliError::usage(format!("rules file: entry {i}: {m}"));
    let o = v.as_object().ok_or_else(|| bad("not an object"))?;
    if o.contains_key("injection") || o.contains_key("config") {
        return Ok(v.clone());
    }
    let s = |k: &str| o.get(k).and_then(Value::as_str).map(str::to_string);
    let host = s("host").ok_or_else(|| bad("needs \"host\""))?;
    let secret = s("credential")
        .or_else(|| s("secret"))
        .ok_or_else(|| bad("needs \"credential\""))?;
    let value = s("value").or_else(|| s("inject_value"));
    let injection = match (
        s("header").or_else(|| s("inject_header")),
        s("param").or_else(|| s("inject_param")),
    ) {
        (Some(h), None) => {
            json!({"headerName": h, "valueFormat": value.unwrap_or_else(|| "${credential}".into())})
        }
        (None, Some(p)) => {
            json!({"paramName": p, "paramFormat": value.unwrap_or_else(|| "${credential}".into())})
        }
        _ => return Err(bad("needs one of \"header\" or \"param\"")),
    };
    Ok(json!({"host": host, "path": s("path"), "secret": secret, "injection": injection}))
}

async fn rule_add(c: &Client, a: RuleAddArgs, json: bool) -> Result<()> {
    let rules: Vec<Value> = if let Some(f) = &a.file {
        let text = std::fs::read_to_string(f).map_err(|e| CliError::usage(format!("{f}: {e}")))?;
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| CliError::usage(format!("{f}: not JSON: {e}")))?;
        let items = match v {
            Value::Array(a) => a,
            Value::Object(mut o) if o.contains_key("rules") => match o.remove("rules") {
                Some(Value::Array(a)) => a,
                _ => return Err(CliError::usage(format!("{f}: \"rules\" must be an array"))),
            },
            one @ Value::Object(_) => vec![one],
            _ => return Err(CliError::usage(format!("{f}: want an array of rules"))),
        };
        items
            .iter()
            .enumerate()
            .map(|(i, v)| rule_from_file(i, v))
            .collect::<Result<_>>()?
    } else {
        let template = a
            .inject_value
            .clone()
            .unwrap_or_else(|| "${credential}".into());
        let injection = match (&a.inject_header, &a.inject_param) {
            (Some(h), None) => json!({"headerName": h, "valueFormat": template}),
            (None, Some(p)) => json!({"paramName": p, "paramFormat": template}),
            _ => {
                return Err(CliError::usage(
                    "give --inject-header HEADER or --inject-param PARAM",
                ))
            }
        };
        vec![
            json!({"host": a.host, "path": a.path, "secret": a.credential, "injection": injection}),
        ]
    };
    let added: Vec<Value> = match (&a.runtime, a.default) {
        (Some(rt), _) if rules.len() == 1 => {
            let body = &rules[0];
            vec![
                c.on_runtime(rt, |id| async move {
                    c.post(&format!("/v1/runtimes/{id}/secret-injection-rules"), body)
                        .await
                })
                .await?,
            ]
        }
        (Some(rt), _) => {
            // Several: one transaction (the 0.1.21 replace route, deleting nothing).
            let body = json!({"delete_ids": [], "stubs": rules});
            let before: Vec<SecretBinding> = typed(
                c.get(&format!("/v1/runtimes/{}/secret-stubs", enc(rt)))
                    .await?,
            )?;
            let after = c
                .on_runtime(rt, |id| {
                    let body = &body;
                    async move {
                        c.call(
                            Method::PUT,
                            &format!("/v1/runtimes/{id}/secret-stubs/replace"),
                            Some(body),
                        )
                        .await
                    }
                })
                .await?;
            let known: Vec<String> = before.iter().map(|b| b.id.to_string()).collect();
            after
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter(|b| !known.iter().any(|k| b["id"].as_str() == Some(k)))
                .collect()
        }
        (None, _) => {
            let mut out = Vec::new();
            for r in &rules {
                out.push(c.post("/v1/default-secret-stubs", r).await?);
            }
            out
        }
    };
    if json {
        print_json(&Value::Array(added));
        return Ok(());
    }
    for b in added {
        let b: SecretBinding = typed(b)?;
        println!(
            "{} {} {} ← {}",
            b.id, b.host_pattern, b.path_pattern, b.credential_display_name
        );
    }
    Ok(())
}

fn target(b: &SecretBinding) -> String {
    let i = &b.injection;
    match (i["headerName"].as_str(), i["paramName"].as_str()) {
        (Some(h), _) => format!("header {h}: {}", i["valueFormat"].as_str().unwrap_or("")),
        (_, Some(p)) => format!("param {p}={}", i["paramFormat"].as_str().unwrap_or("")),
        _ => String::new(),
    }
}

async fn rule_list(c: &Client, runtime: Option<&str>, default: bool, json: bool) -> Result<()> {
    let v = match (runtime, default) {
        (_, true) => c.get("/v1/default-secret-stubs").await?,
        (Some(rt), _) => {
            c.on_runtime(rt, |id| async move {
                c.get(&format!("/v1/runtimes/{id}/secret-injection-rules"))
                    .await
            })
            .await?
        }
        (None, false) => c.get("/v1/secret-injection-rules").await?,
    };
    if json {
        print_json(&v);
        return Ok(());
    }
    let all: Vec<SecretBinding> = typed(v)?;
    let rows: Vec<Vec<String>> = all
        .iter()
        .map(|b| {
            vec![
                b.id.to_string(),
                b.runtime_display_name
                    .clone()
                    .unwrap_or_else(|| "(default)".into()),
                b.host_pattern.clone(),
                b.path_pattern.clone(),
                b.credential_display_name.clone(),
                target(b),
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &["ID", "RUNTIME", "HOST", "PATH", "SECRET", "INJECT"],
            &rows
        )
    );
    Ok(())
}

async fn rule_delete(c: &Client, ids: &[String], default: bool, json: bool) -> Result<()> {
    let mut out = Vec::new();
    for id in ids {
        let path = if default {
            format!("/v1/default-secret-stubs/{}", enc(id))
        } else {
            format!("/v1/secret-injection-rules/{}", enc(id))
        };
        c.call(Method::DELETE, &path, None::<&()>)
            .await
            .map_err(|e| {
                if e.is_not_found() {
                    CliError::failed(format!(
                        "no rule {id} — see `runta secret rule list{}`",
                        if default { " --default" } else { "" }
                    ))
                } else {
                    e
                }
            })?;
        if !json {
            println!("{id}");
        }
        out.push(json!({"id": id, "deleted": true}));
    }
    print_json_results(out, json);
    Ok(())
}
