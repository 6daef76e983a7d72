//! Creating runtimes and moving them through their statuses.

use std::net::Ipv4Addr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Instant;

use runta_api::{
    validate, Action, CreateRuntimeRequest, RuntimeStatus, StatusEvent, UpdateRuntimeRequest,
};
use runta_backend::{Limits, RuntimeSpec};
use sha2::{Digest, Sha256};
use tracing::{info, warn};
use uuid::Uuid;

use super::{Error, Manager, Result};
use crate::store::{ListFilter, RuntimeRecord};

/// Validated, defaulted form of a create request.
struct Plan {
    image: String,
    layers: Vec<String>,
    vcpus: f64,
    memory_mib: u64,
    memory_limit_mib: u64,
    disk_gib: Option<u64>,
}

impl Manager {
    pub(super) fn spec(&self, r: &RuntimeRecord) -> Result<RuntimeSpec> {
        Ok(RuntimeSpec {
            id: r.id,
            name: r.name.clone(),
            image: r.image.clone(),
            layers: r.layers.clone(),
            image_layers: match self.runtime_image(&r.image) {
                Some(img) => self.images()?.layer_dirs(&img),
                None => vec![],
            },
            vcpus: r.vcpus,
            memory_limit_mib: r.memory_limit_mib,
            disk_gib: r.disk_gib,
            ip: Ipv4Addr::from_str(&r.ip)
                .map_err(|e| Error::Internal(format!("stored address {:?}: {e}", r.ip)))?,
            env: r.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        })
    }

    fn validate_create(&self, tenant: &str, req: &CreateRuntimeRequest) -> Result<Plan> {
        let validate::CheckedCreate {
            mut image,
            vcpus,
            memory_mib,
            memory_limit_mib,
            disk_gib,
        } = validate::create_request(req, &self.create_defaults())?;
        let layers = match &req.checkpoint {
            Some(c) => {
                let ckpt = self.store.find_checkpoint(tenant, c)?.ok_or_else(|| {
                    Error::invalid("checkpoint", format!("no checkpoint named {c:?}"))
                })?;
                if req.image.as_ref().is_some_and(|i| *i != ckpt.image) {
                    return Err(Error::invalid(
                        "image",
                        format!("checkpoint {c:?} is of image {:?}", ckpt.image),
                    ));
                }
                image = ckpt.image;
                ckpt.layers
            }
            None => vec![],
        };
        if vcpus > self.cfg.host_cpus {
            return Err(Error::ResourceExhausted(format!(
                "resources.requests.vcpus: {vcpus} vCPUs requested, this machine has {}",
                self.cfg.host_cpus
            )));
        }
        Ok(Plan {
            image,
            layers,
            vcpus,
            memory_mib,
            memory_limit_mib,
            disk_gib,
        })
    }

    fn allocate_ip(&self) -> Result<Ipv4Addr> {
        let network = self.network();
        let used: std::collections::HashSet<u32> = self
            .store
            .list_runtimes(&Default::default())?
            .iter()
            .filter_map(|r| Ipv4Addr::from_str(&r.ip).ok())
            .filter_map(|ip| network.host_number(ip))
            .collect();
        (2..=65534u32)
            .find(|n| !used.contains(n))
            .and_then(|n| network.address(n))
            .ok_or_else(|| {
                Error::ResourceExhausted("no free addresses on the runtime network".into())
            })
    }

