//! The secret red-team suites' lab: test hosts in a network namespace the
//! test makes (198.18.N.2 = bound.test, echo.test, a.wild.test, wild.test;
//! .3 = other.test; .4 = selfsigned.test, a certificate no trusted CA
//! signed), their own CA given to the daemon, one Python process serving
//! every listener and recording each request (JSON lines), and the daemon's
//! `--egress-hosts` file.

use std::process::{Child, Command, Stdio};

use serde_json::{json, Value};

use super::{name, Client, Daemon, TestNet};

/// The test hosts: a namespace, their CA, the server, the daemon's hosts file.
pub struct Lab {
    pub tn: TestNet,
    pub dir: std::path::PathBuf,
    server: Child,
}

impl Lab {
    /// `kind` names the namespace and folder (one per suite), `server` is
    /// the suite's Python script (argv: the record file, the listeners).
    pub fn new(kind: &str, net: u8, server: &str) -> Lab {
        let tn = TestNet::new(kind, net, &[2, 3, 4]);
        let (ns, tag) = (tn.ns.clone(), tn.tag.clone());
        let dir = std::env::temp_dir().join(format!("runta-{kind}-{tag}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // The upstreams' own CA (given to the daemon), one leaf for the
        // trusted names, and a self-signed one nobody trusts.
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut cap = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        cap.distinguished_name
            .push(rcgen::DnType::CommonName, format!("{kind} upstream CA"));
        cap.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_cert = cap.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(cap, ca_key);
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let names: Vec<String> = [
            "bound.test",
            "echo.test",
            "other.test",
            "*.wild.test",
            "wild.test",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let leaf = rcgen::CertificateParams::new(names)
            .unwrap()
            .signed_by(&leaf_key, &issuer)
            .unwrap();
        std::fs::write(dir.join("ca.pem"), ca_cert.pem()).unwrap();
        std::fs::write(
            dir.join("chain.pem"),
            format!("{}{}", leaf.pem(), ca_cert.pem()),
        )
        .unwrap();
        std::fs::write(dir.join("leaf.key"), leaf_key.serialize_pem()).unwrap();
        let selfs = rcgen::generate_simple_self_signed(vec!["selfsigned.test".into()]).unwrap();
        std::fs::write(dir.join("self.pem"), selfs.cert.pem()).unwrap();
        std::fs::write(dir.join("self.key"), selfs.signing_key.serialize_pem()).unwrap();
        std::fs::write(dir.join("server.py"), server).unwrap();
        std::fs::write(dir.join("seen.jsonl"), "").unwrap();
        let (chain, key) = (dir.join("chain.pem"), dir.join("leaf.key"));
        let (c, k) = (chain.to_str().unwrap(), key.to_str().unwrap());
        let listeners = json!([
            [format!("198.18.{net}.2"), 443, c, k],
            [format!("198.18.{net}.2"), 80, null, null],
            [format!("198.18.{net}.3"), 443, c, k],
            [format!("198.18.{net}.3"), 80, null, null],
            [
                format!("198.18.{net}.4"),
                443,
                dir.join("self.pem"),
                dir.join("self.key")
            ],
        ]);
        let server = Command::new("ip")
            .args(["netns", "exec", &ns, "/usr/bin/python3"])
            .arg(dir.join("server.py"))
            .arg(dir.join("seen.jsonl"))
            .arg(listeners.to_string())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        std::fs::write(dir.join("hosts"), Self::hosts_lines(net)).unwrap();
        for _ in 0..100 {
            let ok = Command::new("curl")
                .args(["-sf", "-m", "1", &format!("http://198.18.{net}.3/ready")])
                .output()
                .is_ok_and(|o| o.status.success());
            if ok {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        Lab { tn, dir, server }
    }

    pub fn hosts_lines(net: u8) -> String {
        format!(
            "198.18.{net}.2 bound.test echo.test a.wild.test wild.test\n198.18.{net}.3 other.test\n198.18.{net}.4 selfsigned.test\n"
        )
    }

    pub fn daemon(&self) -> Daemon {
        Daemon::start_new(&[
            "--egress-hosts",
            self.dir.join("hosts").to_str().unwrap(),
            "--egress-upstream-ca",
            self.dir.join("ca.pem").to_str().unwrap(),
        ])
    }

    /// Every request the hosts received whose target contains `needle`.
    pub fn seen(&self, needle: &str) -> Vec<Value> {
        std::fs::read_to_string(self.dir.join("seen.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["p"].as_str().is_some_and(|p| p.contains(needle)))
            .collect()
    }

    /// Everything the hosts received, as text.
    pub fn all_seen(&self) -> String {
        std::fs::read_to_string(self.dir.join("seen.jsonl")).unwrap_or_default()
    }
}

pub fn header<'a>(seen: &'a Value, name: &str) -> Option<&'a str> {
    seen["h"]
        .as_array()?
        .iter()
        .find(|kv| kv[0] == name)
        .and_then(|kv| kv[1].as_str())
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn skip() -> bool {
    if !std::path::Path::new("/usr/bin/python3").exists() {
        println!("skipped: no /usr/bin/python3 on the host for the test hosts");
        return true;
    }
    false
}

/// A runtime that resolves the test names as the gateway does.
pub async fn runtime(c: &Client, lab: &Lab, prefix: &str) -> String {
    let rt = name(prefix);
    c.create(&rt, 256).await;
    c.out(
        &rt,
        &format!(
            "cat >> /etc/hosts <<'EOF'\n{}EOF",
            Lab::hosts_lines(lab.tn.net)
        ),
    )
    .await;
    rt
}

pub fn header_rule(host: &str, path: &str, secret: &str, header: &str) -> Value {
    json!({"host": host, "path": path, "secret": secret,
           "injection": {"headerName": header, "valueFormat": "Bearer ${credential}"}})
}

pub fn value() -> String {
    format!("sv-{}", uuid::Uuid::new_v4().simple())
}
