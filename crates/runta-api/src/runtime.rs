//! Runtime records and the bodies that create and change them.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

pub use crate::status::RuntimeStatus;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Http,
    Https,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Https => "https",
        }
    }
}

/// A port to publish through the ingress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PortSpec {
    pub port: u16,
    #[serde(default = "default_protocol")]
    pub protocol: Protocol,
}

fn default_protocol() -> Protocol {
    Protocol::Https
}

/// A published port as reported on a runtime, with its public URL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PublishedPort {
    pub port: u16,
    pub protocol: Protocol,
    pub url: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RequestsSpec {
    /// CPUs as a CFS quota; fractions allowed (0.5 = half a core).
    pub vcpus: Option<f64>,
    pub memory_mib: Option<u64>,
    pub disk_gib: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitsSpec {
    /// Hard memory limit; defaults to the request.
    pub memory_mib: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResourcesSpec {
    #[serde(default)]
    pub requests: RequestsSpec,
    pub limits: Option<LimitsSpec>,
}

/// `POST /v1/runtimes`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRuntimeRequest {
    /// `[a-z0-9][a-z0-9-]{0,62}`, unique per tenant.
    pub name: String,
    /// Image name; defaults to `base`.
    pub image: Option<String>,
    #[serde(default)]
    pub resources: ResourcesSpec,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub publish: Vec<PortSpec>,
    pub idle_timeout_secs: Option<u64>,
    /// Whether a runtime the idle policy suspended wakes on the next ingress
    /// request or exec (default `true`); `false` = only an explicit start or
    /// resume wakes it (the official `idle_policy.mode = suspend_only`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_wakeup: Option<bool>,
    /// Start from a checkpoint's files instead of a clean image.
    pub checkpoint: Option<String>,
    /// Outbound policy; absent = open (nothing filtered).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress_policy: Option<crate::egress::EgressPolicy>,
}

/// `PATCH /v1/runtimes/{id}`: every field optional; what is given is changed.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateRuntimeRequest {
    pub resources: Option<ResourcesSpec>,
    pub labels: Option<BTreeMap<String, String>>,
    pub publish: Option<Vec<PortSpec>>,
    /// `0` turns the idle policy off.
    pub idle_timeout_secs: Option<u64>,
    /// See [`CreateRuntimeRequest::idle_wakeup`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_wakeup: Option<bool>,
    /// Renames the runtime.
    #[serde(default)]
    pub name: Option<String>,
    /// Replaces the variables every command started from now on gets.
    #[serde(default)]
    pub env: Option<BTreeMap<String, String>>,
    /// Replaces the outbound policy; new connections follow it at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress_policy: Option<crate::egress::EgressPolicy>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ResourceRequests {
    pub vcpus: f64,
    pub memory_mib: u64,
    pub disk_gib: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ResourceLimits {
    pub memory_mib: u64,
}

/// The memory allocated now, and live usage read from the runtime's cgroup
/// when the record is fetched (usage is null while it is not up).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ResourceUsage {
    /// The memory limit applied now; 0 while the runtime is not up.
    pub memory_mib: u64,
    pub memory_mib_used: Option<f64>,
    pub cpu_seconds: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Resources {
    pub requests: ResourceRequests,
    pub limits: ResourceLimits,
    pub current: ResourceUsage,
}

/// The runtime object (docs/api.md, "Runtimes").
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Runtime {
    pub id: Uuid,
    pub name: String,
    pub tenant: String,
    pub status: RuntimeStatus,
    pub desired_status: RuntimeStatus,
    pub image: String,
    pub resources: Resources,
    pub env: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    pub publish: Vec<PublishedPort>,
    pub idle_timeout_secs: Option<u64>,
    /// Whether a runtime suspended for idleness wakes on the next ingress
    /// request or exec; `false` = only an explicit start or resume wakes it.
    pub idle_wakeup: bool,
    /// Private address on the runtime network.
    pub ip: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub revision: u64,
    pub error: Option<String>,
    /// What a caller can do with it now (`crate::status::allowed_actions`), so
    /// clients need no copy of the state machine.
    #[serde(default)]
    pub allowed_actions: Vec<crate::status::Action>,
    /// The official client's spellings of the same record (docs/api.md).
    #[serde(flatten)]
    pub official: crate::compat::OfficialRuntimeFields,
}

/// One entry of `GET /v1/runtimes/{id}/events`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Event {
    pub id: i64,
    pub runtime_id: Uuid,
    /// An [`crate::EventKind`] spelled as a string: `created`, `started`,
    /// `paused`, `resumed`, `stopped`, `resized`, `updated` (labels, published
    /// ports, idle policy), `oom_killed`, `crashed`, `idle_suspended`, `woken`,
    /// `error`, `egress` (a denied destination, at most once a minute per host;
    /// every attempt is in `GET /v1/audits`), `checkpointed`.
    #[serde(rename = "type")]
    pub kind: String,
    pub message: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// An entry of `GET /v1/runtimes/{id}/files/list`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FileEntry {
    pub name: String,
    /// `file`, `dir`, `symlink` or `other`.
    #[serde(rename = "type")]
    pub kind: String,
    pub size: u64,
    pub mode: u32,
}

/// `POST /v1/runtimes/{id}/checkpoints`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCheckpointRequest {
    /// Same rules as runtime names; unique per tenant.
    pub name: String,
}

/// `POST /v1/runtimes/{id}/checkpoints` as it arrives: the official client may
/// leave out the name (one is generated) and sends `kind: "full"`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCheckpointBody {
    pub name: Option<String>,
    pub kind: Option<crate::compat::CheckpointKind>,
}

/// A saved copy of a runtime's files; new runtimes can start from it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Checkpoint {
    pub id: Uuid,
    pub name: String,
    pub tenant: String,
    /// The runtime it was taken from (which may since have been deleted).
    pub source_runtime_id: Uuid,
    pub source_runtime_name: String,
    pub image: String,
    /// Bytes of its own layer (forks share it; they do not copy it).
    pub size_bytes: u64,
    pub created_at: DateTime<Utc>,
    /// = `name` (official spelling).
    pub display_name: String,
    /// Always `ready`: a checkpoint is listed once its copy is complete.
    pub state: crate::compat::CheckpointState,
    pub kind: crate::compat::CheckpointKind,
    /// What a runtime restored from it gets unless its create says otherwise
    /// (the daemon's defaults).
    /// (`current` is all zero: a checkpoint runs nothing).
    pub resources: Resources,
}
