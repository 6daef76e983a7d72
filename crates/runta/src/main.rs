//! `runta`: the command-line face of Runta. Every command is one or a few REST
//! calls; see docs/cli.md.

mod admin;
mod checkpoint;
mod client;
mod commands;
mod config;
mod cp;
mod egress;
mod error;
mod exec;
mod image;
mod image_build;
mod output;
mod secret;

use std::collections::BTreeMap;

use clap::{ArgGroup, Args, CommandFactory, Parser, Subcommand};
use runta_api::PortSpec;

use crate::error::CliError;

const EXAMPLES: &str = "\
Examples:
  runta run --name worker --cpus 2 --memory 2048
  runta ps -a
  runta exec worker -- sh -lc 'pwd && python3 --version'
  runta exec -it worker bash
  runta cp ./app worker:/srv/app
  runta snapshot create worker before-upgrade
  runta snapshot restore before-upgrade worker-2
  runta apply -f deployment.json
  runta run --name agent --egress-allow pypi.org --egress-allow '*.pythonhosted.org'
  runta audits --runtime agent --follow

Environment: RUNTA_ENDPOINT (default http://127.0.0.1:8080), RUNTA_TOKEN, RUNTA_CONFIG
(default ~/.config/runta/config.toml with `endpoint` and `token`). Flags beat the
environment, which beats the config file.
Exit codes: 0 ok, 1 the daemon refused or failed, 2 usage; exec passes the remote code on.";

#[derive(Parser)]
#[command(
    name = "runta",
    version,
    about = "Run and manage Runta runtimes: isolated Linux environments for agents",
    after_help = EXAMPLES,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    /// Daemon URL [default: http://127.0.0.1:8080]
    #[arg(long, global = true, env = "RUNTA_ENDPOINT", value_name = "URL")]
    endpoint: Option<String>,
    /// API token (tenant token, or the admin token for `token create`)
    #[arg(
        long,
        global = true,
        env = "RUNTA_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    token: Option<String>,
    /// Print the API's JSON (errors: the API error object on stderr)
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
pub enum Cmd {
    /// Create a runtime and wait until it runs
    #[command(
        after_help = "Examples:\n  runta run --name worker --cpus 2 --memory 2048\n  runta run --name web --cpus 2 --memory 2048 --publish 8080/https --idle-timeout 300\n  runta run --name job --env MODE=batch --label team=ml --image base\n  runta run --name try-1 --from-snapshot before-upgrade"
    )]
    Run(RunArgs),
    /// List runtimes (running ones; -a for all)
    #[command(
        after_help = "Examples:\n  runta ps\n  runta ps -a\n  runta ps -aq            # ids only\n  runta ps --json"
    )]
    Ps(PsArgs),
    /// Show everything about runtimes, as JSON
    #[command(after_help = "Example:\n  runta inspect worker")]
    Inspect {
        /// Runtime names or ids
        #[arg(required = true, value_name = "NAME")]
        names: Vec<String>,
    },
    /// Run a command in a runtime
    #[command(
        after_help = "Examples:\n  runta exec worker -- sh -lc 'pwd && python3 --version'\n  echo hi | runta exec worker -- cat\n  runta exec worker 'ls -la /tmp | wc -l'      # one quoted word runs under /bin/sh -c\n  runta exec -it worker bash                  # interactive terminal"
    )]
    Exec(ExecArgs),
    /// Boot shut-down runtimes
    #[command(visible_alias = "start", after_help = "Example:\n  runta boot worker")]
    Boot(Names),
    /// Freeze every process of runtimes
    #[command(after_help = "Example:\n  runta pause worker")]
    Pause(Names),
    /// Thaw paused runtimes
    #[command(after_help = "Example:\n  runta resume worker")]
    Resume(Names),
    /// Shut runtimes down, keeping their files
    #[command(
        visible_alias = "stop",
        after_help = "Example:\n  runta shutdown worker"
    )]
    Shutdown(Names),
    /// Delete runtimes and their files (SIGTERM, grace, kill; -f: no grace)
    #[command(
        after_help = "Examples:\n  runta rm worker          # SIGTERM, the daemon's grace (10 s), then kill\n  runta rm -f worker web   # kill at once; a missing name is not an error"
    )]
    Rm(RmArgs),
    /// Change a runtime's memory and CPUs (live where possible)
    #[command(
        after_help = "Examples:\n  runta resize --memory 4096 worker\n  runta resize --memory 4096 --cpus 4 worker"
    )]
    Resize(ResizeArgs),
    /// Copy files and folders between this machine and a runtime
    #[command(
        after_help = "Examples:\n  runta cp ./dir worker:/tmp/dir\n  runta cp worker:/tmp/dir ./back\n  runta cp report.txt worker:/root/\n  runta cp ./src/. worker:/app          # the folder's contents"
    )]
    Cp {
        /// Source: a local path or NAME:/path
        src: String,
        /// Destination: a local path or NAME:/path
        dst: String,
        /// Most bytes a copy out of a runtime writes here, in total (K, M, G, T
        /// suffixes); a larger copy is refused before it replaces anything
        #[arg(long, value_name = "SIZE", default_value = "1G", value_parser = cp::parse_size)]
        max_bytes: u64,
    },
    /// Create or update the sandboxes of a deployment file
    #[command(
        after_help = "Example:\n  runta apply -f deployment.json\n\ndeployment.json:\n  {\"apiVersion\": \"runta/v1\", \"kind\": \"SandboxSet\",\n   \"sandboxes\": [{\"name\": \"worker\", \"resources\": {\"vcpus\": 2, \"memory_mib\": 2048},\n                   \"publish\": [\"8080/https\"], \"idle_timeout_secs\": 300}]}"
    )]
    Apply(FileArg),
    /// Delete the sandboxes named in a deployment file
    #[command(after_help = "Example:\n  runta delete -f deployment.json")]
    Delete(FileArg),
    /// Show a runtime's lifecycle events
    #[command(
        visible_alias = "logs",
        after_help = "Examples:\n  runta events worker\n  runta logs worker -f"
    )]
    Events(EventsArgs),
    /// A runtime's outbound policy: show it, allow or deny hosts, change it live
    #[command(subcommand, after_help = egress::EGRESS_AFTER_HELP)]
    Egress(egress::EgressCmd),
    /// The egress gateway's decisions (allowed and denied connections, requests, DNS)
    #[command(
        after_help = "Examples:\n  runta audits\n  runta audits --runtime worker --follow\n  runta audits --runtime worker --kind dns_query --limit 200\n  runta audits --json"
    )]
    Audits(egress::AuditsArgs),
    /// Run the daemon (runtad) in the foreground; flags are passed to it
    #[command(
        disable_help_flag = true,
        disable_version_flag = true,
        after_help = "Examples:\n  runta server\n  runta server --data-dir /var/lib/runta --listen 127.0.0.1:8080\n\nEvery argument is passed to the `runtad` next to this executable; its flags follow."
    )]
    Server(ServerArgs),
    /// Save runtimes' files as snapshots and start new runtimes from them
    #[command(
        subcommand,
        name = "snapshot",
        visible_alias = "checkpoint",
        after_help = CHECKPOINT_EXAMPLES
    )]
    Checkpoint(CheckpointCmd),
    /// Secrets injected at egress: values the runtime never holds
    #[command(subcommand, after_help = secret::EXAMPLES)]
    Secret(secret::SecretCmd),
    /// Save a runtime's files as a new image over its image
    #[command(
        after_help = "Examples:\n  runta commit worker worker-img:1        # a running runtime is frozen meanwhile\n  runta commit --snapshot before-upgrade img:2\n  runta run --name again --image localhost/<tenant>/worker-img:1"
    )]
    Commit {
        /// The runtime (or, with --snapshot, the snapshot)
        #[arg(value_name = "RUNTIME")]
        source: String,
        /// The new image's name
        #[arg(value_name = "NAME")]
        name: String,
        /// RUNTIME names a snapshot (checkpoint)
        #[arg(long)]
        snapshot: bool,
    },
    /// Pull, list, inspect and remove images; registry logins
    #[command(subcommand, after_help = image::IMAGE_EXAMPLES)]
    Image(image::ImageCmd),
    /// Manage API tokens (admin)
    #[command(
        subcommand,
        after_help = "Example:\n  RUNTA_TOKEN=$(cat /var/lib/runta/admin-token) runta token create --tenant acme"
    )]
    Token(TokenCmd),
    /// Tenants' quotas (admin; `quota get` without a tenant shows your own)
    #[command(
        subcommand,
        after_help = "Examples:\n  runta tenant quota get acme\n  runta tenant quota set acme --runtimes 10 --vcpus 16 --memory 32768 --pids 10240\n  runta tenant quota set acme --checkpoints 20 --checkpoint-bytes 50G\n  runta tenant quota set acme --reset          # back to the daemon's defaults\n  runta tenant quota get                       # your own tenant (any token)"
    )]
    Tenant(TenantCmd),
    /// Print a shell completion script
    #[command(
        after_help = "Examples:\n  runta completion bash > /etc/bash_completion.d/runta\n  runta completion zsh > \"${fpath[1]}/_runta\"\n  runta completion fish > ~/.config/fish/completions/runta.fish"
    )]
    Completion { shell: clap_complete::Shell },
}