    /// Creates a runtime. With `wait`, returns once it runs (or fails and leaves
    /// nothing behind); without, returns the `creating` record at once.
    pub async fn create(
        self: &Arc<Self>,
        tenant: &str,
        req: CreateRuntimeRequest,
        idempotency_key: Option<&str>,
        wait: bool,
    ) -> Result<RuntimeRecord> {
        let plan = self.validate_create(tenant, &req)?;
        let request_hash = {
            let mut v = serde_json::json!({
                "name": req.name, "image": plan.image, "vcpus": plan.vcpus, "mem": plan.memory_mib,
                "lim": plan.memory_limit_mib, "env": req.env, "labels": req.labels,
                "publish": req.publish, "idle": req.idle_timeout_secs, "ckpt": req.checkpoint,
            });
            // Only when given, so keys remembered before the field existed still match.
            if let Some(w) = req.idle_wakeup {
                v["wake"] = w.into();
            }
            if let Some(p) = req.egress_policy.as_ref().filter(|p| !p.is_open()) {
                v["egress"] = serde_json::to_value(p).unwrap_or_default();
            }
            let body = serde_json::to_vec(&v).unwrap_or_default();
            Sha256::digest(&body)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        };
        if let Some(key) = idempotency_key {
            if key.is_empty() || key.len() > 255 {
                return Err(Error::invalid(
                    "Idempotency-Key",
                    "must be 1 to 255 characters",
                ));
            }
            if let Some((id, hash)) = self.store.idempotent_runtime(tenant, key)? {
                if hash != request_hash {
                    return Err(Error::invalid(
                        "Idempotency-Key",
                        "this key was used with a different request body",
                    ));
                }
                if let Some(r) = self.store.get_runtime(id)? {
                    return Ok(r);
                }
            }
        }
        // Unknown images are rejected before anything is recorded; `base` is
        // built on first use; a registry image is pulled on first use (the
        // request waits, bounded) and pinned by digest.
        let mut plan = plan;
        let (pinned, pulled) = self.resolve_image(tenant, &plan.image).await?;
        plan.image = pinned;

        let record = {
            let _admission = self.admission.lock().await;
            if self.store.find_runtime(tenant, &req.name)?.is_some() {
                return Err(Error::AlreadyExists(format!(
                    "a runtime named {:?} already exists",
                    req.name
                )));
            }
            self.admit_new(
                tenant,
                plan.vcpus,
                plan.memory_mib,
                plan.memory_limit_mib,
                plan.disk_gib,
            )?;
            let ip = self.allocate_ip()?;
            let now = crate::store::now();
            let mut r = RuntimeRecord {
                seq: 0,
                id: Uuid::new_v4(),
                tenant: tenant.to_string(),
                name: req.name.clone(),
                status: RuntimeStatus::Creating,
                desired_status: RuntimeStatus::Running,
                image: plan.image,
                vcpus: plan.vcpus,
                memory_mib: plan.memory_mib,
                memory_limit_mib: plan.memory_limit_mib,
                disk_gib: plan.disk_gib,
                env: req.env,
                labels: req.labels,
                publish: req.publish,
                idle_timeout_secs: req.idle_timeout_secs.filter(|t| *t > 0),
                idle_wakeup: req.idle_wakeup.unwrap_or(true),
                ip: ip.to_string(),
                created_at: now,
                updated_at: now,
                started_at: None,
                revision: 1,
                error: None,
                layers: plan.layers,
                egress: req.egress_policy.unwrap_or_default(),
            };
            r.seq = self.store.insert_runtime(&r)?;
            if let Some(key) = idempotency_key {
                self.store
                    .remember_idempotency(tenant, key, r.id, &request_hash)?;
            }
            r
        };
        if let Some(p) = &pulled {
            let secs = p
                .finished_at
                .map(|f| (f - p.started_at).num_milliseconds() as f64 / 1000.0)
                .unwrap_or(0.0);
            let msg = format!(
                "image {} was pulled on first use before the create ({} layers, {} bytes, {secs:.1} s)",
                p.reference, p.layers_total, p.bytes_total
            );
            self.event(&record, runta_api::EventKind::ImagePulled, Some(&msg));
        }
        self.event(&record, runta_api::EventKind::Created, None);
        // Before it boots: the tenant's default secret bindings apply.
        self.secrets_runtime_created(&record.tenant, record.id);
        let lock = self.lock_for(record.id);
        let guard = lock.clone().lock_owned().await;
        if wait {
            let r = self.boot_new(record).await;
            drop(guard);
            return r;
        }
        let me = self.clone();
        let pending = record.clone();
        tokio::spawn(async move {
            let _guard = guard;
            let _ = me.boot_new(pending).await;
        });
        Ok(record)
    }

