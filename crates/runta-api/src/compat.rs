//! The official Runta v1 spellings (what the `runta-sdk` client sends and parses),
//! mapped onto Runta's own fields at the edge. One record, two spellings: the
//! official fields are derived from ours on the way out and folded into ours on
//! the way in, so there is never a second source of truth. The field map is in
//! `docs/api.md` ("Compatibility with the official client").

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::validate::FieldError;
use crate::{
    CreateRuntimeRequest, PortSpec, Protocol, PublishedPort, ResourcesSpec, UpdateRuntimeRequest,
};

/// `{protocol, runtime_port}`: the official spelling of a published port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IngressSpec {
    pub protocol: Protocol,
    pub runtime_port: u16,
}

impl From<IngressSpec> for PortSpec {
    fn from(s: IngressSpec) -> Self {
        PortSpec {
            port: s.runtime_port,
            protocol: s.protocol,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EgressMode {
    Allowlist,
    Denylist,
}

/// An egress policy as either client version sends it: 0.1.1 `{enabled,
/// allowed_hosts}`, 0.1.21 `{mode, allowed_hosts, denied_hosts}`. Entries that
/// are not hosts (URLs, paths, ports) fail while the body is read: a 400 naming
/// the entry. It replaces the whole policy.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EgressPolicyRequest {
    pub enabled: Option<bool>,
    pub mode: Option<EgressMode>,
    #[schema(value_type = Option<Vec<String>>)]
    pub allowed_hosts: Option<Vec<crate::egress::HostEntry>>,
    #[schema(value_type = Option<Vec<String>>)]
    pub denied_hosts: Option<Vec<crate::egress::HostEntry>>,
}

impl EgressPolicyRequest {
    /// The one policy this asks for. `enabled: true` is an allowlist,
    /// `enabled: false` (or nothing) a denylist; contradicting `mode` is 422.
    pub fn fold(self, field: &str) -> Result<crate::egress::EgressPolicy, FieldError> {
        let mode = match (self.enabled, self.mode) {
            (Some(true), Some(EgressMode::Denylist)) | (Some(false), Some(EgressMode::Allowlist)) => {
                return Err(FieldError::new(
                    format!("{field}.enabled"),
                    "contradicts mode: enabled true is mode allowlist, enabled false is mode denylist; give one of them",
                ))
            }
            (_, Some(m)) => m,
            (Some(true), None) => EgressMode::Allowlist,
            _ => EgressMode::Denylist,
        };
        let allowed_hosts = dedup(self.allowed_hosts.unwrap_or_default());
        let denied_hosts = dedup(self.denied_hosts.unwrap_or_default());
        for (name, v) in [
            ("allowed_hosts", &allowed_hosts),
            ("denied_hosts", &denied_hosts),
        ] {
            if v.len() > crate::egress::MAX_EGRESS_ENTRIES {
                return Err(FieldError::new(
                    format!("{field}.{name}"),
                    format!("at most {} entries", crate::egress::MAX_EGRESS_ENTRIES),
                ));
            }
        }
        Ok(crate::egress::EgressPolicy {
            mode,
            allowed_hosts,
            denied_hosts,
        })
    }
}

fn dedup(mut v: Vec<crate::egress::HostEntry>) -> Vec<crate::egress::HostEntry> {
    let mut seen = std::collections::HashSet::new();
    v.retain(|e| seen.insert(e.as_str().to_string()));
    v
}

pub use crate::egress::EgressPolicyView;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum IdleMode {
    /// Never suspended for idleness.
    Disabled,
    /// Suspended after `suspend_after_secs`; woken only by an explicit start/resume.
    SuspendOnly,
    /// Suspended after `suspend_after_secs`; woken by the next request or exec.
    SuspendAndWakeup,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IdlePolicy {
    pub mode: IdleMode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspend_after_secs: Option<u64>,
}

impl IdlePolicy {
    /// The policy as our `idle_timeout_secs` (`0` = off) and `idle_wakeup`
    /// (`None` when the mode leaves it as it is: `disabled`).
    fn fold(&self, field: &str) -> Result<(u64, Option<bool>), FieldError> {
        let after = || match self.suspend_after_secs {
            Some(0) | None => Err(FieldError::new(
                format!("{field}.suspend_after_secs"),
                "must be a number of seconds greater than 0",
            )),
            Some(t) => Ok(t),
        };
        match self.mode {
            IdleMode::Disabled => Ok((0, None)),
            IdleMode::SuspendAndWakeup => Ok((after()?, Some(true))),
            IdleMode::SuspendOnly => Ok((after()?, Some(false))),
        }
    }

    /// What a runtime answers for `idle_policy`, from `idle_timeout_secs` and
    /// `idle_wakeup`.
    pub fn from_record(t: Option<u64>, wakeup: bool) -> Self {
        match t {
            Some(t) if t > 0 => IdlePolicy {
                mode: if wakeup {
                    IdleMode::SuspendAndWakeup
                } else {
                    IdleMode::SuspendOnly
                },
                suspend_after_secs: Some(t),
            },
            _ => IdlePolicy {
                mode: IdleMode::Disabled,
                suspend_after_secs: None,
            },
        }
    }
}

/// The hosted product's token-saving switches; accepted and answered `false`
/// (not offered by runtad).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenSavingPolicyRequest {
    pub json_array_enabled: Option<bool>,
    pub log_enabled: Option<bool>,
    pub search_results_enabled: Option<bool>,
    pub git_diff_enabled: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TokenSavingPolicy {
    pub json_array_enabled: bool,
    pub log_enabled: bool,
    pub search_results_enabled: bool,
    pub git_diff_enabled: bool,
}

/// The official fields of a runtime, derived from the record's own fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct OfficialRuntimeFields {
    /// = `name`.
    pub display_name: String,
    /// = `publish`, without URLs.
    pub ingress_specs: Vec<IngressSpec>,
    /// = `env`.
    pub environment_variables: BTreeMap<String, String>,
    /// The runtime's egress policy in both spellings.
    pub egress_policy: EgressPolicyView,
    /// = `idle_timeout_secs` and `idle_wakeup`.
    pub idle_policy: IdlePolicy,
    /// No SSH server is offered.
    pub ssh_enabled: bool,
    /// Not offered: always false.
    pub llm_tool_io_capture_enabled: bool,
    /// Not offered: always false.
    pub llm_token_saving_policy: TokenSavingPolicy,
}

impl OfficialRuntimeFields {
    pub fn derive(
        name: &str,
        publish: &[PublishedPort],
        env: &BTreeMap<String, String>,
        idle_timeout_secs: Option<u64>,
        idle_wakeup: bool,
        egress: &crate::egress::EgressPolicy,
    ) -> Self {
        Self {
            display_name: name.to_string(),
            ingress_specs: publish
                .iter()
                .map(|p| IngressSpec {
                    protocol: p.protocol,
                    runtime_port: p.port,
                })
                .collect(),
            environment_variables: env.clone(),
            egress_policy: EgressPolicyView::of(egress),
            idle_policy: IdlePolicy::from_record(idle_timeout_secs, idle_wakeup),
            ssh_enabled: false,
            llm_tool_io_capture_enabled: false,
            llm_token_saving_policy: TokenSavingPolicy::default(),
        }
    }
}

/// `POST /v1/runtimes` as it arrives: Runta's own fields and the official
/// client's, both optional where one of them may carry the value. Folded into
/// one [`CreateRuntimeRequest`] by [`CreateRuntimeBody::into_request`].
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRuntimeBody {
    /// `[a-z0-9][a-z0-9-]{0,62}`; generated (`rt-…`) when absent or null.
    pub name: Option<String>,
    pub image: Option<String>,
    pub resources: Option<ResourcesSpec>,
    pub env: Option<BTreeMap<String, String>>,
    /// Official spelling of `env`.
    pub environment_variables: Option<BTreeMap<String, String>>,
    pub labels: Option<BTreeMap<String, String>>,
    pub publish: Option<Vec<PortSpec>>,
    /// Official spelling of `publish`.
    pub ingress_specs: Option<Vec<IngressSpec>>,
    pub idle_timeout_secs: Option<u64>,
    /// `false`: a runtime suspended for idleness wakes only on start/resume.
    pub idle_wakeup: Option<bool>,
    /// 0.1.1 spelling of `idle_timeout_secs`.
    pub idle_suspend_after_secs: Option<u64>,
    /// 0.1.21 spelling of the idle policy (`idle_timeout_secs` + `idle_wakeup`).
    pub idle_policy: Option<IdlePolicy>,
    pub checkpoint: Option<String>,
    /// Official spelling of `checkpoint`.
    pub checkpoint_id: Option<String>,
    /// Replaced whole; default open.
    pub egress_policy: Option<EgressPolicyRequest>,
    /// Agent presets cannot be installed here: a value is 422.
    pub runtime_agent: Option<String>,
    pub runtime_agent_post_install_script: Option<String>,
    pub runtime_agent_post_config_script: Option<String>,
    pub runtime_agent_secret_preset: Option<String>,
    /// Accepted; not offered (answered `false`).
    pub llm_tool_io_capture_enabled: Option<bool>,
    /// Accepted; not offered (answered all `false`).
    pub llm_token_saving_policy: Option<TokenSavingPolicyRequest>,
}

/// Takes one value given under either of two names; both is a 422 unless equal.
fn one_of<T: PartialEq>(
    ours: Option<T>,
    ours_name: &str,
    theirs: Option<T>,
    theirs_name: &str,
) -> Result<Option<T>, FieldError> {
    match (ours, theirs) {
        (Some(a), Some(b)) if a != b => Err(FieldError::new(
            theirs_name,
            format!("{theirs_name} and {ours_name} name the same setting; give one of them"),
        )),
        (Some(a), _) => Ok(Some(a)),
        (None, b) => Ok(b),
    }
}

impl CreateRuntimeBody {
    /// Folds both spellings into Runta's own request. `generated_name` is used
    /// when the body names no runtime.
    pub fn into_request(
        self,
        generated_name: impl FnOnce() -> String,
    ) -> Result<CreateRuntimeRequest, FieldError> {
        for (field, v) in [
            ("runtime_agent", &self.runtime_agent),
            (
                "runtime_agent_post_install_script",
                &self.runtime_agent_post_install_script,
            ),
            (
                "runtime_agent_post_config_script",
                &self.runtime_agent_post_config_script,
            ),
            (
                "runtime_agent_secret_preset",
                &self.runtime_agent_secret_preset,
            ),
        ] {
            if v.is_some() {
                return Err(FieldError::new(
                    field,
                    "runtime agent presets are not available on a self-hosted runtad; install the agent with exec after create",
                ));
            }
        }
        let egress = self
            .egress_policy
            .map(|p| p.fold("egress_policy"))
            .transpose()?;
        let env = one_of(
            self.env,
            "env",
            self.environment_variables,
            "environment_variables",
        )?;
        let publish = one_of(
            self.publish,
            "publish",
            self.ingress_specs
                .map(|v| v.into_iter().map(PortSpec::from).collect()),
            "ingress_specs",
        )?;
        let checkpoint = one_of(
            self.checkpoint,
            "checkpoint",
            self.checkpoint_id,
            "checkpoint_id",
        )?;
        let policy = self
            .idle_policy
            .map(|p| p.fold("idle_policy"))
            .transpose()?;
        let idle = one_of(
            self.idle_timeout_secs,
            "idle_timeout_secs",
            self.idle_suspend_after_secs,
            "idle_suspend_after_secs",
        )?;
        let idle = one_of(
            idle,
            "idle_timeout_secs",
            policy.map(|p| p.0),
            "idle_policy",
        )?;
        let idle_wakeup = one_of(
            self.idle_wakeup,
            "idle_wakeup",
            policy.and_then(|p| p.1),
            "idle_policy",
        )?;
        Ok(CreateRuntimeRequest {
            name: self.name.unwrap_or_else(generated_name),
            image: self.image,
            resources: self.resources.unwrap_or_default(),
            env: env.unwrap_or_default(),
            labels: self.labels.unwrap_or_default(),
            publish: publish.unwrap_or_default(),
            idle_timeout_secs: idle,
            idle_wakeup,
            checkpoint,
            egress_policy: egress,
        })
    }
}

/// `PATCH /v1/runtimes/{id}` as it arrives, both spellings.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateRuntimeBody {
    pub resources: Option<ResourcesSpec>,
    pub labels: Option<BTreeMap<String, String>>,
    pub publish: Option<Vec<PortSpec>>,
    /// Official spelling of `publish`.
    pub ingress_specs: Option<Vec<IngressSpec>>,
    /// `0` turns the idle policy off.
    pub idle_timeout_secs: Option<u64>,
    /// `false`: a runtime suspended for idleness wakes only on start/resume.
    pub idle_wakeup: Option<bool>,
    /// Official spelling of the idle policy (`idle_timeout_secs` + `idle_wakeup`).
    pub idle_policy: Option<IdlePolicy>,
    /// Renames the runtime (its ingress host name follows).
    pub name: Option<String>,
    /// Official spelling of `name`.
    pub display_name: Option<String>,
    /// Replaces the runtime's variables for every command started from now on.
    pub env: Option<BTreeMap<String, String>>,
    /// Official spelling of `env`.
    pub environment_variables: Option<BTreeMap<String, String>>,
    /// Replaces the whole policy, live.
    pub egress_policy: Option<EgressPolicyRequest>,
    /// Accepted; not offered.
    pub llm_tool_io_capture_enabled: Option<bool>,
    /// Accepted; not offered.
    pub llm_token_saving_policy: Option<TokenSavingPolicyRequest>,
}

impl UpdateRuntimeBody {
    pub fn into_request(self) -> Result<UpdateRuntimeRequest, FieldError> {
        let egress = self
            .egress_policy
            .map(|p| p.fold("egress_policy"))
            .transpose()?;
        let policy = self
            .idle_policy
            .map(|p| p.fold("idle_policy"))
            .transpose()?;
        Ok(UpdateRuntimeRequest {
            resources: self.resources,
            labels: self.labels,
            publish: one_of(
                self.publish,
                "publish",
                self.ingress_specs
                    .map(|v| v.into_iter().map(PortSpec::from).collect()),
                "ingress_specs",
            )?,
            idle_timeout_secs: one_of(
                self.idle_timeout_secs,
                "idle_timeout_secs",
                policy.map(|p| p.0),
                "idle_policy",
            )?,
            idle_wakeup: one_of(
                self.idle_wakeup,
                "idle_wakeup",
                policy.and_then(|p| p.1),
                "idle_policy",
            )?,
            name: one_of(self.name, "name", self.display_name, "display_name")?,
            env: one_of(
                self.env,
                "env",
                self.environment_variables,
                "environment_variables",
            )?,
            egress_policy: egress,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CheckpointKind {
    /// The runtime's whole file system (the only kind).
    Full,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CheckpointState {
    Creating,
    Ready,
    Failed,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(v: serde_json::Value) -> CreateRuntimeBody {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn official_create_folds_into_ours() {
        let b = body(serde_json::json!({
            "name": "w", "resources": {"requests": {"vcpus": 2, "memory_mib": 256}, "limits": {"memory_mib": 256}},
            "ingress_specs": [{"protocol": "https", "runtime_port": 8080}],
            "egress_policy": {"mode": "denylist", "allowed_hosts": [], "denied_hosts": []},
            "idle_policy": {"mode": "suspend_and_wakeup", "suspend_after_secs": 30},
            "environment_variables": {"A": "1"}, "checkpoint_id": "c1",
            "llm_tool_io_capture_enabled": true
        }));
        let r = b.into_request(|| unreachable!()).unwrap();
        assert_eq!(
            r.publish,
            vec![PortSpec {
                port: 8080,
                protocol: Protocol::Https
            }]
        );
        assert_eq!(r.env.get("A").map(String::as_str), Some("1"));
        assert_eq!(r.idle_timeout_secs, Some(30));
        assert_eq!(r.idle_wakeup, Some(true));
        assert_eq!(r.checkpoint.as_deref(), Some("c1"));
    }

    #[test]
    fn suspend_only_is_a_timeout_without_wakeup_and_reads_back() {
        let r = body(
            serde_json::json!({"idle_policy": {"mode": "suspend_only", "suspend_after_secs": 7}}),
        )
        .into_request(|| "x".into())
        .unwrap();
        assert_eq!((r.idle_timeout_secs, r.idle_wakeup), (Some(7), Some(false)));
        let p = IdlePolicy::from_record(Some(7), false);
        assert_eq!(
            serde_json::to_value(p).unwrap(),
            serde_json::json!({"mode": "suspend_only", "suspend_after_secs": 7})
        );
        assert_eq!(
            IdlePolicy::from_record(None, false).mode,
            IdleMode::Disabled
        );
        let u = UpdateRuntimeBody {
            idle_policy: Some(IdlePolicy {
                mode: IdleMode::SuspendAndWakeup,
                suspend_after_secs: Some(3),
            }),
            ..Default::default()
        }
        .into_request()
        .unwrap();
        assert_eq!((u.idle_timeout_secs, u.idle_wakeup), (Some(3), Some(true)));
    }

    #[test]
    fn egress_both_shapes_fold_to_one_policy() {
        let fold = |v: serde_json::Value| {
            serde_json::from_value::<EgressPolicyRequest>(v)
                .unwrap()
                .fold("egress_policy")
        };
        for open in [
            serde_json::json!({"enabled": false, "allowed_hosts": []}),
            serde_json::json!({"mode": "denylist", "allowed_hosts": [], "denied_hosts": []}),
            serde_json::json!({}),
        ] {
            assert!(fold(open.clone()).unwrap().is_open(), "{open}");
        }
        let a = fold(serde_json::json!({"enabled": true, "allowed_hosts": ["A.test", "a.test"]}))
            .unwrap();
        assert_eq!(a.mode, EgressMode::Allowlist);
        assert_eq!(EgressPolicyView::of(&a).allowed_hosts, vec!["a.test"]);
        assert!(EgressPolicyView::of(&a).enabled);
        let d =
            fold(serde_json::json!({"mode": "denylist", "denied_hosts": ["10.0.0.0/8"]})).unwrap();
        assert!(!d.is_open());
        assert!(!EgressPolicyView::of(&d).enabled);
        assert!(fold(serde_json::json!({"enabled": true, "mode": "denylist"})).is_err());
        assert!(fold(serde_json::json!({"enabled": false, "mode": "allowlist"})).is_err());
        let url = serde_json::from_value::<EgressPolicyRequest>(
            serde_json::json!({"mode": "allowlist", "allowed_hosts": ["https://a.test/x"]}),
        );
        assert!(url.unwrap_err().to_string().contains("https://a.test/x"));
    }

    #[test]
    fn refusals_name_the_field() {
        let e = body(serde_json::json!({"runtime_agent": "codex"}))
            .into_request(|| "x".into())
            .unwrap_err();
        assert_eq!(e.field, "runtime_agent");
        let e = body(serde_json::json!({"idle_policy": {"mode": "suspend_only"}}))
            .into_request(|| "x".into())
            .unwrap_err();
        assert_eq!(e.field, "idle_policy.suspend_after_secs");
        let e = body(serde_json::json!({"idle_wakeup": true,
            "idle_policy": {"mode": "suspend_only", "suspend_after_secs": 5}}))
        .into_request(|| "x".into())
        .unwrap_err();
        assert_eq!(e.field, "idle_policy");
        let e = body(serde_json::json!({"env": {"A": "1"}, "environment_variables": {"A": "2"}}))
            .into_request(|| "x".into())
            .unwrap_err();
        assert_eq!(e.field, "environment_variables");
        assert!(
            serde_json::from_value::<CreateRuntimeBody>(serde_json::json!({"bogus": 1})).is_err()
        );
    }
}
