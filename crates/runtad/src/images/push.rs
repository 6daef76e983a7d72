//! Push: an image of the store sent to any OCI distribution registry
//! (docs/images.md, Push). Blobs the registry already has (`HEAD`) are
//! skipped; the others are uploaded in chunks (`POST` an upload, `PATCH`
//! each chunk, `PUT ?digest=`), so memory stays bounded and a chunk can be
//! sent again after an authentication challenge. The manifest goes last, as
//! stored (its digest is the image's identity, so it is sent byte for byte).
//! Credentials, CAs and plain-HTTP registries are the pull's
//! (`runta image login`, `--registry-ca`, `--insecure-registry`).

use std::io::Read;

use http::header::{CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, LOCATION};
use http::{Method, Request, StatusCode, Uri};
use serde::Serialize;

use super::http_client::{self as hc, Answer, Body};

use super::digest::Digest;
use super::reference::Reference;
use super::registry::{login_key, Session};
use super::{ImageError, Images, Result};

/// Bytes per `PATCH`: bounded memory, few requests.
const CHUNK: usize = 16 << 20;

/// What a push did.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct PushReport {
    /// Where the image went (`registry/repo:tag`).
    pub reference: String,
    /// The manifest digest, as the registry now has it.
    pub digest: String,
    /// Blobs (layers and config) uploaded, and skipped because the registry had them.
    pub uploaded: u32,
    pub skipped: u32,
    /// Bytes uploaded.
    pub bytes: u64,
}

impl Images {
    /// Pushes the image `image` names to `target` (`registry[:port]/repo[:tag]`).
    pub async fn push(&self, image: &str, target: &str) -> Result<PushReport> {
        let img = self.image(image)?;
        let r = Reference::parse(target)?;
        if r.digest.is_some() {
            return Err(ImageError::Invalid(format!(
                "reference {target:?}: push to a tag, not a digest"
            )));
        }
        let login = self
            .store
            .registry_login(crate::auth::ADMIN_TENANT, &login_key(&r.registry))?
            .map(|l| (l.username, l.secret));
        let s = self.registries.session(&r, login);
        let mut report = PushReport {
            reference: r.name(),
            digest: img.digest.to_string(),
            ..Default::default()
        };
        let mut blobs: Vec<(Digest, u64)> = Vec::new();
        for l in &img.layers {
            blobs.push((Digest::parse(&l.digest)?, l.size));
        }
        blobs.push((
            Digest::parse(&img.manifest.config.digest)?,
            img.manifest.config.size,
        ));
        for (d, size) in &blobs {
            if s.push_has_blob(d).await? {
                report.skipped += 1;
                continue;
            }
            let path = self.blob_path(d);
            if !path.exists() {
                return Err(ImageError::NotFound(format!(
                    "blob {} of image {image:?} is not in the store (pull the image again)",
                    d.short()
                )));
            }
            s.push_blob(d, &path).await?;
            report.uploaded += 1;
            report.bytes += size;
        }
        let manifest = std::fs::read(self.blob_path(&img.digest))?;
        if Digest::of(&manifest) != img.digest {
            return Err(ImageError::DigestMismatch {
                what: "the stored manifest".into(),
                expected: img.digest.to_string(),
                got: Digest::of(&manifest).to_string(),
            });
        }
        let media_type = img
            .manifest
            .media_type
            .clone()
            .unwrap_or_else(|| super::oci::OCI_MANIFEST.to_string());
        let tag = r.tag.clone().unwrap_or_else(|| "latest".into());
        s.push_manifest(&tag, &manifest, &media_type).await?;
        tracing::info!(
            image,
            target,
            uploaded = report.uploaded,
            skipped = report.skipped,
            "image pushed"
        );
        Ok(report)
    }
}

impl Session {
    async fn push_has_blob(&self, d: &Digest) -> Result<bool> {
        let url = format!("{}/blobs/{d}", self.push_base());
        let resp = self
            .push_request(|| self.push_req(Method::HEAD, &url, &[], hc::empty()))
            .await?;
        Ok(resp.status.is_success())
    }

