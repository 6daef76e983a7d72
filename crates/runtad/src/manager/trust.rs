//! The runtime's side of secret injection: the runtime trusts its own CA by
//! itself (docs/security.md, "Secrets").
//!
//! The CA certificate (never its key) is appended, between two marker lines,
//! to `/etc/ssl/certs/ca-certificates.crt` in the runtime's writable layer
//! (the agent reads and writes it inside the runtime's root, so a symlink
//! planted there resolves inside the runtime), and every command of a runtime
//! with a CA gets `SSL_CERT_FILE`, `REQUESTS_CA_BUNDLE`, `NODE_EXTRA_CA_CERTS`,
//! `CURL_CA_BUNDLE` and `GIT_SSL_CAINFO` pointing at that file: curl, Python
//! (ssl, requests, httpx), Node, git and pip work with no flags.
//!
//! Nothing here is on the create path: the trust store is brought up to date
//! before a command runs when the runtime's bindings changed since the last
//! write (one read and one write of the bundle through the agent, only then),
//! and in the background when a binding set is published for a running
//! runtime.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use runta_agent::{tag, Response as AgentResponse};
use tracing::{debug, warn};
use uuid::Uuid;

use super::{Manager, Result};
use crate::agent_client::{AgentClient, AgentError};
use crate::egress::Trust;
use crate::store::RuntimeRecord;

/// The runtime's trust store, which the variables below point at.
pub const BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";
pub const CA_VARS: [&str; 5] = [
    "SSL_CERT_FILE",
    "REQUESTS_CA_BUNDLE",
    "NODE_EXTRA_CA_CERTS",
    "CURL_CA_BUNDLE",
    "GIT_SSL_CAINFO",
];
const BEGIN: &str = "# BEGIN Runta egress CA (managed by runtad; this runtime's own CA)";
const END: &str = "# END Runta egress CA";
/// A bundle larger than this is not rewritten (the image's is ~200 KiB).
const MAX_BUNDLE: u64 = 8 * 1024 * 1024;

/// `bundle` with the Runta block replaced by one holding `pem` (or removed).
pub fn splice(bundle: &str, pem: Option<&str>) -> String {
    let mut out = String::with_capacity(bundle.len() + 1024);
    let mut inside = false;
    for line in bundle.split_inclusive('\n') {
        let l = line.trim_end_matches(['\n', '\r']);
        if l == BEGIN {
            inside = true;
            continue;
        }
        if inside {
            if l == END {
                inside = false;
            }
            continue;
        }
        out.push_str(line);
    }
    if let Some(pem) = pem {
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str(BEGIN);
        out.push('\n');
        out.push_str(pem.trim_end());
        out.push('\n');
        out.push_str(END);
        out.push('\n');
    }
    out
}