    /// Starts a freshly recorded runtime. A failure removes the record again, so
    /// a failed create leaves nothing behind.
    async fn boot_new(&self, mut r: RuntimeRecord) -> Result<RuntimeRecord> {
        let t0 = Instant::now();
        let spec = self.spec(&r)?;
        match self.egress_then_create(&r, &spec).await {
            Ok(()) => {
                self.set_status(&mut r, StatusEvent::Booted, None)?;
                self.mark_booted(&r);
                self.metrics.observe_create(t0.elapsed());
                info!(id = %r.id, name = %r.name, ms = t0.elapsed().as_millis() as u64, "runtime created");
                Ok(r)
            }
            Err(e) => {
                warn!(id = %r.id, "create failed: {e}");
                self.store.delete_runtime(r.id)?;
                self.store.delete_events(r.id)?;
                self.forget(r.id);
                Err(e)
            }
        }
    }

    pub fn list(&self, filter: &ListFilter) -> Result<Vec<RuntimeRecord>> {
        Ok(self.store.list_runtimes(filter)?)
    }

    /// Finds a tenant's runtime and takes its lock, then reads the record again
    /// under the lock (it may have changed while we waited).
    pub(super) async fn locked(
        &self,
        tenant: &str,
        id_or_name: &str,
    ) -> Result<(tokio::sync::OwnedMutexGuard<()>, RuntimeRecord)> {
        let id = self.find(tenant, id_or_name)?.id;
        let guard = self.lock_for(id).lock_owned().await;
        let r = self
            .store
            .get_runtime(id)?
            .ok_or_else(|| Error::NotFound(format!("no runtime named {id_or_name:?}")))?;
        Ok((guard, r))
    }

    /// Applies a lifecycle action. Asking for the state a runtime is already in
    /// is a no-op; an impossible transition is `FailedPrecondition`.
    pub async fn act(
        &self,
        tenant: &str,
        id_or_name: &str,
        action: Action,
    ) -> Result<RuntimeRecord> {
        let (_g, mut r) = self.locked(tenant, id_or_name).await?;
        use RuntimeStatus as S;
        if self.check(&r, action)? == r.status {
            return Ok(r);
        }
        let done = StatusEvent::Requested(action);
        match (action, r.status) {
            (Action::Start | Action::Resume, S::Suspended) => {
                self.wake_locked(&mut r).await?;
            }
            (Action::Start, _) => {
                r.desired_status = S::Running;
                // Held through the boot: until it runs, the record does not count as live.
                let _admission = self.admission.lock().await;
                self.admit_start(&r)?;
                self.store.update_runtime(&mut r)?;
                let spec = self.spec(&r)?;
                if let Err(e) = self.backend.start(&spec).await {
                    let why = format!("boot failed: {e}");
                    self.set_status(&mut r, StatusEvent::BootFailed, Some(why))?;
                    return Err(e.into());
                }
                self.set_status(&mut r, done, None)?;
                self.mark_booted(&r);
            }
            (Action::Resume, _) => {
                r.desired_status = S::Running;
                self.store.update_runtime(&mut r)?;
                self.backend.resume(r.id).await?;
                if let Err(e) = self.set_status(&mut r, done, None) {
                    // Keep the record true: frozen again, as it says.
                    let _ = self.backend.pause(r.id).await;
                    return Err(e);
                }
                self.touch(r.id);
            }
            (Action::Pause, S::Suspended) => {
                // Already frozen by the idle policy; now the caller owns the pause.
                r.desired_status = S::Paused;
                self.set_status(&mut r, done, None)?;
            }
            (Action::Pause, _) => {
                r.desired_status = S::Paused;
                self.store.update_runtime(&mut r)?;
                self.backend.pause(r.id).await?;
                if let Err(e) = self.set_status(&mut r, done, None) {
                    // Never leave a frozen runtime that the record calls running.
                    let _ = self.backend.resume(r.id).await;
                    return Err(e);
                }
            }
            (Action::Stop, _) => {
                r.desired_status = S::Shutdown;
                self.store.update_runtime(&mut r)?;
                self.backend.stop(r.id, self.cfg.stop_grace).await?;
                self.set_status(&mut r, done, None)?;
            }
            (Action::Delete | Action::Update | Action::Exec | Action::Checkpoint, _) => {
                return Err(Error::Internal(format!(
                    "{action} has its own method, not act"
                )));
            }
        }
        Ok(r)
    }

