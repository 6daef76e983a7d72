//! `deployment.json` (docs/api.md, "Deployment") and the apply / delete plans.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::Runtime;

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Deployment {
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    pub kind: String,
    pub sandboxes: Vec<SandboxSpec>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SandboxSpec {
    pub name: String,
    pub image: Option<String>,
    #[serde(default)]
    pub resources: SandboxResources,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// `"8080/https"` or `"8080/http"` (or a bare port: https).
    #[serde(default)]
    pub publish: Vec<String>,
    pub idle_timeout_secs: Option<u64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SandboxResources {
    pub vcpus: Option<f64>,
    pub memory_mib: Option<u64>,
    pub disk_gib: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PlanAction {
    Created,
    Updated,
    Unchanged,
    Deleted,
    NotFound,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PlanLine {
    pub name: String,
    pub action: PlanAction,
    /// What changed, for `updated`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<String>,
    pub runtime: Option<Runtime>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ApplyResult {
    pub plan: Vec<PlanLine>,
}
