//! `runtad`, the Runta daemon, as a library: configuration, the store, the
//! runtime manager, the HTTP API and the ingress. `main.rs` only parses flags and calls
//! [`run`]. Data flows one way: API handlers → manager → backend → agent.

pub mod agent_client;
pub mod api;
pub mod auth;
pub mod config;
pub mod data_dir;
pub mod egress;
pub mod hop;
pub mod host;
pub mod images;
pub mod ingress;
pub mod manager;
pub mod metrics;
pub mod secrets;
pub mod serve;
pub mod store;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow_lite::Context;
use runta_backend::images::ImageStore;
use runta_backend::network::Network;
use runta_backend::oci::{OciBackend, OciConfig};
use tracing::info;

pub use config::Config;

mod anyhow_lite {
    //! A tiny context helper so start-up errors say what failed.
    pub trait Context<T> {
        fn context(self, what: &str) -> Result<T, String>;
    }
    impl<T, E: std::fmt::Display> Context<T> for Result<T, E> {
        fn context(self, what: &str) -> Result<T, String> {
            self.map_err(|e| format!("{what}: {e}"))
        }
    }
}

/// Starts the daemon and serves until the process is stopped.
pub async fn run(cfg: Config) -> Result<(), String> {
    let started = Instant::now();
    if cfg.prepare_image {
        let images = ImageStore::new(cfg.images_dir.clone(), cfg.debian_mirror.clone());
        images
            .ensure(runta_backend::images::BASE_IMAGE)
            .await
            .context("build the base image")?;
        info!(path = %images.rootfs(runta_backend::images::BASE_IMAGE).display(), "image base is ready");
        return Ok(());
    }
    let data_dir = cfg.data_dir.clone();
    std::fs::create_dir_all(&data_dir).context("create data dir")?;
    let data_dir = data_dir.canonicalize().context("resolve data dir")?;
    data_dir::secure(&data_dir).context("secure the data dir")?;
    let nofile = serve::raise_nofile_limit();
    let build_cpus = match cfg.build_cpus {
        None => std::thread::available_parallelism().map_or(1.0, |n| n.get() as f64),
        Some(c) if c.is_finite() && (0.01..=1024.0).contains(&c) => c,
        Some(c) => return Err(format!("--build-cpus {c}: must be between 0.01 and 1024")),
    };
    let store = Arc::new(store::Store::open(&data_dir.join("runta.db")).context("open store")?);
    if let Some(token) = auth::ensure_admin_token(&store, &data_dir).context("admin token")? {
        let _ = token;
        info!(path = %data_dir.join("admin-token").display(), "created the admin token");
    }

    // What can fail on bad settings fails before the host is touched (bridge,
    // iptables, cgroups): a daemon that does not start leaves nothing behind.
    // A missing or wrong secrets key is one of those.
    let secrets = manager::secrets::open_secrets(
        &store,
        cfg.secrets_key_file.as_deref(),
        &data_dir.join("secrets.key"),
    )
    .context("load secrets")?;
    let listener = tokio::net::TcpListener::bind(&cfg.listen)
        .await
        .context(&format!("listen on {}", cfg.listen))?;
    let ingress_tls = ingress::load_tls(&cfg, &data_dir)?;
    let ingress_listeners = ingress::bind(&cfg).await?;
    let image_store = images::Images::open(
        data_dir.join("images"),
        store.clone(),
        images::Limits {
            max_image_bytes: cfg.image_max_bytes,
            max_files: cfg.image_max_files,
            max_layers: cfg.image_max_layers,
            max_total_files: cfg.image_max_total_files,
            max_header_bytes: cfg.image_max_header_bytes,
            max_xattr_bytes: cfg.image_max_xattr_bytes,
            max_store_bytes: cfg.image_store_max_bytes,
            max_tenant_bytes: cfg.image_tenant_max_bytes,
            max_pulls: cfg.image_max_pulls,
            max_pulls_per_tenant: cfg.image_max_pulls_per_tenant,
            pull_wait: Duration::from_secs(cfg.image_pull_timeout_secs),
            ..Default::default()
        },
        images::RegistryConfig {
            ca_files: cfg.registry_ca.clone(),
            insecure: cfg.insecure_registry.clone(),
            private: cfg.private_registry.clone(),
            auth_file: cfg.registry_auth_file.clone(),
            pace: images::Pace {
                window: Duration::from_secs(cfg.image_pull_stall_secs.max(1)),
                min_bytes_per_sec: cfg.image_pull_min_rate,
            },
        },
    )
    .context("open the image store")?;
    {
        let s = image_store.clone();
        tokio::spawn(async move { s.collect_at_start().await });
    }

    let agent_bin = host::install_agent(cfg.agent_bin.as_deref(), &data_dir)?;
    let instance = host::instance_tag(&data_dir);
    let subnet_octet = cfg
        .subnet_octet
        .unwrap_or_else(|| host::default_subnet_octet(&instance));
    let images = Arc::new(ImageStore::new(
        cfg.images_dir.clone(),
        cfg.debian_mirror.clone(),
    ));
    let backend = OciBackend::new(
        OciConfig {
            runtimes_dir: data_dir.join("runtimes"),
            checkpoints_dir: data_dir.join("checkpoints"),
            run_root: std::path::PathBuf::from("/run/runta").join(&instance),
            agent_bin,
            instance: instance.clone(),
            subnet_octet,
            pids_limit: cfg.pids_limit,
            runtime: cfg
                .oci_runtime
                .as_deref()
                .and_then(runta_backend::oci::RuntimeKind::parse),
            seccomp: !cfg.no_seccomp,
            favor_dynmods: !cfg.no_host_tuning,
        },
        images.clone(),
    )
    .await
    .context("start the OCI backend")?;
    info!(backend = %runta_backend::Backend::name(&backend), instance = %instance, subnet = %backend.network().subnet(), "backend ready");
    let backend: Arc<dyn runta_backend::Backend> = Arc::new(backend);

    let host_mem_mib = host::host_memory_mib();
    let capacity = cfg
        .capacity_memory_mib
        .unwrap_or((host_mem_mib as f64 * cfg.memory_overcommit) as u64);
    let host_cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1) as f64;
    let metrics = Arc::new(metrics::Metrics::default());
    let manager = manager::Manager::new(
        store.clone(),
        backend,
        manager::ManagerConfig {
            capacity_memory_mib: capacity,
            host_memory_mib: host_mem_mib,
            pids_limit: cfg.pids_limit as u64,
            quota_defaults: runta_api::TenantQuota {
                runtimes: cfg.quota_runtimes,
                vcpus: cfg.quota_vcpus,
                memory_mib: cfg.quota_memory_mib.unwrap_or(capacity),
                disk_gib: (cfg.quota_disk_gib > 0).then_some(cfg.quota_disk_gib),
                checkpoints: cfg.quota_checkpoints,
                checkpoint_bytes: cfg.quota_checkpoint_bytes,
                pids: cfg.quota_pids,
            },
            host_cpus,
            stop_grace: Duration::from_secs(cfg.stop_grace_secs),
            default_image: runta_backend::images::BASE_IMAGE.to_string(),
            default_vcpus: 1.0,
            default_memory_mib: 512,
            default_disk_gib: (cfg.default_disk_gib > 0).then_some(cfg.default_disk_gib),
            ingress_domain: cfg.ingress_domain.clone(),
            ingress_https_port: cfg.ingress_https().public_port,
            ingress_http_port: cfg.ingress_http().public_port,
            network: Network::new(&instance, subnet_octet),
            builds: manager::builds::BuildSettings {
                timeout: Duration::from_secs(cfg.build_timeout_secs),
                pids_max: cfg.build_pids_max,
                memory_mib: cfg.build_memory_mib,
                cpus: build_cpus,
                cgroup_parent: format!("/runta-{instance}-builds"),
            },
        },
        metrics,
    );
    // A daemon killed mid-build leaves the build's processes (in its
    // cgroup), its network and buildah's overlays mounted.
    let reaped = images::build::reap_leftovers(
        &manager.config().builds.cgroup_parent,
        &image_store.dir().join("builds"),
    )
    .await;
    if reaped > 0 {
        info!(
            reaped,
            "builds a killed daemon left were stopped and removed"
        );
    }
    images::build::unmount_under(&image_store.dir().join("builder"));
    manager.set_images(image_store);
    manager.exec_gate.configure(
        cfg.exec_max_concurrent,
        cfg.exec_max_per_tenant,
        cfg.exec_buffer_mib,
    );
    // Before any runtime boots: its secret bindings are live from its first
    // packet.
    manager.start_secrets(secrets).context("load secrets")?;
    // Before reconcile boots anything: a runtime under a policy never runs
    // unfiltered, not even for the first packets after a host reboot.
    manager
        .start_egress(cfg.egress_hosts.clone())
        .await
        .context("start the egress gateway")?;
    manager
        .start_trust(data_dir.clone(), cfg.egress_upstream_ca.clone())
        .await
        .context("start secret injection")?;
    manager.reconcile().await.context("reconcile")?;
    // Again, for what this start has made (token, ingress CA, backend folders).
    data_dir::secure(&data_dir).context("secure the data dir")?;
    manager.spawn_monitor();

    // Build the default image in the background so the first create is fast;
    // creates that need it meanwhile wait for the same build.
    if !cfg.no_prebuild {
        let images = images.clone();
        tokio::spawn(async move {
            if let Err(e) = images.ensure(runta_backend::images::BASE_IMAGE).await {
                tracing::error!("building the base image failed: {e}");
            }
        });
    }

    ingress::start(manager.clone(), &cfg, ingress_tls, ingress_listeners);

    let app = api::router(api::AppState {
        manager: manager.clone(),
        started,
        max_download_bytes: cfg.max_download_bytes,
    });
    info!(listen = %cfg.listen, data_dir = %data_dir.display(), ms = started.elapsed().as_millis() as u64, "runtad ready");
    serve::serve_api(
        listener,
        app,
        serve::ConnTracker::new(
            cfg.max_connections
                .unwrap_or_else(|| serve::auto_max_connections(nofile)),
            cfg.max_connections_per_peer,
        ),
        cfg.http_timeouts(),
        shutdown_signal(),
    )
    .await;
    if let Ok(images) = manager.images() {
        let n = images::build::unmount_under(&images.dir().join("builder"));
        info!(n, "builder mounts detached");
        images::build::remove_job_parent(&manager.config().builds.cgroup_parent);
    }
    if manager
        .store()
        .list_runtimes(&Default::default())
        .map(|v| v.is_empty())
        .unwrap_or(false)
    {
        manager.egress().shutdown().await;
        manager.backend().shutdown_host().await;
        info!("runtad stopped; no runtimes were left, host network and cgroups removed");
    } else {
        info!("runtad stopped; runtimes keep running and are picked up at the next start");
    }
    Ok(())
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("install SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
