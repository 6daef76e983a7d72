//! What a secret and a binding may look like. Every check names the field it
//! refuses (the API turns the error into a 422 with that field); the limits
//! are in docs/api.md, "Secrets".

use super::{HostPattern, PathPattern, Target, CREDENTIAL};

/// Largest secret value, in bytes.
pub const MAX_VALUE_BYTES: usize = 8 * 1024;
/// Longest name, host pattern label set, template or path pattern.
pub const MAX_NAME_LEN: usize = 63;
pub const MAX_TEMPLATE_LEN: usize = 1024;
pub const MAX_PATH_LEN: usize = 1024;
pub const MAX_HEADER_NAME_LEN: usize = 128;
/// A year: what `cache_ttl_secs` may ask for.
pub const MAX_CACHE_TTL_SECS: i64 = 365 * 24 * 3600;
/// The random part of a stub (base32, 130 bits).
pub const STUB_RANDOM_LEN: usize = 26;

/// A refused field: `(field, why)`. `why` never quotes a secret value.
pub type Refusal = (&'static str, String);

/// `[A-Za-z0-9][A-Za-z0-9_.-]{0,62}`, and not a UUID (a path segment is an
/// id or a name; a name that parses as an id would be ambiguous).
pub fn secret_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if !ok {
        return Err(format!(
            "must match [A-Za-z0-9][A-Za-z0-9_.-]{{0,{}}}",
            MAX_NAME_LEN - 1
        ));
    }
    if uuid::Uuid::parse_str(name).is_ok() {
        return Err("must not be a UUID".into());
    }
    Ok(())
}

/// 1 to [`MAX_VALUE_BYTES`] bytes of text with no control characters, so
/// that any rendered template is a valid header value. The message never
/// quotes the value.
pub fn secret_value(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err("must not be empty".into());
    }
    if value.len() > MAX_VALUE_BYTES {
        return Err(format!("is longer than {MAX_VALUE_BYTES} bytes"));
    }
    if value.chars().any(|c| c.is_control()) {
        return Err("must not contain control characters (CR, LF, NUL, TAB, ...)".into());
    }
    Ok(())
}

pub fn cache_ttl_secs(v: i64) -> Result<(), String> {
    if !(0..=MAX_CACHE_TTL_SECS).contains(&v) {
        return Err(format!("must be between 0 and {MAX_CACHE_TTL_SECS}"));
    }
    Ok(())
}

/// A DNS name (`api.example.com`) or a wildcard over one
/// (`*.example.com`, at least two labels after the `*.`). No scheme, port,
/// path, IP address or bare `*`.
pub fn host_pattern(s: &str) -> Result<HostPattern, String> {
    let s = s.trim();
    let lower = s.to_ascii_lowercase();
    let lower = lower.strip_suffix('.').unwrap_or(&lower);
    let (wild, name) = match lower.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, lower),
    };
    let bad = |why: &str| {
        Err(format!(
            "{why} (want a host name such as api.example.com or *.example.com)"
        ))
    };
    if name.is_empty() || name.len() > 253 {
        return bad("must be 1 to 253 characters");
    }
    if name.contains("://") || name.contains('/') || name.contains(':') {
        return bad("must be a host name only, without scheme, port or path");
    }
    if name.contains('*') {
        return bad("may use * only as the whole first label");
    }
    if name.parse::<std::net::IpAddr>().is_ok() {
        return bad("must not be an IP address");
    }
    let labels: Vec<&str> = name.split('.').collect();
    for l in &labels {
        let ok = !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !ok {
            return bad("has an invalid label");
        }
    }
    if wild && labels.len() < 2 {
        return bad("a wildcard must cover a name of two labels or more");
    }
    Ok(if wild {
        HostPattern::Suffix(format!(".{name}"))
    } else {
        HostPattern::Exact(name.to_string())
    })
}

