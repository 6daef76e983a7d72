//! Declarative deployment: `POST /v1/apply` and `POST /v1/delete` take a
//! `deployment.json`. The whole file is validated before anything changes.

use std::collections::HashSet;

use axum::extract::State;
use axum::Json;
use runta_api::{
    validate, ApplyResult, CreateRuntimeRequest, Data, Deployment, PlanAction, PlanLine, PortSpec,
    RequestsSpec, ResourcesSpec, UpdateRuntimeRequest,
};

use super::error::{ApiError, ApiResult};
use super::extract::ApiJson;
use super::AppState;
use crate::auth::Principal;
use crate::manager::deployment_diff;

const API_VERSION: &str = "runta/v1";
const KIND: &str = "SandboxSet";

/// One sandbox of the file, validated and with defaults filled in.
struct Desired {
    req: CreateRuntimeRequest,
    publish: Vec<PortSpec>,
}

fn check(state: &AppState, d: &Deployment) -> ApiResult<Vec<Desired>> {
    if d.api_version != API_VERSION {
        return Err(ApiError::invalid(
            "apiVersion",
            format!("must be {API_VERSION:?}"),
        ));
    }
    if d.kind != KIND {
        return Err(ApiError::invalid("kind", format!("must be {KIND:?}")));
    }
    let cfg = state.manager.config();
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (i, s) in d.sandboxes.iter().enumerate() {
        let at = |f: &str| format!("sandboxes[{i}].{f}");
        let fe = |e: validate::FieldError| {
            ApiError::invalid(format!("sandboxes[{i}].{}", e.field), e.message)
        };
        validate::name("name", &s.name).map_err(fe)?;
        if !seen.insert(s.name.clone()) {
            return Err(ApiError::invalid(
                at("name"),
                format!("{:?} appears twice", s.name),
            ));
        }
        let image = s.image.clone().unwrap_or_else(|| cfg.default_image.clone());
        validate::image("image", &image).map_err(fe)?;
        let vcpus = s.resources.vcpus.unwrap_or(cfg.default_vcpus);
        validate::vcpus("resources.vcpus", vcpus).map_err(fe)?;
        let memory_mib = s.resources.memory_mib.unwrap_or(cfg.default_memory_mib);
        validate::memory_mib("resources.memory_mib", memory_mib).map_err(fe)?;
        if let Some(g) = s.resources.disk_gib {
            validate::disk_gib("resources.disk_gib", g).map_err(fe)?;
        }
        validate::env("env", &s.env).map_err(fe)?;
        validate::labels("labels", &s.labels).map_err(fe)?;
        let mut publish = Vec::new();
        for (j, p) in s.publish.iter().enumerate() {
            publish.push(
                validate::parse_publish(p)
                    .map_err(|m| ApiError::invalid(format!("sandboxes[{i}].publish[{j}]"), m))?,
            );
        }
        validate::publish("publish", &publish).map_err(fe)?;
        if let Some(t) = s.idle_timeout_secs {
            validate::idle_timeout("idle_timeout_secs", t).map_err(fe)?;
        }
        out.push(Desired {
            req: CreateRuntimeRequest {
                name: s.name.clone(),
                image: Some(image),
                resources: ResourcesSpec {
                    requests: RequestsSpec {
                        vcpus: Some(vcpus),
                        memory_mib: Some(memory_mib),
                        disk_gib: s.resources.disk_gib,
                    },
                    limits: None,
                },
                env: s.env.clone(),
                labels: s.labels.clone(),
                publish: publish.clone(),
                idle_timeout_secs: s.idle_timeout_secs,
                idle_wakeup: None,
                checkpoint: None,
                egress_policy: None,
            },
            publish,
        });
    }
    Ok(out)
}

#[utoipa::path(post, path = "/v1/apply", tag = "deploy",
    request_body = Deployment,
    responses((status = 200, body = Data<ApplyResult>, description = "One plan line per sandbox: created, updated or unchanged"),
              (status = 422, body = runta_api::ErrorBody, description = "The file is rejected whole; the field path is named")))]
pub async fn apply(
    State(state): State<AppState>,
    p: Principal,
    ApiJson(d): ApiJson<Deployment>,
) -> ApiResult<Json<Data<ApplyResult>>> {
    let desired = check(&state, &d)?;
    let m = &state.manager;
    // Plan first: what exists, what differs. Then act.
    let mut plan = Vec::new();
    for want in &desired {
        let existing = m.find_named(&p.tenant, &want.req.name)?;
        let rq = &want.req.resources.requests;
        let (vcpus, mem) = (rq.vcpus.unwrap_or(1.0), rq.memory_mib.unwrap_or(512));
        let diff = existing.as_ref().map(|r| {
            deployment_diff(
                r,
                vcpus,
                mem,
                &want.publish,
                want.req.idle_timeout_secs,
                &want.req.env,
            )
        });
        plan.push((want, existing, diff));
    }
    m.check_apply_capacity(
        &p.tenant,
        &plan
            .iter()
            .map(|(w, e, _)| {
                let rq = &w.req.resources.requests;
                (
                    e.as_ref().map(|r| r.id),
                    rq.vcpus.unwrap_or(1.0),
                    rq.memory_mib.unwrap_or(512),
                    rq.disk_gib,
                )
            })
            .collect::<Vec<_>>(),
    )?;
    let mut lines = Vec::new();
    for (want, existing, diff) in plan {
        let line = match (existing, diff) {
            (None, _) => {
                let (r, _) = m.create(&p.tenant, want.req.clone(), None, true).await?;
                PlanLine {
                    name: r.name.clone(),
                    action: PlanAction::Created,
                    changes: vec![],
                    runtime: Some(m.view(&r)),
                }
            }
            (Some(r), Some(diff)) if diff.iter().any(|d| !d.starts_with("env")) => {
                let rq = &want.req.resources.requests;
                let r = m
                    .update(
                        &p.tenant,
                        &r.id.to_string(),
                        UpdateRuntimeRequest {
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
                            idle_timeout_secs: Some(want.req.idle_timeout_secs.unwrap_or(0)),
                            ..Default::default()
                        },
                    )
                    .await?;
                PlanLine {
                    name: r.name.clone(),
                    action: PlanAction::Updated,
                    changes: diff,
                    runtime: Some(m.view(&r)),
                }
            }
            (Some(r), diff) => PlanLine {
                name: r.name.clone(),
                action: PlanAction::Unchanged,
                changes: diff.unwrap_or_default(),
                runtime: Some(m.view(&r)),
            },
        };
        lines.push(line);
    }
    Ok(Json(Data {
        data: ApplyResult { plan: lines },
    }))
}

#[utoipa::path(post, path = "/v1/delete", tag = "deploy",
    request_body = Deployment,
    responses((status = 200, body = Data<ApplyResult>, description = "One plan line per sandbox: deleted or not_found")))]
pub async fn delete(
    State(state): State<AppState>,
    p: Principal,
    ApiJson(d): ApiJson<Deployment>,
) -> ApiResult<Json<Data<ApplyResult>>> {
    let desired = check(&state, &d)?;
    let mut lines = Vec::new();
    for want in desired {
        let action = match state.manager.delete(&p.tenant, &want.req.name).await {
            Ok(()) => PlanAction::Deleted,
            Err(crate::manager::Error::NotFound(_)) => PlanAction::NotFound,
            Err(e) => return Err(e.into()),
        };
        lines.push(PlanLine {
            name: want.req.name,
            action,
            changes: vec![],
            runtime: None,
        });
    }
    Ok(Json(Data {
        data: ApplyResult { plan: lines },
    }))
}
