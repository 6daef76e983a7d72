//! Which runtime and port a request is for, from its host name alone.
//!
//! `<uuid>.<domain>` names a runtime's first published port and
//! `<port>-<uuid>.<domain>` any published port; everything else is unknown.

use runta_api::PortSpec;
use uuid::Uuid;

/// A host name that parsed: a runtime id and, when the name carries one, a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    pub id: Uuid,
    pub port: Option<u16>,
}

impl Target {
    /// The published port this target names; `None` when the port is not
    /// published (the ingress never reaches an unpublished port).
    pub fn resolve(self, publish: &[PortSpec]) -> Option<&PortSpec> {
        match self.port {
            None => publish.first(),
            Some(p) => publish.iter().find(|s| s.port == p),
        }
    }
}

/// The host part of a `Host` header or `:authority` (port and a trailing dot
/// dropped, lower-cased).
pub fn host_only(authority: &str) -> String {
    let h = match authority.rsplit_once(':') {
        Some((h, port)) if !h.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => authority,
    };
    h.trim_end_matches('.').to_ascii_lowercase()
}

/// Parses `host` (already through [`host_only`]) under `domain`.
pub fn parse(host: &str, domain: &str) -> Option<Target> {
    let label = host.strip_suffix(domain)?.strip_suffix('.')?;
    if label.contains('.') {
        return None;
    }
    let (port, id) = match label.len() {
        36 => (None, label),
        _ => {
            let (p, id) = label.split_once('-')?;
            if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            (Some(p.parse::<u16>().ok().filter(|p| *p != 0)?), id)
        }
    };
    // Only the canonical hyphenated form, so a runtime has exactly one name.
    if id.len() != 36 {
        return None;
    }
    let id = Uuid::parse_str(id).ok()?;
    Some(Target { id, port })
}

#[cfg(test)]
mod tests {
    use super::*;
    use runta_api::Protocol;

    const ID: &str = "0f8fad5b-d9cb-469f-a165-70867728950e";

    #[test]
    fn host_names() {
        let id = Uuid::parse_str(ID).unwrap();
        let d = "runta.localhost";
        assert_eq!(
            parse(&format!("{ID}.{d}"), d),
            Some(Target { id, port: None })
        );
        assert_eq!(
            parse(&format!("8080-{ID}.{d}"), d),
            Some(Target {
                id,
                port: Some(8080)
            })
        );
        assert_eq!(
            parse(&host_only(&format!("{}.{d}.:8443", ID.to_uppercase())), d),
            Some(Target { id, port: None })
        );
        for bad in [
            format!("{ID}.other.localhost"),
            format!("x.{ID}.{d}"),
            format!("0-{ID}.{d}"),
            format!("99999-{ID}.{d}"),
            format!("-{ID}.{d}"),
            format!("{}.{d}", ID.replace('-', "")),
            format!("{ID}{d}"),
            d.to_string(),
            format!("a{d}"),
        ] {
            assert_eq!(parse(&host_only(&bad), d), None, "{bad}");
        }
    }

    #[test]
    fn host_only_strips_port_and_case() {
        assert_eq!(host_only("A.Runta.Localhost:8443"), "a.runta.localhost");
        assert_eq!(host_only("a.runta.localhost"), "a.runta.localhost");
        assert_eq!(host_only("a.runta.localhost."), "a.runta.localhost");
    }

    #[test]
    fn only_published_ports_resolve() {
        let id = Uuid::parse_str(ID).unwrap();
        let publish = vec![
            PortSpec {
                port: 8080,
                protocol: Protocol::Https,
            },
            PortSpec {
                port: 3000,
                protocol: Protocol::Http,
            },
        ];
        assert_eq!(
            Target { id, port: None }.resolve(&publish).map(|p| p.port),
            Some(8080)
        );
        assert_eq!(
            Target {
                id,
                port: Some(3000)
            }
            .resolve(&publish)
            .map(|p| p.port),
            Some(3000)
        );
        assert_eq!(Target { id, port: Some(22) }.resolve(&publish), None);
        assert_eq!(Target { id, port: None }.resolve(&[]), None);
    }
}