/// Empty, `*` or `/*` (every path); `/prefix/*`; or an exact path. Starts
/// with `/`, no `*` elsewhere, no whitespace, control characters, `?` or `#`.
pub fn path_pattern(s: &str) -> Result<PathPattern, String> {
    if s.is_empty() || s == "*" || s == "/*" {
        return Ok(PathPattern::Any);
    }
    if s.len() > MAX_PATH_LEN {
        return Err(format!("is longer than {MAX_PATH_LEN} characters"));
    }
    if !s.starts_with('/') {
        return Err("must start with / (or be *)".into());
    }
    if s.chars()
        .any(|c| c.is_control() || c.is_whitespace() || c == '?' || c == '#')
    {
        return Err("must not contain whitespace, control characters, ? or #".into());
    }
    if let Some(prefix) = s.strip_suffix("/*") {
        if prefix.contains('*') {
            return Err("may use * only as a final /*".into());
        }
        return Ok(PathPattern::Prefix(prefix.to_string()));
    }
    if s.contains('*') {
        return Err("may use * only as a final /*".into());
    }
    Ok(PathPattern::Exact(s.to_string()))
}

/// Headers that frame or route the request: replacing them would let a
/// binding break the gateway's own HTTP handling.
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "upgrade",
    "te",
    "trailer",
    "keep-alive",
    "proxy-connection",
    "expect",
];

/// An HTTP token (RFC 9110 `tchar`), not one of the framing headers.
pub fn header_name(s: &str) -> Result<(), String> {
    let tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if s.is_empty() || s.len() > MAX_HEADER_NAME_LEN || !s.bytes().all(tchar) {
        return Err(format!(
            "must be an HTTP header name (1 to {MAX_HEADER_NAME_LEN} token characters, no CR/LF, space or colon)"
        ));
    }
    if RESERVED_HEADERS.contains(&s.to_ascii_lowercase().as_str()) || s.starts_with(':') {
        return Err(format!("{s} frames the request and cannot be injected"));
    }
    Ok(())
}

/// `[A-Za-z0-9._~-]`, 1 to 128 characters.
pub fn param_name(s: &str) -> Result<(), String> {
    if s.is_empty()
        || s.len() > MAX_HEADER_NAME_LEN
        || !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'~' | b'-'))
    {
        return Err(format!(
            "must be 1 to {MAX_HEADER_NAME_LEN} characters of [A-Za-z0-9._~-]"
        ));
    }
    Ok(())
}

/// Contains `${credential}`; no control characters; at most
/// [`MAX_TEMPLATE_LEN`] characters.
pub fn template(s: &str) -> Result<(), String> {
    if !s.contains(CREDENTIAL) {
        return Err(format!("must contain {CREDENTIAL}"));
    }
    if s.len() > MAX_TEMPLATE_LEN {
        return Err(format!("is longer than {MAX_TEMPLATE_LEN} characters"));
    }
    if s.chars().any(|c| c.is_control()) {
        return Err("must not contain control characters (CR, LF, NUL, ...)".into());
    }
    Ok(())
}

/// The injection object of both client spellings:
/// `{"headerName", "valueFormat"}` or `{"paramName", "paramFormat"}`
/// (a missing format is `${credential}`). Returns the target and template.
pub fn injection(v: &serde_json::Value, field: &'static str) -> Result<(Target, String), Refusal> {
    // 0.1.1 and 0.1.21 send an object; a JSON string of one is accepted too
    // (the responses carry it as `injection_config_json`).
    let parsed;
    let v = match v {
        serde_json::Value::String(s) => {
            parsed = serde_json::from_str::<serde_json::Value>(s).map_err(|_| {
                (
                    field,
                    "must be an object or a JSON string of one".to_string(),
                )
            })?;
            &parsed
        }
        v => v,
    };
    let obj = v.as_object().ok_or((
        field,
        "must be {\"headerName\", \"valueFormat\"} or {\"paramName\", \"paramFormat\"}".to_string(),
    ))?;
    let get = |k: &str| -> Result<Option<&str>, Refusal> {
        match obj.get(k) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::String(s)) => Ok(Some(s.as_str())),
            Some(_) => Err((field, format!("{k} must be a string"))),
        }
    };
    for k in obj.keys() {
        if !matches!(
            k.as_str(),
            "headerName" | "valueFormat" | "paramName" | "paramFormat"
        ) {
            return Err((field, format!("unknown key {k:?}")));
        }
    }
    let (target, format_key, format) = match (get("headerName")?, get("paramName")?) {
        (Some(h), None) => {
            header_name(h).map_err(|m| (field, format!("headerName {m}")))?;
            (
                Target::Header {
                    name: h.to_string(),
                },
                "valueFormat",
                get("valueFormat")?,
            )
        }
        (None, Some(p)) => {
            param_name(p).map_err(|m| (field, format!("paramName {m}")))?;
            (
                Target::QueryParam {
                    name: p.to_string(),
                },
                "paramFormat",
                get("paramFormat")?,
            )
        }
        (Some(_), Some(_)) => {
            return Err((field, "has both headerName and paramName; give one".into()))
        }
        (None, None) => return Err((field, "needs headerName or paramName".into())),
    };
    let tpl = format.unwrap_or(CREDENTIAL).to_string();
    template(&tpl).map_err(|m| (field, format!("{format_key} {m}")))?;
    Ok((target, tpl))
}

