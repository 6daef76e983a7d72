//! Declarative deployment (`POST /v1/apply`, `POST /v1/delete`): the file is
//! validated whole, planned against what exists, checked for capacity as one
//! admission, then acted on. See docs/api.md ("Deployment") and docs/cli.md
//! (`runta apply`).

use std::fmt;
use std::sync::Arc;

use runta_api::validate::{self, CreateDefaults};
use runta_api::{
    ApplyResult, CreateRuntimeRequest, Deployment, PlanAction, PlanLine, RequestsSpec,
    ResourcesSpec, UpdateRuntimeRequest,
};

use super::{Error, Manager, Result};
use crate::store::RuntimeRecord;

/// One field where a runtime differs from its deployment.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Vcpus {
        from: f64,
        to: f64,
    },
    MemoryMib {
        from: u64,
        to: u64,
    },
    Publish,
    IdleTimeout,
    /// The environment is fixed at create; apply reports it and leaves it.
    Env,
}

impl Change {
    /// Whether apply changes the runtime for it (an env change needs a new one).
    pub fn applies(&self) -> bool {
        !matches!(self, Change::Env)
    }
}

/// The plan line's wording (`runta apply` prints it).
impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::Vcpus { from, to } => write!(f, "vcpus {from} -> {to}"),
            Change::MemoryMib { from, to } => write!(f, "memory_mib {from} -> {to}"),
            Change::Publish => f.write_str("publish"),
            Change::IdleTimeout => f.write_str("idle_timeout_secs"),
            Change::Env => f.write_str("env (needs a new runtime; not changed)"),
        }
    }
}

/// How `r` differs from the checked create request `want` in the fields a
/// deployment controls.
pub fn diff(r: &RuntimeRecord, want: &CreateRuntimeRequest) -> Vec<Change> {
    let rq = &want.resources.requests;
    let (vcpus, memory_mib) = (
        rq.vcpus.unwrap_or(r.vcpus),
        rq.memory_mib.unwrap_or(r.memory_mib),
    );
    let mut out = Vec::new();
    if (r.vcpus - vcpus).abs() > f64::EPSILON {
        out.push(Change::Vcpus {
            from: r.vcpus,
            to: vcpus,
        });
    }
    if r.memory_mib != memory_mib {
        out.push(Change::MemoryMib {
            from: r.memory_mib,
            to: memory_mib,
        });
    }
    if r.publish != want.publish {
        out.push(Change::Publish);
    }
    if r.idle_timeout_secs != want.idle_timeout_secs.filter(|t| *t > 0) {
        out.push(Change::IdleTimeout);
    }
    if r.env != want.env {
        out.push(Change::Env);
    }
    out
}

fn lines(changes: &[Change]) -> Vec<String> {
    changes.iter().map(Change::to_string).collect()
}

impl Manager {
    pub(super) fn create_defaults(&self) -> CreateDefaults {
        CreateDefaults {
            image: self.cfg.default_image.clone(),
            vcpus: self.cfg.default_vcpus,
            memory_mib: self.cfg.default_memory_mib,
            disk_gib: self.cfg.default_disk_gib,
        }
    }

    fn check_deployment(&self, d: &Deployment) -> Result<Vec<CreateRuntimeRequest>> {
        Ok(validate::deployment(d, &self.create_defaults())?)
    }

    /// Makes the tenant's runtimes match `d`: creates the missing, updates the
    /// different, leaves the rest. Nothing changes unless all of it fits.
    pub async fn apply(self: &Arc<Self>, tenant: &str, d: &Deployment) -> Result<ApplyResult> {
        let desired = self.check_deployment(d)?;
        // Plan first: what exists, what differs. Then act.
        let mut plan = Vec::with_capacity(desired.len());
        for want in desired {
            let existing = self.store.find_runtime(tenant, &want.name)?;
            let changes = existing.as_ref().map(|r| diff(r, &want));
            plan.push((want, existing, changes));
        }
        self.check_apply_capacity(
            tenant,
            &plan
                .iter()
                .map(|(w, e, _)| {
                    let rq = &w.resources.requests;
                    (
                        e.as_ref().map(|r| r.id),
                        rq.vcpus.unwrap_or(1.0),
                        rq.memory_mib.unwrap_or(512),
                        rq.disk_gib,
                    )
                })
                .collect::<Vec<_>>(),
        )?;
        let mut out = Vec::with_capacity(plan.len());
        for (want, existing, changes) in plan {
            let line = match (existing, changes) {
                (None, _) => {
                    let r = self.create(tenant, want, None, true).await?;
                    PlanLine {
                        name: r.name.clone(),
                        action: PlanAction::Created,
                        changes: vec![],
                        runtime: Some(self.view(&r)),
                    }
                }
                (Some(r), Some(changes)) if changes.iter().any(Change::applies) => {
                    let rq = &want.resources.requests;
                    let update = UpdateRuntimeRequest {
                        resources: Some(ResourcesSpec {
                            requests: RequestsSpec {
                                vcpus: rq.vcpus,
                                memory_mib: rq.memory_mib,
                                disk_gib: rq.disk_gib,
                            },
                            limits: None,
                        }),
                        labels: None,
                        publish: Some(want.publish.clone()),
                        idle_timeout_secs: Some(want.idle_timeout_secs.unwrap_or(0)),
                        ..Default::default()
                    };
                    let r = self.update(tenant, &r.id.to_string(), update).await?;
                    PlanLine {
                        name: r.name.clone(),
                        action: PlanAction::Updated,
                        changes: lines(&changes),
                        runtime: Some(self.view(&r)),
                    }
                }
                (Some(r), changes) => PlanLine {
                    name: r.name.clone(),
                    action: PlanAction::Unchanged,
                    changes: lines(&changes.unwrap_or_default()),
                    runtime: Some(self.view(&r)),
                },
            };
            out.push(line);
        }
        Ok(ApplyResult { plan: out })
    }

    /// Deletes the tenant's runtimes that `d` names; a missing one is a
    /// `not_found` line, not an error.
    pub async fn delete_deployment(&self, tenant: &str, d: &Deployment) -> Result<ApplyResult> {
        let desired = self.check_deployment(d)?;
        let mut out = Vec::with_capacity(desired.len());
        for want in desired {
            let action = match self.delete(tenant, &want.name).await {
                Ok(()) => PlanAction::Deleted,
                Err(Error::NotFound(_)) => PlanAction::NotFound,
                Err(e) => return Err(e),
            };
            out.push(PlanLine {
                name: want.name,
                action,
                changes: vec![],
                runtime: None,
            });
        }
        Ok(ApplyResult { plan: out })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_alone_is_reported_and_not_applied() {
        assert!(!Change::Env.applies());
        assert!(Change::Publish.applies());
        assert_eq!(
            Change::Vcpus { from: 1.0, to: 2.5 }.to_string(),
            "vcpus 1 -> 2.5"
        );
        assert_eq!(
            Change::MemoryMib {
                from: 512,
                to: 1024
            }
            .to_string(),
            "memory_mib 512 -> 1024"
        );
    }
}
