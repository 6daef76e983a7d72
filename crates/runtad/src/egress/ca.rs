//! The per-runtime CA of secret injection: a self-signed CA per runtime that
//! has bindings, name-constrained (permitted DNS subtrees) to the hosts it has
//! bindings for, and the leaf certificates the gateway shows the runtime for
//! those hosts.
//!
//! Its key never enters the runtime: only the CA certificate does (the
//! runtime's trust store). The name constraint makes the key worth nothing for
//! any other host even to the runtime that trusts it. A change of the bound
//! host set makes a new CA (new key, new constraints) and the runtime's trust
//! store is rewritten with it.
//!
//! Kept as `<data-dir>/egress-ca/<runtime-id>.json` (mode 0600: the key, the
//! certificate and the hosts it was made for), so a restarted daemon keeps
//! serving the certificate the runtime already trusts. Making one costs one
//! P-256 key and one signature (well under a millisecond), done only when a
//! runtime's bound host set is first seen or changes, never on create of a
//! runtime without bindings.

use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use chrono::{Datelike, Utc};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose,
    GeneralSubtree, IsCa, Issuer, KeyPair, KeyUsagePurpose, NameConstraints, PublicKeyData,
};
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// Leaves cached per CA before the cache is emptied (a runtime binds few hosts,
/// but a wildcard binding could be asked for many names).
const MAX_LEAVES: usize = 256;

/// The DNS subtree a binding's host pattern needs: `*.a.test` and `a.test`
/// both become `a.test` (a permitted subtree covers the name and every name
/// under it). `None` for what cannot be a DNS name constraint.
pub fn subtree(pattern: &str) -> Option<String> {
    let h = pattern
        .trim()
        .trim_start_matches("*.")
        .trim_end_matches('.')
        .to_ascii_lowercase();
    let ok = !h.is_empty()
        && h.parse::<std::net::IpAddr>().is_err()
        && h.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        });
    ok.then_some(h)
}

#[derive(Serialize, Deserialize)]
struct Stored {
    hosts: BTreeSet<String>,
    key_pem: String,
    cert_pem: String,
}

/// One runtime's CA.
pub struct RuntimeCa {
    pub hosts: BTreeSet<String>,
    /// What goes into the runtime's trust store.
    pub cert_pem: String,
    cert_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
    leaves: Mutex<HashMap<String, Arc<ServerConfig>>>,
}

/// Valid from midnight UTC `from` days from today to `to` days from today.
fn validity(p: &mut CertificateParams, from: i64, to: i64) {
    let date = |days: i64| {
        let d = (Utc::now() + chrono::Duration::days(days)).date_naive();
        rcgen::date_time_ymd(d.year(), d.month() as u8, d.day() as u8)
    };
    p.not_before = date(from);
    p.not_after = date(to);
}

/// The CA's parameters, derived from its key and hosts only, so the issuer of
/// a fresh leaf matches the stored certificate without parsing it back.
fn ca_params(id: Uuid, key: &KeyPair, hosts: &BTreeSet<String>) -> CertificateParams {
    let fp: String = Sha256::digest(key.subject_public_key_info())
        .iter()
        .take(6)
        .map(|b| format!("{b:02x}"))
        .collect();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Runta");
    dn.push(
        DnType::CommonName,
        format!("Runta egress CA {} {fp}", &id.to_string()[..8]),
    );
    let mut p = CertificateParams::default();
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p.name_constraints = Some(NameConstraints {
        permitted_subtrees: hosts
            .iter()
            .map(|h| GeneralSubtree::DnsName(h.clone()))
            .collect(),
        excluded_subtrees: vec![],
    });
    p
}