#[derive(Args)]
pub struct RunArgs {
    /// Runtime name: a-z, 0-9 and '-', unique in your tenant
    #[arg(long, value_parser = parse_name)]
    pub name: String,
    /// Image [default: the daemon's, `base`]
    #[arg(long)]
    pub image: Option<String>,
    /// CPUs (fractions allowed, e.g. 0.5)
    #[arg(long, value_parser = parse_cpus)]
    pub cpus: Option<f64>,
    /// Memory in MiB
    #[arg(long, value_parser = parse_memory, value_name = "MIB")]
    pub memory: Option<u64>,
    /// Disk in GiB
    #[arg(long, value_name = "GIB")]
    pub disk: Option<u64>,
    /// Environment variable (repeatable)
    #[arg(short, long = "env", value_parser = parse_kv, value_name = "K=V")]
    pub env: Vec<(String, String)>,
    /// Label (repeatable)
    #[arg(short, long = "label", value_parser = parse_kv, value_name = "K=V")]
    pub label: Vec<(String, String)>,
    /// Publish a port through the ingress: PORT[/http|/https] (repeatable)
    #[arg(short, long, value_parser = parse_port, value_name = "PORT/PROTO")]
    pub publish: Vec<PortSpec>,
    /// Suspend after this many seconds without traffic or exec
    #[arg(long, value_name = "SECS")]
    pub idle_timeout: Option<u64>,
    /// Start from a snapshot's files (name or id; see `runta snapshot ls`)
    #[arg(long = "from-snapshot", value_name = "SNAPSHOT")]
    pub from_checkpoint: Option<String>,
    /// Return as soon as the runtime is accepted (status `creating`)
    #[arg(long)]
    pub no_wait: bool,
    /// Egress: a host it may reach (repeatable; alone, it makes an allowlist):
    /// a name, *.example.com, an address or a CIDR block
    #[arg(long, value_name = "HOST", value_parser = egress::parse_host)]
    pub egress_allow: Vec<runta_api::HostEntry>,
    /// Egress: a host it may not reach (repeatable)
    #[arg(long, value_name = "HOST", value_parser = egress::parse_host)]
    pub egress_deny: Vec<runta_api::HostEntry>,
    /// Egress: allowlist or denylist [default: allowlist when --egress-allow is given]
    #[arg(long, value_enum, value_name = "MODE")]
    pub egress_mode: Option<egress::ModeArg>,
}

