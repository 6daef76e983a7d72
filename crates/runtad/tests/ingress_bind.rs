//! A daemon that cannot bind an ingress port does not start: it exits non-zero
//! naming the port, before touching the host, instead of running on and
//! handing out URLs on a port someone else serves (issue 15).

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::free_port;

/// Runs runtad with `args` (and its own data dir, API port and subnet) until it
/// exits; a daemon still up after 60 s is killed and the test fails.
fn run_daemon(args: &[String]) -> (Output, PathBuf, u16) {
    let data = std::env::temp_dir().join(format!("runta-ibind-{}", uuid::Uuid::new_v4().simple()));
    let api = free_port();
    let octet = (180 + std::process::id() % 20) as u8;
    let mut child = Command::new(common::runtad_bin())
        .arg("--data-dir")
        .arg(&data)
        .args(["--listen", &format!("127.0.0.1:{api}")])
        .args(["--images-dir", &common::images_dir(), "--no-prebuild"])
        .args(["--subnet-octet", &octet.to_string()])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if t0.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "runtad kept running without its ingress port:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    (child.wait_with_output().unwrap(), data, api)
}

fn assert_refused(out: &Output, data: &PathBuf, api: u16, port: u16, what: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "runtad started: {stderr}");
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("127.0.0.1:{port}")) && stderr.contains(what),
        "the error must name the port and the listener: {stderr}"
    );
    assert!(stderr.contains("in use"), "{stderr}");
    // It never said it was ready, nor printed a URL on the port it lacks.
    for text in [&stderr, &stdout] {
        assert!(!text.contains("runtad ready"), "{text}");
        assert!(!text.contains(&format!(".localhost:{port}")), "{text}");
    }
    // Nothing was left behind: no API listener, no bridge.
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", api)).is_err(),
        "the API port is still served"
    );
    let inst = runtad::config::instance_tag(&data.canonicalize().unwrap_or(data.clone()));
    assert!(
        !std::path::Path::new("/sys/class/net")
            .join(format!("rtb-{inst}"))
            .exists(),
        "a daemon that failed to start left its bridge"
    );
    let _ = std::fs::remove_dir_all(data);
}

/// The holder of the port still gets its connections: the daemon took nothing.
fn assert_still_ours(held: &TcpListener, port: u16) {
    let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.write_all(b"ping").unwrap();
    let (mut s, _) = held.accept().unwrap();
    let mut buf = [0u8; 4];
    s.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"ping");
}

#[test]
fn a_taken_https_ingress_port_stops_the_daemon() {
    let held = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port();
    // Named explicitly, as an address.
    let (out, data, api) = run_daemon(&[
        "--ingress-listen-https".into(),
        format!("127.0.0.1:{port}"),
        "--ingress-listen-http".into(),
        "off".into(),
    ]);
    assert_refused(&out, &data, api, port, "HTTPS ingress");
    // Named as a port (the default address 127.0.0.1:<port>), as an operator
    // moving off 8443 would.
    let (out, data, api) = run_daemon(&[
        "--ingress-https-port".into(),
        port.to_string(),
        "--ingress-listen-http".into(),
        "off".into(),
    ]);
    assert_refused(&out, &data, api, port, "HTTPS ingress");
    assert_still_ours(&held, port);
}

#[test]
fn a_taken_http_ingress_port_stops_the_daemon_even_with_https_free() {
    let held = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port();
    let (out, data, api) = run_daemon(&[
        "--ingress-listen-https".into(),
        format!("127.0.0.1:{}", free_port()),
        "--ingress-listen-http".into(),
        format!("127.0.0.1:{port}"),
    ]);
    assert_refused(&out, &data, api, port, "HTTP ingress");
    assert_still_ours(&held, port);
}
