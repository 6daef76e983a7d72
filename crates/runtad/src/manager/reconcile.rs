//! Start-up reconciliation: after a restart (or a crash of the daemon) make every
//! record true again by asking the backend what really runs, and finish any
//! transition that was cut short.

use std::time::Duration;

use runta_api::RuntimeStatus as S;
use runta_backend::BackendState;
use tracing::{info, warn};

use super::{Manager, Result};

impl Manager {
    pub async fn reconcile(&self) -> Result<()> {
        let records = self.store.list_runtimes(&Default::default())?;
        let n = records.len();
        for mut r in records {
            let lock = self.lock_for(r.id);
            let _g = lock.lock().await;
            let state = match self.backend.state(r.id).await {
                Ok(s) => s,
                Err(e) => {
                    warn!(id = %r.id, "reconcile: state: {e}");
                    continue;
                }
            };
            let alive = matches!(state, BackendState::Running { .. } | BackendState::Paused);
            let before = r.status;
            match r.status {
                S::Deleting => {
                    if let Err(e) = self.delete_locked(&mut r).await {
                        warn!(id = %r.id, "reconcile: finish delete: {e}");
                    }
                    continue;
                }
                S::Creating => {
                    // Cut short mid-create: boot it now (every step is idempotent).
                    let spec = self.spec(&r)?;
                    match self.backend.start(&spec).await {
                        Ok(()) => {
                            r.status = S::Running;
                            r.started_at = Some(crate::store::now());
                            self.mark_booted(&r);
                            self.event(&r, "started", Some("finished after a daemon restart"));
                        }
                        Err(e) => {
                            r.status = S::Error;
                            r.error =
                                Some(format!("create interrupted and could not be finished: {e}"));
                        }
                    }
                }
                S::Running | S::Paused | S::Suspended if r.desired_status == S::Shutdown => {
                    let _ = self.backend.stop(r.id, self.cfg.stop_grace).await;
                    r.status = S::Shutdown;
                    self.event(&r, "stopped", Some("finished after a daemon restart"));
                }
                S::Running | S::Paused | S::Suspended if !alive => {
                    let _ = self.backend.stop(r.id, Duration::ZERO).await;
                    r.status = S::Crashed;
                    r.error = Some("the runtime stopped while the daemon was down; start it again or delete it".into());
                    self.event(&r, "crashed", r.error.clone().as_deref());
                }
                S::Running | S::Paused | S::Suspended => {
                    r.status = match (state, r.status) {
                        (BackendState::Paused, S::Suspended) => S::Suspended,
                        (BackendState::Paused, _) => S::Paused,
                        _ => S::Running,
                    };
                    self.mark_booted(&r);
                }
                S::Shutdown if alive => {
                    let _ = self.backend.stop(r.id, self.cfg.stop_grace).await;
                }
                S::Shutdown | S::Error | S::Crashed => {}
            }
            if r.status != before {
                self.store.update_runtime(&mut r)?;
                info!(id = %r.id, name = %r.name, "reconciled {before} -> {}", r.status);
            }
        }
        info!(runtimes = n, "reconciled store with backend");
        Ok(())
    }
}