    /// Thaws a suspended runtime; the caller holds its lock.
    pub(super) async fn wake_locked(&self, r: &mut RuntimeRecord) -> Result<()> {
        self.backend.resume(r.id).await?;
        r.desired_status = RuntimeStatus::Running;
        self.set_status(r, StatusEvent::Woken, None)?;
        self.touch(r.id);
        Ok(())
    }

    /// Wakes a runtime if the idle policy suspended it (used by exec and ingress).
    /// One whose policy is `suspend_only` (`idle_wakeup` false) is left
    /// suspended and returned as it is: only start/resume wake it.
    pub async fn wake_if_suspended(&self, id: Uuid) -> Result<RuntimeRecord> {
        let lock = self.lock_for(id);
        let _g = lock.lock().await;
        let mut r = self
            .store
            .get_runtime(id)?
            .ok_or_else(|| Error::NotFound("runtime is gone".into()))?;
        if r.status == RuntimeStatus::Suspended && r.idle_wakeup {
            self.wake_locked(&mut r).await?;
        }
        Ok(r)
    }

    /// Deletes a runtime and everything it has on the host.
    pub async fn delete(&self, tenant: &str, id_or_name: &str) -> Result<()> {
        let (_g, mut r) = self.locked(tenant, id_or_name).await?;
        self.delete_locked(&mut r).await
    }

    pub(super) async fn delete_locked(&self, r: &mut RuntimeRecord) -> Result<()> {
        r.desired_status = RuntimeStatus::Deleting;
        self.set_status(r, StatusEvent::Requested(Action::Delete), None)?;
        if let Err(e) = self.backend.delete(r.id).await {
            let why = format!("delete failed: {e}");
            self.set_status(r, StatusEvent::DeleteFailed, Some(why))?;
            return Err(e.into());
        }
        self.store.delete_runtime(r.id)?;
        self.store.delete_events(r.id)?;
        self.store.delete_audits(r.id)?;
        self.forget(r.id);
        self.egress.forget(r.id).await;
        info!(id = %r.id, name = %r.name, "runtime deleted");
        Ok(())
    }

