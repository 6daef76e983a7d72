//! Admin-only bodies: tenants and their API tokens.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenantRequest {
    /// Tenant name, same rules as runtime names.
    pub name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Tenant {
    pub name: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTokenRequest {
    /// The tenant the token acts for; created if it does not exist yet.
    pub tenant: String,
}

/// A freshly minted token. The secret is shown once; the daemon keeps only its hash.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TokenCreated {
    pub id: String,
    pub tenant: String,
    pub token: String,
    pub created_at: DateTime<Utc>,
}

/// One token as the admin sees it: never its value or its hash.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TokenInfo {
    pub id: String,
    pub tenant: String,
    /// True for the admin token (it is not revoked or rotated over the API).
    pub admin: bool,
    pub created_at: DateTime<Utc>,
    /// When a request last authenticated with it, to within a minute; null if never.
    pub last_used_at: Option<DateTime<Utc>>,
}

/// What one tenant may hold at once. Runtimes, disk and checkpoints count every
/// record the tenant keeps; vCPUs, memory and PIDs count runtimes that hold them
/// (creating, running, paused, suspended). Memory counts each runtime's limit,
/// which is what it may use. See docs/operations.md for the defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TenantQuota {
    pub runtimes: u64,
    pub vcpus: f64,
    pub memory_mib: u64,
    /// Sum of the runtimes' disk sizes; null: no disk quota (runtimes may then
    /// have no disk size). With a quota, every runtime needs a disk size.
    pub disk_gib: Option<u64>,
    pub checkpoints: u64,
    /// Sum of the sizes of the tenant's checkpoints.
    pub checkpoint_bytes: u64,
    /// Sum of the runtimes' process limits.
    pub pids: u64,
}

/// What a tenant holds now, counted the way [`TenantQuota`] counts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct QuotaUsage {
    pub runtimes: u64,
    pub vcpus: f64,
    pub memory_mib: u64,
    pub disk_gib: u64,
    pub checkpoints: u64,
    pub checkpoint_bytes: u64,
    pub pids: u64,
}

/// `GET /v1/quota` and the admin quota routes: limits beside usage.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct QuotaView {
    pub tenant: String,
    pub limits: TenantQuota,
    pub usage: QuotaUsage,
}

/// `PATCH /v1/tenants/{name}/quota`: a field left out keeps its value, `null`
/// returns it to the daemon's default.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetQuotaRequest {
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<u64>)]
    pub runtimes: Option<Option<u64>>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<f64>)]
    pub vcpus: Option<Option<f64>>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<u64>)]
    pub memory_mib: Option<Option<u64>>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<u64>)]
    pub disk_gib: Option<Option<u64>>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<u64>)]
    pub checkpoints: Option<Option<u64>>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<u64>)]
    pub checkpoint_bytes: Option<Option<u64>>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<u64>)]
    pub pids: Option<Option<u64>>,
}

/// Tells a field that is present (`Some(None)` for `null`) from one left out
/// (`None`, through `#[serde(default)]`).
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// Largest number a quota field takes: exact in a JSON double and in SQLite's
/// signed 64-bit integers, and far beyond any one host.
pub const MAX_QUOTA: u64 = 1 << 53;
pub const MAX_QUOTA_VCPUS: f64 = 1_000_000.0;

impl SetQuotaRequest {
    /// Bounds every field; 0 is allowed (it stops the tenant from adding more).
    pub fn validate(&self) -> Result<(), crate::validate::FieldError> {
        use crate::validate::FieldError;
        let ints = [
            ("runtimes", self.runtimes),
            ("memory_mib", self.memory_mib),
            ("disk_gib", self.disk_gib),
            ("checkpoints", self.checkpoints),
            ("checkpoint_bytes", self.checkpoint_bytes),
            ("pids", self.pids),
        ];
        for (field, v) in ints {
            if let Some(Some(n)) = v {
                if n > MAX_QUOTA {
                    return Err(FieldError::new(
                        field,
                        format!("must be at most {MAX_QUOTA}"),
                    ));
                }
            }
        }
        if let Some(Some(v)) = self.vcpus {
            if !v.is_finite() || !(0.0..=MAX_QUOTA_VCPUS).contains(&v) {
                return Err(FieldError::new(
                    "vcpus",
                    format!("must be a number from 0 to {MAX_QUOTA_VCPUS}"),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_quota_tells_absent_from_null() {
        let r: SetQuotaRequest = serde_json::from_str(r#"{"runtimes": 3, "pids": null}"#).unwrap();
        assert_eq!(r.runtimes, Some(Some(3)));
        assert_eq!(r.pids, Some(None));
        assert_eq!(r.vcpus, None);
        assert!(serde_json::from_str::<SetQuotaRequest>(r#"{"runtimes": -1}"#).is_err());
        assert!(serde_json::from_str::<SetQuotaRequest>(r#"{"bogus": 1}"#).is_err());
        let huge = SetQuotaRequest {
            memory_mib: Some(Some(u64::MAX)),
            ..Default::default()
        };
        assert_eq!(huge.validate().unwrap_err().field, "memory_mib");
        let nan = SetQuotaRequest {
            vcpus: Some(Some(f64::INFINITY)),
            ..Default::default()
        };
        assert_eq!(nan.validate().unwrap_err().field, "vcpus");
    }
}
