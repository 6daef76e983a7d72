//! Pure validation shared by the daemon (authoritative) and the clients (early,
//! friendlier messages). Every failure names the offending field.

use crate::{PortSpec, Protocol};

/// A rejected value: which field, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl std::error::Error for FieldError {}

pub const MAX_VCPUS: f64 = 256.0;
pub const MIN_MEMORY_MIB: u64 = 16;
pub const MAX_MEMORY_MIB: u64 = 4 * 1024 * 1024;
pub const MAX_DISK_GIB: u64 = 64 * 1024;
pub const MAX_IDLE_TIMEOUT_SECS: u64 = 30 * 24 * 3600;
pub const MAX_ENV_ENTRIES: usize = 512;
pub const MAX_ENV_VALUE_BYTES: usize = 32 * 1024;
pub const MAX_LABELS: usize = 64;
pub const MAX_PUBLISH: usize = 16;

/// Runtime and tenant names: `[a-z0-9][a-z0-9-]{0,62}`.
pub fn name(field: &str, value: &str) -> Result<(), FieldError> {
    let bytes = value.as_bytes();
    let ok = !bytes.is_empty()
        && bytes.len() <= 63
        && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-');
    if ok {
        Ok(())
    } else {
        Err(FieldError::new(
            field,
            format!(
                "{:?} is not a valid name: use 1-63 characters of a-z, 0-9 and '-', starting with a letter or digit",
                truncate(value, 80)
            ),
        ))
    }
}

/// Image names and references (`base`, `registry:5000/team/app:1.2@sha256:…`):
/// the same alphabet as runtime names plus `.`, `_`, `:`, `/` and `@`. The
/// daemon's image store parses references fully.
pub fn image(field: &str, value: &str) -> Result<(), FieldError> {
    let ok = !value.is_empty()
        && value.len() <= 255
        && value.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'/' | b'@')
        })
        && !value.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(FieldError::new(
            field,
            format!("{:?} is not a valid image name", truncate(value, 80)),
        ))
    }
}

pub fn vcpus(field: &str, value: f64) -> Result<(), FieldError> {
    if !value.is_finite() || value <= 0.0 {
        return Err(FieldError::new(field, "must be a number greater than 0"));
    }
    if value > MAX_VCPUS {
        return Err(FieldError::new(
            field,
            format!("must be at most {MAX_VCPUS}"),
        ));
    }
    if value < 0.01 {
        return Err(FieldError::new(field, "must be at least 0.01"));
    }
    Ok(())
}

pub fn memory_mib(field: &str, value: u64) -> Result<(), FieldError> {
    if !(MIN_MEMORY_MIB..=MAX_MEMORY_MIB).contains(&value) {
        return Err(FieldError::new(
            field,
            format!("must be between {MIN_MEMORY_MIB} and {MAX_MEMORY_MIB} MiB"),
        ));
    }
    Ok(())
}

pub fn disk_gib(field: &str, value: u64) -> Result<(), FieldError> {
    if value == 0 || value > MAX_DISK_GIB {
        return Err(FieldError::new(
            field,
            format!("must be between 1 and {MAX_DISK_GIB} GiB"),
        ));
    }
    Ok(())
}

pub fn idle_timeout(field: &str, value: u64) -> Result<(), FieldError> {
    if value > MAX_IDLE_TIMEOUT_SECS {
        return Err(FieldError::new(
            field,
            format!("must be at most {MAX_IDLE_TIMEOUT_SECS} seconds"),
        ));
    }
    Ok(())
}

/// Environment variables: POSIX-ish keys, no NUL anywhere, bounded sizes.
pub fn env<'a>(
    field: &str,
    entries: impl IntoIterator<Item = (&'a String, &'a String)>,
) -> Result<(), FieldError> {
    for (n, (k, v)) in entries.into_iter().enumerate() {
        if n >= MAX_ENV_ENTRIES {
            return Err(FieldError::new(
                field,
                format!("at most {MAX_ENV_ENTRIES} entries"),
            ));
        }
        let key_ok = !k.is_empty()
            && k.len() <= 256
            && !k.as_bytes()[0].is_ascii_digit()
            && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !key_ok {
            return Err(FieldError::new(
                format!("{field}.{}", truncate(k, 40)),
                "variable names use A-Z, a-z, 0-9 and '_' and do not start with a digit",
            ));
        }
        if v.contains('\0') {
            return Err(FieldError::new(
                format!("{field}.{k}"),
                "value contains a NUL byte",
            ));
        }
        if v.len() > MAX_ENV_VALUE_BYTES {
            return Err(FieldError::new(
                format!("{field}.{k}"),
                format!("value longer than {MAX_ENV_VALUE_BYTES} bytes"),
            ));
        }
    }
    Ok(())
}