/// The JSON text of an injection, as responses show it
/// (`injection_config_json`, `stub_config_json`).
pub fn injection_json(target: &Target, template: &str) -> String {
    let v = match target {
        Target::Header { name } => serde_json::json!({"headerName": name, "valueFormat": template}),
        Target::QueryParam { name } => {
            serde_json::json!({"paramName": name, "paramFormat": template})
        }
    };
    v.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names() {
        assert!(secret_name("OPENAI_API_KEY").is_ok());
        assert!(secret_name("github-token.v2").is_ok());
        for bad in [
            "",
            "-x",
            "a b",
            "a/b",
            "é",
            &"a".repeat(64),
            "8c9d3f4e-1b2a-4c5d-9e8f-0a1b2c3d4e5f",
        ] {
            assert!(secret_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn values() {
        assert!(secret_value("sk-abc").is_ok());
        assert!(secret_value("").is_err());
        assert!(secret_value("a\r\nX-Evil: 1").is_err());
        assert!(secret_value("a\0").is_err());
        assert!(secret_value(&"a".repeat(MAX_VALUE_BYTES + 1)).is_err());
        let e = secret_value("sk-LEAK\n").unwrap_err();
        assert!(!e.contains("LEAK"));
    }

    #[test]
    fn hosts() {
        assert!(host_pattern("api.openai.com").is_ok());
        assert!(host_pattern("*.example.com").is_ok());
        assert!(host_pattern("localhost").is_ok());
        for bad in [
            "",
            "*",
            "*.com",
            "https://api.openai.com",
            "api.openai.com:443",
            "a/b",
            "a.*.com",
            "10.0.0.1",
            "-a.com",
            "a..com",
            "a b.com",
            "a\r\n.com",
        ] {
            assert!(host_pattern(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn paths() {
        assert_eq!(
            path_pattern("/v1/*").unwrap(),
            PathPattern::Prefix("/v1".into())
        );
        assert_eq!(path_pattern("*").unwrap(), PathPattern::Any);
        for bad in ["v1", "/v1/*/x", "/v*", "/a b", "/a?b", "/a\n"] {
            assert!(path_pattern(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn injections() {
        let (t, tpl) = injection(
            &json!({"headerName": "Authorization", "valueFormat": "Bearer ${credential}"}),
            "injection",
        )
        .unwrap();
        assert_eq!(
            t,
            Target::Header {
                name: "Authorization".into()
            }
        );
        assert_eq!(tpl, "Bearer ${credential}");
        let (t, tpl) = injection(&json!({"paramName": "key"}), "injection").unwrap();
        assert_eq!(t, Target::QueryParam { name: "key".into() });
        assert_eq!(tpl, "${credential}");
        let s = injection_json(&Target::Header { name: "x-k".into() }, "${credential}");
        assert!(injection(&json!(s), "config").is_ok());
        for bad in [
            json!({"headerName": "X-Key", "valueFormat": "Bearer"}),
            json!({"headerName": "X-Key\r\nEvil", "valueFormat": "${credential}"}),
            json!({"headerName": "X-Key", "valueFormat": "${credential}\r\nEvil: 1"}),
            json!({"headerName": "Host"}),
            json!({"headerName": "a", "paramName": "b"}),
            json!({}),
            json!({"headerName": 3}),
            json!({"headerName": "a", "extra": 1}),
            json!([1]),
            json!("not json"),
        ] {
            let e = injection(&bad, "injection").unwrap_err();
            assert_eq!(e.0, "injection", "{bad}");
        }
    }
}