#[derive(Args)]
pub struct PsArgs {
    /// Show all runtimes (default: only creating, running, paused, suspended)
    #[arg(short, long)]
    pub all: bool,
    /// Only print ids
    #[arg(short, long)]
    pub quiet: bool,
    /// Print full ids
    #[arg(long)]
    pub no_trunc: bool,
}

#[derive(Args)]
pub struct ExecArgs {
    /// Keep stdin open and stream it (over the exec WebSocket)
    #[arg(short, long)]
    pub interactive: bool,
    /// Allocate a terminal (raw mode, window size follows yours)
    #[arg(short, long)]
    pub tty: bool,
    /// Environment variable for the command (repeatable)
    #[arg(short, long = "env", value_parser = parse_kv, value_name = "K=V")]
    pub env: Vec<(String, String)>,
    /// Working directory inside the runtime
    #[arg(short, long, value_name = "DIR")]
    pub workdir: Option<String>,
    /// Kill the command after this many seconds (buffered exec)
    #[arg(long, default_value_t = 3600, value_name = "SECS")]
    pub timeout: u64,
    /// Runtime name or id
    pub name: String,
    /// The command and its arguments (put `--` before it when it has flags)
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "CMD"
    )]
    pub command: Vec<String>,
}

#[derive(Args)]
pub struct Names {
    /// Runtime names or ids
    #[arg(required = true, value_name = "NAME")]
    pub names: Vec<String>,
}