    /// PATCH: live resize, labels, published ports, idle policy.
    pub async fn update(
        &self,
        tenant: &str,
        id_or_name: &str,
        req: UpdateRuntimeRequest,
    ) -> Result<RuntimeRecord> {
        let (_g, mut r) = self.locked(tenant, id_or_name).await?;
        self.check(&r, Action::Update)?;
        let mut changes = Vec::new();
        if let Some(res) = &req.resources {
            let vcpus = res.requests.vcpus.unwrap_or(r.vcpus);
            validate::vcpus("resources.requests.vcpus", vcpus)?;
            if vcpus > self.cfg.host_cpus {
                return Err(Error::ResourceExhausted(format!(
                    "resources.requests.vcpus: {vcpus} vCPUs requested, this machine has {}",
                    self.cfg.host_cpus
                )));
            }
            let memory_mib = res.requests.memory_mib.unwrap_or(r.memory_mib);
            validate::memory_mib("resources.requests.memory_mib", memory_mib)?;
            let explicit_limit = res.limits.as_ref().and_then(|l| l.memory_mib);
            // Without an explicit limit the limit follows the request (the usual case).
            let limit = explicit_limit.unwrap_or(if res.requests.memory_mib.is_some() {
                memory_mib.max(if r.memory_limit_mib > r.memory_mib {
                    r.memory_limit_mib
                } else {
                    memory_mib
                })
            } else {
                r.memory_limit_mib
            });
            validate::memory_mib("resources.limits.memory_mib", limit)?;
            if limit < memory_mib {
                return Err(Error::invalid(
                    "resources.limits.memory_mib",
                    format!("limit {limit} MiB is below the request {memory_mib} MiB"),
                ));
            }
            if let Some(d) = res.requests.disk_gib {
                validate::disk_gib("resources.requests.disk_gib", d)?;
                if Some(d) != r.disk_gib {
                    return Err(Error::invalid(
                        "resources.requests.disk_gib",
                        "the disk size is fixed when the runtime is created",
                    ));
                }
            }
            let _admission = self.admission.lock().await;
            self.admit_resize(&r, vcpus, memory_mib, limit)?;
            if (vcpus, memory_mib, limit) != (r.vcpus, r.memory_mib, r.memory_limit_mib) {
                if r.status.is_up() {
                    self.backend
                        .update(r.id, Limits { vcpus, memory_limit_mib: limit })
                        .await
                        .map_err(|e| {
                            Error::FailedPrecondition(format!(
                                "could not apply the new limits live ({e}); is more memory than the new limit in use?"
                            ))
                        })?;
                }
                changes.push(format!(
                    "vcpus={vcpus} memory_mib={memory_mib} limit_mib={limit}"
                ));
                r.vcpus = vcpus;
                r.memory_mib = memory_mib;
                r.memory_limit_mib = limit;
            }
        }
        if let Some(name) = req.name.filter(|n| *n != r.name) {
            validate::name("name", &name)?;
            if self.store.find_runtime(tenant, &name)?.is_some() {
                return Err(Error::AlreadyExists(format!(
                    "a runtime named {name:?} already exists"
                )));
            }
            changes.push(format!("name {:?} -> {name:?}", r.name));
            r.name = name;
        }
        if let Some(env) = req.env {
            // Applies to every command started from now on (each exec merges the
            // runtime's variables); processes already running keep theirs.
            validate::env("env", &env)?;
            r.env = env;
            changes.push("env".into());
        }
        if let Some(labels) = req.labels {
            validate::labels("labels", &labels)?;
            r.labels = labels;
            changes.push("labels".into());
        }
        if let Some(publish) = req.publish {
            validate::publish("publish", &publish)?;
            r.publish = publish;
            changes.push("publish".into());
        }
        if let Some(t) = req.idle_timeout_secs {
            validate::idle_timeout("idle_timeout_secs", t)?;
            r.idle_timeout_secs = (t > 0).then_some(t);
            changes.push("idle_timeout_secs".into());
        }
        if let Some(w) = req.idle_wakeup {
            r.idle_wakeup = w;
            changes.push(format!("idle_wakeup={w}"));
        }
        // Held until the record is stored: a binding sync (every exec runs
        // one) re-applies the policy it reads from the record, and one that
        // read the old policy must not apply it after this one (docs/security.md,
        // "Second egress red-team pass").
        let mut _sync = None;
        if let Some(p) = req.egress_policy.filter(|p| *p != r.egress) {
            _sync = Some(self.egress.sync_lock(r.id).await);
            // Enforced before it is stored: a policy never reads as in force
            // while it is not.
            self.egress_set(&r, &p).await?;
            r.egress = p;
            changes.push("egress_policy".into());
        }
        if !changes.is_empty() {
            self.store.update_runtime(&mut r)?;
            // A resize is its own event (docs/api.md, "Runtimes": the event kinds);
            // other changes are `updated`.
            let (resized, other): (Vec<String>, Vec<String>) =
                changes.into_iter().partition(|c| c.starts_with("vcpus="));
            if !resized.is_empty() {
                self.event(&r, runta_api::EventKind::Resized, Some(&resized.join(", ")));
            }
            if !other.is_empty() {
                self.event(&r, runta_api::EventKind::Updated, Some(&other.join(", ")));
            }
        }
        Ok(r)
    }

    /// Parses `status=running,paused` into statuses, naming the bad one.
    pub fn parse_statuses(s: &str) -> Result<Vec<RuntimeStatus>> {
        s.split(',')
            .filter(|p| !p.is_empty())
            .map(|p| {
                RuntimeStatus::parse(p.trim())
                    .ok_or_else(|| Error::invalid("status", format!("unknown status {p:?}")))
            })
            .collect()
    }

    pub fn parse_labels(items: &[String]) -> Result<Vec<(String, String)>> {
        items
            .iter()
            .map(|l| {
                l.split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .ok_or_else(|| Error::invalid("label", format!("{l:?} is not key=value")))
            })
            .collect()
    }
}
