//! Certificates of the HTTPS ingress: the operator's (`--tls-cert`/`--tls-key`),
//! or a CA that runtad makes once under `<data-dir>/ingress/` plus a wildcard
//! leaf for `*.<domain>` that it signs afresh at every start (the CA key never
//! leaves the data dir; clients trust `ca.pem`).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{Datelike, Utc};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData,
};
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};

/// ALPN: HTTP/2 first, HTTP/1.1 for everything else (WebSocket upgrades).
fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<ServerConfig>, String> {
    let mut cfg =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS versions: {e}"))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| format!("TLS certificate: {e}"))?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// The operator's certificate chain and key, both PEM.
pub fn operator(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, String> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("read --tls-cert {}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!(
            "--tls-cert {}: no certificate in it",
            cert.display()
        ));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("read --tls-key {}: {e}", key.display()))?;
    server_config(chain, key)
}

/// The CA's distinguished name is derived from its key, so the issuer of a
/// fresh leaf always matches the stored `ca.pem` without parsing it back.
fn ca_params(key: &KeyPair) -> CertificateParams {
    let fp: String = Sha256::digest(key.subject_public_key_info())
        .iter()
        .take(6)
        .map(|b| format!("{b:02x}"))
        .collect();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Runta");
    dn.push(DnType::CommonName, format!("Runta ingress CA {fp}"));
    let mut p = CertificateParams::default();
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p
}

/// Paths of the self-managed CA.
pub struct CaFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl CaFiles {
    pub fn new(dir: &Path) -> Self {
        CaFiles {
            cert: dir.join("ca.pem"),
            key: dir.join("ca-key.pem"),
        }
    }
}

/// Loads the CA under `dir` (making it on first start) and signs a wildcard
/// leaf for `*.<domain>` with it.
pub fn self_managed(dir: &Path, domain: &str) -> Result<(Arc<ServerConfig>, PathBuf), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    // Midnight UTC `days` from today (negative: in the past).
    let date = |days: i64| {
        let d = (Utc::now() + chrono::Duration::days(days)).date_naive();
        rcgen::date_time_ymd(d.year(), d.month() as u8, d.day() as u8)
    };
    let files = CaFiles::new(dir);
    let (ca_key, ca_pem) = match (
        std::fs::read_to_string(&files.key),
        std::fs::read_to_string(&files.cert),
    ) {
        (Ok(k), Ok(c)) => (
            KeyPair::from_pem(&k).map_err(|e| format!("read {}: {e}", files.key.display()))?,
            c,
        ),
        _ => {
            let key = KeyPair::generate().map_err(|e| format!("make CA key: {e}"))?;
            let mut p = ca_params(&key);
            p.not_before = date(-1);
            p.not_after = date(3650);
            let cert = p.self_signed(&key).map_err(|e| format!("make CA: {e}"))?;
            write_private(&files.key, key.serialize_pem().as_bytes())?;
            std::fs::write(&files.cert, cert.pem())
                .map_err(|e| format!("write {}: {e}", files.cert.display()))?;
            (key, cert.pem())
        }
    };
    let ca_der = CertificateDer::from_pem_slice(ca_pem.as_bytes())
        .map_err(|e| format!("read {}: {e}", files.cert.display()))?;
    let issuer = Issuer::new(ca_params(&ca_key), ca_key);

    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    let leaf_key = KeyPair::generate().map_err(|e| format!("make leaf key: {e}"))?;
    let mut p = CertificateParams::new(vec![format!("*.{domain}"), domain.clone()])
        .map_err(|e| format!("certificate for {domain:?}: {e}"))?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, format!("*.{domain}"));
    p.distinguished_name = dn;
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    p.use_authority_key_identifier_extension = true;
    p.not_before = date(-1);
    p.not_after = date(365);
    let leaf = p
        .signed_by(&leaf_key, &issuer)
        .map_err(|e| format!("sign leaf: {e}"))?;
    let chain = vec![leaf.der().clone(), ca_der];
    let key = PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into());
    Ok((server_config(chain, key)?, files.cert))
}

fn write_private(path: &Path, data: &[u8]) -> Result<(), String> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("write {}: {e}", path.display()))?;
    f.write_all(data)
        .map_err(|e| format!("write {}: {e}", path.display()))
}