#[derive(Args)]
pub struct RmArgs {
    /// Skip the grace (kill at once); a missing runtime is not an error
    #[arg(short, long)]
    pub force: bool,
    /// Runtime names or ids
    #[arg(required = true, value_name = "NAME")]
    pub names: Vec<String>,
}

#[derive(Args)]
#[command(group(ArgGroup::new("what").required(true).multiple(true).args(["memory", "cpus"])))]
pub struct ResizeArgs {
    /// New memory in MiB
    #[arg(long, value_parser = parse_memory, value_name = "MIB")]
    pub memory: Option<u64>,
    /// New CPUs
    #[arg(long, value_parser = parse_cpus)]
    pub cpus: Option<f64>,
    /// Runtime name or id
    pub name: String,
}

#[derive(Args)]
pub struct FileArg {
    /// deployment.json (`-` reads stdin)
    #[arg(short, long, value_name = "FILE")]
    pub file: String,
}

#[derive(Args)]
pub struct EventsArgs {
    /// Keep printing new events
    #[arg(short, long)]
    pub follow: bool,
    /// Runtime name or id
    pub name: String,
}

#[derive(Args)]
pub struct ServerArgs {
    /// Flags for runtad, e.g. --data-dir DIR --listen ADDR:PORT
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "RUNTAD_FLAGS"
    )]
    pub args: Vec<String>,
}

const CHECKPOINT_EXAMPLES: &str = "\
Examples:
  runta snapshot create worker before-upgrade     # worker is frozen while its files are copied
  runta snapshot ls
  runta snapshot restore before-upgrade try-1 --cpus 2 --memory 2048 --publish 8080/https
  runta run --name try-2 --from-snapshot before-upgrade
  runta snapshot rm before-upgrade                # refused while runtimes are built on it

A snapshot (the API calls it a checkpoint) keeps a runtime's files, not its
processes: runtimes restored from it boot fresh on those files. Restored runtimes
share the snapshot without copying it and never see each other's changes.";

