//! The web dashboard, served at `/` from assets embedded in the binary by
//! `build.rs` (from `dashboard/dist`, or a notice page when it was not built).
//!
//! Only exact asset paths are routed, so `/v1`, `/healthz` and `/metrics` are never
//! shadowed; the dashboard uses hash routing and needs no catch-all.

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::AppState;

/// One embedded file.
pub struct Asset {
    /// URL path, e.g. `/assets/index-abc123.js`.
    pub path: &'static str,
    pub content_type: &'static str,
    /// Strong validator (quoted), a hash of the content.
    pub etag: &'static str,
    pub body: &'static [u8],
}

include!(concat!(env!("OUT_DIR"), "/dashboard_assets.rs"));

/// Hashed build output: safe to cache forever.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// Entry points: always revalidate (cheap, thanks to the ETag).
const REVALIDATE: &str = "no-cache";
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
    img-src 'self' data:; font-src 'self' data:; connect-src 'self'; object-src 'none'; \
    base-uri 'none'; frame-ancestors 'none'; form-action 'self'";

pub fn routes() -> Router<AppState> {
    static NOTICE: std::sync::Once = std::sync::Once::new();
    if !DASHBOARD_BUILT {
        NOTICE.call_once(|| {
            tracing::info!("dashboard not built: / serves a notice (run `bash scripts/build.sh` to include it)")
        });
    }
    let mut router = Router::new();
    for asset in ASSETS {
        if asset.path == "/index.html" {
            router = router.route(
                "/",
                get(move |h: HeaderMap| async move { serve(asset, &h) }),
            );
        }
        router = router.route(
            asset.path,
            get(move |h: HeaderMap| async move { serve(asset, &h) }),
        );
    }
    router
}

fn serve(asset: &'static Asset, req: &HeaderMap) -> Response {
    let fresh = req
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim() == asset.etag || t.trim() == "*")
        });
    let mut resp = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut r = Response::new(Body::from(asset.body));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(asset.content_type),
        );
        r
    };
    let h = resp.headers_mut();
    let cache = if asset.path.starts_with("/assets/") {
        IMMUTABLE
    } else {
        REVALIDATE
    };
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    h.insert(header::ETAG, HeaderValue::from_static(asset.etag));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if asset.content_type.starts_with("text/html") {
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        );
        h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        h.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index() -> &'static Asset {
        ASSETS
            .iter()
            .find(|a| a.path == "/index.html")
            .expect("index.html embedded")
    }

    #[test]
    fn index_is_html_and_revalidated() {
        let r = serve(index(), &HeaderMap::new());
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(
            r.headers()[header::CONTENT_TYPE],
            "text/html; charset=utf-8"
        );
        assert_eq!(r.headers()[header::CACHE_CONTROL], REVALIDATE);
        assert!(r.headers().contains_key(header::CONTENT_SECURITY_POLICY));
    }

    #[test]
    fn etag_match_is_not_modified() {
        let mut h = HeaderMap::new();
        h.insert(
            header::IF_NONE_MATCH,
            HeaderValue::from_static(index().etag),
        );
        assert_eq!(serve(index(), &h).status(), StatusCode::NOT_MODIFIED);
    }

    #[test]
    fn nothing_shadows_the_api() {
        for a in ASSETS {
            assert!(!a.path.starts_with("/v1/") && a.path != "/healthz" && a.path != "/metrics");
            if a.path.starts_with("/assets/") {
                assert!(!a.content_type.is_empty());
            }
        }
    }
}
