//! The DNS side of the egress gateway: a policy runtime's UDP port 53 traffic
//! (to any resolver) arrives here and is answered here. Queries are never
//! forwarded: a name is checked against the policy, resolved by the gateway
//! (hosts file, then the system resolver) and answered with A records; AAAA
//! and every other type get an empty answer, so TXT and similar tunnels carry
//! nothing back and a name the allowlist does not hold never leaves the host.
//!
//! A hand parser rather than hickory-proto: only the header and the first
//! question are read and only A answers are written (a few dozen lines), and
//! no DNS crate is in the dependency tree yet.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use runta_api::{EgressAction, EgressAuditKind, EgressAuditPayload, EgressDnsQueryAudit};
use tokio::net::UdpSocket;

use super::resolve::Source;
use super::{Egress, Guarded};

const TTL_SECS: u32 = 5;

/// Queries a second one runtime gets answered, and the burst it may send
/// at once: far above what a resolver library asks (a few per connection),
/// far below a flood. The rest are dropped before any work is done for them.
pub const QUERIES_PER_SEC: f64 = 500.0;
pub const QUERY_BURST: f64 = 1000.0;
/// What the kernel may hold for the gateway's DNS socket while it works,
/// so a burst of one runtime does not crowd out another's queries there.
const RECV_BUFFER_BYTES: usize = 4 << 20;

/// One runtime's DNS budget: a token bucket, and what it dropped since its
/// last audit row.
#[derive(Debug)]
pub(crate) struct Budget {
    tokens: f64,
    at: Instant,
    dropped: u64,
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            tokens: QUERY_BURST,
            at: Instant::now(),
            dropped: 0,
        }
    }
}

impl Budget {
    /// Takes one query's token, or counts it dropped.
    fn take(&mut self, now: Instant) -> bool {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = now;
        self.tokens = (self.tokens + dt * QUERIES_PER_SEC).min(QUERY_BURST);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            self.dropped += 1;
            false
        }
    }

    /// The queries dropped since the last call.
    pub(crate) fn take_dropped(&mut self) -> u64 {
        std::mem::take(&mut self.dropped)
    }
}

pub fn spawn(eg: Arc<Egress>, sock: UdpSocket) {
    // Best effort: root may raise the buffer above the sysctl maximum.
    let _ = nix::sys::socket::setsockopt(
        &sock,
        nix::sys::socket::sockopt::RcvBufForce,
        &RECV_BUFFER_BYTES,
    );
    let sock = Arc::new(sock);
    tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        loop {
            let Ok((n, peer)) = sock.recv_from(&mut buf).await else {
                continue;
            };
            // Over its budget, a runtime's query costs this receive only:
            // the loop keeps draining the socket for everyone else.
            let Some(g) = eg.guarded(peer.ip()) else {
                continue;
            };
            if !g
                .dns
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take(Instant::now())
            {
                continue;
            }
            let q = buf[..n].to_vec();
            let (eg, sock) = (eg.clone(), sock.clone());
            tokio::spawn(async move {
                if let Some(resp) = answer(&eg, &g, &q, peer).await {
                    let _ = sock.send_to(&resp, peer).await;
                }
            });
        }
    });
}

/// The audit row for the queries runtime `g` had dropped over its budget
/// since the last one (one row per flush, however many).
pub(super) fn flush_dropped(eg: &Egress, g: &Guarded) {
    let n = g
        .dns
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take_dropped();
    if n == 0 {
        return;
    }
    eg.audits.record(
        g.id,
        EgressAuditPayload {
            kind: EgressAuditKind::DnsQuery,
            dns_query: Some(EgressDnsQueryAudit {
                src_addr: String::new(),
                name: String::new(),
                qtype: String::new(),
                answers: vec![],
                action: EgressAction::Deny,
                outcome: "rate_limited".into(),
                reason: format!(
                    "{n} DNS queries over the limit of {QUERIES_PER_SEC} a second (burst {QUERY_BURST}) dropped unanswered"
                ),
            }),
            tcp_connection: None,
            http_request: None,
            icmp_drop: None,
        },
    );
}

struct Question {
    id: u16,
    name: String,
    qtype: u16,
    /// Bytes of the question section (copied into the answer).
    raw: Vec<u8>,
    rd: bool,
}

fn parse(q: &[u8]) -> Option<Question> {
    if q.len() < 12 || q[2] & 0x80 != 0 {
        return None;
    }
    let id = u16::from_be_bytes([q[0], q[1]]);
    if u16::from_be_bytes([q[4], q[5]]) == 0 {
        return None;
    }
    let mut i = 12;
    let mut labels = Vec::new();
    loop {
        let l = *q.get(i)? as usize;
        i += 1;
        if l == 0 {
            break;
        }
        if l > 63 {
            return None; // compression has no place in a question
        }
        let label = q.get(i..i + l)?;
        labels.push(String::from_utf8_lossy(label).to_ascii_lowercase());
        i += l;
    }
    let qtype = u16::from_be_bytes([*q.get(i)?, *q.get(i + 1)?]);
    let end = i + 4;
    q.get(i..end)?;
    Some(Question {
        id,
        name: labels.join("."),
        qtype,
        raw: q[12..end].to_vec(),
        rd: q[2] & 1 != 0,
    })
}