pub fn labels<'a>(
    field: &str,
    entries: impl IntoIterator<Item = (&'a String, &'a String)>,
) -> Result<(), FieldError> {
    for (n, (k, v)) in entries.into_iter().enumerate() {
        if n >= MAX_LABELS {
            return Err(FieldError::new(
                field,
                format!("at most {MAX_LABELS} labels"),
            ));
        }
        let key_ok = !k.is_empty()
            && k.len() <= 63
            && k.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/'));
        if !key_ok {
            return Err(FieldError::new(
                format!("{field}.{}", truncate(k, 40)),
                "label keys use 1-63 characters of A-Z, a-z, 0-9, '-', '_', '.', '/'",
            ));
        }
        if v.len() > 256 || v.chars().any(|c| c.is_control()) {
            return Err(FieldError::new(
                format!("{field}.{k}"),
                "label values are at most 256 printable characters",
            ));
        }
    }
    Ok(())
}

pub fn publish(field: &str, ports: &[PortSpec]) -> Result<(), FieldError> {
    if ports.len() > MAX_PUBLISH {
        return Err(FieldError::new(
            field,
            format!("at most {MAX_PUBLISH} ports"),
        ));
    }
    for (i, p) in ports.iter().enumerate() {
        if p.port == 0 {
            return Err(FieldError::new(
                format!("{field}[{i}].port"),
                "must be between 1 and 65535",
            ));
        }
        if ports[..i].iter().any(|q| q.port == p.port) {
            return Err(FieldError::new(
                format!("{field}[{i}].port"),
                format!("port {} is listed twice", p.port),
            ));
        }
    }
    Ok(())
}

/// Parses the CLI / deployment form `8080/https`, `8080/http` or `8080` (https).
pub fn parse_publish(value: &str) -> Result<PortSpec, String> {
    let (port, proto) = match value.split_once('/') {
        Some((p, proto)) => (p, proto),
        None => (value, "https"),
    };
    let port: u16 = port
        .trim()
        .parse()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("{value:?}: port must be a number from 1 to 65535"))?;
    let protocol = match proto.trim() {
        "https" => Protocol::Https,
        "http" => Protocol::Http,
        other => {
            return Err(format!(
                "{value:?}: protocol {other:?} is not http or https"
            ))
        }
    };
    Ok(PortSpec { port, protocol })
}

