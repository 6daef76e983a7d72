//! A daemon killed with SIGKILL loses nothing: records, files and true statuses
//! after a restart, with a way out of every state.

mod common;

use std::time::Duration;

use common::{name, Daemon, Outsider};
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn kill9_and_restart_keeps_everything_true() {
    let d = Daemon::start_new(&[]);
    let c = d.tenant("restart").await;
    let (run, dead, off, frozen) = (name("run"), name("dead"), name("off"), name("frozen"));
    for n in [&run, &dead, &off, &frozen] {
        c.create(n, 64).await;
        c.out(n, &format!("echo {n} > /root/id")).await;
    }
    c.post(&format!("/v1/runtimes/{off}/stop"), json!({})).await;
    c.post(&format!("/v1/runtimes/{frozen}/pause"), json!({}))
        .await;
    let dead_id = c.get(&format!("/v1/runtimes/{dead}")).await.1["data"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    // A create in flight when the daemon dies.
    let mid = name("mid");
    let (st, _) = c
        .post(
            "/v1/runtimes?wait=false",
            json!({"name": mid, "resources": {"requests": {"memory_mib": 64}}}),
        )
        .await;
    assert_eq!(st, StatusCode::OK);

    d.kill9();
    // While the daemon is down, one runtime's processes die.
    for pid in d.cgroup_procs(&dead_id) {
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    d.spawn();

    assert_eq!(c.status(&run).await, "running");
    assert_eq!(c.out(&run, "cat /root/id").await.trim(), run);
    assert_eq!(c.status(&off).await, "shutdown");
    assert_eq!(c.status(&frozen).await, "paused");
    let (_, v) = c.get(&format!("/v1/runtimes/{dead}")).await;
    assert_eq!(v["data"]["status"], "crashed", "{v}");
    assert!(
        v["data"]["error"].as_str().unwrap().contains("start"),
        "{v}"
    );
    let mid_status = c.status(&mid).await;
    assert!(
        ["running", "error"].contains(&mid_status.as_str()),
        "interrupted create is {mid_status}"
    );

    // Every state has a way out, and files survived.
    let (st, v) = c
        .post(&format!("/v1/runtimes/{dead}/start"), json!({}))
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(c.out(&dead, "cat /root/id").await.trim(), dead);
    c.post(&format!("/v1/runtimes/{off}/start"), json!({}))
        .await;
    assert_eq!(c.out(&off, "cat /root/id").await.trim(), off);
    c.post(&format!("/v1/runtimes/{frozen}/resume"), json!({}))
        .await;
    assert_eq!(c.out(&frozen, "cat /root/id").await.trim(), frozen);

    // A dead init is noticed by a running daemon too.
    let run_id = c.get(&format!("/v1/runtimes/{run}")).await.1["data"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    for pid in d.cgroup_procs(&run_id) {
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
    }
    c.eventually(5, "crashed status", || {
        let (c, n) = (c.clone(), run.clone());
        async move { c.status(&n).await == "crashed" }
    })
    .await;
    assert!(c.events(&run).await.contains(&"crashed".to_string()));

    // Deleting everything leaves nothing behind on the host.
    let (_, v) = c.get("/v1/runtimes").await;
    let ids: Vec<String> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 5);
    for id in &ids {
        assert_eq!(
            c.delete(&format!("/v1/runtimes/{id}")).await.0,
            StatusCode::OK
        );
        assert_eq!(d.leftovers(id), Vec::<String>::new(), "remains of {id}");
    }
}

#[tokio::test]
async fn a_removed_bridge_is_made_again() {
    let d = Daemon::start_new(&[]);
    let c = d.tenant("bridge").await;
    let br = format!("rtb-{}", d.instance());
    assert!(std::path::Path::new("/sys/class/net").join(&br).exists());
    let status = std::process::Command::new("ip")
        .args(["link", "del", &br])
        .status()
        .unwrap();
    assert!(status.success());
    let n = name("heal");
    c.create(&n, 64).await;
    assert!(
        std::path::Path::new("/sys/class/net").join(&br).exists(),
        "bridge not recreated"
    );
    let mut outside = Outsider::new(&format!("10.{}.0.0/16", d.subnet_octet), 80);
    let url = outside.serve_http();
    let v = c
        .sh(
            &n,
            &format!("curl -s -m 10 -o /dev/null -w '%{{http_code}}' {url}"),
        )
        .await;
    assert_eq!(
        v["stdout"], "200",
        "outbound NAT after the bridge came back: {v}"
    );
    c.delete(&format!("/v1/runtimes/{n}")).await;
}

/// A daemon stopped with no runtime left takes its host pieces with it: the
/// bridge, the iptables chains, the egress ipsets and its parent cgroups.
#[tokio::test]
async fn a_clean_stop_with_no_runtimes_leaves_nothing_on_the_host() {
    let d = Daemon::start_new(&[]);
    let c = d.tenant("clean").await;
    let n = name("gone");
    c.create(&n, 64).await;
    let inst = d.instance();
    let cgroups = || {
        std::fs::read_dir("/sys/fs/cgroup")
            .unwrap()
            .flatten()
            .map(|e| e.path().join(format!("runta-{inst}")))
            .chain([std::path::PathBuf::from(format!(
                "/sys/fs/cgroup/runta-{inst}"
            ))])
            .filter(|p| p.exists())
            .collect::<Vec<_>>()
    };
    assert!(!cgroups().is_empty(), "a running runtime has cgroups");
    let sets = runta_backend::ipset::IpSets::open().unwrap();
    let egress_sets = ["eg", "egi", "egu", "tcp"].map(|k| format!("RT-{inst}-{k}"));
    for s in &egress_sets {
        assert!(
            sets.members(s).is_ok(),
            "a running daemon has its egress set {s}"
        );
    }
    let (st, _) = c.delete(&format!("/v1/runtimes/{n}")).await;
    assert!(st.is_success());
    assert!(d.terminate().success());
    assert!(
        !std::path::Path::new("/sys/class/net")
            .join(format!("rtb-{inst}"))
            .exists(),
        "bridge left behind"
    );
    assert_eq!(
        cgroups(),
        Vec::<std::path::PathBuf>::new(),
        "cgroups left behind"
    );
    let rules = std::process::Command::new("iptables-save")
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&rules.stdout).contains(&format!("RT-{inst}-")),
        "iptables chains left behind"
    );
    for s in &egress_sets {
        assert!(sets.members(s).is_err(), "egress set {s} left behind");
    }
}
