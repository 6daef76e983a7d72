//! A client of the OCI distribution API, as much as pulling needs: manifests
//! and blobs by `GET`, resumable with `Range`, anonymous or with credentials
//! (the registry's `Basic` challenge, or a `Bearer` token from the realm it
//! names). HTTPS with the host's trust store plus the operator's CAs
//! (`--registry-ca`); plain HTTP only for `--insecure-registry HOST:PORT`.
//!
//! Written on the small hyper client of `http_client.rs` rather than with the
//! `oci-client` crate, which brings reqwest (whose TLS needs a process-wide
//! crypto provider, see `http_client.rs`), `oci-spec` and a JWT stack for the five
//! requests a pull makes.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine;
use http::header::{
    HeaderName, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE, RANGE, WWW_AUTHENTICATE,
};
use http::{Method, StatusCode, Uri};

use super::digest::Digest;
use super::http_client::{Answer, Http};
use super::pull::PullProgress;
use super::reference::{Reference, DOCKER_HUB};
use super::ImageError;

/// How the daemon reaches registries (flags `--registry-ca`,
/// `--insecure-registry`, `--registry-auth-file`).
#[derive(Debug, Clone, Default)]
pub struct RegistryConfig {
    /// PEM files of CAs trusted beside the host's.
    pub ca_files: Vec<PathBuf>,
    /// `host:port` of registries spoken to over plain HTTP.
    pub insecure: Vec<String>,
    /// `host:port` of HTTPS registries the operator placed on loopback or a
    /// private network (`--private-registry`): the only non-public addresses
    /// besides `insecure` a pull may reach.
    pub private: Vec<String>,
    /// A Docker/Podman `auth.json` (`{"auths": {"host": {"auth": base64(user:pass)}}}`)
    /// with credentials of the daemon's own. They are operator-wide: every
    /// tenant's pulls from that registry use them (a tenant's own `runta image
    /// login` takes precedence for that tenant). Logins made with the API are
    /// the tenant's who made them only.
    pub auth_file: Option<PathBuf>,
    /// The slowest a registry may send (`--image-pull-stall-secs`,
    /// `--image-pull-min-rate`).
    pub pace: super::http_client::Pace,
}

/// The host's CA bundle (Debian's; `SSL_CERT_FILE` overrides).
const HOST_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

pub struct Registries {
    client: Http,
    insecure: HashSet<String>,
    file_auth: HashMap<String, (String, String)>,
}

/// The key a login is stored under: the registry as the user names it, with
/// Docker Hub's several host names folded into `docker.io`.
pub fn login_key(registry: &str) -> String {
    match registry {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            DOCKER_HUB.to_string()
        }
        r => r.trim_end_matches('/').to_string(),
    }
}