/// An absolute path inside a runtime: no NUL, bounded length.
pub fn runtime_path(field: &str, value: &str) -> Result<(), FieldError> {
    if !value.starts_with('/') {
        return Err(FieldError::new(field, "must be an absolute path"));
    }
    if value.contains('\0') {
        return Err(FieldError::new(field, "contains a NUL byte"));
    }
    if value.len() > 4096 {
        return Err(FieldError::new(field, "longer than 4096 bytes"));
    }
    Ok(())
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max).collect();
        t.push('…');
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(name("name", "worker").is_ok());
        assert!(name("name", "a").is_ok());
        assert!(name("name", "0-a").is_ok());
        assert!(name("name", &"a".repeat(63)).is_ok());
        for bad in [
            "",
            "-a",
            "A",
            "a_b",
            "a.b",
            "é",
            "a b",
            "a\n",
            &"a".repeat(64),
        ] {
            assert!(name("name", bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn publish_forms() {
        assert_eq!(parse_publish("8080/http").unwrap().protocol, Protocol::Http);
        assert_eq!(parse_publish("443").unwrap().protocol, Protocol::Https);
        assert!(parse_publish("0/http").is_err());
        assert!(parse_publish("70000").is_err());
        assert!(parse_publish("80/ftp").is_err());
    }

    #[test]
    fn env_keys() {
        let mut m = std::collections::BTreeMap::new();
        m.insert("GOOD_1".to_string(), "x".to_string());
        assert!(env("env", &m).is_ok());
        m.insert("1BAD".to_string(), "x".to_string());
        assert_eq!(env("env", &m).unwrap_err().field, "env.1BAD");
    }

    #[test]
    fn resources() {
        assert!(vcpus("v", 0.0).is_err());
        assert!(vcpus("v", f64::NAN).is_err());
        assert!(vcpus("v", 1e9).is_err());
        assert!(vcpus("v", 0.5).is_ok());
        assert!(memory_mib("m", 1).is_err());
        assert!(memory_mib("m", u64::MAX).is_err());
    }
}

/// What the daemon fills in where a create request leaves a field out (its
/// `--default-*` flags).
#[derive(Debug, Clone, PartialEq)]
pub struct CreateDefaults {
    pub image: String,
    pub vcpus: f64,
    pub memory_mib: u64,
    pub disk_gib: Option<u64>,
}

/// A create request's sizes and image once validated, defaults filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckedCreate {
    pub image: String,
    pub vcpus: f64,
    pub memory_mib: u64,
    pub memory_limit_mib: u64,
    pub disk_gib: Option<u64>,
}

/// The one validation of a create request: `POST /v1/runtimes`, each sandbox
/// of an apply, and the fuzz target all call this. What needs the daemon's
/// state (a checkpoint's existence, the host's CPU count) is checked there.
pub fn create_request(
    req: &crate::CreateRuntimeRequest,
    d: &CreateDefaults,
) -> Result<CheckedCreate, FieldError> {
    name("name", &req.name)?;
    let img = req.image.clone().unwrap_or_else(|| d.image.clone());
    image("image", &img)?;
    let rq = &req.resources.requests;
    let cpus = rq.vcpus.unwrap_or(d.vcpus);
    vcpus("resources.requests.vcpus", cpus)?;
    let mem = rq.memory_mib.unwrap_or(d.memory_mib);
    memory_mib("resources.requests.memory_mib", mem)?;
    let limit = req
        .resources
        .limits
        .as_ref()
        .and_then(|l| l.memory_mib)
        .unwrap_or(mem);
    memory_mib("resources.limits.memory_mib", limit)?;
    if limit < mem {
        return Err(FieldError::new(
            "resources.limits.memory_mib",
            format!("limit {limit} MiB is below the request {mem} MiB"),
        ));
    }
    let disk = rq.disk_gib.or(d.disk_gib);
    if let Some(g) = disk {
        disk_gib("resources.requests.disk_gib", g)?;
    }
    env("env", &req.env)?;
    labels("labels", &req.labels)?;
    publish("publish", &req.publish)?;
    if let Some(t) = req.idle_timeout_secs {
        idle_timeout("idle_timeout_secs", t)?;
    }
    Ok(CheckedCreate {
        image: img,
        vcpus: cpus,
        memory_mib: mem,
        memory_limit_mib: limit,
        disk_gib: disk,
    })
}

/// `deployment.json`'s `apiVersion` and `kind`.
pub const DEPLOYMENT_API_VERSION: &str = "runta/v1";
pub const DEPLOYMENT_KIND: &str = "SandboxSet";

/// A whole deployment, checked before anything changes: each sandbox becomes
/// the create request apply makes (image and sizes filled in), validated by
/// [`create_request`]. Fields are named as in the file
/// (`sandboxes[1].resources.vcpus`).
pub fn deployment(
    dep: &crate::Deployment,
    d: &CreateDefaults,
) -> Result<Vec<crate::CreateRuntimeRequest>, FieldError> {
    if dep.api_version != DEPLOYMENT_API_VERSION {
        return Err(FieldError::new(
            "apiVersion",
            format!("must be {DEPLOYMENT_API_VERSION:?}"),
        ));
    }
    if dep.kind != DEPLOYMENT_KIND {
        return Err(FieldError::new(
            "kind",
            format!("must be {DEPLOYMENT_KIND:?}"),
        ));
    }
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(dep.sandboxes.len());
    for (i, s) in dep.sandboxes.iter().enumerate() {
        let at = |f: &str| format!("sandboxes[{i}].{f}");
        name("name", &s.name).map_err(|e| FieldError::new(at(&e.field), e.message))?;
        if !seen.insert(s.name.as_str()) {
            return Err(FieldError::new(
                at("name"),
                format!("{:?} appears twice", s.name),
            ));
        }
        let mut ports = Vec::with_capacity(s.publish.len());
        for (j, p) in s.publish.iter().enumerate() {
            ports.push(
                parse_publish(p).map_err(|m| FieldError::new(at(&format!("publish[{j}]")), m))?,
            );
        }
        let mut req = crate::CreateRuntimeRequest {
            name: s.name.clone(),
            image: s.image.clone(),
            resources: crate::ResourcesSpec {
                requests: crate::RequestsSpec {
                    vcpus: s.resources.vcpus,
                    memory_mib: s.resources.memory_mib,
                    disk_gib: s.resources.disk_gib,
                },
                limits: None,
            },
            env: s.env.clone(),
            labels: s.labels.clone(),
            publish: ports,
            idle_timeout_secs: s.idle_timeout_secs,
            ..Default::default()
        };
        // The file has no requests/limits split: name its fields as it does.
        let checked = create_request(
            &req,
            &CreateDefaults {
                disk_gib: None,
                ..d.clone()
            },
        )
        .map_err(|e| {
            FieldError::new(
                at(&e.field.replace("resources.requests.", "resources.")),
                e.message,
            )
        })?;
        req.image = Some(checked.image);
        req.resources.requests.vcpus = Some(checked.vcpus);
        req.resources.requests.memory_mib = Some(checked.memory_mib);
        out.push(req);
    }
    Ok(out)
}

#[cfg(test)]
mod create_tests {
    use super::*;
    use crate::{CreateRuntimeRequest, Deployment, SandboxSpec};

    fn defaults() -> CreateDefaults {
        CreateDefaults {
            image: "base".into(),
            vcpus: 1.0,
            memory_mib: 512,
            disk_gib: Some(4),
        }
    }

    #[test]
    fn a_create_request_gets_the_defaults_and_its_limit() {
        let req = CreateRuntimeRequest {
            name: "a".into(),
            ..Default::default()
        };
        let c = create_request(&req, &defaults()).unwrap();
        assert_eq!(
            c,
            CheckedCreate {
                image: "base".into(),
                vcpus: 1.0,
                memory_mib: 512,
                memory_limit_mib: 512,
                disk_gib: Some(4),
            }
        );
        let mut low = req.clone();
        low.resources.limits = Some(crate::LimitsSpec {
            memory_mib: Some(256),
        });
        let e = create_request(&low, &defaults()).unwrap_err();
        assert_eq!(e.field, "resources.limits.memory_mib");
        let mut bad = req;
        bad.name = "Bad".into();
        assert_eq!(create_request(&bad, &defaults()).unwrap_err().field, "name");
    }

    #[test]
    fn a_deployment_names_fields_as_the_file_does() {
        let sandbox = |name: &str| SandboxSpec {
            name: name.into(),
            image: None,
            resources: Default::default(),
            env: Default::default(),
            labels: Default::default(),
            publish: vec![],
            idle_timeout_secs: None,
        };
        let mut d = Deployment {
            api_version: DEPLOYMENT_API_VERSION.into(),
            kind: DEPLOYMENT_KIND.into(),
            sandboxes: vec![sandbox("a"), sandbox("b")],
        };
        let reqs = deployment(&d, &defaults()).unwrap();
        assert_eq!(reqs[1].resources.requests.vcpus, Some(1.0));
        assert_eq!(reqs[1].resources.requests.disk_gib, None);
        d.sandboxes[1].resources.vcpus = Some(0.0);
        assert_eq!(
            deployment(&d, &defaults()).unwrap_err().field,
            "sandboxes[1].resources.vcpus"
        );
        d.sandboxes[1] = sandbox("a");
        assert_eq!(
            deployment(&d, &defaults()).unwrap_err().field,
            "sandboxes[1].name"
        );
        d.sandboxes[1] = sandbox("b");
        d.sandboxes[0].publish = vec!["0/http".into()];
        assert_eq!(
            deployment(&d, &defaults()).unwrap_err().field,
            "sandboxes[0].publish[0]"
        );
        d.kind = "Other".into();
        assert_eq!(deployment(&d, &defaults()).unwrap_err().field, "kind");
    }
}
