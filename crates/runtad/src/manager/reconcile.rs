//! Start-up reconciliation: after a restart (or a crash of the daemon) make every
//! record true again by asking the backend what really runs, and finish any
//! transition that was cut short.

use std::time::Duration;

use runta_api::{Action, RuntimeStatus as S, StatusEvent as E};
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
            let (event, message) = match r.status {
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
                        Ok(()) => (E::Booted, "finished after a daemon restart".to_string()),
                        Err(e) => (
                            E::BootFailed,
                            format!("create interrupted and could not be finished: {e}"),
                        ),
                    }
                }
                s if s.is_up() && r.desired_status == S::Shutdown => {
                    let _ = self.backend.stop(r.id, self.cfg.stop_grace).await;
                    (
                        E::Requested(Action::Stop),
                        "finished after a daemon restart".to_string(),
                    )
                }
                s if s.is_up() && !alive => {
                    let _ = self.backend.stop(r.id, Duration::ZERO).await;
                    (
                        E::FoundGone,
                        "the runtime stopped while the daemon was down; start it again or delete it"
                            .to_string(),
                    )
                }
                s if s.is_up() => {
                    let found = match state {
                        BackendState::Paused => E::FoundPaused,
                        _ => E::FoundRunning,
                    };
                    (found, String::new())
                }
                S::Shutdown if alive => {
                    let _ = self.backend.stop(r.id, self.cfg.stop_grace).await;
                    continue;
                }
                _ => continue,
            };
            let message = (!message.is_empty()).then_some(message);
            self.set_status(&mut r, event, message)?;
            if r.status.is_up() {
                self.mark_booted(&r);
            }
            if r.status != before {
                info!(id = %r.id, name = %r.name, "reconciled {before} -> {}", r.status);
            }
        }
        info!(runtimes = n, "reconciled store with backend");
        Ok(())
    }
}
