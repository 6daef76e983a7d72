//! The file routes against hostile content made inside a real runtime (issue
//! 14, items 3 and 9; docs/security.md): a 2 TiB sparse file, FIFOs, sockets
//! and devices (directly and through links). Reads are bounded and never hang; what cannot be served is a 4xx with
//! the error envelope.

mod common;

use std::time::{Duration, Instant};

use common::{assert_error, name, Client, Daemon};
use reqwest::{Method, StatusCode};
use serde_json::Value;

/// GET files with a deadline: a hang is a failure, not a stuck test.
async fn get(
    c: &Client,
    rt: &str,
    query: &str,
) -> (StatusCode, reqwest::header::HeaderMap, Vec<u8>) {
    let t0 = Instant::now();
    let resp = tokio::time::timeout(
        Duration::from_secs(20),
        c.raw(
            Method::GET,
            &format!("/v1/runtimes/{rt}/files?{query}"),
            None,
        ),
    )
    .await
    .unwrap_or_else(|_| panic!("GET files?{query} hung"));
    let st = resp.status();
    let headers = resp.headers().clone();
    let body = tokio::time::timeout(Duration::from_secs(20), resp.bytes())
        .await
        .unwrap_or_else(|_| panic!("GET files?{query}: body hung"))
        .map(|b| b.to_vec())
        .unwrap_or_default();
    assert!(t0.elapsed() < Duration::from_secs(30));
    (st, headers, body)
}

fn json(body: &[u8]) -> Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(body)))
}

#[tokio::test]
async fn a_sparse_2tib_file_is_refused_with_413_and_a_prefix_is_served() {
    let c = Daemon::shared().tenant("rt-files-big").await;
    let n = name("rtf-big");
    c.create(&n, 256).await;
    c.out(
        &n,
        "truncate -s 2T /huge && head -c 5000 /dev/urandom > /small",
    )
    .await;

    let (st, _, body) = get(&c, &n, "path=/huge").await;
    let v = json(&body);
    assert_error(st, &v, 413, "invalid_argument", "2199023255552");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("1073741824"),
        "the limit is named: {v}"
    );
    // Asking for more than the limit does not lift it.
    let (st, _, body) = get(&c, &n, "path=/huge&max_bytes=4398046511104").await;
    assert_error(st, &json(&body), 413, "invalid_argument", "limited to");

    // A prefix, as the official client's read(path, max_bytes) keeps.
    let (st, h, body) = get(&c, &n, "path=/huge&max_bytes=4096").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(body, vec![0u8; 4096]);
    assert_eq!(h["content-length"], "4096");
    assert_eq!(h["x-runta-file-size"], "2199023255552");
    let (st, h, body) = get(&c, &n, "path=/small&max_bytes=0").await;
    assert_eq!(st, StatusCode::OK);
    assert!(body.is_empty());
    assert_eq!(h["x-runta-file-size"], "5000");
    // max_bytes beyond the file: the whole file.
    let (st, _, body) = get(&c, &n, "path=/small&max_bytes=1000000").await;
    assert_eq!((st, body.len()), (StatusCode::OK, 5000));

    for bad in ["-1", "abc", "1e9", "", "18446744073709551616"] {
        let (st, _, body) = get(&c, &n, &format!("path=/small&max_bytes={bad}")).await;
        assert_error(st, &json(&body), 422, "invalid_argument", "max_bytes");
    }
    c.delete(&format!("/v1/runtimes/{n}")).await;
}

#[tokio::test]
async fn the_download_limit_is_a_daemon_flag() {
    let d = Daemon::start_new(&["--max-download-bytes", "1048576"]);
    let c = d.tenant("rt-files-flag").await;
    let n = name("rtf-flag");
    c.create(&n, 256).await;
    c.out(
        &n,
        "head -c 1048577 /dev/zero > /over && head -c 1048576 /dev/zero > /at",
    )
    .await;
    let (st, _, body) = get(&c, &n, "path=/over").await;
    assert_error(st, &json(&body), 413, "invalid_argument", "1048576 bytes");
    let (st, _, body) = get(&c, &n, "path=/at").await;
    assert_eq!((st, body.len()), (StatusCode::OK, 1048576));
    c.delete(&format!("/v1/runtimes/{n}")).await;
    d.terminate();
}

#[tokio::test]
async fn fifos_sockets_and_devices_are_refused_without_hanging() {
    let c = Daemon::shared().tenant("rt-files-fifo").await;
    let n = name("rtf-fifo");
    c.create(&n, 256).await;
    c.out(
        &n,
        "mkfifo /tmp/fifo && ln -s /tmp/fifo /tmp/fifo-link && mkdir -p /tmp/d && ln -s /tmp /tmp/d/via \
         && python3 -c 'import socket; s=socket.socket(socket.AF_UNIX); s.bind(\"/tmp/sock\")' \
         && echo ok > /tmp/regular",
    )
    .await;
    for path in [
        "/tmp/fifo",
        "/tmp/fifo-link",
        "/tmp/d/via/fifo",
        "/tmp/sock",
        "/dev/zero",
        "/dev/urandom",
        "/dev/null",
        "/dev/tty",
    ] {
        let (st, _, body) = get(&c, &n, &format!("path={path}")).await;
        let v = json(&body);
        assert!(st.is_client_error(), "{path}: {st} {v}");
        assert_eq!(v["error"]["code"], "invalid_argument", "{path}: {v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("not a regular file"),
            "{path}: {v}"
        );
    }
    // Links along the path still work for regular files (current semantics).
    let (st, _, body) = get(&c, &n, "path=/tmp/d/via/regular").await;
    assert_eq!((st, body.as_slice()), (StatusCode::OK, b"ok\n".as_slice()));

    // Listing a FIFO or a device is an error, not a hang.
    for path in ["/tmp/fifo", "/dev/zero"] {
        let (st, v) = tokio::time::timeout(
            Duration::from_secs(20),
            c.get(&format!("/v1/runtimes/{n}/files/list?path={path}")),
        )
        .await
        .unwrap_or_else(|_| panic!("listing {path} hung"));
        assert!(st.is_client_error(), "{path}: {st} {v}");
    }

    // Writes over a FIFO or a device node do not replace (or block on) it.
    for path in ["/tmp/fifo", "/dev/null", "/tmp/sock"] {
        let resp = tokio::time::timeout(
            Duration::from_secs(20),
            c.http
                .put(format!("{}/v1/runtimes/{n}/files?path={path}", c.base))
                .bearer_auth(&c.token)
                .header("content-type", "application/octet-stream")
                .body("x")
                .send(),
        )
        .await
        .unwrap_or_else(|_| panic!("PUT {path} hung"))
        .unwrap();
        let st = resp.status();
        let v: Value = resp.json().await.unwrap();
        assert_error(st, &v, 422, "invalid_argument", "not a regular file");
    }
    let kinds = c.out(&n, "stat -c %F /tmp/fifo /dev/null /tmp/sock").await;
    assert_eq!(kinds, "fifo\ncharacter special file\nsocket\n");
    c.delete(&format!("/v1/runtimes/{n}")).await;
}