impl Registries {
    pub fn new(cfg: RegistryConfig) -> Result<Self, String> {
        use rustls_pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        let host = std::env::var("SSL_CERT_FILE").unwrap_or_else(|_| HOST_CA_BUNDLE.into());
        if let Ok(iter) = rustls_pki_types::CertificateDer::pem_file_iter(&host) {
            for c in iter.flatten() {
                let _ = roots.add(c);
            }
        }
        for f in &cfg.ca_files {
            let iter = rustls_pki_types::CertificateDer::pem_file_iter(f)
                .map_err(|e| format!("--registry-ca {}: {e}", f.display()))?;
            let mut n = 0;
            for c in iter {
                let c = c.map_err(|e| format!("--registry-ca {}: {e}", f.display()))?;
                roots
                    .add(c)
                    .map_err(|e| format!("--registry-ca {}: {e}", f.display()))?;
                n += 1;
            }
            if n == 0 {
                return Err(format!(
                    "--registry-ca {}: no certificate in it",
                    f.display()
                ));
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        // The targets the operator placed on non-public addresses on purpose.
        let with_port = |a: &str, port: u16| {
            let a = a.trim().to_ascii_lowercase();
            match a.parse::<Uri>().ok().and_then(|u| u.port_u16()) {
                Some(_) => a,
                None => format!("{a}:{port}"),
            }
        };
        let mut allowed = HashSet::new();
        for a in &cfg.insecure {
            allowed.insert(with_port(a, 80));
        }
        for a in &cfg.private {
            allowed.insert(with_port(a, 443));
        }
        let client = Http::new(tls, cfg.pace, allowed);
        let mut file_auth = HashMap::new();
        if let Some(p) = &cfg.auth_file {
            let text = std::fs::read_to_string(p)
                .map_err(|e| format!("--registry-auth-file {}: {e}", p.display()))?;
            let v: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| format!("--registry-auth-file {}: {e}", p.display()))?;
            if let Some(auths) = v.get("auths").and_then(|a| a.as_object()) {
                for (host, entry) in auths {
                    let Some(b64) = entry.get("auth").and_then(|a| a.as_str()) else {
                        continue;
                    };
                    let raw = base64::engine::general_purpose::STANDARD
                        .decode(b64)
                        .map_err(|e| format!("--registry-auth-file: {host}: {e}"))?;
                    let s = String::from_utf8_lossy(&raw).into_owned();
                    if let Some((u, pw)) = s.split_once(':') {
                        let host = host
                            .trim_start_matches("https://")
                            .trim_start_matches("http://")
                            .split('/')
                            .next()
                            .unwrap_or(host);
                        file_auth.insert(login_key(host), (u.to_string(), pw.to_string()));
                    }
                }
            }
        }
        Ok(Registries {
            client,
            insecure: cfg.insecure.into_iter().collect(),
            file_auth,
        })
    }

    /// A session with the repository of `r`. `login` (from the store) wins
    /// over the daemon's auth file.
    pub fn session(&self, r: &Reference, login: Option<(String, String)>) -> Session {
        let host = r.api_host().to_string();
        let plain = self.insecure.contains(&r.registry) || self.insecure.contains(&host);
        Session {
            client: self.client.clone(),
            base: format!(
                "{}://{host}/v2/{}",
                if plain { "http" } else { "https" },
                r.repository
            ),
            repository: r.repository.clone(),
            registry: r.registry.clone(),
            plain,
            creds: login.or_else(|| self.file_auth.get(&login_key(&r.registry)).cloned()),
            auth: tokio::sync::Mutex::new(None),
            used_creds: Default::default(),
        }
    }
}

pub struct Session {
    client: Http,
    base: String,
    repository: String,
    registry: String,
    plain: bool,
    creds: Option<(String, String)>,
    /// The `Authorization` value that worked last (a token lasts the pull).
    auth: tokio::sync::Mutex<Option<HeaderValue>>,
    /// Whether the credentials were sent (to the registry or its realm).
    used_creds: std::sync::atomic::AtomicBool,
}

fn hv(s: &str) -> Result<HeaderValue, ImageError> {
    HeaderValue::from_str(s).map_err(|e| ImageError::Invalid(format!("header value: {e}")))
}

/// `Basic base64(user:password)`.
fn basic(u: &str, p: &str) -> Result<HeaderValue, ImageError> {
    let b = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
    hv(&format!("Basic {b}"))
}

impl Session {
    /// Whether the registry had to be opened with credentials (an anonymous
    /// token does not count).
    pub fn used_credentials(&self) -> bool {
        self.used_creds.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn creds_sent(&self) {
        self.used_creds
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    fn err(&self, message: impl Into<String>) -> ImageError {
        ImageError::Registry {
            registry: self.registry.clone(),
            message: message.into(),
        }
    }

    /// A GET that answers the registry's authentication challenge once.
    async fn get(&self, url: &str, accept: &str, from: u64) -> Result<Answer, ImageError> {
        for attempt in 0..2 {
            let mut headers: Vec<(HeaderName, HeaderValue)> = vec![(ACCEPT, hv(accept)?)];
            if from > 0 {
                headers.push((RANGE, hv(&format!("bytes={from}-"))?));
            }
            if let Some(a) = self.auth.lock().await.clone() {
                headers.push((AUTHORIZATION, a));
            }
            let resp = self
                .client
                .get(Method::GET, url, &headers)
                .await
                .map_err(|e| self.err(e))?;
            if resp.status != StatusCode::UNAUTHORIZED {
                return Ok(resp);
            }
            if attempt == 1 {
                break;
            }
            let challenge = resp.header(WWW_AUTHENTICATE).unwrap_or("").to_string();
            let value = self.answer(&challenge).await?;
            *self.auth.lock().await = Some(value);
        }
        Err(ImageError::Unauthorized(self.registry.clone()))
    }

    /// The `Authorization` value for a `WWW-Authenticate` challenge.
    async fn answer(&self, challenge: &str) -> Result<HeaderValue, ImageError> {
        let (scheme, params) = challenge.split_once(' ').unwrap_or((challenge, ""));
        let params = parse_params(params);
        match scheme.to_ascii_lowercase().as_str() {
            "basic" => match &self.creds {
                Some((u, p)) => {
                    self.creds_sent();
                    basic(u, p)
                }
                None => Err(ImageError::Unauthorized(self.registry.clone())),
            },
            "bearer" => {
                let realm = params
                    .get("realm")
                    .ok_or_else(|| self.err("a Bearer challenge without a realm"))?;
                let realm_url: Uri = realm
                    .parse()
                    .map_err(|e| self.err(format!("token realm {realm:?}: {e}")))?;
                let scheme = realm_url.scheme_str().unwrap_or("");
                let realm_named = super::http_client::authority_of(&realm_url)
                    .is_some_and(|a| self.client.private_allowed(&a));
                // Plain HTTP only to a realm the operator named, never one a
                // registry merely announces (the credentials would travel
                // in clear to a host of its choosing).
                if scheme != "https" && !(self.plain && scheme == "http" && realm_named) {
                    return Err(self.err(format!(
                        "the token realm {realm:?} is not HTTPS (credentials are only sent over TLS)"
                    )));
                }
                let scope = params
                    .get("scope")
                    .cloned()
                    .unwrap_or_else(|| format!("repository:{}:pull", self.repository));
                let query = {
                    let mut q = form_urlencoded::Serializer::new(String::new());
                    if let Some(s) = params.get("service") {
                        q.append_pair("service", s);
                    }
                    q.append_pair("scope", &scope);
                    q.finish()
                };
                let sep = if realm.contains('?') { '&' } else { '?' };
                let url = format!("{realm}{sep}{query}");
                let mut headers = vec![];
                if let Some((u, p)) = &self.creds {
                    self.creds_sent();
                    headers.push((AUTHORIZATION, basic(u, p)?));
                }
                let resp = self
                    .client
                    .get(Method::GET, &url, &headers)
                    .await
                    .map_err(|e| self.err(e))?;
                if resp.status == StatusCode::UNAUTHORIZED || resp.status == StatusCode::FORBIDDEN {
                    return Err(ImageError::Unauthorized(self.registry.clone()));
                }
                if !resp.status.is_success() {
                    return Err(self.err(format!("token server answered {}", resp.status)));
                }
                let body = read_capped(resp, 1 << 20, self).await?;
                let v: serde_json::Value = serde_json::from_slice(&body)
                    .map_err(|e| self.err(format!("token answer is not JSON: {e}")))?;
                let token = v
                    .get("token")
                    .or_else(|| v.get("access_token"))
                    .and_then(|t| t.as_str())
                    .ok_or_else(|| self.err("token answer without a token"))?;
                hv(&format!("Bearer {token}"))
            }
            _ => Err(self.err(format!("unsupported authentication challenge {scheme:?}"))),
        }
    }

    /// Checks the credentials: `GET /v2/` answered 200 after the challenge.
    pub async fn check_login(&self) -> Result<(), ImageError> {
        let url = self.base.split("/v2/").next().unwrap_or("").to_string() + "/v2/";
        let resp = self.get(&url, "application/json", 0).await?;
        if resp.status.is_success() {
            Ok(())
        } else {
            Err(self.err(format!("GET /v2/ answered {}", resp.status)))
        }
    }

    /// A manifest or index by tag or digest, at most `max` bytes, with the
    /// content type the registry gave.
    pub async fn manifest(
        &self,
        reference: &str,
        max: u64,
    ) -> Result<(Vec<u8>, Option<String>), ImageError> {
        let url = format!("{}/manifests/{reference}", self.base);
        let resp = self.get(&url, super::oci::MANIFEST_ACCEPT, 0).await?;
        match resp.status {
            s if s.is_success() => {}
            StatusCode::NOT_FOUND => {
                return Err(ImageError::NotFound(format!(
                    "registry {}: no manifest {}:{reference}",
                    self.registry, self.repository
                )))
            }
            s => return Err(self.err(format!("manifest {reference}: HTTP {s}"))),
        }
        if let Some(n) = resp.content_length().filter(|n| *n > max) {
            return Err(ImageError::TooLarge(format!(
                "the manifest of {}:{reference} is {n} bytes (at most {max})",
                self.repository
            )));
        }
        let ct = resp.header(CONTENT_TYPE).map(str::to_string);
        let body = read_capped(resp, max, self).await?;
        Ok((body, ct))
    }

    /// Downloads blob `digest` (`size` bytes) into `partial`, continuing a
    /// partial file with a `Range` request.
    pub async fn blob(
        &self,
        digest: &Digest,
        size: u64,
        partial: &Path,
        progress: Option<&PullProgress>,
    ) -> Result<(), ImageError> {
        let mut have = std::fs::metadata(partial).map(|m| m.len()).unwrap_or(0);
        if have > size {
            std::fs::remove_file(partial)?;
            have = 0;
        }
        if let Some(p) = progress {
            p.bytes(have);
        }
        if have == size && size > 0 {
            return Ok(());
        }
        let url = format!("{}/blobs/{digest}", self.base);
        let mut resp = self.get(&url, "*/*", have).await?;
        let mut file = match resp.status {
            StatusCode::PARTIAL_CONTENT => {
                std::fs::OpenOptions::new().append(true).open(partial)?
            }
            s if s.is_success() => {
                if let Some(p) = progress {
                    p.unbytes(have);
                }
                have = 0;
                std::fs::File::create(partial)?
            }
            StatusCode::NOT_FOUND => {
                return Err(ImageError::NotFound(format!(
                    "registry {}: no blob {digest} in {}",
                    self.registry, self.repository
                )))
            }
            s => return Err(self.err(format!("blob {}: HTTP {s}", digest.short()))),
        };
        while let Some(chunk) = resp.chunk().await.map_err(|e| self.err(e))? {
            have += chunk.len() as u64;
            if have > size {
                drop(file);
                let _ = std::fs::remove_file(partial);
                return Err(ImageError::DigestMismatch {
                    what: format!("blob {}", digest.short()),
                    expected: format!("{size} bytes"),
                    got: "more".into(),
                });
            }
            file.write_all(&chunk)?;
            if let Some(p) = progress {
                p.bytes(chunk.len() as u64);
            }
        }
        file.flush()?;
        Ok(())
    }
}

// Push (images/push.rs): the same session, any method.
impl Session {
    pub(super) fn push_base(&self) -> String {
        self.base.clone()
    }

    pub(super) fn push_err(&self, message: impl Into<String>) -> ImageError {
        self.err(message)
    }

    /// Sends the request `make` builds (an absolute URI), answering one
    /// authentication challenge (a push needs a token with `push` scope,
    /// which the registry's challenge names) and sending it again.
    pub(super) async fn push_request(
        &self,
        make: impl Fn() -> Result<http::Request<super::http_client::Body>, ImageError>,
    ) -> Result<Answer, ImageError> {
        for attempt in 0..2 {
            let mut req = make()?;
            if let Some(a) = self.auth.lock().await.clone() {
                req.headers_mut().insert(AUTHORIZATION, a);
            }
            let resp = self.client.send_once(req).await.map_err(|e| self.err(e))?;
            if resp.status != StatusCode::UNAUTHORIZED {
                return Ok(resp);
            }
            if attempt == 1 {
                break;
            }
            let challenge = resp.header(WWW_AUTHENTICATE).unwrap_or("").to_string();
            let value = self.answer(&challenge).await?;
            *self.auth.lock().await = Some(value);
        }
        Err(ImageError::Unauthorized(self.registry.clone()))
    }
}

async fn read_capped(mut resp: Answer, max: u64, s: &Session) -> Result<Vec<u8>, ImageError> {
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| s.err(e))? {
        if out.len() as u64 + chunk.len() as u64 > max {
            return Err(ImageError::TooLarge(format!(
                "a document from registry {} is larger than {max} bytes",
                s.registry
            )));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// `realm="…",service="…",scope="…"` (quoted values may hold commas).
fn parse_params(s: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let Some(eq) = rest.find('=') else { break };
        let key = rest[..eq]
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        rest = &rest[eq + 1..];
        let value;
        if let Some(r) = rest.strip_prefix('"') {
            let end = r.find('"').unwrap_or(r.len());
            value = r[..end].to_string();
            rest = r.get(end + 1..).unwrap_or("");
        } else {
            let end = rest.find(',').unwrap_or(rest.len());
            value = rest[..end].trim().to_string();
            rest = &rest[end..];
        }
        rest = rest.trim_start_matches([',', ' ']);
        out.insert(key, value);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_parse() {
        let p = parse_params(
            r#"realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#,
        );
        assert_eq!(p["realm"], "https://auth.example/token");
        assert_eq!(p["service"], "registry.example");
        assert_eq!(p["scope"], "repository:a/b:pull,push");
        assert_eq!(login_key("registry-1.docker.io"), "docker.io");
    }
}
