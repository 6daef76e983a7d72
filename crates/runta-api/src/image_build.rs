//! Bodies of the routes that make images: commit a runtime or checkpoint,
//! push an image, build a Dockerfile (docs/images.md).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `POST /v1/runtimes/{id}/commit` and `POST /v1/checkpoints/{id}/commit`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CommitRequest {
    /// The new image's name (`myapp:1`). A tenant's name is kept under
    /// `localhost/<tenant>/`; the admin names any image.
    pub name: String,
}

/// `POST /v1/images/{ref}/push`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PushImageRequest {
    /// Where to: `registry[:port]/repository[:tag]`.
    pub reference: String,
}

/// What a push did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ImagePush {
    pub reference: String,
    /// The manifest digest the registry now has under the tag.
    pub digest: String,
    /// Blobs uploaded, and blobs the registry already had (not sent).
    pub uploaded: u32,
    pub skipped: u32,
    pub bytes_uploaded: u64,
}

/// One line of the `application/x-ndjson` answer of `POST /v1/images/builds`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum BuildEvent {
    /// A line of the builder's log (`STEP 2/5: RUN …`, `--> Using cache …`).
    Log { line: String },
    /// The build succeeded: the image as stored.
    Done { image: Box<crate::Image> },
    /// The build failed.
    Error { code: String, message: String },
}
