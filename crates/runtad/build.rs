//! Embeds the web dashboard (`dashboard/dist`, built by `dashboard/build.sh`) into
//! the daemon, so `runtad` stays one self-contained binary. Without a build of the
//! dashboard a one-page notice is embedded instead, so `cargo build` never needs npm.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    let dashboard = manifest.join("../../dashboard");
    let dist = dashboard.join("dist");
    println!("cargo:rerun-if-changed=build.rs");

    let mut files: Vec<(String, PathBuf)> = Vec::new();
    let built = dist.join("index.html").is_file();
    if built {
        println!("cargo:rerun-if-changed={}", dist.display());
        collect(&dist, &dist, &mut files);
    } else {
        // Watch the dashboard sources so a later `dashboard/build.sh` is picked up.
        if dashboard.is_dir() {
            println!("cargo:rerun-if-changed={}", dashboard.display());
        }
        let page = out_dir.join("dashboard-placeholder.html");
        std::fs::write(&page, PLACEHOLDER).expect("write placeholder page");
        files.push(("/index.html".to_string(), page));
    }
    files.sort();

    let mut code = String::new();
    writeln!(
        code,
        "/// Whether the real dashboard (not the placeholder) is embedded."
    )
    .unwrap();
    writeln!(code, "pub const DASHBOARD_BUILT: bool = {built};").unwrap();
    writeln!(code, "pub static ASSETS: &[Asset] = &[").unwrap();
    for (path, file) in &files {
        let body = std::fs::read(file).unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
        writeln!(
            code,
            "    Asset {{ path: {path:?}, content_type: {:?}, etag: {:?}, body: include_bytes!({:?}) }},",
            content_type(path),
            format!("\"{:016x}\"", fnv1a(&body)),
            file.to_str().expect("UTF-8 path"),
        )
        .unwrap();
    }
    writeln!(code, "];").unwrap();
    std::fs::write(out_dir.join("dashboard_assets.rs"), code).expect("write dashboard_assets.rs");
}

/// Every servable file under `dir`, keyed by its URL path. Names that could not be a
/// plain route, or that would shadow the API, are skipped with a warning.
fn collect(root: &Path, dir: &Path, files: &mut Vec<(String, PathBuf)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            collect(root, &p, files);
            continue;
        }
        let rel = p
            .strip_prefix(root)
            .expect("under root")
            .to_string_lossy()
            .replace('\\', "/");
        let url = format!("/{rel}");
        let plain = url
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'.' | b'-' | b'_'));
        let reserved = url == "/healthz" || url == "/metrics" || url.starts_with("/v1/");
        if !plain || reserved {
            println!("cargo:warning=dashboard: not embedding {url} (reserved or unusual name)");
            continue;
        }
        files.push((url, p));
    }
}

fn content_type(path: &str) -> &'static str {
    let ext = path.rsplit_once('.').map(|(_, e)| e).unwrap_or("");
    match ext {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "webmanifest" => "application/manifest+json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        "woff" => "font/woff",
        "wasm" => "application/wasm",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

fn fnv1a(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

const PLACEHOLDER: &str = r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Runta</title>
<style>
body { font: 16px/1.5 system-ui, sans-serif; max-width: 40rem; margin: 4rem auto; padding: 0 1rem; color: #1f2430; }
code { background: #eef0f4; padding: .1rem .35rem; border-radius: 4px; }
</style>
</head>
<body>
<h1>Runta</h1>
<p>This <code>runtad</code> was built without the web dashboard.</p>
<p>To include it, build everything with <code>bash scripts/build.sh</code>
(or run <code>dashboard/build.sh</code>, then <code>cargo build -p runtad</code>) and restart the daemon.</p>
<p>The REST API is available under <code>/v1</code>; health at <code>/healthz</code>.</p>
</body>
</html>
"#;
