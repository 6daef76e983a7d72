//! What the image suites share: a real Debian `docker-registry` on a free
//! loopback port (plain or TLS with a CA of the test's own, with or without
//! htpasswd Basic auth) that dies with the test process, and the small
//! helpers for writing OCI layouts by hand.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

pub fn sha(b: &[u8]) -> String {
    let d = Sha256::digest(b);
    format!(
        "sha256:{}",
        d.iter().map(|x| format!("{x:02x}")).collect::<String>()
    )
}

/// Writes `bytes` as a blob of the OCI layout `dir`; returns its digest.
pub fn put_blob(dir: &Path, bytes: &[u8]) -> String {
    let d = sha(bytes);
    let p = dir.join("blobs/sha256").join(&d[7..]);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, bytes).unwrap();
    d
}

/// Debian's static busybox (`busybox-static`), to build small images from.
pub fn busybox() -> Option<Vec<u8>> {
    std::fs::read("/bin/busybox")
        .ok()
        .filter(|b| b.len() > 100_000)
}

pub fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

pub struct Registry {
    pub addr: String,
    pub root: PathBuf,
    _child: Child,
    pub tls: bool,
    pub creds: Option<(String, String)>,
}

/// A CA and a leaf for `localhost` / `127.0.0.1` signed by it.
pub struct Tls {
    pub ca_pem: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

pub fn make_tls(dir: &Path) -> Tls {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
        SanType,
    };
    std::fs::create_dir_all(dir).unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let ca_params = || {
        let mut p = CertificateParams::default();
        p.distinguished_name
            .push(DnType::CommonName, "runta test registry CA");
        p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        p
    };
    let ca = ca_params().self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params(), ca_key);
    let leaf_key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    p.subject_alt_names
        .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
    let leaf = p.signed_by(&leaf_key, &issuer).unwrap();
    let t = Tls {
        ca_pem: dir.join("ca.pem"),
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
    };
    std::fs::write(&t.ca_pem, ca.pem()).unwrap();
    std::fs::write(&t.cert, leaf.pem() + &ca.pem()).unwrap();
    std::fs::write(&t.key, leaf_key.serialize_pem()).unwrap();
    t
}

/// Starts a registry (TLS with `tls`, Basic auth with `creds`) and waits
/// until it answers `/v2/`.
pub fn start_registry(tls: Option<&Tls>, creds: Option<(&str, &str)>) -> Registry {
    let root =
        std::env::temp_dir().join(format!("runta-registry-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(root.join("data")).unwrap();
    let port = super::free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut cfg = format!(
        "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n",
        root.join("data").display()
    );
    if let Some(t) = tls {
        cfg.push_str(&format!(
            "  tls:\n    certificate: {}\n    key: {}\n",
            t.cert.display(),
            t.key.display()
        ));
    }
    if let Some((u, p)) = creds {
        let out = Command::new("python3")
            .args([
                "-c",
                "import crypt,sys; print(sys.argv[1] + ':' + crypt.crypt(sys.argv[2], crypt.mksalt(crypt.METHOD_BLOWFISH)))",
                u,
                p,
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        std::fs::write(root.join("htpasswd"), &out.stdout).unwrap();
        cfg.push_str(&format!(
            "auth:\n  htpasswd:\n    realm: runta-test\n    path: {}\n",
            root.join("htpasswd").display()
        ));
    }
    std::fs::write(root.join("config.yml"), cfg).unwrap();
    let log = std::fs::File::create(root.join("registry.log")).unwrap();
    // Spawned from a thread that lives as long as the process: PDEATHSIG
    // fires when the spawning thread ends, and test threads end early.
    let cfg_path = root.join("config.yml");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::os::unix::process::CommandExt;
        let mut c = Command::new("docker-registry");
        c.arg("serve")
            .arg(&cfg_path)
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        unsafe {
            c.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        tx.send(c.spawn().expect("start docker-registry")).unwrap();
        loop {
            std::thread::park();
        }
    });
    let child = rx.recv().unwrap();
    let scheme = if tls.is_some() { "https" } else { "http" };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ok = Command::new("curl")
            .args([
                "-sk",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                &format!("{scheme}://{addr}/v2/"),
            ])
            .output()
            .map(|o| matches!(o.stdout.as_slice(), b"200" | b"401"))
            .unwrap_or(false);
        if ok {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "docker-registry did not start: {}",
            std::fs::read_to_string(root.join("registry.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Registry {
        addr,
        root,
        _child: child,
        tls: tls.is_some(),
        creds: creds.map(|(u, p)| (u.to_string(), p.to_string())),
    }
}

impl Registry {
    /// Pushes the OCI layout's `tag` to this registry as `repo:repo_tag`
    /// with skopeo, digests kept unless `extra` converts the format
    /// (`--format …`).
    pub fn push_layout(&self, dir: &Path, tag: &str, repo: &str, repo_tag: &str, extra: &[&str]) {
        let mut args: Vec<String> = vec![
            "copy".into(),
            "--quiet".into(),
            "--insecure-policy".into(),
            "--dest-tls-verify=false".into(),
        ];
        if !extra.contains(&"--format") {
            args.push("--preserve-digests".into());
        }
        if let Some((u, p)) = &self.creds {
            args.push(format!("--dest-creds={u}:{p}"));
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        args.push(format!("oci:{}:{tag}", dir.display()));
        args.push(format!("docker://{}/{repo}:{repo_tag}", self.addr));
        let out = Command::new("skopeo").args(&args).output().unwrap();
        assert!(
            out.status.success(),
            "skopeo {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Why an image suite cannot run here, if it cannot: the first of `tools`
/// not on the PATH, or no static busybox (the suites' images are built from
/// it).
pub fn missing_tools_of(tools: &[&str]) -> Option<String> {
    if let Some(t) = tools.iter().find(|t| !have(t)) {
        return Some(format!(
            "{t} is not installed (apt-get install docker-registry skopeo umoci zstd buildah busybox-static)"
        ));
    }
    if busybox().is_none() {
        return Some("no static /bin/busybox (apt-get install busybox-static)".into());
    }
    None
}