#[derive(Subcommand)]
pub enum CheckpointCmd {
    /// Save a runtime's files (running, paused or suspended) under a name
    #[command(
        after_help = "Examples:\n  runta snapshot create worker before-upgrade\n  runta snapshot create worker nightly-1 --json\n\nThe runtime is frozen while its files are copied and thawed afterwards (a paused one stays paused)."
    )]
    Create {
        /// Runtime name or id
        #[arg(value_name = "RUNTIME")]
        runtime: String,
        /// Snapshot name: a-z, 0-9 and '-', unique in your tenant
        #[arg(value_parser = parse_name, value_name = "NAME")]
        name: String,
    },
    /// List snapshots, newest first
    #[command(
        visible_alias = "list",
        after_help = "Examples:\n  runta snapshot ls\n  runta snapshot ls -q            # ids only\n  runta snapshot ls --json"
    )]
    Ls(CheckpointLsArgs),
    /// Create a new runtime from a snapshot's files and wait until it runs
    #[command(
        after_help = "Examples:\n  runta snapshot restore before-upgrade try-1\n  runta snapshot restore before-upgrade web-2 --cpus 2 --memory 2048 --publish 8080/https\n  runta snapshot restore before-upgrade job-2 --idle-timeout 300 --label team=ml\n\nSame as `runta run --name NEW-NAME --from-snapshot SNAPSHOT`."
    )]
    Restore(RestoreArgs),
    /// Delete snapshots and free their space
    #[command(
        after_help = "Examples:\n  runta snapshot rm before-upgrade\n  runta snapshot rm nightly-1 nightly-2\n\nA snapshot is kept while runtimes restored from it, or snapshots taken of those, exist: delete them first."
    )]
    Rm {
        /// Snapshot names or ids
        #[arg(required = true, value_name = "NAME")]
        names: Vec<String>,
    },
}

#[derive(Args)]
pub struct CheckpointLsArgs {
    /// Only print ids
    #[arg(short, long)]
    pub quiet: bool,
    /// Print full ids
    #[arg(long)]
    pub no_trunc: bool,
}

#[derive(Args)]
pub struct RestoreArgs {
    /// Snapshot name or id
    #[arg(value_name = "SNAPSHOT")]
    pub checkpoint: String,
    /// Name of the new runtime: a-z, 0-9 and '-', unique in your tenant
    #[arg(value_parser = parse_name, value_name = "NEW-NAME")]
    pub name: String,
    /// CPUs (fractions allowed, e.g. 0.5)
    #[arg(long, value_parser = parse_cpus)]
    pub cpus: Option<f64>,
    /// Memory in MiB
    #[arg(long, value_parser = parse_memory, value_name = "MIB")]
    pub memory: Option<u64>,
    /// Environment variable (repeatable)
    #[arg(short, long = "env", value_parser = parse_kv, value_name = "K=V")]
    pub env: Vec<(String, String)>,
    /// Label (repeatable)
    #[arg(short, long = "label", value_parser = parse_kv, value_name = "K=V")]
    pub label: Vec<(String, String)>,
    /// Publish a port through the ingress: PORT[/http|/https] (repeatable)
    #[arg(short, long, value_parser = parse_port, value_name = "PORT/PROTO")]
    pub publish: Vec<PortSpec>,
    /// Suspend after this many seconds without traffic or exec
    #[arg(long, value_name = "SECS")]
    pub idle_timeout: Option<u64>,
    /// Return as soon as the runtime is accepted (status `creating`)
    #[arg(long)]
    pub no_wait: bool,
}

impl From<RestoreArgs> for RunArgs {
    fn from(a: RestoreArgs) -> Self {
        RunArgs {
            name: a.name,
            image: None,
            cpus: a.cpus,
            memory: a.memory,
            disk: None,
            env: a.env,
            label: a.label,
            publish: a.publish,
            idle_timeout: a.idle_timeout,
            from_checkpoint: Some(a.checkpoint),
            no_wait: a.no_wait,
            egress_allow: vec![],
            egress_deny: vec![],
            egress_mode: None,
        }
    }
}

#[derive(Subcommand)]
pub enum TokenCmd {
    /// Create a token for a tenant (created if new); prints only the token
    #[command(
        after_help = "Example:\n  RUNTA_TOKEN=$(cat /var/lib/runta/admin-token) runta token create --tenant acme"
    )]
    Create {
        /// Tenant name
        #[arg(long, value_parser = parse_name)]
        tenant: String,
    },
    /// List tokens: id, tenant, age, last use (never their values)
    #[command(
        visible_alias = "ls",
        after_help = "Examples:\n  runta token list --tenant acme\n  runta token list --json"
    )]
    List {
        /// Only this tenant's tokens
        #[arg(long, value_parser = parse_name)]
        tenant: Option<String>,
    },
    /// Revoke tokens by id: the next request with one is refused (401)
    #[command(after_help = "Example:\n  runta token revoke tok_abcdefghijkl")]
    Revoke {
        /// Token ids (see `runta token list`)
        #[arg(required = true, value_name = "ID")]
        ids: Vec<String>,
    },
    /// Replace a token with a new one for the same tenant; prints only the new token
    #[command(after_help = "Example:\n  NEW=$(runta token rotate tok_abcdefghijkl)")]
    Rotate {
        /// Token id (see `runta token list`)
        #[arg(value_name = "ID")]
        id: String,
    },
}

