//! Checkpoints: a runtime's files saved under a name, and forks started from
//! them. A checkpoint is a consistent copy of the runtime's writable layer;
//! forks stack it read-only below their own empty layer, so any number of
//! forks share it without copying.

use runta_api::{
    validate, Checkpoint, CheckpointKind, CheckpointState, ResourceLimits, ResourceRequests,
    ResourceUsage, Resources,
};
use uuid::Uuid;

use super::{Error, Manager, Result};
use crate::store::CheckpointRecord;

impl Manager {
    pub fn checkpoint_view(&self, c: &CheckpointRecord) -> Checkpoint {
        let memory_mib = self.cfg.default_memory_mib;
        Checkpoint {
            display_name: c.name.clone(),
            state: CheckpointState::Ready,
            kind: CheckpointKind::Full,
            resources: Resources {
                requests: ResourceRequests {
                    vcpus: self.cfg.default_vcpus,
                    memory_mib,
                    disk_gib: self.cfg.default_disk_gib,
                },
                limits: ResourceLimits { memory_mib },
                current: ResourceUsage {
                    memory_mib: 0,
                    memory_mib_used: None,
                    cpu_seconds: None,
                },
            },
            id: c.id,
            name: c.name.clone(),
            tenant: c.tenant.clone(),
            source_runtime_id: c.source_id,
            source_runtime_name: c.source_name.clone(),
            image: c.image.clone(),
            size_bytes: c.size_bytes,
            created_at: c.created_at,
        }
    }

    pub fn find_checkpoint(&self, tenant: &str, id_or_name: &str) -> Result<CheckpointRecord> {
        self.store
            .find_checkpoint(tenant, id_or_name)?
            .ok_or_else(|| Error::NotFound(format!("no checkpoint named {id_or_name:?}")))
    }

    pub async fn create_checkpoint(
        &self,
        tenant: &str,
        runtime: &str,
        name: &str,
    ) -> Result<CheckpointRecord> {
        validate::name("name", name)?;
        let (_g, r) = self.locked(tenant, runtime).await?;
        if !r.status.is_up() {
            return Err(Error::FailedPrecondition(format!(
                "cannot checkpoint runtime {:?}: it is {}; boot it first",
                r.name, r.status
            )));
        }
        if self.store.find_checkpoint(tenant, name)?.is_some() {
            return Err(Error::AlreadyExists(format!(
                "a checkpoint named {name:?} already exists"
            )));
        }
        // Refuse before copying when the count or the bytes are already used up.
        self.admit_checkpoint(tenant, 0)?;
        let ckpt_id = Uuid::new_v4();
        let size = self.backend.checkpoint(r.id, &ckpt_id.to_string()).await?;
        // The size is known only after the copy: check again, and record it,
        // under the admission lock, so concurrent checkpoints cannot both fit.
        let _admission = self.admission.lock().await;
        if let Err(e) = self.admit_checkpoint(tenant, size) {
            if let Err(d) = self.backend.delete_checkpoint(&ckpt_id.to_string()).await {
                tracing::warn!(checkpoint = %ckpt_id, "remove refused checkpoint: {d}");
            }
            return Err(e);
        }
        let mut layers = vec![ckpt_id.to_string()];
        layers.extend(r.layers.iter().cloned());
        let rec = CheckpointRecord {
            seq: 0,
            id: ckpt_id,
            tenant: tenant.to_string(),
            name: name.to_string(),
            source_id: r.id,
            source_name: r.name.clone(),
            image: r.image.clone(),
            layers,
            size_bytes: size,
            created_at: crate::store::now(),
        };
        if let Err(e) = self.store.insert_checkpoint(&rec) {
            let _ = self.backend.delete_checkpoint(&ckpt_id.to_string()).await;
            return Err(e.into());
        }
        self.event(
            &r,
            runta_api::EventKind::Checkpointed,
            Some(&format!("checkpoint {name:?} ({size} bytes)")),
        );
        Ok(rec)
    }

    pub fn list_checkpoints(
        &self,
        tenant: &str,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<CheckpointRecord>> {
        Ok(self.store.list_checkpoints(tenant, after_seq, limit)?)
    }

    /// Deletes a checkpoint no runtime or later checkpoint is built on.
    pub async fn delete_checkpoint(&self, tenant: &str, id_or_name: &str) -> Result<()> {
        let _admission = self.admission.lock().await;
        let c = self.find_checkpoint(tenant, id_or_name)?;
        let users = self.store.checkpoint_users(c.id)?;
        if !users.is_empty() {
            return Err(Error::FailedPrecondition(format!(
                "checkpoint {:?} is in use by {}; delete those first",
                c.name,
                users.join(", ")
            )));
        }
        self.store.delete_checkpoint(c.id)?;
        self.backend.delete_checkpoint(&c.id.to_string()).await?;
        Ok(())
    }
}
