//! Request bodies as the daemon parses them: arbitrary bytes through serde_json
//! into the create / exec / update request types, then the validation the
//! daemon runs on them (`validate::create_request` for a create). Nothing may
//! panic, and validation must be total.
#![no_main]

use libfuzzer_sys::fuzz_target;
use runta_api::{validate, CreateRuntimeRequest, ExecRequest, UpdateRuntimeRequest};

fn check_resources(r: &runta_api::ResourcesSpec) {
    if let Some(v) = r.requests.vcpus {
        let _ = validate::vcpus("resources.requests.vcpus", v);
    }
    if let Some(m) = r.requests.memory_mib {
        let _ = validate::memory_mib("resources.requests.memory_mib", m);
    }
    if let Some(d) = r.requests.disk_gib {
        let _ = validate::disk_gib("resources.requests.disk_gib", d);
    }
    if let Some(m) = r.limits.as_ref().and_then(|l| l.memory_mib) {
        let _ = validate::memory_mib("resources.limits.memory_mib", m);
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = serde_json::from_slice::<CreateRuntimeRequest>(data) {
        // The daemon's own check (manager create and apply call it too).
        let defaults = validate::CreateDefaults {
            image: "base".into(),
            vcpus: 1.0,
            memory_mib: 512,
            disk_gib: None,
        };
        if let Ok(c) = validate::create_request(&req, &defaults) {
            assert!(c.memory_limit_mib >= c.memory_mib);
        }
        // What was parsed serialises back and parses again to the same value.
        let again = serde_json::to_vec(&req).expect("serialise a parsed request");
        let back: CreateRuntimeRequest =
            serde_json::from_slice(&again).expect("reparse a serialised request");
        assert_eq!(back.name, req.name);
        assert_eq!(back.env, req.env);
        assert_eq!(back.labels, req.labels);
    }
    if let Ok(req) = serde_json::from_slice::<ExecRequest>(data) {
        if let Some(c) = &req.cwd {
            let _ = validate::runtime_path("cwd", c);
        }
        let _ = validate::env("env", &req.env);
    }
    if let Ok(req) = serde_json::from_slice::<UpdateRuntimeRequest>(data) {
        if let Some(r) = &req.resources {
            check_resources(r);
        }
        if let Some(l) = &req.labels {
            let _ = validate::labels("labels", l);
        }
        if let Some(p) = &req.publish {
            let _ = validate::publish("publish", p);
        }
        if let Some(t) = req.idle_timeout_secs {
            let _ = validate::idle_timeout("idle_timeout_secs", t);
        }
    }
    // Strings as names, paths and publish specs directly.
    if let Ok(s) = std::str::from_utf8(data) {
        let ok = validate::name("name", s).is_ok();
        if ok {
            assert!(
                s.len() <= 63
                    && s.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            );
        }
        let _ = validate::runtime_path("path", s);
        let _ = validate::image("image", s);
        let _ = validate::parse_publish(s);
    }
});