impl RuntimeCa {
    fn make(id: Uuid, hosts: BTreeSet<String>) -> Result<(RuntimeCa, Stored), String> {
        let key = KeyPair::generate().map_err(|e| format!("make CA key: {e}"))?;
        let mut p = ca_params(id, &key, &hosts);
        validity(&mut p, -1, 3650);
        let cert = p.self_signed(&key).map_err(|e| format!("make CA: {e}"))?;
        let stored = Stored {
            hosts,
            key_pem: key.serialize_pem(),
            cert_pem: cert.pem(),
        };
        Ok((Self::load(id, &stored)?, stored))
    }

    fn load(id: Uuid, s: &Stored) -> Result<RuntimeCa, String> {
        let key = KeyPair::from_pem(&s.key_pem).map_err(|e| format!("CA key: {e}"))?;
        let cert_der = CertificateDer::from_pem_slice(s.cert_pem.as_bytes())
            .map_err(|e| format!("CA certificate: {e}"))?;
        let issuer = Issuer::new(ca_params(id, &key, &s.hosts), key);
        Ok(RuntimeCa {
            hosts: s.hosts.clone(),
            cert_pem: s.cert_pem.clone(),
            cert_der,
            issuer,
            leaves: Mutex::new(HashMap::new()),
        })
    }

    /// Whether `host` is inside this CA's constraints.
    pub fn covers(&self, host: &str) -> bool {
        self.hosts.iter().any(|h| {
            host == h
                || host
                    .strip_suffix(h.as_str())
                    .is_some_and(|p| p.ends_with('.'))
        })
    }

    /// The TLS server configuration for `host` (ALPN h2 and http/1.1), its
    /// leaf signed on first use and cached.
    pub fn server_config(&self, host: &str) -> Result<Arc<ServerConfig>, String> {
        if !self.covers(host) {
            return Err(format!("{host} is outside the runtime CA's names"));
        }
        if let Some(c) = self
            .leaves
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(host)
        {
            return Ok(c.clone());
        }
        let leaf_key = KeyPair::generate().map_err(|e| format!("make leaf key: {e}"))?;
        let mut p = CertificateParams::new(vec![host.to_string()])
            .map_err(|e| format!("certificate for {host:?}: {e}"))?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, host);
        p.distinguished_name = dn;
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        p.use_authority_key_identifier_extension = true;
        validity(&mut p, -1, 365);
        let leaf = p
            .signed_by(&leaf_key, &self.issuer)
            .map_err(|e| format!("sign leaf: {e}"))?;
        let chain = vec![leaf.der().clone(), self.cert_der.clone()];
        let key = PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into());
        let mut cfg =
            ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(|e| format!("TLS versions: {e}"))?
                .with_no_client_auth()
                .with_single_cert(chain, key)
                .map_err(|e| format!("TLS certificate: {e}"))?;
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let cfg = Arc::new(cfg);
        let mut m = self.leaves.lock().unwrap_or_else(|e| e.into_inner());
        if m.len() >= MAX_LEAVES {
            m.clear();
        }
        m.insert(host.to_string(), cfg.clone());
        Ok(cfg)
    }
}

/// Every runtime's CA, in memory and under `dir`.
pub struct Cas {
    dir: Option<PathBuf>,
    by_id: Mutex<HashMap<Uuid, Arc<RuntimeCa>>>,
}

impl Cas {
    pub fn new(dir: Option<PathBuf>) -> Self {
        Cas {
            dir,
            by_id: Mutex::new(HashMap::new()),
        }
    }

    fn path(&self, id: Uuid) -> Option<PathBuf> {
        self.dir.as_ref().map(|d| d.join(format!("{id}.json")))
    }

