//! Egress decisions leave the gateway here: each is stamped and queued for
//! the manager's writer, which keeps them in the store in batches
//! (`store/audits.rs`, bounded per runtime). The gateway never waits on the
//! disk: a full queue loses the decision (counted and logged), never the
//! connection's time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use runta_api::EgressAuditPayload;
use tokio::sync::{mpsc, oneshot};
use tracing::warn;
use uuid::Uuid;

/// Decisions waiting for the writer at most (a few hundred bytes each).
pub const QUEUE: usize = 16 * 1024;

/// What the writer receives.
pub enum AuditMsg {
    /// (runtime, observed_unix_ms, decision).
    Record(Uuid, i64, Box<EgressAuditPayload>),
    /// Answered once everything queued before it is written.
    Flush(oneshot::Sender<()>),
}

#[derive(Default)]
pub struct Audits {
    tx: OnceLock<mpsc::Sender<AuditMsg>>,
    lost: AtomicU64,
}

impl Audits {
    /// Where decisions go from now on (the manager's writer).
    pub fn connect(&self, tx: mpsc::Sender<AuditMsg>) {
        let _ = self.tx.set(tx);
    }

    pub fn record(&self, runtime_id: Uuid, egress: EgressAuditPayload) {
        let Some(tx) = self.tx.get() else { return };
        let ms = chrono::Utc::now().timestamp_millis();
        if tx
            .try_send(AuditMsg::Record(runtime_id, ms, Box::new(egress)))
            .is_err()
        {
            let n = self.lost.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                warn!(
                    lost = n,
                    "egress audit queue full: decisions were not recorded"
                );
            }
        }
    }

    /// Waits (at most 2 s) until every decision recorded so far is in the
    /// store, so a listing right after a connection sees it.
    pub async fn flush(&self) {
        let Some(tx) = self.tx.get() else { return };
        let (done, wait) = oneshot::channel();
        let deadline = std::time::Duration::from_secs(2);
        if tokio::time::timeout(deadline, tx.send(AuditMsg::Flush(done)))
            .await
            .is_ok_and(|r| r.is_ok())
        {
            let _ = tokio::time::timeout(deadline, wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use runta_api::{EgressAction, EgressAuditKind, EgressIcmpDropAudit};

    fn drop_audit() -> EgressAuditPayload {
        EgressAuditPayload {
            kind: EgressAuditKind::IcmpDrop,
            tcp_connection: None,
            http_request: None,
            icmp_drop: Some(EgressIcmpDropAudit {
                src_ip: "10.1.0.2".into(),
                packets: 1,
                bytes: 84,
                action: EgressAction::Deny,
                outcome: "dropped".into(),
                reason: "test".into(),
            }),
            dns_query: None,
        }
    }

    /// A program flooding decisions cannot make the gateway wait on the
    /// writer: past the queue's room a decision is counted as lost and
    /// `record` returns at once; a flush waits for the writer, at most 2 s.
    #[tokio::test]
    async fn a_full_queue_loses_decisions_never_time() {
        let a = Audits::default();
        a.record(Uuid::nil(), drop_audit()); // no writer yet: nothing kept
        let (tx, mut rx) = mpsc::channel(4);
        a.connect(tx);
        for _ in 0..10 {
            a.record(Uuid::nil(), drop_audit());
        }
        assert_eq!(a.lost.load(Ordering::Relaxed), 6);
        let mut kept = 0;
        while let Ok(AuditMsg::Record(id, ms, _)) = rx.try_recv() {
            assert!(id.is_nil() && ms > 0);
            kept += 1;
        }
        assert_eq!(kept, 4);
        let writer = tokio::spawn(async move {
            while let Some(m) = rx.recv().await {
                if let AuditMsg::Flush(done) = m {
                    let _ = done.send(());
                }
            }
        });
        tokio::time::timeout(std::time::Duration::from_secs(3), a.flush())
            .await
            .expect("a flush answered by the writer returns");
        writer.abort();
    }
}
