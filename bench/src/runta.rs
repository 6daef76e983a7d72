//! Runta through its public REST API, with the wire types of `runta-api` and a
//! keep-alive HTTP/1.1 connection pool (one connection per concurrent caller).

use std::path::PathBuf;
use std::time::Duration;

use reqwest::{Client, Method, StatusCode};
use runta_api::{
    CreateRuntimeRequest, Data, ErrorBody, ExecRequest, ExecResult, ListResponse, RequestsSpec,
    ResourcesSpec, Runtime, RuntimeStatus,
};
use serde::de::DeserializeOwned;

use crate::bench::ForkResult;
use crate::mem::{self, Footprint};
use crate::stats::Samples;
use crate::system::{Handle, System};

pub struct Runta {
    http: Client,
    base: String,
    auth: String,
    data_dir: PathBuf,
    daemon_pid: Option<u32>,
    memory_mib: u64,
    vcpus: f64,
}

impl Runta {
    pub fn new(
        endpoint: &str,
        token: &str,
        data_dir: PathBuf,
        daemon_pid: Option<u32>,
        memory_mib: u64,
        vcpus: f64,
    ) -> Result<Self, String> {
        let http = Client::builder()
            .pool_max_idle_per_host(256)
            .pool_idle_timeout(Duration::from_secs(300))
            .tcp_nodelay(true)
            .timeout(Duration::from_secs(180))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Runta {
            http,
            base: endpoint.trim_end_matches('/').to_string(),
            auth: format!("Bearer {token}"),
            data_dir,
            daemon_pid,
            memory_mib,
            vcpus,
        })
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<Option<T>, String> {
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.base))
            .header("authorization", &self.auth);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| format!("{method} {path}: {e}"))?;
        let status = resp.status();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| format!("{method} {path}: {e}"))?;
        if !status.is_success() {
            let msg = serde_json::from_slice::<ErrorBody>(&bytes)
                .map(|e| format!("{}: {}", e.error.code, e.error.message))
                .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).into_owned());
            return Err(format!("{method} {path}: {status}: {msg}"));
        }
        if status == StatusCode::NO_CONTENT || bytes.is_empty() {
            return Ok(None);
        }
        serde_json::from_slice::<Data<T>>(&bytes)
            .map(|d| Some(d.data))
            .map_err(|e| format!("{method} {path}: bad body: {e}"))
    }

    pub async fn healthz(&self) -> Result<(), String> {
        let r = self
            .http
            .get(format!("{}/healthz", self.base))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if r.status().is_success() {
            Ok(())
        } else {
            Err(format!("healthz: {}", r.status()))
        }
    }

    /// Every runtime of the tenant (all pages).
    pub async fn list_ids(&self) -> Result<Vec<String>, String> {
        let mut ids = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let mut url = format!("{}/v1/runtimes?limit=100", self.base);
            if let Some(a) = &after {
                url.push_str(&format!("&after={a}"));
            }
            let page: ListResponse<Runtime> = self
                .http
                .get(url)
                .header("authorization", &self.auth)
                .send()
                .await
                .map_err(|e| e.to_string())?
                .error_for_status()
                .map_err(|e| e.to_string())?
                .json()
                .await
                .map_err(|e| e.to_string())?;
            ids.extend(page.data.iter().map(|r| r.id.to_string()));
            match page.pagination.next_cursor {
                Some(c) if page.pagination.has_more => after = Some(c),
                _ => return Ok(ids),
            }
        }
    }

    fn init_pid(&self, id: &str) -> Option<u32> {
        std::fs::read_to_string(self.data_dir.join("runtimes").join(id).join("init.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }
}

impl System for Runta {
    fn name(&self) -> &'static str {
        "runta"
    }

    async fn create(&self, name: &str) -> Result<Handle, String> {
        let body =
            serde_json::to_value(self.create_request(name, None)).map_err(|e| e.to_string())?;
        // wait=true (the default): 200 only once the agent answers on its socket.
        let rt: Runtime = self
            .call(Method::POST, "/v1/runtimes?wait=true", Some(body))
            .await?
            .ok_or("create: empty body")?;
        if rt.status != RuntimeStatus::Running {
            return Err(format!("create: runtime is {}", rt.status));
        }
        Ok(Handle(rt.id.to_string()))
    }

    async fn exec_true(&self, h: &Handle) -> Result<(), String> {
        let req = ExecRequest {
            command: "true".into(),
            args: Some(vec![]),
            ..Default::default()
        };
        let body = serde_json::to_value(&req).map_err(|e| e.to_string())?;
        let r: ExecResult = self
            .call(
                Method::POST,
                &format!("/v1/runtimes/{}/exec", h.0),
                Some(body),
            )
            .await?
            .ok_or("exec: empty body")?;
        if r.exit_code != 0 {
            return Err(format!("exec true: exit code {}", r.exit_code));
        }
        Ok(())
    }

    async fn pause(&self, h: &Handle) -> Result<(), String> {
        let r: Runtime = self
            .call(Method::POST, &format!("/v1/runtimes/{}/pause", h.0), None)
            .await?
            .ok_or("pause: empty body")?;
        if r.status != RuntimeStatus::Paused {
            return Err(format!("pause: runtime is {}", r.status));
        }
        Ok(())
    }

    async fn resume(&self, h: &Handle) -> Result<(), String> {
        let r: Runtime = self
            .call(Method::POST, &format!("/v1/runtimes/{}/resume", h.0), None)
            .await?
            .ok_or("resume: empty body")?;
        if r.status != RuntimeStatus::Running {
            return Err(format!("resume: runtime is {}", r.status));
        }
        Ok(())
    }

    async fn delete(&self, h: &Handle) -> Result<(), String> {
        self.call::<serde_json::Value>(Method::DELETE, &format!("/v1/runtimes/{}", h.0), None)
            .await
            .map(|_| ())
    }

    async fn footprint(&self, handles: &[Handle]) -> Footprint {
        let mut f = Footprint::default();
        for h in handles {
            if let Some(pid) = self.init_pid(&h.0) {
                f.add_runtime(pid, &[]);
            } else {
                f.missing += 1;
            }
        }
        if let Some(pid) = self.daemon_pid {
            f.daemon_rss_kib = mem::rss_kib(pid);
        }
        f
    }
}

impl Runta {
    /// The create body every Runta runtime of the bench uses (optionally a fork).
    fn create_request(&self, name: &str, checkpoint: Option<&str>) -> CreateRuntimeRequest {
        CreateRuntimeRequest {
            name: name.to_string(),
            checkpoint: checkpoint.map(str::to_string),
            resources: ResourcesSpec {
                requests: RequestsSpec {
                    vcpus: Some(self.vcpus),
                    memory_mib: Some(self.memory_mib),
                    disk_gib: None,
                },
                limits: None,
            },
            ..Default::default()
        }
    }

    async fn checkpoint(&self, runtime: &str, name: &str) -> Result<(), String> {
        let body = serde_json::to_value(runta_api::CreateCheckpointRequest { name: name.into() })
            .map_err(|e| e.to_string())?;
        self.call::<runta_api::Checkpoint>(
            Method::POST,
            &format!("/v1/runtimes/{runtime}/checkpoints"),
            Some(body),
        )
        .await
        .map(|_| ())
    }

    async fn fork(&self, name: &str, checkpoint: &str) -> Result<Handle, String> {
        let body = serde_json::to_value(self.create_request(name, Some(checkpoint)))
            .map_err(|e| e.to_string())?;
        let rt: Runtime = self
            .call(Method::POST, "/v1/runtimes?wait=true", Some(body))
            .await?
            .ok_or("fork: empty body")?;
        Ok(Handle(rt.id.to_string()))
    }

    /// Issue 9's figure: checkpoint a runtime holding 8 MiB of its own files,
    /// then start a fork from it (ready for exec), `reps` times.
    pub async fn fork_bench(&self, reps: usize) -> ForkResult {
        let (mut ck, mut fk, mut total) =
            (Samples::default(), Samples::default(), Samples::default());
        let src = match System::create(self, "rb-r-fsrc").await {
            Ok(h) => h,
            Err(e) => {
                ck.error(e);
                return ForkResult::from(ck, fk, total);
            }
        };
        let seed = ExecRequest {
            command: "head -c 8M /dev/urandom > /root/data && mkdir -p /root/src && cp -r /etc /root/src/".into(),
            ..Default::default()
        };
        let body = serde_json::to_value(&seed).unwrap_or_default();
        if let Err(e) = self
            .call::<ExecResult>(
                Method::POST,
                &format!("/v1/runtimes/{}/exec", src.0),
                Some(body),
            )
            .await
        {
            ck.error(e);
        }
        let mut forks = Vec::new();
        for i in 0..reps {
            let name = format!("rb-ck-{i}");
            let t0 = std::time::Instant::now();
            let a = self.checkpoint(&src.0, &name).await;
            let t1 = std::time::Instant::now();
            ck.record(t1 - t0, &a);
            if a.is_err() {
                continue;
            }
            let b = self.fork(&format!("rb-r-fork{i}"), &name).await;
            let t2 = std::time::Instant::now();
            fk.record(t2 - t1, &b);
            total.record(t2 - t0, &b);
            if let Ok(h) = b {
                forks.push(h);
            }
        }
        for h in forks.iter().chain(std::iter::once(&src)) {
            let _ = System::delete(self, h).await;
        }
        for i in 0..reps {
            let _ = self
                .call::<serde_json::Value>(
                    Method::DELETE,
                    &format!("/v1/checkpoints/rb-ck-{i}"),
                    None,
                )
                .await;
        }
        ForkResult::from(ck, fk, total)
    }
}