    async fn push_blob(&self, d: &Digest, path: &std::path::Path) -> Result<()> {
        let start = format!("{}/blobs/uploads/", self.push_base());
        let resp = self
            .push_request(|| {
                self.push_req(Method::POST, &start, &[(CONTENT_LENGTH, "0")], hc::empty())
            })
            .await?;
        if resp.status != StatusCode::ACCEPTED {
            return Err(self.push_err(format!("start an upload: HTTP {}", resp.status)));
        }
        let mut location = self.push_location(&resp)?;
        let mut f = std::fs::File::open(path)?;
        let mut offset: u64 = 0;
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = read_full(&mut f, &mut buf)?;
            if n == 0 {
                break;
            }
            let chunk = bytes::Bytes::copy_from_slice(&buf[..n]);
            let range = format!("{}-{}", offset, offset + n as u64 - 1);
            let url = location.clone();
            let resp = self
                .push_request(|| {
                    self.push_req(
                        Method::PATCH,
                        &url,
                        &[
                            (CONTENT_TYPE, "application/octet-stream"),
                            (CONTENT_RANGE, &range),
                            (CONTENT_LENGTH, &n.to_string()),
                        ],
                        hc::full(chunk.clone()),
                    )
                })
                .await?;
            if resp.status != StatusCode::ACCEPTED {
                return Err(self.push_err(format!(
                    "upload of blob {}: HTTP {}",
                    d.short(),
                    resp.status
                )));
            }
            location = self.push_location(&resp)?;
            offset += n as u64;
        }
        let sep = if location.contains('?') { '&' } else { '?' };
        let url = format!(
            "{location}{sep}{}",
            form_urlencoded::Serializer::new(String::new())
                .append_pair("digest", d.as_str())
                .finish()
        );
        let resp = self
            .push_request(|| {
                self.push_req(Method::PUT, &url, &[(CONTENT_LENGTH, "0")], hc::empty())
            })
            .await?;
        if resp.status != StatusCode::CREATED {
            let status = resp.status;
            return Err(self.push_err(format!(
                "finish the upload of blob {}: HTTP {status} {}",
                d.short(),
                resp.text(300).await
            )));
        }
        Ok(())
    }

    async fn push_manifest(&self, tag: &str, body: &[u8], media_type: &str) -> Result<()> {
        let url = format!("{}/manifests/{tag}", self.push_base());
        let body = bytes::Bytes::copy_from_slice(body);
        let resp = self
            .push_request(|| {
                self.push_req(
                    Method::PUT,
                    &url,
                    &[(CONTENT_TYPE, media_type)],
                    hc::full(body.clone()),
                )
            })
            .await?;
        if resp.status != StatusCode::CREATED {
            let status = resp.status;
            return Err(self.push_err(format!(
                "put the manifest: HTTP {status} {}",
                resp.text(300).await
            )));
        }
        Ok(())
    }

    /// A request to `url` with `headers` and `body`.
    fn push_req(
        &self,
        method: Method,
        url: &str,
        headers: &[(http::header::HeaderName, &str)],
        body: Body,
    ) -> Result<Request<Body>> {
        let mut b = Request::builder().method(method).uri(url);
        for (k, v) in headers {
            b = b.header(k, *v);
        }
        b.body(body)
            .map_err(|e| self.push_err(format!("request {url}: {e}")))
    }

    /// The upload URL a registry answered with (often relative).
    fn push_location(&self, resp: &Answer) -> Result<String> {
        let loc = resp
            .header(LOCATION)
            .ok_or_else(|| self.push_err("an upload answer without a Location"))?;
        let base: Uri = self
            .push_base()
            .parse()
            .map_err(|e: http::uri::InvalidUri| self.push_err(e.to_string()))?;
        let url = hc::join(&base, loc).map_err(|e| self.push_err(e))?;
        let parsed: Uri = url
            .parse()
            .map_err(|e| self.push_err(format!("upload location {loc:?}: {e}")))?;
        // The registry must not send our credentials elsewhere, nor from
        // HTTPS to plain HTTP on the same host and port.
        if parsed.authority() != base.authority() {
            return Err(self.push_err(format!(
                "the registry sent the upload to another host ({loc:?})"
            )));
        }
        if parsed.scheme_str() != base.scheme_str() {
            return Err(self.push_err(format!(
                "the registry sent the upload to another scheme ({loc:?}, not {})",
                base.scheme_str().unwrap_or("?")
            )));
        }
        Ok(url)
    }
}

fn read_full(f: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}
