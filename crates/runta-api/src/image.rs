//! Image bodies: `GET /v1/images`, pulls, registry logins, garbage collection
//! (docs/images.md).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// An image in the daemon's store (or the built-in `base`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Image {
    /// The first of `names` (what `runta image ls` shows).
    pub name: String,
    /// Every name pointing at this image (`registry/repo:tag`, local names).
    pub names: Vec<String>,
    /// The manifest digest (`sha256:…`); null for the built-in `base`.
    pub digest: Option<String>,
    /// Compressed bytes of the layers (what a pull downloads).
    pub size_bytes: u64,
    pub layers: u32,
    pub created_at: Option<DateTime<Utc>>,
    pub pulled_at: Option<DateTime<Utc>>,
    /// Runtimes (`tenant/name`) and checkpoints (`checkpoint tenant/name`)
    /// using it; a caller who is not the admin sees only its own.
    pub in_use_by: Vec<String>,
    /// `true` for the built-in `base`.
    pub builtin: bool,
    /// What runtimes of this image get: the image config's `Env`,
    /// `WorkingDir` and `User`.
    #[serde(default)]
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    /// Exec's default shell for a command given as one string; null when the
    /// image has none (a command then needs `args`).
    pub shell: Option<Vec<String>>,
    /// Layer digests (compressed blob, uncompressed diff_id), bottom first.
    /// Only in `GET /v1/images/{ref}`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub layer_digests: Vec<ImageLayer>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ImageLayer {
    pub digest: String,
    pub diff_id: String,
    pub size_bytes: u64,
    pub media_type: String,
}

/// `POST /v1/images/pulls`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PullImageRequest {
    /// `[registry[:port]/]repository[:tag][@sha256:…]`; Docker Hub and tag
    /// `latest` when left out.
    pub reference: String,
}

/// Status of a pull: `running`, `succeeded`, `failed`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ImagePull {
    pub id: String,
    /// The reference in full (`registry/repo:tag`).
    pub reference: String,
    pub status: String,
    pub layers_total: u64,
    pub layers_done: u64,
    pub bytes_total: u64,
    pub bytes_done: u64,
    /// The image's digest once the pull succeeded.
    pub digest: Option<String>,
    pub error: Option<String>,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// `POST /v1/images/logins` (admin): credentials for a registry. The daemon
/// keeps them; no route ever returns the password.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegistryLoginRequest {
    /// `host[:port]` as in image references (`docker.io` for Docker Hub).
    pub registry: String,
    pub username: String,
    /// A password or an access token.
    pub password: String,
}

/// A stored login, without its secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RegistryLogin {
    pub registry: String,
    pub username: String,
    pub created_at: DateTime<Utc>,
}

/// `POST /v1/images/gc`: what one garbage collection freed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ImageGc {
    pub images: u64,
    pub blobs: u64,
    pub layers: u64,
    pub bytes_freed: u64,
}
