//! A thin HTTP client for the REST API v1: bearer auth, `{"data": …}` unwrapping,
//! error envelopes turned into `CliError`s, and name resolution with "did you mean".

use std::future::Future;
use std::time::Duration;

use reqwest::{Method, RequestBuilder, Response};
use runta_api::{Checkpoint, ErrorBody, ErrorCode, ErrorDetail, ListResponse, Runtime};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use crate::config::Settings;
use crate::error::{ApiError, CliError, Result};

pub struct Client {
    http: reqwest::Client,
    pub endpoint: String,
    token: Option<String>,
}

impl Client {
    pub fn new(s: &Settings) -> Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .no_proxy()
            .user_agent(concat!("runta-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| CliError::failed(format!("HTTP client: {e}")))?;
        Ok(Self {
            http,
            endpoint: s.endpoint.clone(),
            token: s.token.clone(),
        })
    }

    pub fn token(&self) -> Result<&str> {
        self.token.as_deref().ok_or_else(|| {
            CliError::usage(
                "RUNTA_TOKEN is not set — export RUNTA_TOKEN=<token> (or pass --token, or put token = \"…\" in ~/.config/runta/config.toml)",
            )
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.endpoint, path)
    }

    pub fn request(&self, method: Method, path: &str) -> Result<RequestBuilder> {
        let token = self.token()?;
        Ok(self.http.request(method, self.url(path)).bearer_auth(token))
    }

    /// Sends and turns transport failures and error statuses into `CliError`s.
    pub async fn send(&self, rb: RequestBuilder) -> Result<Response> {
        let resp = rb.send().await.map_err(|e| self.transport(e))?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        Err(error_from_response(resp).await)
    }

    pub fn transport(&self, e: reqwest::Error) -> CliError {
        if e.is_connect() {
            unreachable_error(&self.endpoint)
        } else if e.is_timeout() {
            CliError::Failed {
                code: ErrorCode::DeadlineExceeded,
                message: format!("the daemon at {} did not answer in time", self.endpoint),
            }
        } else {
            CliError::unavailable(format!(
                "request to {} failed: {}",
                self.endpoint,
                error_chain(&e)
            ))
        }
    }

    /// A JSON call returning the `data` member of the answer (null for 204).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<Value> {
        let mut rb = self.request(method, path)?;
        if let Some(b) = body {
            rb = rb.json(b);
        }
        let resp = self.send(rb).await?;
        if resp.status() == reqwest::StatusCode::NO_CONTENT {
            return Ok(Value::Null);
        }
        let text = resp.text().await.map_err(|e| self.transport(e))?;
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        let mut v: Value = serde_json::from_str(&text)
            .map_err(|e| CliError::failed(format!("the daemon sent malformed JSON: {e}")))?;
        Ok(v.get_mut("data").map(Value::take).unwrap_or(v))
    }

    pub async fn get(&self, path: &str) -> Result<Value> {
        self.call(Method::GET, path, None::<&()>).await
    }

    pub async fn post(&self, path: &str, body: &impl Serialize) -> Result<Value> {
        self.call(Method::POST, path, Some(body)).await
    }

    /// Every item of a list route, following pagination.
    async fn list_all(&self, route: &str) -> Result<Vec<Value>> {
        let mut raw = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let mut path = format!("{route}?limit=100");
            if let Some(a) = &after {
                path.push_str(&format!("&after={}", enc(a)));
            }
            let resp = self.send(self.request(Method::GET, &path)?).await?;
            let page: Value = resp.json().await.map_err(|e| self.transport(e))?;
            let list: ListResponse<Value> = serde_json::from_value(page)
                .map_err(|e| CliError::failed(format!("unexpected list answer: {e}")))?;
            raw.extend(list.data);
            match list.pagination.next_cursor {
                Some(c) if list.pagination.has_more => after = Some(c),
                _ => break,
            }
        }
        Ok(raw)
    }