    /// The CA of runtime `id` for exactly `hosts` (DNS subtrees): the current
    /// one when its hosts are the same, else a new one (kept, and written
    /// under the data dir). `None` when `hosts` is empty (and any old CA is
    /// forgotten). The flag says whether the CA changed.
    pub fn ensure(
        &self,
        id: Uuid,
        hosts: BTreeSet<String>,
    ) -> Result<Option<(Arc<RuntimeCa>, bool)>, String> {
        if hosts.is_empty() {
            // Cheap for the common case (no bindings, no CA): no file call.
            if self.get(id).is_some() {
                self.forget(id);
            }
            return Ok(None);
        }
        let mut m = self.by_id.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = m.get(&id).filter(|c| c.hosts == hosts) {
            return Ok(Some((c.clone(), false)));
        }
        // A daemon restarted: the stored CA, if made for these hosts.
        if let std::collections::hash_map::Entry::Vacant(slot) = m.entry(id) {
            if let Some(s) = self
                .path(id)
                .and_then(|p| std::fs::read(p).ok())
                .and_then(|b| serde_json::from_slice::<Stored>(&b).ok())
                .filter(|s| s.hosts == hosts)
            {
                if let Ok(c) = RuntimeCa::load(id, &s) {
                    let c = Arc::new(c);
                    slot.insert(c.clone());
                    return Ok(Some((c, false)));
                }
            }
        }
        let (ca, stored) = RuntimeCa::make(id, hosts)?;
        if let (Some(dir), Some(p)) = (&self.dir, self.path(id)) {
            let body = serde_json::to_vec(&stored).map_err(|e| e.to_string())?;
            write_private(dir, &p, &body)?;
        }
        let ca = Arc::new(ca);
        m.insert(id, ca.clone());
        Ok(Some((ca, true)))
    }

    pub fn get(&self, id: Uuid) -> Option<Arc<RuntimeCa>> {
        self.by_id
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .cloned()
    }

    pub fn forget(&self, id: Uuid) {
        self.by_id
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
        if let Some(p) = self.path(id) {
            let _ = std::fs::remove_file(p);
        }
    }
}

fn write_private(dir: &Path, path: &Path, data: &[u8]) -> Result<(), String> {
    use std::os::unix::fs::DirBuilderExt;
    let _ = std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir);
    let tmp = path.with_extension("json.new");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| format!("write {}: {e}", tmp.display()))?;
    f.write_all(data)
        .and_then(|_| f.sync_all())
        .map_err(|e| format!("write {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("write {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subtrees_of_patterns() {
        assert_eq!(subtree("*.A.test").as_deref(), Some("a.test"));
        assert_eq!(subtree("api.a.test.").as_deref(), Some("api.a.test"));
        assert_eq!(subtree("*"), None);
        assert_eq!(subtree("10.0.0.1"), None);
        assert_eq!(subtree("a..test"), None);
    }

    #[test]
    fn leaves_only_inside_the_constraint() {
        let dir = std::env::temp_dir().join(format!("runta-ca-{}", Uuid::new_v4()));
        let cas = Cas::new(Some(dir.clone()));
        let id = Uuid::new_v4();
        let hosts: BTreeSet<String> = ["api.a.test".to_string()].into();
        let (ca, changed) = cas.ensure(id, hosts.clone()).unwrap().unwrap();
        assert!(changed);
        assert!(ca.server_config("api.a.test").is_ok());
        assert!(ca.server_config("x.api.a.test").is_ok());
        assert!(ca.server_config("evil.test").is_err());
        assert!(ca.server_config("xapi.a.test").is_err());
        // Same hosts: the same CA; stored with mode 0600 and found again.
        let (_, changed) = cas.ensure(id, hosts.clone()).unwrap().unwrap();
        assert!(!changed);
        let p = dir.join(format!("{id}.json"));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let again = Cas::new(Some(dir.clone()));
        let (ca2, changed) = again.ensure(id, hosts).unwrap().unwrap();
        assert!(!changed);
        assert_eq!(ca2.cert_pem, ca.cert_pem);
        // Other hosts: a new CA.
        let (ca3, changed) = again
            .ensure(id, ["b.test".to_string()].into())
            .unwrap()
            .unwrap();
        assert!(changed && ca3.cert_pem != ca.cert_pem);
        assert!(again.ensure(id, BTreeSet::new()).unwrap().is_none());
        assert!(!p.exists());
        let _ = std::fs::remove_dir_all(dir);
    }
}
