//! The runtime manager: the state machine between the API and the backend.
//!
//! It validates requests, keeps the store true, serialises lifecycle changes per
//! runtime, checks capacity, allocates addresses and drives the [`Backend`]. The
//! API layer calls one method per request; the backend never calls back up.

mod admission;
mod apply;
pub mod builds;
mod checkpoints;
mod commit;
mod egress;
mod exec;
pub mod exec_output;
mod exec_session;
mod files;
mod images;
mod lifecycle;
mod monitor;
mod reconcile;
pub mod secrets;
mod tenants;
#[cfg(test)]
mod tests;
mod transition;
mod trust;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use runta_api::{
    PublishedPort, ResourceLimits, ResourceRequests, ResourceUsage, Resources, Runtime,
    RuntimeStatus,
};
use runta_backend::Backend;
use uuid::Uuid;

/// The runtime listing's filter, which the API builds from its query.
pub use crate::store::ListFilter;
pub use apply::Change;
pub use builds::MAX_BUILD_CONTEXT;
pub use exec::{EncodedExec, ExecGuard};
pub use exec_session::{ExecInput, ExecOutput, ExecProcess, ExecSession, ExecStart};
pub use files::{FileDownload, FileUpload};
pub use runta_api::Action;

use crate::agent_client::AgentError;
use crate::metrics::Metrics;
use crate::store::{RuntimeRecord, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    #[error("{0}")]
    ResourceExhausted(String),
    /// The tenant's quota is used up (429); `ResourceExhausted` is the machine's.
    #[error("{0}")]
    QuotaExceeded(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    Internal(String),
    /// Too many requests of one caller at once (429).
    #[error("{0}")]
    RateLimited(String),
    /// A call inside the runtime ran past its deadline (504).
    #[error("{0}")]
    DeadlineExceeded(String),
    /// The caller's token stopped being valid during a long session (401).
    #[error("{0}")]
    Unauthenticated(String),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl From<runta_api::validate::FieldError> for Error {
    fn from(e: runta_api::validate::FieldError) -> Self {
        Error::Invalid {
            field: e.field,
            message: e.message,
        }
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(what) => Error::AlreadyExists(format!("{what} already exists")),
            StoreError::Full => Error::ResourceExhausted(
                "the daemon's data disk is full; free space and retry".into(),
            ),
            other => Error::Internal(other.to_string()),
        }
    }
}

impl From<runta_backend::BackendError> for Error {
    fn from(e: runta_backend::BackendError) -> Self {
        use runta_backend::BackendError as B;
        match e {
            B::ImageNotFound(name) => {
                Error::invalid("image", format!("image {name:?} does not exist"))
            }
            B::Capacity(m) => Error::ResourceExhausted(m),
            B::ImageBuild(name, why) => {
                Error::Unavailable(format!("image {name:?} could not be built: {why}"))
            }
            other => Error::Internal(other.to_string()),
        }
    }
}

impl From<AgentError> for Error {
    fn from(e: AgentError) -> Self {
        match e {
            AgentError::Unreachable(io) => Error::Unavailable(format!(
                "the runtime's agent is not reachable ({io}); the runtime may have crashed"
            )),
            AgentError::Protocol(m) => Error::Internal(format!("agent protocol error: {m}")),
            AgentError::Closed => Error::Unavailable(
                "the runtime's agent went away during the call; the runtime may have stopped or crashed"
                    .into(),
            ),
            AgentError::Impostor(m) => {
                tracing::warn!("refused to talk to an impostor agent: {m}");
                Error::Unavailable(format!("the runtime's agent could not be verified: {m}"))
            }
            AgentError::Refused { kind, message } => match kind.as_str() {
                "not_found" => Error::NotFound(message),
                "permission_denied" => Error::PermissionDenied(message),
                "is_directory" | "not_directory" | "invalid_argument" | "too_large" => {
                    Error::invalid("path", message)
                }
                _ => Error::Internal(message),
            },
        }
    }
}

/// Settings the manager needs from the daemon's configuration.
#[derive(Debug, Clone)]
pub struct ManagerConfig {
    /// Sum of memory limits of live runtimes may not exceed this.
    pub capacity_memory_mib: u64,
    /// The machine's memory: no runtime's limit may be above it.
    pub host_memory_mib: u64,
    /// Process limit of every runtime (what admission counts per live runtime).
    pub pids_limit: u64,
    /// Quota of tenants the admin gave no values of their own.
    pub quota_defaults: runta_api::TenantQuota,
    /// Largest vCPU request one runtime may make.
    pub host_cpus: f64,
    pub stop_grace: Duration,
    pub default_image: String,
    pub default_vcpus: f64,
    pub default_memory_mib: u64,
    /// Disk quota for runtimes that ask for none (`None`: unlimited).
    pub default_disk_gib: Option<u64>,
    /// Ingress domain and public ports, for the URLs of published ports.
    pub ingress_domain: String,
    pub ingress_https_port: u16,
    pub ingress_http_port: u16,
    /// Address math of the runtime network (the backend owns the network itself).
    pub network: runta_backend::network::Network,
    /// Limits and deadline of image builds.
    pub builds: builds::BuildSettings,
}

/// Per-runtime activity, for the idle policy and `/metrics`.
#[derive(Debug, Clone, Copy)]
pub struct Activity {
    pub in_flight: u32,
    pub last_active: Instant,
}

pub struct Manager {
    store: Arc<Store>,
    backend: Arc<dyn Backend>,
    cfg: ManagerConfig,
    /// One lock per runtime: lifecycle changes of a runtime never interleave.
    locks: Mutex<HashMap<Uuid, Arc<tokio::sync::Mutex<()>>>>,
    /// Serialises capacity checks, address allocation and record insertion.
    admission: tokio::sync::Mutex<()>,
    activity: Mutex<HashMap<Uuid, Activity>>,
    oom_seen: Mutex<HashMap<Uuid, u64>>,
    pub metrics: Arc<Metrics>,
    /// Admission and output memory of buffered execs.
    pub exec_gate: Arc<exec_output::ExecGate>,
    /// Enforcement of egress policies (idle unless a runtime has one).
    egress: Arc<crate::egress::Egress>,
    /// Bumped whenever a token is revoked or rotated: long-lived sessions
    /// (exec WebSockets) check their own token again and end if it is gone.
    tokens_changed: tokio::sync::watch::Sender<u64>,
    /// Secrets and their bindings (`secrets.rs`); the hub is what the egress
    /// gateway reads.
    secrets: secrets::SecretsState,
    /// The OCI image store (`src/images/`); unset in logic tests, where only
    /// built-in images exist.
    images: std::sync::OnceLock<Arc<crate::images::Images>>,
}

impl Manager {
    pub fn new(
        store: Arc<Store>,
        backend: Arc<dyn Backend>,
        cfg: ManagerConfig,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        Arc::new(Manager {
            store,
            backend,
            egress: Arc::new(crate::egress::Egress::new(&cfg.network)),
            cfg,
            locks: Mutex::new(HashMap::new()),
            admission: tokio::sync::Mutex::new(()),
            activity: Mutex::new(HashMap::new()),
            oom_seen: Mutex::new(HashMap::new()),
            metrics,
            exec_gate: Arc::default(),
            tokens_changed: tokio::sync::watch::Sender::new(0),
            secrets: Default::default(),
            images: std::sync::OnceLock::new(),
        })
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    pub fn config(&self) -> &ManagerConfig {
        &self.cfg
    }

    fn network(&self) -> &runta_backend::network::Network {
        &self.cfg.network
    }

    fn lock_for(&self, id: Uuid) -> Arc<tokio::sync::Mutex<()>> {
        self.locks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(id)
            .or_default()
            .clone()
    }

    fn forget(&self, id: Uuid) {
        self.locks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
        self.activity
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
        self.oom_seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
        self.secrets_runtime_forgotten(id);
    }

    /// Finds a runtime of `tenant` by UUID or name; another tenant's is "not found".
    /// The tenant's runtime named `name`, if there is one.
    pub fn find_named(&self, tenant: &str, name: &str) -> Result<Option<RuntimeRecord>> {
        Ok(self.store.find_runtime(tenant, name)?)
    }

    /// A runtime by id, any tenant's (the ingress routes by id).
    pub fn record(&self, id: Uuid) -> Result<Option<RuntimeRecord>> {
        Ok(self.store.get_runtime(id)?)
    }

    pub fn find(&self, tenant: &str, id_or_name: &str) -> Result<RuntimeRecord> {
        self.store
            .find_runtime(tenant, id_or_name)?
            .ok_or_else(|| Error::NotFound(format!("no runtime named {id_or_name:?}")))
    }

    /// Records an entry in the runtime's event list (stored as the kind's string).
    pub fn event(&self, r: &RuntimeRecord, kind: runta_api::EventKind, message: Option<&str>) {
        if let Err(e) = self
            .store
            .add_event(r.id, &r.tenant, kind.as_str(), message)
        {
            tracing::warn!(id = %r.id, "record event {kind}: {e}");
        }
    }

    pub fn published_urls(&self, r: &RuntimeRecord) -> Vec<PublishedPort> {
        r.publish
            .iter()
            .enumerate()
            .map(|(i, p)| {
                // The first published port answers at `<uuid>.<domain>`, every port
                // also at `<port>-<uuid>.<domain>`.
                let host = if i == 0 {
                    format!("{}.{}", r.id, self.cfg.ingress_domain)
                } else {
                    format!("{}-{}.{}", p.port, r.id, self.cfg.ingress_domain)
                };
                let (scheme, port, default) = match p.protocol {
                    runta_api::Protocol::Https => ("https", self.cfg.ingress_https_port, 443),
                    runta_api::Protocol::Http => ("http", self.cfg.ingress_http_port, 80),
                };
                let url = if port == default {
                    format!("{scheme}://{host}")
                } else {
                    format!("{scheme}://{host}:{port}")
                };
                PublishedPort {
                    port: p.port,
                    protocol: p.protocol,
                    url,
                }
            })
            .collect()
    }

    /// The API view of a record, with live usage where the runtime is up.
    pub fn view(&self, r: &RuntimeRecord) -> Runtime {
        let current = if r.status.is_up() {
            let u = self.backend.usage(r.id);
            ResourceUsage {
                memory_mib: r.memory_limit_mib,
                memory_mib_used: u
                    .as_ref()
                    .map(|u| (u.memory_bytes as f64 / (1024.0 * 1024.0) * 100.0).round() / 100.0),
                cpu_seconds: u
                    .as_ref()
                    .map(|u| (u.cpu_nanos as f64 / 1e9 * 1000.0).round() / 1000.0),
            }
        } else {
            ResourceUsage {
                memory_mib: 0,
                memory_mib_used: None,
                cpu_seconds: None,
            }
        };
        let publish = self.published_urls(r);
        Runtime {
            id: r.id,
            name: r.name.clone(),
            tenant: r.tenant.clone(),
            status: r.status,
            desired_status: r.desired_status,
            image: r.image.clone(),
            resources: Resources {
                requests: ResourceRequests {
                    vcpus: r.vcpus,
                    memory_mib: r.memory_mib,
                    disk_gib: r.disk_gib,
                },
                limits: ResourceLimits {
                    memory_mib: r.memory_limit_mib,
                },
                current,
            },
            env: r.env.clone(),
            labels: r.labels.clone(),
            official: runta_api::OfficialRuntimeFields::derive(
                &r.name,
                &publish,
                &r.env,
                r.idle_timeout_secs,
                r.idle_wakeup,
                &r.egress,
            ),
            publish,
            idle_timeout_secs: r.idle_timeout_secs,
            idle_wakeup: r.idle_wakeup,
            ip: Some(r.ip.clone()),
            created_at: r.created_at,
            updated_at: r.updated_at,
            started_at: r.started_at,
            revision: r.revision,
            error: r.error.clone(),
            allowed_actions: runta_api::allowed_actions(r.status),
        }
    }

    /// Marks activity on a runtime now (ingress request, exec, file I/O).
    pub fn touch(&self, id: Uuid) {
        let mut a = self.activity.lock().unwrap_or_else(|e| e.into_inner());
        let e = a.entry(id).or_insert(Activity {
            in_flight: 0,
            last_active: Instant::now(),
        });
        e.last_active = Instant::now();
    }

    pub fn activity(&self, id: Uuid) -> Option<Activity> {
        self.activity
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .copied()
    }

    /// Counts of runtimes per status, for `/metrics`.
    pub fn status_counts(&self) -> Result<HashMap<RuntimeStatus, u64>> {
        let mut m = HashMap::new();
        for r in self.store.list_runtimes(&Default::default())? {
            *m.entry(r.status).or_insert(0) += 1;
        }
        Ok(m)
    }
}