    /// Every runtime of the tenant, following pagination.
    pub async fn list_runtimes(&self) -> Result<(Vec<Value>, Vec<Runtime>)> {
        let raw = self.list_all("/v1/runtimes").await?;
        let typed = raw
            .iter()
            .map(|v| typed::<Runtime>(v.clone()))
            .collect::<Result<Vec<_>>>()?;
        Ok((raw, typed))
    }

    /// Every checkpoint (snapshot) of the tenant.
    pub async fn list_checkpoints(&self) -> Result<(Vec<Value>, Vec<Checkpoint>)> {
        let raw = self.list_all("/v1/checkpoints").await?;
        let typed = raw
            .iter()
            .map(|v| typed::<Checkpoint>(v.clone()))
            .collect::<Result<Vec<_>>>()?;
        Ok((raw, typed))
    }

    /// Runs `f` with the runtime reference; when the daemon answers "not found"
    /// and the tenant has no runtime by that name, accepts a unique id prefix or
    /// says which name was probably meant.
    pub async fn on_runtime<T, F, Fut>(&self, name: &str, f: F) -> Result<T>
    where
        F: Fn(String) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        match f(enc(name)).await {
            Err(e) if e.is_not_found() => match self.explain_missing(name, e).await {
                Ok(id) => f(id).await,
                Err(e) => Err(e),
            },
            other => other,
        }
    }

    /// `Ok(id)` when `name` is a unique prefix of a runtime id; otherwise the
    /// error to show (the original one when the runtime does exist).
    async fn explain_missing(&self, name: &str, original: CliError) -> Result<String> {
        let Ok((_, all)) = self.list_runtimes().await else {
            return Err(original);
        };
        let known: Vec<(String, String)> = all
            .iter()
            .map(|r| (r.id.to_string(), r.name.clone()))
            .collect();
        explain(name, &known, original, |name, suggestion| {
            match suggestion {
            Some(s) => format!("no runtime named '{name}' — did you mean '{s}'?"),
            None if known.is_empty() => format!(
                "no runtime named '{name}' — there are no runtimes yet; create one with `runta run --name {name}`"
            ),
            None => format!("no runtime named '{name}' — see `runta ps -a` for the names"),
        }
        })
    }

    /// Like `on_runtime` for a checkpoint (snapshot) reference, which `f` gets
    /// as is (not encoded: it may go in a body). A missing one is the daemon's
    /// 404, or its 422 on the `checkpoint` field of a create.
    pub async fn on_checkpoint<T, F, Fut>(&self, name: &str, f: F) -> Result<T>
    where
        F: Fn(String) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        match f(name.to_string()).await {
            Err(e) if e.is_not_found() || e.is_invalid_field("checkpoint") => {
                match self.explain_missing_checkpoint(name, e).await {
                    Ok(id) => f(id).await,
                    Err(e) => Err(e),
                }
            }
            other => other,
        }
    }

    async fn explain_missing_checkpoint(&self, name: &str, original: CliError) -> Result<String> {
        let Ok((_, all)) = self.list_checkpoints().await else {
            return Err(original);
        };
        let known: Vec<(String, String)> = all
            .iter()
            .map(|c| (c.id.to_string(), c.name.clone()))
            .collect();
        explain(name, &known, original, |name, suggestion| {
            match suggestion {
            Some(s) => format!("no snapshot named '{name}' — did you mean '{s}'?"),
            None if known.is_empty() => format!(
                "no snapshot named '{name}' — there are no snapshots yet; take one with `runta snapshot create RUNTIME {name}`"
            ),
            None => format!("no snapshot named '{name}' — see `runta snapshot ls` for the names"),
        }
        })
    }
}