fn qtype_name(t: u16) -> String {
    match t {
        1 => "A".into(),
        28 => "AAAA".into(),
        16 => "TXT".into(),
        5 => "CNAME".into(),
        15 => "MX".into(),
        33 => "SRV".into(),
        255 => "ANY".into(),
        n => n.to_string(),
    }
}

fn response(q: &Question, rcode: u8, answers: &[IpAddr]) -> Vec<u8> {
    let a: Vec<[u8; 4]> = answers
        .iter()
        .filter_map(|ip| match ip {
            IpAddr::V4(v) => Some(v.octets()),
            _ => None,
        })
        .collect();
    let mut r = Vec::with_capacity(12 + q.raw.len() + a.len() * 16);
    r.extend_from_slice(&q.id.to_be_bytes());
    r.push(0x80 | 0x04 | (q.rd as u8)); // response, authoritative, RD echoed
    r.push(0x80 | rcode); // RA
    r.extend_from_slice(&1u16.to_be_bytes());
    r.extend_from_slice(&(a.len() as u16).to_be_bytes());
    r.extend_from_slice(&[0, 0, 0, 0]);
    r.extend_from_slice(&q.raw);
    for ip in a {
        r.extend_from_slice(&[0xc0, 12]); // the question's name
        r.extend_from_slice(&1u16.to_be_bytes());
        r.extend_from_slice(&1u16.to_be_bytes());
        r.extend_from_slice(&TTL_SECS.to_be_bytes());
        r.extend_from_slice(&4u16.to_be_bytes());
        r.extend_from_slice(&ip);
    }
    r
}

async fn answer(eg: &Egress, g: &Guarded, q: &[u8], peer: SocketAddr) -> Option<Vec<u8>> {
    let q = parse(q)?;
    let p = g.policy();
    let (rcode, answers, action, reason) = match p.allows_name(&q.name) {
        Err(r) => (3u8, vec![], EgressAction::Deny, r),
        Ok(()) if q.qtype != 1 => (
            0,
            vec![],
            EgressAction::Allow,
            format!("{} allowed; only A records are answered", q.name),
        ),
        Ok(()) => match eg.resolver().resolve(&q.name).await {
            Ok((ips, src)) => {
                let ok: Vec<IpAddr> = ips
                    .into_iter()
                    .filter(|ip| ip.is_ipv4())
                    .filter(|ip| {
                        let named = src == Source::HostsFile || p.names_ip(*ip);
                        eg.forbidden(*ip, named).is_none() && p.allows_ip(*ip, true).is_ok()
                    })
                    .collect();
                if ok.is_empty() {
                    (
                        3,
                        vec![],
                        EgressAction::Deny,
                        format!("{} resolves to no address the policy allows", q.name),
                    )
                } else {
                    (0, ok, EgressAction::Allow, format!("{} allowed", q.name))
                }
            }
            Err(e) => (2, vec![], EgressAction::Error, e),
        },
    };
    if action == EgressAction::Deny {
        eg.denied(g.id, &q.name, &reason);
    }
    eg.audits.record(
        g.id,
        EgressAuditPayload {
            kind: EgressAuditKind::DnsQuery,
            dns_query: Some(EgressDnsQueryAudit {
                src_addr: peer.to_string(),
                name: q.name.clone(),
                qtype: qtype_name(q.qtype),
                answers: answers.iter().map(|a| a.to_string()).collect(),
                action,
                outcome: match rcode {
                    0 => "answered".into(),
                    3 => "nxdomain".into(),
                    _ => "servfail".into(),
                },
                reason,
            }),
            tcp_connection: None,
            http_request: None,
            icmp_drop: None,
        },
    );
    Some(response(&q, rcode, &answers))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_refills_at_its_rate_and_counts_what_it_drops() {
        let t0 = Instant::now();
        let mut b = Budget {
            tokens: QUERY_BURST,
            at: t0,
            dropped: 0,
        };
        let burst = QUERY_BURST as usize;
        assert_eq!((0..burst + 50).filter(|_| b.take(t0)).count(), burst);
        assert_eq!(b.take_dropped(), 50);
        assert_eq!(b.take_dropped(), 0);
        // A tenth of a second later: a tenth of the rate is back.
        let t1 = t0 + std::time::Duration::from_millis(100);
        let back = (QUERIES_PER_SEC / 10.0) as usize;
        assert_eq!((0..back + 10).filter(|_| b.take(t1)).count(), back);
        // Long idle never saves up more than the burst.
        let t2 = t1 + std::time::Duration::from_secs(3600);
        assert_eq!((0..burst * 2).filter(|_| b.take(t2)).count(), burst);
    }

    #[test]
    fn a_question_round_trips() {
        let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for l in ["Api", "test"] {
            q.push(l.len() as u8);
            q.extend_from_slice(l.as_bytes());
        }
        q.extend_from_slice(&[0, 0, 1, 0, 1]);
        let p = parse(&q).unwrap();
        assert_eq!((p.name.as_str(), p.qtype, p.rd), ("api.test", 1, true));
        let r = response(&p, 0, &["198.18.0.2".parse().unwrap()]);
        assert_eq!(&r[0..2], &[0x12, 0x34]);
        assert_eq!(u16::from_be_bytes([r[6], r[7]]), 1);
        assert_eq!(&r[r.len() - 4..], &[198, 18, 0, 2]);
        assert!(parse(&q[..14]).is_none());
    }
}