#[derive(Subcommand)]
pub enum TenantCmd {
    /// Show or change a tenant's quota
    #[command(subcommand)]
    Quota(QuotaCmd),
}

#[derive(Subcommand)]
pub enum QuotaCmd {
    /// Show a tenant's quota and usage (admin); without TENANT, your own
    Get {
        #[arg(value_parser = parse_name, value_name = "TENANT")]
        tenant: Option<String>,
    },
    /// Change a tenant's quota (admin); options left out keep their value
    Set(QuotaSetArgs),
}

#[derive(Args)]
#[command(group(ArgGroup::new("what").required(true).multiple(true)
    .args(["runtimes", "vcpus", "memory", "disk", "checkpoints", "checkpoint_bytes", "pids", "reset"])))]
pub struct QuotaSetArgs {
    #[arg(value_parser = parse_name, value_name = "TENANT")]
    pub tenant: String,
    /// Runtimes the tenant may keep (shut-down ones count)
    #[arg(long, value_name = "N")]
    pub runtimes: Option<u64>,
    /// vCPUs over its live runtimes
    #[arg(long, value_name = "N")]
    pub vcpus: Option<f64>,
    /// Memory in MiB over its live runtimes (each counts its limit)
    #[arg(long, value_name = "MIB")]
    pub memory: Option<u64>,
    /// Disk in GiB over its runtimes' disk sizes
    #[arg(long, value_name = "GIB")]
    pub disk: Option<u64>,
    /// Number of checkpoints (snapshots)
    #[arg(long, value_name = "N")]
    pub checkpoints: Option<u64>,
    /// Bytes of checkpoints: 1073741824, 512M, 10G
    #[arg(long, value_name = "SIZE", value_parser = admin::parse_size)]
    pub checkpoint_bytes: Option<u64>,
    /// PIDs over its live runtimes (each counts its process limit)
    #[arg(long, value_name = "N")]
    pub pids: Option<u64>,
    /// Return every option not given to the daemon's default
    #[arg(long)]
    pub reset: bool,
}

fn parse_name(s: &str) -> Result<String, String> {
    runta_api::validate::name("name", s).map_err(|e| e.message)?;
    Ok(s.to_string())
}

fn parse_cpus(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
    runta_api::validate::vcpus("cpus", v).map_err(|e| e.message)?;
    Ok(v)
}

fn parse_memory(s: &str) -> Result<u64, String> {
    let v: u64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a whole number of MiB"))?;
    runta_api::validate::memory_mib("memory", v).map_err(|e| e.message)?;
    Ok(v)
}

fn parse_kv(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

fn parse_port(s: &str) -> Result<PortSpec, String> {
    runta_api::validate::parse_publish(s)
}

pub fn kv_map(v: &[(String, String)]) -> BTreeMap<String, String> {
    v.iter().cloned().collect()
}

fn main() {
    let cli = Cli::parse();
    let json = cli.json;
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start: {e}");
            std::process::exit(1);
        }
    };
    let code = match rt.block_on(commands::dispatch(cli)) {
        Ok(()) => 0,
        Err(e) => e.report(json),
    };
    // Do not wait for the stdin reader thread of an interactive exec.
    drop(rt);
    std::process::exit(code);
}

pub fn command() -> clap::Command {
    Cli::command()
}

impl From<clap::Error> for CliError {
    fn from(e: clap::Error) -> Self {
        CliError::usage(e.to_string())
    }
}
