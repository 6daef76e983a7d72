//! `deployment.json` as `runta apply` and `POST /v1/apply` read it: arbitrary
//! bytes into `Deployment`, then the same checks the daemon makes per sandbox
//! (crates/runtad/src/api/deploy.rs), including `parse_publish`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use runta_api::{validate, Deployment};

fuzz_target!(|data: &[u8]| {
    let Ok(d) = serde_json::from_slice::<Deployment>(data) else {
        return;
    };
    for s in &d.sandboxes {
        let _ = validate::name("name", &s.name);
        if let Some(i) = &s.image {
            let _ = validate::image("image", i);
        }
        if let Some(v) = s.resources.vcpus {
            let _ = validate::vcpus("resources.vcpus", v);
        }
        if let Some(m) = s.resources.memory_mib {
            let _ = validate::memory_mib("resources.memory_mib", m);
        }
        if let Some(g) = s.resources.disk_gib {
            let _ = validate::disk_gib("resources.disk_gib", g);
        }
        let _ = validate::env("env", &s.env);
        let _ = validate::labels("labels", &s.labels);
        let mut ports = Vec::new();
        for p in &s.publish {
            if let Ok(spec) = validate::parse_publish(p) {
                assert!(spec.port > 0, "parse_publish accepted port 0 from {p:?}");
                ports.push(spec);
            }
        }
        let _ = validate::publish("publish", &ports);
        if let Some(t) = s.idle_timeout_secs {
            let _ = validate::idle_timeout("idle_timeout_secs", t);
        }
    }
});
