//! `deployment.json` as `runta apply` and `POST /v1/apply` read it: arbitrary
//! bytes into `Deployment`, then the daemon's own check of the whole file
//! (`validate::deployment`, which validates each sandbox with
//! `validate::create_request`), and `parse_publish` on each port.
#![no_main]

use libfuzzer_sys::fuzz_target;
use runta_api::validate::{self, CreateDefaults};
use runta_api::Deployment;

fuzz_target!(|data: &[u8]| {
    let Ok(d) = serde_json::from_slice::<Deployment>(data) else {
        return;
    };
    let defaults = CreateDefaults {
        image: "base".into(),
        vcpus: 1.0,
        memory_mib: 512,
        disk_gib: None,
    };
    if let Ok(reqs) = validate::deployment(&d, &defaults) {
        // What passed is what apply creates: each request passes again.
        assert_eq!(reqs.len(), d.sandboxes.len());
        for r in &reqs {
            validate::create_request(r, &defaults).expect("a checked sandbox stays valid");
        }
    }
    for s in &d.sandboxes {
        for p in &s.publish {
            if let Ok(spec) = validate::parse_publish(p) {
                assert!(spec.port > 0, "parse_publish accepted port 0 from {p:?}");
            }
        }
    }
});
