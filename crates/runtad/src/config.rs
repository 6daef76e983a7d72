//! Daemon settings: flags and environment, parsed and checked, nothing else.
//! What the daemon learns from the host (its instance tag, a free subnet, the
//! memory size, the agent binary it installs) is in `host.rs`; the functions
//! are re-exported here for the callers that named them `config::…`.

use std::path::PathBuf;

use clap::Parser;

pub use crate::host::{default_subnet_octet, host_memory_mib, instance_tag};

#[derive(Debug, Clone, Parser)]
#[command(
    name = "runtad",
    version,
    about = "The Runta daemon: isolated runtimes behind a REST API"
)]
pub struct Config {
    /// Where the store, runtimes' files and the admin token live.
    #[arg(long, env = "RUNTA_DATA_DIR", default_value = "/var/lib/runta")]
    pub data_dir: PathBuf,
    /// Address of the REST API.
    #[arg(long, env = "RUNTA_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// Image store: a read-only cache shared by every daemon on the host, so a
    /// daemon on a fresh data dir does not build the base image again.
    #[arg(
        long,
        env = "RUNTA_IMAGES_DIR",
        default_value = "/var/lib/runta/images"
    )]
    pub images_dir: PathBuf,
    /// A PEM file of CA certificates trusted for registries beside the host's
    /// trust store (repeatable).
    #[arg(long = "registry-ca", env = "RUNTA_REGISTRY_CA", value_delimiter = ',')]
    pub registry_ca: Vec<PathBuf>,
    /// A registry (`host:port`) spoken to over plain HTTP (repeatable). Every
    /// other registry is HTTPS only.
    #[arg(
        long = "insecure-registry",
        env = "RUNTA_INSECURE_REGISTRY",
        value_delimiter = ','
    )]
    pub insecure_registry: Vec<String>,
    /// An HTTPS registry (`host:port`) the operator placed on loopback or a
    /// private network (repeatable). Pulls, redirects and token realms never
    /// reach a loopback, link-local (metadata), private or reserved address
    /// otherwise; `--insecure-registry` entries are allowed too.
    #[arg(
        long = "private-registry",
        env = "RUNTA_PRIVATE_REGISTRY",
        value_delimiter = ','
    )]
    pub private_registry: Vec<String>,
    /// A Docker/Podman `auth.json` with the daemon's own registry
    /// credentials, used for every tenant's pulls (operator-wide); a
    /// tenant's own `runta image login` takes precedence for that tenant.
    #[arg(long, env = "RUNTA_REGISTRY_AUTH_FILE")]
    pub registry_auth_file: Option<PathBuf>,
    /// Largest image (compressed layers, and again unpacked content), bytes.
    #[arg(long, env = "RUNTA_IMAGE_MAX_BYTES", default_value_t = 64 << 30)]
    pub image_max_bytes: u64,
    /// Most entries (files, directories, links) in one layer.
    #[arg(long, env = "RUNTA_IMAGE_MAX_FILES", default_value_t = 2_000_000)]
    pub image_max_files: u64,
    /// Most layers in one image.
    #[arg(long, env = "RUNTA_IMAGE_MAX_LAYERS", default_value_t = 128)]
    pub image_max_layers: usize,
    /// Most entries in one image, all layers together.
    #[arg(long, env = "RUNTA_IMAGE_MAX_TOTAL_FILES", default_value_t = 4_000_000)]
    pub image_max_total_files: u64,
    /// Largest tar extension header (PAX record block, GNU long name or
    /// link) in a layer, bytes.
    #[arg(long, env = "RUNTA_IMAGE_MAX_HEADER_BYTES", default_value_t = 1 << 20)]
    pub image_max_header_bytes: u64,
    /// Largest extended attribute value in a layer, bytes.
    #[arg(long, env = "RUNTA_IMAGE_MAX_XATTR_BYTES", default_value_t = 65536)]
    pub image_max_xattr_bytes: u64,
    /// Bytes the image store may hold (blobs and unpacked layers); 0: no
    /// cap. A pull, commit or build past it fails (503 `resource_exhausted`).
    #[arg(long, env = "RUNTA_IMAGE_STORE_MAX_BYTES", default_value_t = 0)]
    pub image_store_max_bytes: u64,
    /// Compressed bytes of the images one tenant holds names of; 0: no cap.
    /// Past it a pull, commit or build of the tenant fails (429).
    #[arg(long, env = "RUNTA_IMAGE_TENANT_MAX_BYTES", default_value_t = 0)]
    pub image_tenant_max_bytes: u64,
    /// Pulls running at once, all tenants together (more: 503 `unavailable`).
    #[arg(long, env = "RUNTA_IMAGE_MAX_PULLS", default_value_t = 16)]
    pub image_max_pulls: usize,
    /// Pulls running at once for one tenant (more: 429 `rate_limited`).
    #[arg(long, env = "RUNTA_IMAGE_MAX_PULLS_PER_TENANT", default_value_t = 4)]
    pub image_max_pulls_per_tenant: usize,
    /// A registry that sends less than `--image-pull-min-rate` bytes/s over
    /// this many seconds fails the pull (what arrived is kept for the next).
    #[arg(long, env = "RUNTA_IMAGE_PULL_STALL_SECS", default_value_t = 60)]
    pub image_pull_stall_secs: u64,
    /// Bytes per second a registry must send at least (see
    /// `--image-pull-stall-secs`).
    #[arg(long, env = "RUNTA_IMAGE_PULL_MIN_RATE", default_value_t = 1024)]
    pub image_pull_min_rate: u64,
    /// How long a create waits for the pull of an image it uses first
    /// (seconds); the pull goes on past it.
    #[arg(long, env = "RUNTA_IMAGE_PULL_TIMEOUT_SECS", default_value_t = 600)]
    pub image_pull_timeout_secs: u64,
    /// Longest an image build may run (seconds); past it every process of
    /// the build is killed and the build fails saying so.
    #[arg(long, env = "RUNTA_BUILD_TIMEOUT_SECS", default_value_t = 1800, value_parser = clap::value_parser!(u64).range(1..))]
    pub build_timeout_secs: u64,
    /// Most processes and threads an image build has at once (buildah and
    /// every RUN step together).
    #[arg(long, env = "RUNTA_BUILD_PIDS_MAX", default_value_t = 4096, value_parser = clap::value_parser!(u64).range(128..))]
    pub build_pids_max: u64,
    /// Memory of an image build (buildah and its RUN steps together), MiB.
    #[arg(long, env = "RUNTA_BUILD_MEMORY_MIB", default_value_t = 2048, value_parser = clap::value_parser!(u64).range(64..))]
    pub build_memory_mib: u64,
    /// CPUs an image build may use (default: all of the host's).
    #[arg(long, env = "RUNTA_BUILD_CPUS")]
    pub build_cpus: Option<f64>,
    /// Debian mirror for building `base`; default: the one apt uses.
    #[arg(long, env = "RUNTA_DEBIAN_MIRROR")]
    pub debian_mirror: Option<String>,
    /// `crun` or `runc`; detected when absent (crun preferred). Anything else
    /// stops the daemon at start rather than quietly using the detected one.
    #[arg(long, env = "RUNTA_OCI_RUNTIME", value_parser = ["crun", "runc"])]
    pub oci_runtime: Option<String>,
    /// The static runta-agent binary; default: next to this executable.
    #[arg(long, env = "RUNTA_AGENT_BIN")]
    pub agent_bin: Option<PathBuf>,
    /// Runtime network 10.N.0.0/16; default derived from the data dir.
    #[arg(long, env = "RUNTA_SUBNET_OCTET")]
    pub subnet_octet: Option<u8>,
    /// Process limit per runtime (fork bombs stop here). Admission keeps the sum
    /// over live runtimes below the kernel's pid_max minus headroom.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(i64).range(1..=4_194_304))]
    pub pids_limit: i64,
    /// Default quota: runtimes per tenant (shut-down ones count).
    #[arg(long, env = "RUNTA_QUOTA_RUNTIMES", default_value_t = 64)]
    pub quota_runtimes: u64,
    /// Default quota: vCPUs per tenant, summed over its live runtimes.
    #[arg(long, env = "RUNTA_QUOTA_VCPUS", default_value_t = 128.0)]
    pub quota_vcpus: f64,
    /// Default quota: memory per tenant (MiB, runtimes count their limits);
    /// default: the daemon's memory capacity.
    #[arg(long, env = "RUNTA_QUOTA_MEMORY_MIB")]
    pub quota_memory_mib: Option<u64>,
    /// Default quota: disk per tenant (GiB, summed over its runtimes' disk
    /// sizes); 0 = none. With a quota every runtime needs a disk size (see
    /// `--default-disk-gib`).
    #[arg(long, env = "RUNTA_QUOTA_DISK_GIB", default_value_t = 0)]
    pub quota_disk_gib: u64,
    /// Default quota: checkpoints per tenant.
    #[arg(long, env = "RUNTA_QUOTA_CHECKPOINTS", default_value_t = 64)]
    pub quota_checkpoints: u64,
    /// Default quota: bytes of checkpoints per tenant (20 GiB).
    #[arg(long, env = "RUNTA_QUOTA_CHECKPOINT_BYTES", default_value_t = 20 << 30)]
    pub quota_checkpoint_bytes: u64,
    /// Default quota: PIDs per tenant, summed over its live runtimes' process
    /// limits (64 runtimes of 1,024).
    #[arg(long, env = "RUNTA_QUOTA_PIDS", default_value_t = 65_536)]
    pub quota_pids: u64,
    /// Memory that runtimes may reserve in total; default host memory × overcommit.
    #[arg(long, env = "RUNTA_CAPACITY_MEMORY_MIB")]
    pub capacity_memory_mib: Option<u64>,
    #[arg(long, default_value_t = 1.0)]
    pub memory_overcommit: f64,
    /// Disk quota (GiB) for runtimes that do not ask for one; 0 = unlimited.
    #[arg(long, env = "RUNTA_DEFAULT_DISK_GIB", default_value_t = 0)]
    pub default_disk_gib: u64,
    /// Largest file `GET /v1/runtimes/{id}/files` serves (bytes; a larger one is
    /// a 413, `max_bytes` reads a prefix). Default 1 GiB, like uploads.
    #[arg(long, env = "RUNTA_MAX_DOWNLOAD_BYTES", default_value_t = 1 << 30)]
    pub max_download_bytes: u64,
    /// Seconds between SIGTERM and SIGKILL on stop.
    #[arg(long, default_value_t = 10)]
    pub stop_grace_secs: u64,
    /// Turn the default seccomp profile off (debugging only).
    #[arg(long)]
    pub no_seccomp: bool,
    /// Leave the host's cgroup options alone. By default runtad remounts the
    /// host's cgroup2 hierarchy with `favordynmods` (Linux ≥ 6.0), which takes
    /// about 10 ms off every create; see docs/operations.md.
    #[arg(long, env = "RUNTA_NO_HOST_TUNING")]
    pub no_host_tuning: bool,
    /// Do not build the base image at start-up (it is built on first use).
    #[arg(long)]
    pub no_prebuild: bool,
    /// A hosts(5) file the egress gateway reads before the system resolver
    /// (re-read every 2 s): names in it may point into private ranges.
    #[arg(long, env = "RUNTA_EGRESS_HOSTS")]
    pub egress_hosts: Option<PathBuf>,
    /// A PEM file of CA certificates the egress gateway trusts for upstreams
    /// of secret injection, besides the host's trust store (tests, private
    /// upstreams).
    #[arg(long, env = "RUNTA_EGRESS_UPSTREAM_CA")]
    pub egress_upstream_ca: Option<PathBuf>,
    /// The key that seals secret values at rest (a file of mode 0600). Default:
    /// `<data dir>/secrets.key`, created on the first start. Given, it must exist.
    #[arg(long, env = "RUNTA_SECRETS_KEY_FILE")]
    pub secrets_key_file: Option<PathBuf>,
    /// Published ports answer at `<uuid>.<domain>`.
    #[arg(long, env = "RUNTA_INGRESS_DOMAIN", default_value = "runta.localhost")]
    pub ingress_domain: String,
    /// Port of the HTTPS ingress in published URLs; default: the port of
    /// `--ingress-listen-https` (set it when a proxy maps e.g. 443 to it).
    #[arg(long, env = "RUNTA_INGRESS_HTTPS_PORT")]
    pub ingress_https_port: Option<u16>,
    /// Port of the plain-HTTP ingress in published URLs; default: the port of
    /// `--ingress-listen-http`.
    #[arg(long, env = "RUNTA_INGRESS_HTTP_PORT")]
    pub ingress_http_port: Option<u16>,
    /// Address of the HTTPS ingress; `off` disables it. Default
    /// `127.0.0.1:<--ingress-https-port or 8443>`.
    #[arg(long, env = "RUNTA_INGRESS_LISTEN_HTTPS")]
    pub ingress_listen_https: Option<String>,
    /// Address of the plain-HTTP ingress; `off` disables it. Default
    /// `127.0.0.1:<--ingress-http-port or 8081>`.
    #[arg(long, env = "RUNTA_INGRESS_LISTEN_HTTP")]
    pub ingress_listen_http: Option<String>,
    /// PEM certificate chain for the HTTPS ingress (with `--tls-key`); without
    /// it runtad makes its own CA under `<data-dir>/ingress/`.
    #[arg(long, env = "RUNTA_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `--tls-cert`.
    #[arg(long, env = "RUNTA_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Buffered execs running at once in the whole daemon; more is a 503.
    #[arg(long, env = "RUNTA_EXEC_MAX_CONCURRENT", default_value_t = crate::manager::exec_output::DEFAULT_EXEC_MAX_CONCURRENT)]
    pub exec_max_concurrent: usize,
    /// Buffered execs one tenant may run at once; more is a 429.
    #[arg(long, env = "RUNTA_EXEC_MAX_PER_TENANT", default_value_t = crate::manager::exec_output::DEFAULT_EXEC_MAX_PER_TENANT)]
    pub exec_max_per_tenant: usize,
    /// Memory (MiB) all buffered exec replies may hold together; output
    /// beyond it is cut and flagged truncated (docs/security.md, item 7).
    #[arg(long, env = "RUNTA_EXEC_BUFFER_MIB", default_value_t = crate::manager::exec_output::DEFAULT_EXEC_BUFFER_MIB)]
    pub exec_buffer_mib: u64,
    /// Seconds a client has to send a request's headers (and how long an
    /// idle keep-alive connection stays open), API and ingress.
    #[arg(long, env = "RUNTA_HTTP_HEADER_TIMEOUT_SECS", default_value_t = crate::serve::DEFAULT_HEADER_TIMEOUT_SECS)]
    pub http_header_timeout_secs: u64,
    /// Seconds a request body may go without a byte while the API waits for it.
    #[arg(long, env = "RUNTA_HTTP_BODY_IDLE_SECS", default_value_t = crate::serve::DEFAULT_BODY_IDLE_SECS)]
    pub http_body_idle_secs: u64,
    /// Open connections per listener in total; default: from the file
    /// descriptor limit (half of it, 64..16384).
    #[arg(long, env = "RUNTA_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Open connections from one peer address per listener.
    #[arg(long, env = "RUNTA_MAX_CONNECTIONS_PER_PEER", default_value_t = crate::serve::DEFAULT_MAX_CONNECTIONS_PER_PEER)]
    pub max_connections_per_peer: usize,
    /// Build the base image into the image store, then exit (for install scripts).
    #[arg(long)]
    pub prepare_image: bool,
    /// Log as JSON lines instead of text.
    #[arg(long, env = "RUNTA_LOG_JSON")]
    pub log_json: bool,
}