async fn read_bundle(agent: &AgentClient) -> std::result::Result<String, AgentError> {
    let (size, mut r) = match agent.read_file(BUNDLE).await {
        Ok(v) => v,
        Err(AgentError::Refused { kind, .. }) if kind == "not_found" => return Ok(String::new()),
        Err(e) => return Err(e),
    };
    if size > MAX_BUNDLE {
        return Err(AgentError::Protocol(format!(
            "{BUNDLE} is {size} bytes, more than the {MAX_BUNDLE} the daemon rewrites"
        )));
    }
    let mut buf = Vec::with_capacity(size as usize);
    loop {
        let Some(f) = r.next().await? else { break };
        match f.tag {
            tag::STDOUT => {
                buf.extend_from_slice(&f.payload);
                if buf.len() as u64 > MAX_BUNDLE {
                    return Err(AgentError::Protocol(format!("{BUNDLE} grew while read")));
                }
            }
            tag::EOF => break,
            _ => {}
        }
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

async fn write_bundle(agent: &AgentClient, body: &str) -> std::result::Result<(), AgentError> {
    let (mut r, mut w) = agent.write_file(BUNDLE, Some(0o644), None).await?;
    for chunk in body.as_bytes().chunks(1024 * 1024) {
        w.frame(tag::STDIN, chunk).await?;
    }
    w.frame(tag::EOF, b"").await?;
    match r.response().await? {
        AgentResponse::Written { .. } => Ok(()),
        AgentResponse::Error { kind, message } => Err(AgentError::Refused { kind, message }),
        other => Err(AgentError::Protocol(format!("unexpected {other:?}"))),
    }
}

impl Manager {
    /// At daemon start, after the egress gateway: secret injection reads the
    /// secrets hub, keeps CAs under `<data-dir>/egress-ca`, and brings
    /// running runtimes up to date whenever their bindings change.
    pub async fn start_trust(
        self: &Arc<Self>,
        data_dir: PathBuf,
        upstream_ca: Option<PathBuf>,
    ) -> Result<()> {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Uuid>();
        self.egress
            .configure_secrets(
                self.secrets_hub().clone(),
                data_dir.join("egress-ca"),
                upstream_ca,
                tx.clone(),
            )
            .map_err(super::Error::Internal)?;
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            while let Some(id) = rx.recv().await {
                let Some(m) = me.upgrade() else { return };
                let Ok(Some(r)) = m.store.get_runtime(id) else {
                    continue;
                };
                m.trust_sync(&r, None).await;
            }
        });
        // Every runtime is watched (a set published later calls back); one
        // that has bindings, or stubs of its tenant to block, already is
        // brought up to date now. An empty set is not acted on here: the hub
        // may not be filled yet, and the CA kept in the data dir must
        // survive until it is.
        for r in self.store.list_runtimes(&Default::default())? {
            self.egress.watch_runtime(r.id);
            let set = self.secrets_hub().current(r.id);
            if !set.is_empty() || set.stubs().next().is_some() {
                let _ = tx.send(r.id);
            }
        }
        Ok(())
    }

    /// Brings `r`'s CA, gateway rules and trust store in line with its
    /// bindings; `agent` given = the runtime is running and a command is
    /// about to start in it. Returns whether the runtime has a CA (its
    /// commands then get the CA variables). Failures are logged and leave
    /// the runtime as it was: an intercepted host then fails TLS
    /// verification in the runtime, it never goes out without the gateway.
    pub(super) async fn trust_sync(&self, r: &RuntimeRecord, agent: Option<&AgentClient>) -> bool {
        let Ok(ip) = Ipv4Addr::from_str(&r.ip) else {
            return false;
        };
        let _one = self.egress.sync_lock(r.id).await;
        // The policy as stored now, not as `r` was read before the lock: a
        // PATCH that changed it meanwhile holds this lock until it is stored,
        // and applying the older one would undo it on the host.
        let Ok(Some(fresh)) = self.store.get_runtime(r.id) else {
            return self.egress.has_ca(r.id);
        };
        let trust = match self
            .egress
            .sync_bindings(r.id, &r.tenant, ip, &fresh.egress)
            .await
        {
            Ok(t) => t,
            Err(e) => {
                warn!(id = %r.id, "secret bindings could not be applied: {e}");
                return self.egress.has_ca(r.id);
            }
        };
        let has_ca = self.egress.has_ca(r.id);
        if trust == Trust::Same {
            return has_ca;
        }
        let fetched;
        let agent = match agent {
            Some(a) => a,
            None => {
                // In the background: only a running runtime is written to;
                // another gets it before its next command.
                if r.status != runta_api::RuntimeStatus::Running {
                    return has_ca;
                }
                fetched = AgentClient::new(self.backend.agent_address(r.id));
                &fetched
            }
        };
        let pem = match &trust {
            Trust::Set(p) => Some(p.as_str()),
            _ => None,
        };
        let res = async {
            let cur = read_bundle(agent).await?;
            let next = splice(&cur, pem);
            if next != cur {
                write_bundle(agent, &next).await?;
            }
            Ok::<_, AgentError>(())
        }
        .await;
        match res {
            Ok(()) => {
                debug!(id = %r.id, "runtime trust store updated");
                self.egress.trusted(r.id, pem.map(str::to_string));
            }
            Err(e) => warn!(id = %r.id, "runtime trust store not updated: {e}"),
        }
        has_ca
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_block_is_replaced_not_stacked() {
        let sys = "-----BEGIN CERTIFICATE-----\nSYS\n-----END CERTIFICATE-----\n";
        let a = splice(
            sys,
            Some("-----BEGIN CERTIFICATE-----\nA\n-----END CERTIFICATE-----\n"),
        );
        assert!(a.starts_with(sys) && a.contains("\nA\n"));
        let b = splice(
            &a,
            Some("-----BEGIN CERTIFICATE-----\nB\n-----END CERTIFICATE-----"),
        );
        assert!(b.starts_with(sys) && b.contains("\nB\n") && !b.contains("\nA\n"));
        assert_eq!(b.matches(BEGIN).count(), 1);
        assert_eq!(splice(&b, None), sys);
        // No trailing newline in the image's file; an empty or missing file.
        assert!(splice("X", Some("P")).starts_with("X\n# BEGIN"));
        assert!(splice("", Some("P")).starts_with("# BEGIN"));
    }
}
