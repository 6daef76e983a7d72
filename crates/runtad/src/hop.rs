//! Hop-by-hop HTTP headers, for the two proxies the daemon runs: the ingress
//! (callers → runtimes) and the egress gateway's interception (runtimes →
//! upstreams). What each proxy strips beyond the `Connection`-named headers
//! is its own list; the rules of `Connection` and upgrades are the same.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Version};

/// An HTTP/1.1 upgrade request (`Upgrade` present and named in `Connection`).
pub fn is_upgrade<B>(req: &Request<B>) -> bool {
    req.version() == Version::HTTP_11
        && req.headers().contains_key(header::UPGRADE)
        && connection_tokens(req.headers()).any(|t| t.eq_ignore_ascii_case("upgrade"))
}

fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Removes the headers `Connection` names and those in `fixed`; an upgrade
/// keeps `Connection: upgrade` and `Upgrade`, which the next hop needs.
pub fn strip(headers: &mut HeaderMap, upgrade: bool, fixed: &[&str]) {
    let named: Vec<HeaderName> = connection_tokens(headers)
        .filter(|t| !(upgrade && t.eq_ignore_ascii_case("upgrade")))
        .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
        .collect();
    for h in named {
        headers.remove(h);
    }
    for h in fixed {
        headers.remove(*h);
    }
    if upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        headers.remove(header::CONNECTION);
        headers.remove(header::UPGRADE);
    }
}
