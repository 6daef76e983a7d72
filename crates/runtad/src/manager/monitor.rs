//! The background scan, every [`SCAN_INTERVAL`]: notices OOM kills and dead inits, and
//! applies the idle policy (suspend after `idle_timeout_secs` without ingress
//! traffic or exec).

use std::sync::Arc;
use std::time::{Duration, Instant};

use runta_api::{RuntimeStatus, StatusEvent};
use runta_backend::BackendState;
use tracing::{info, warn};

use super::{Activity, Manager};
use crate::store::{ListFilter, RuntimeRecord};

pub const SCAN_INTERVAL: Duration = Duration::from_millis(500);

impl Manager {
    pub fn spawn_monitor(self: &Arc<Self>) {
        let me = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SCAN_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(e) = me.scan().await {
                    warn!("monitor scan: {e}");
                }
            }
        });
    }

    pub(super) fn mark_booted(&self, r: &RuntimeRecord) {
        self.oom_seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                r.id,
                self.backend.usage(r.id).map(|u| u.oom_kills).unwrap_or(0),
            );
        self.touch(r.id);
    }

    pub(super) async fn scan(&self) -> super::Result<()> {
        let live = self.store.list_runtimes(&ListFilter {
            statuses: RuntimeStatus::ALL
                .into_iter()
                .filter(|s| s.is_up())
                .collect(),
            ..Default::default()
        })?;
        for mut r in live {
            if let Some(u) = self.backend.usage(r.id) {
                let prev = self
                    .oom_seen
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(r.id, u.oom_kills);
                if let Some(p) = prev {
                    if u.oom_kills > p {
                        let n = u.oom_kills - p;
                        let what = format!(
                            "{n} process(es) killed for exceeding the {} MiB memory limit",
                            r.memory_limit_mib
                        );
                        // Recorded only: the status stays, so no lock is needed.
                        self.set_status(&mut r, StatusEvent::OomKilled, Some(what))?;
                        self.metrics
                            .oom_kills
                            .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            }
            if !self.backend.is_alive(r.id) {
                self.handle_dead(r.id).await?;
                continue;
            }
            if r.status == RuntimeStatus::Running {
                if let Some(t) = r.idle_timeout_secs {
                    let act = {
                        let mut a = self.activity.lock().unwrap_or_else(|e| e.into_inner());
                        *a.entry(r.id).or_insert(Activity {
                            in_flight: 0,
                            last_active: Instant::now(),
                        })
                    };
                    if act.in_flight == 0 && act.last_active.elapsed() >= Duration::from_secs(t) {
                        self.suspend_idle(r.id, t).await?;
                    }
                }
            }
        }
        Ok(())
    }

    async fn handle_dead(&self, id: uuid::Uuid) -> super::Result<()> {
        let lock = self.lock_for(id);
        let _g = lock.lock().await;
        let Some(mut r) = self.store.get_runtime(id)? else {
            return Ok(());
        };
        if !r.status.is_up() {
            return Ok(());
        }
        if !matches!(
            self.backend.state(id).await?,
            BackendState::Stopped | BackendState::Missing
        ) {
            return Ok(());
        }
        // Clear the dead container away; files stay for `start`.
        let _ = self.backend.stop(id, Duration::ZERO).await;
        let why = "the runtime's init process exited; start it again or delete it";
        self.set_status(&mut r, StatusEvent::InitExited, Some(why.into()))?;
        warn!(%id, name = %r.name, "runtime crashed");
        Ok(())
    }

    async fn suspend_idle(&self, id: uuid::Uuid, timeout: u64) -> super::Result<()> {
        let lock = self.lock_for(id);
        let _g = lock.lock().await;
        let Some(mut r) = self.store.get_runtime(id)? else {
            return Ok(());
        };
        // Re-check under the lock: a request may have arrived meanwhile.
        let busy = self
            .activity(id)
            .map(|a| a.in_flight > 0 || a.last_active.elapsed() < Duration::from_secs(timeout))
            .unwrap_or(false);
        if r.status != RuntimeStatus::Running || busy {
            return Ok(());
        }
        self.backend.pause(id).await?;
        let why = format!("no activity for {timeout} s");
        self.set_status(&mut r, StatusEvent::IdleSuspended, Some(why))?;
        info!(%id, name = %r.name, "suspended after {timeout} s idle");
        Ok(())
    }
}