/// `Ok(id)` when `name` is a unique prefix of one of the `known` (id, name)
/// pairs; otherwise the error to show: the original one when `name` does
/// exist, else the original with `human(name, suggestion)` as its line.
fn explain(
    name: &str,
    known: &[(String, String)],
    original: CliError,
    human: impl FnOnce(&str, Option<String>) -> String,
) -> Result<String> {
    if known.iter().any(|(id, n)| n == name || id == name) {
        return Err(original);
    }
    let lname = name.to_ascii_lowercase();
    if lname.len() >= 4 && lname.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') {
        let hits: Vec<&String> = known
            .iter()
            .map(|(id, _)| id)
            .filter(|id| id.starts_with(&lname))
            .collect();
        if hits.len() == 1 {
            return Ok(hits[0].clone());
        }
    }
    let human = human(name, suggest(name, known.iter().map(|(_, n)| n.as_str())));
    Err(match original {
        CliError::Api(mut e) => {
            e.human = Some(human);
            CliError::Api(e)
        }
        _ => CliError::Failed {
            code: ErrorCode::NotFound,
            message: human,
        },
    })
}

/// The closest name, if one is close enough to be a typo.
pub fn suggest<'a>(name: &str, names: impl Iterator<Item = &'a str>) -> Option<String> {
    let mut best: Option<(f64, &str)> = None;
    for n in names {
        let d = strsim::damerau_levenshtein(name, n);
        let jw = strsim::jaro_winkler(name, n);
        let close =
            d <= 2.max(name.len() / 3) || jw >= 0.85 || (name.len() >= 3 && n.contains(name));
        if !close {
            continue;
        }
        let score = jw - d as f64 * 0.01;
        if best.is_none_or(|(s, _)| score > s) {
            best = Some((score, n));
        }
    }
    best.map(|(_, n)| n.to_string())
}

pub fn unreachable_error(endpoint: &str) -> CliError {
    CliError::unavailable(format!(
        "daemon not reachable at {endpoint} — start it with `runta server`"
    ))
}

pub async fn error_from_response(resp: Response) -> CliError {
    let status = resp.status().as_u16();
    let request_id = resp
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let text = resp.text().await.unwrap_or_default();
    error_from_parts(status, &request_id, &text)
}

pub fn error_from_parts(status: u16, request_id: &str, text: &str) -> CliError {
    match serde_json::from_str::<ErrorBody>(text) {
        Ok(body) => CliError::Api(ApiError {
            status,
            body,
            human: None,
        }),
        Err(_) => {
            let snippet: String = text.trim().chars().take(200).collect();
            let code = match status {
                401 => ErrorCode::Unauthenticated,
                403 => ErrorCode::PermissionDenied,
                404 => ErrorCode::NotFound,
                409 => ErrorCode::FailedPrecondition,
                429 => ErrorCode::RateLimited,
                503 => ErrorCode::Unavailable,
                400..=499 => ErrorCode::InvalidArgument,
                _ => ErrorCode::Internal,
            };
            CliError::Api(ApiError {
                status,
                body: ErrorBody {
                    error: ErrorDetail {
                        code,
                        message: if snippet.is_empty() {
                            format!("the daemon answered HTTP {status}")
                        } else {
                            format!("the daemon answered HTTP {status}: {snippet}")
                        },
                        field: None,
                    },
                    request_id: request_id.to_string(),
                },
                human: None,
            })
        }
    }
}

pub fn typed<T: DeserializeOwned>(v: Value) -> Result<T> {
    serde_json::from_value(v)
        .map_err(|e| CliError::failed(format!("unexpected answer from the daemon: {e}")))
}

/// Percent-encodes a path segment or query value.
pub fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_typos() {
        let names = ["worker", "web", "database"];
        assert_eq!(
            suggest("wrker", names.iter().copied()).as_deref(),
            Some("worker")
        );
        assert_eq!(
            suggest("databse", names.iter().copied()).as_deref(),
            Some("database")
        );
        assert_eq!(suggest("zzzzzzzz", names.iter().copied()), None);
    }

    #[test]
    fn encodes() {
        assert_eq!(enc("/tmp/a b"), "%2Ftmp%2Fa%20b");
        assert_eq!(enc("x&y=z"), "x%26y%3Dz");
    }
}
