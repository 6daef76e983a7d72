//! Secrets and their injection bindings: the wire shapes.
//!
//! A secret's value goes in (create, replace) and never comes out: no
//! response type here has a field for it. A binding has one shape in
//! responses, [`SecretBinding`], that carries the fields of both client
//! spellings (0.1.1 `secret-injection-rules`: `credential_display_name`,
//! `injection_config_json`; 0.1.21 `secret-stubs`: `stub_value_display_name`,
//! `stub_config_json`), and one request, [`CreateSecretBindingRequest`],
//! that reads both (`secret`/`injection` or `stub_value`/`config`).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

/// A secret's value on the way in. Its `Debug` is redacted, and a body whose
/// `value` is not a string is refused without quoting what was sent.
#[derive(Clone, Default, PartialEq, Eq, Serialize, ToSchema)]
#[schema(value_type = String)]
#[serde(transparent)]
pub struct SecretValue(pub String);

impl std::fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretValue(<redacted>)")
    }
}

impl<'de> Deserialize<'de> for SecretValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'v> serde::de::Visitor<'v> for V {
            type Value = SecretValue;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<SecretValue, E> {
                Ok(SecretValue(v.to_string()))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<SecretValue, E> {
                Ok(SecretValue(v))
            }
            fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<SecretValue, E> {
                Err(E::custom("must be a string"))
            }
            fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<SecretValue, E> {
                Err(E::custom("must be a string"))
            }
            fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<SecretValue, E> {
                Err(E::custom("must be a string"))
            }
            fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<SecretValue, E> {
                Err(E::custom("must be a string"))
            }
            fn visit_bytes<E: serde::de::Error>(self, _: &[u8]) -> Result<SecretValue, E> {
                Err(E::custom("must be a string"))
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<SecretValue, E> {
                Err(E::custom("must be a string"))
            }
            fn visit_seq<A: serde::de::SeqAccess<'v>>(self, _: A) -> Result<SecretValue, A::Error> {
                Err(serde::de::Error::custom("must be a string"))
            }
            fn visit_map<A: serde::de::MapAccess<'v>>(self, _: A) -> Result<SecretValue, A::Error> {
                Err(serde::de::Error::custom("must be a string"))
            }
        }
        d.deserialize_any(V)
    }
}

/// `POST /v1/secrets` (0.1.1).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSecretRequest {
    /// `[A-Za-z0-9][A-Za-z0-9_.-]{0,62}`, unique in the tenant.
    pub name: String,
    /// Write-only: never returned, logged or shown.
    pub value: SecretValue,
    /// Accepted and shown back; runtad reads values from memory, so it
    /// changes nothing (0 ..= one year).
    #[serde(default)]
    pub cache_ttl_secs: Option<i64>,
}

/// `PUT /v1/secrets/{id_or_name}` (0.1.21): replace the value, or create the
/// secret under that name.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetSecretRequest {
    pub value: SecretValue,
    #[serde(default)]
    pub cache_ttl_secs: Option<i64>,
}

/// A secret as every response shows it: never its value.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct Secret {
    pub id: Uuid,
    /// The official clients' name for `name`.
    pub display_name: String,
    pub name: String,
    pub cache_ttl_secs: i64,
    /// A placeholder, not secret: code in a runtime may hold it where a key
    /// is expected. Sent to a host with no binding for this secret, the
    /// request is blocked and audited.
    pub stub: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A binding request in either spelling: 0.1.1 `{host, path, secret,
/// injection}` or 0.1.21 `{host, path, stub_value, config}`. `injection` is
/// `{"headerName", "valueFormat"}` or `{"paramName", "paramFormat"}`, the
/// format containing `${credential}` (default: `${credential}` alone).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSecretBindingRequest {
    /// `api.example.com` or `*.example.com`.
    pub host: String,
    /// `/v1/*`, an exact path, or none for every path.
    #[serde(default)]
    pub path: Option<String>,
    /// The secret's id or name (0.1.21: `stub_value`).
    #[serde(alias = "stub_value")]
    pub secret: String,
    /// 0.1.21: `config`.
    #[serde(alias = "config")]
    #[schema(value_type = Object)]
    pub injection: serde_json::Value,
}

/// `PUT /v1/runtimes/{id}/secret-stubs/replace` (0.1.21): in one
/// transaction, remove `delete_ids` (each a binding of this runtime) and add
/// `stubs`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplaceSecretStubsRequest {
    #[serde(default)]
    pub delete_ids: Vec<Uuid>,
    #[serde(default)]
    pub stubs: Vec<CreateSecretBindingRequest>,
}

/// Whose binding it is.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum BindingScope {
    /// One runtime's.
    Runtime,
    /// The tenant's default: applies to every runtime of the tenant.
    TenantDefault,
}

/// A binding, in the fields of both client spellings.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct SecretBinding {
    pub id: Uuid,
    pub scope: BindingScope,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_id: Option<Uuid>,
    /// The runtime's name (absent for a tenant default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_display_name: Option<String>,
    pub secret_id: Uuid,
    /// The secret's name (0.1.1 spelling).
    pub credential_display_name: String,
    /// The secret's name (0.1.21 spelling).
    pub stub_value_display_name: String,
    pub host_pattern: String,
    pub path_pattern: String,
    /// `{"headerName", "valueFormat"}` or `{"paramName", "paramFormat"}`.
    #[schema(value_type = Object)]
    pub injection: serde_json::Value,
    /// The same as JSON text (0.1.1 spelling).
    pub injection_config_json: String,
    /// The same as JSON text (0.1.21 spelling).
    pub stub_config_json: String,
    pub created_at: DateTime<Utc>,
}

/// Per-tenant limits (docs/api.md, "Secrets").
pub const MAX_SECRETS_PER_TENANT: u64 = 1000;
pub const MAX_BINDINGS_PER_TENANT: u64 = 5000;
/// Most stubs one replace request may install.
pub const MAX_BINDINGS_PER_REQUEST: usize = 256;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_is_never_quoted_or_printed() {
        let e = serde_json::from_str::<CreateSecretRequest>(r#"{"name":"a","value":424242}"#)
            .unwrap_err()
            .to_string();
        assert!(!e.contains("424242"), "{e}");
        let ok: CreateSecretRequest =
            serde_json::from_str(r#"{"name":"a","value":"sk-hidden"}"#).unwrap();
        assert!(!format!("{ok:?}").contains("sk-hidden"));
    }

    #[test]
    fn both_spellings_of_a_binding() {
        let a: CreateSecretBindingRequest = serde_json::from_str(
            r#"{"host":"h.example","secret":"k","injection":{"headerName":"x"}}"#,
        )
        .unwrap();
        let b: CreateSecretBindingRequest = serde_json::from_str(
            r#"{"host":"h.example","path":null,"stub_value":"k","config":{"headerName":"x"}}"#,
        )
        .unwrap();
        assert_eq!(a.secret, b.secret);
        assert_eq!(a.injection, b.injection);
    }
}