/// One ingress listener: where it binds and which port its URLs name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngressListen {
    /// `None` when turned `off`.
    pub bind: Option<String>,
    pub public_port: u16,
}

impl Config {
    pub fn http_timeouts(&self) -> crate::serve::HttpTimeouts {
        crate::serve::HttpTimeouts {
            header: std::time::Duration::from_secs(self.http_header_timeout_secs.max(1)),
            body_idle: std::time::Duration::from_secs(self.http_body_idle_secs.max(1)),
        }
    }

    pub fn ingress_https(&self) -> IngressListen {
        ingress_listen(
            self.ingress_listen_https.as_deref(),
            self.ingress_https_port,
            8443,
        )
    }

    pub fn ingress_http(&self) -> IngressListen {
        ingress_listen(
            self.ingress_listen_http.as_deref(),
            self.ingress_http_port,
            8081,
        )
    }
}

/// Keeps the listen address and the port in URLs consistent: either one given
/// defaults the other.
fn ingress_listen(listen: Option<&str>, port: Option<u16>, default_port: u16) -> IngressListen {
    match listen {
        Some("off") | Some("") => IngressListen {
            bind: None,
            public_port: port.unwrap_or(default_port),
        },
        Some(addr) => IngressListen {
            bind: Some(addr.to_string()),
            public_port: port
                .or_else(|| addr.rsplit_once(':').and_then(|(_, p)| p.parse().ok()))
                .unwrap_or(default_port),
        },
        None => {
            let p = port.unwrap_or(default_port);
            IngressListen {
                bind: Some(format!("127.0.0.1:{p}")),
                public_port: p,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_oci_runtime_is_a_startup_error() {
        for ok in ["crun", "runc"] {
            let c = Config::try_parse_from(["runtad", "--oci-runtime", ok]).unwrap();
            assert_eq!(c.oci_runtime.as_deref(), Some(ok));
        }
        let e = Config::try_parse_from(["runtad", "--oci-runtime", "kata"]).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("--oci-runtime") && msg.contains("kata"),
            "{msg}"
        );
        assert!(msg.contains("crun") && msg.contains("runc"), "{msg}");
    }

    #[test]
    fn ingress_listen_and_url_port_follow_each_other() {
        let d = ingress_listen(None, None, 8443);
        assert_eq!(d.bind.as_deref(), Some("127.0.0.1:8443"));
        assert_eq!(d.public_port, 8443);
        let l = ingress_listen(Some("0.0.0.0:9443"), None, 8443);
        assert_eq!(
            (l.bind.as_deref(), l.public_port),
            (Some("0.0.0.0:9443"), 9443)
        );
        let p = ingress_listen(None, Some(9444), 8443);
        assert_eq!(
            (p.bind.as_deref(), p.public_port),
            (Some("127.0.0.1:9444"), 9444)
        );
        let both = ingress_listen(Some("[::]:8443"), Some(443), 8443);
        assert_eq!(
            (both.bind.as_deref(), both.public_port),
            (Some("[::]:8443"), 443)
        );
        assert_eq!(ingress_listen(Some("off"), None, 8081).bind, None);
    }
}
