//! The manager's side of secrets: validation, the store, the decrypted values
//! in memory and publishing each runtime's [`BindingSet`] after every commit
//! that changes it (see `crate::secrets`).
//!
//! Every write takes `SecretsState::write`, commits, and publishes the sets
//! of the tenant's runtimes before it returns, so when the API answers a
//! delete, no new request is injected with what was deleted. In memory each
//! secret is a [`SealedValue`]: its ciphertext and the key, opened when a
//! request is injected and kept in clear at most the secret's
//! `cache_ttl_secs` (`crate::secrets::value`). A write makes a new
//! `SealedValue` (cold cache) and new sets, so a replaced or deleted value is
//! never served from a cache. The store holds only ciphertext.

use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;
use std::sync::{Arc, Mutex, OnceLock};

use runta_api::{
    CreateSecretBindingRequest, ListResponse, Secret, SecretBinding, MAX_BINDINGS_PER_REQUEST,
    MAX_BINDINGS_PER_TENANT, MAX_SECRETS_PER_TENANT,
};
use uuid::Uuid;

use super::{Error, Manager, Result};
use crate::secrets::crypto::SecretKey;
use crate::secrets::value::Sealed;
use crate::secrets::{
    validate, Binding, BindingSet, HostPattern, PathPattern, Scope, SealedValue, SecretsHub,
    Target, STUB_PREFIX,
};
use crate::store::{BindingRecord, BindingScope, BindingWrite, BindingWriteError, SecretRecord};

#[derive(Default)]
pub(super) struct SecretsState {
    hub: Arc<SecretsHub>,
    key: OnceLock<Arc<SecretKey>>,
    /// secret id → its current version, sealed.
    values: Mutex<HashMap<Uuid, Arc<SealedValue>>>,
    /// Serialises write + publish, so sets are published in commit order.
    write: Mutex<()>,
}

/// Which bindings a route works on.
#[derive(Debug, Clone, Copy)]
pub enum BindingOwner<'a> {
    /// A runtime's own, by id or name.
    Runtime(&'a str),
    /// The tenant's defaults.
    TenantDefault,
}

fn stub() -> String {
    const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut bytes = [0u8; validate::STUB_RANDOM_LEN];
    getrandom::fill(&mut bytes).expect("the system has randomness");
    let mut s = String::from(STUB_PREFIX);
    s.extend(bytes.iter().map(|b| ALPHABET[(*b & 31) as usize] as char));
    s
}

fn secret_view(s: &SecretRecord) -> Secret {
    Secret {
        id: s.id,
        display_name: s.name.clone(),
        name: s.name.clone(),
        cache_ttl_secs: s.cache_ttl_secs,
        stub: s.stub.clone(),
        created_at: s.created_at,
        updated_at: s.updated_at,
    }
}

fn target_of(b: &BindingRecord) -> Target {
    if b.target_kind == "param" {
        Target::QueryParam {
            name: b.target_name.clone(),
        }
    } else {
        Target::Header {
            name: b.target_name.clone(),
        }
    }
}

pub fn binding_view(b: &BindingRecord) -> SecretBinding {
    let json = validate::injection_json(&target_of(b), &b.template);
    SecretBinding {
        id: b.id,
        scope: if b.runtime_id.is_some() {
            runta_api::BindingScope::Runtime
        } else {
            runta_api::BindingScope::TenantDefault
        },
        runtime_id: b.runtime_id,
        runtime_display_name: b.runtime_name.clone(),
        secret_id: b.secret_id,
        credential_display_name: b.secret_name.clone(),
        stub_value_display_name: b.secret_name.clone(),
        host_pattern: b.host_pattern.clone(),
        path_pattern: b.path_pattern.clone(),
        injection: serde_json::from_str(&json).unwrap_or_default(),
        injection_config_json: json.clone(),
        stub_config_json: json,
        created_at: b.created_at,
    }
}

fn cache_ttl(v: Option<i64>) -> Result<i64> {
    let v = v.unwrap_or(0);
    validate::cache_ttl_secs(v).map_err(|m| Error::invalid("cache_ttl_secs", m))?;
    Ok(v)
}

/// The key and every stored secret, each checked to open with it: what
/// [`Manager::start_secrets`] needs. Read before the daemon touches the host,
/// so a bad key stops the start with nothing changed.
pub struct LoadedSecrets {
    key: SecretKey,
    secrets: Vec<SecretRecord>,
    tenants: Vec<String>,
}

/// Loads the key (`given`, which must exist, or `default_path`, created when
/// the store holds no secret yet) and checks that every stored secret opens
/// with it (the plaintext is wiped at once: values are opened for use only
/// when a request is injected). A missing or wrong key is an error naming
/// the file.
pub fn open_secrets(
    store: &crate::store::Store,
    given: Option<&Path>,
    default_path: &Path,
) -> std::result::Result<LoadedSecrets, String> {
    let stored = store.list_secrets(None).map_err(|e| e.to_string())?;
    let key = match given {
        Some(p) => SecretKey::load(p, false),
        None => SecretKey::load(default_path, stored.is_empty()),
    }
    .map_err(|e| {
        if stored.is_empty() {
            e.to_string()
        } else {
            format!(
                "{e}; the store holds {} secret(s) sealed with it",
                stored.len()
            )
        }
    })?;
    for s in &stored {
        key.open(s.id, &s.ciphertext).map_err(|_| {
            format!(
                "secrets key file {}: it does not decrypt the stored secrets (secret {} of tenant {:?}); \
                 start runtad with the key file they were stored with (--secrets-key-file)",
                key.path().display(),
                s.id,
                s.tenant
            )
        })?;
    }
    let mut tenants: Vec<String> = stored.iter().map(|s| s.tenant.clone()).collect();
    tenants.sort();
    tenants.dedup();
    Ok(LoadedSecrets {
        key,
        secrets: stored,
        tenants,
    })
}

impl Manager {
    /// The live binding sets, one per runtime, for the egress gateway.
    pub fn secrets_hub(&self) -> &Arc<SecretsHub> {
        &self.secrets.hub
    }

    /// At daemon start, before any runtime boots: takes the key and values
    /// [`open_secrets`] read and publishes every runtime's set.
    pub fn start_secrets(&self, loaded: LoadedSecrets) -> std::result::Result<(), String> {
        let key = Arc::new(loaded.key);
        let values = loaded
            .secrets
            .into_iter()
            .map(|s| (s.id, self.sealed(&key, &s)))
            .collect();
        *self
            .secrets
            .values
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = values;
        let _ = self.secrets.key.set(key);
        for t in loaded.tenants {
            self.publish_tenant(&t).map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    fn key(&self) -> Result<&Arc<SecretKey>> {
        self.secrets
            .key
            .get()
            .ok_or_else(|| Error::Unavailable("secrets are not loaded yet".into()))
    }

    fn sealed(&self, key: &Arc<SecretKey>, s: &SecretRecord) -> Arc<SealedValue> {
        SealedValue::new(Self::sealed_parts(s), key.clone(), self.metrics.clone())
    }

    fn sealed_parts(s: &SecretRecord) -> Sealed<'_> {
        Sealed {
            secret_id: s.id,
            tenant: &s.tenant,
            name: &s.name,
            ciphertext: s.ciphertext.clone(),
            cache_ttl_secs: s.cache_ttl_secs,
        }
    }

    /// Builds and publishes the set of every runtime of `tenant`.
    fn publish_tenant(&self, tenant: &str) -> Result<()> {
        let runtimes = self.store.list_runtimes(&crate::store::ListFilter {
            tenant: Some(tenant.to_string()),
            ..Default::default()
        })?;
        let all = self.store.list_bindings(tenant, BindingScope::Everything)?;
        let secrets = self.store.list_secrets(Some(tenant))?;
        for r in runtimes {
            let set = self.build_set(&all, &secrets, r.id);
            self.secrets.hub.publish(r.id, set);
        }
        Ok(())
    }

    fn build_set(
        &self,
        all: &[BindingRecord],
        secrets: &[SecretRecord],
        runtime: Uuid,
    ) -> BindingSet {
        let values = self
            .secrets
            .values
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let mut bindings = Vec::new();
        for b in all
            .iter()
            .filter(|b| b.runtime_id.is_none() || b.runtime_id == Some(runtime))
        {
            let (Some(value), Ok(host), Ok(path)) = (
                values.get(&b.secret_id),
                HostPattern::parse(&b.host_pattern),
                PathPattern::parse(&b.path_pattern),
            ) else {
                tracing::warn!(binding = %b.id, "a stored binding does not parse or has no value; skipped");
                continue;
            };
            bindings.push(Binding {
                id: b.id,
                scope: if b.runtime_id.is_some() {
                    Scope::Runtime
                } else {
                    Scope::TenantDefault
                },
                secret_id: b.secret_id,
                secret_name: b.secret_name.clone(),
                host,
                path,
                target: target_of(b),
                template: b.template.clone(),
                value: value.clone(),
            });
        }
        let stubs = secrets
            .iter()
            .map(|s| (s.stub.clone(), s.id, s.name.clone()))
            .collect();
        BindingSet::new(bindings, stubs)
    }

    /// A new runtime gets its tenant's defaults before it boots.
    pub(super) fn secrets_runtime_created(&self, tenant: &str, runtime: Uuid) {
        let _w = self.secrets.write.lock().unwrap_or_else(|e| e.into_inner());
        let built = (|| -> Result<BindingSet> {
            let all = self.store.list_bindings(tenant, BindingScope::Defaults)?;
            let secrets = self.store.list_secrets(Some(tenant))?;
            Ok(self.build_set(&all, &secrets, runtime))
        })();
        match built {
            Ok(set) => self.secrets.hub.publish(runtime, set),
            Err(e) => tracing::warn!(id = %runtime, "secret bindings of a new runtime: {e}"),
        }
    }

    /// The runtime is gone (its bindings went with its row).
    pub(super) fn secrets_runtime_forgotten(&self, runtime: Uuid) {
        self.secrets.hub.forget(runtime);
    }

    // ---- secrets ----

    /// One page of the tenant's secrets, oldest first: at most `limit` after
    /// the cursor `after` (a previous page's `next_cursor`, 0 for the start).
    pub fn list_secrets(
        &self,
        tenant: &str,
        after: i64,
        limit: u32,
    ) -> Result<ListResponse<Secret>> {
        let rows = self
            .store
            .list_secrets_page(tenant, after, limit.saturating_add(1))?;
        Ok(ListResponse::page(rows, limit, |s| s.seq.to_string()).map(|s| secret_view(&s)))
    }

    fn find_secret(&self, tenant: &str, id_or_name: &str) -> Result<SecretRecord> {
        self.store
            .find_secret(tenant, id_or_name)?
            .ok_or_else(|| Error::NotFound(format!("no secret {id_or_name:?}")))
    }

    pub fn get_secret(&self, tenant: &str, id_or_name: &str) -> Result<Secret> {
        Ok(secret_view(&self.find_secret(tenant, id_or_name)?))
    }

    /// `POST /v1/secrets`: a new secret; a taken name is 409.
    pub fn create_secret(
        &self,
        tenant: &str,
        name: &str,
        value: &str,
        cache_ttl_secs: Option<i64>,
    ) -> Result<Secret> {
        validate::secret_name(name).map_err(|m| Error::invalid("name", m))?;
        validate::secret_value(value).map_err(|m| Error::invalid("value", m))?;
        let ttl = cache_ttl(cache_ttl_secs)?;
        let _w = self.secrets.write.lock().unwrap_or_else(|e| e.into_inner());
        if self.store.find_secret(tenant, name)?.is_some() {
            return Err(Error::AlreadyExists(format!(
                "secret {name:?} already exists"
            )));
        }
        self.insert_secret(tenant, name, value, ttl)
    }

    fn insert_secret(&self, tenant: &str, name: &str, value: &str, ttl: i64) -> Result<Secret> {
        if self.store.count_secrets(tenant)? >= MAX_SECRETS_PER_TENANT {
            return Err(Error::QuotaExceeded(format!(
                "the tenant has {MAX_SECRETS_PER_TENANT} secrets, the most it may have; delete one first"
            )));
        }
        let now = crate::store::now();
        let id = Uuid::new_v4();
        let key = self.key()?;
        let rec = SecretRecord {
            seq: 0,
            id,
            tenant: tenant.to_string(),
            name: name.to_string(),
            ciphertext: key.seal(id, value),
            stub: stub(),
            cache_ttl_secs: ttl,
            created_at: now,
            updated_at: now,
        };
        self.store.insert_secret(&rec)?;
        let sealed = self.sealed(key, &rec);
        self.secrets
            .values
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, sealed);
        self.publish_tenant(tenant)?;
        tracing::info!(tenant, secret = %id, name, "secret created");
        Ok(secret_view(&rec))
    }

    /// `PUT /v1/secrets/{id_or_name}`: replaces the value of an existing
    /// secret, or creates one under that name. `true` when created.
    pub fn set_secret(
        &self,
        tenant: &str,
        id_or_name: &str,
        value: &str,
        cache_ttl_secs: Option<i64>,
    ) -> Result<(Secret, bool)> {
        validate::secret_value(value).map_err(|m| Error::invalid("value", m))?;
        let ttl = cache_ttl(cache_ttl_secs)?;
        let _w = self.secrets.write.lock().unwrap_or_else(|e| e.into_inner());
        let Some(mut rec) = self.store.find_secret(tenant, id_or_name)? else {
            if Uuid::from_str(id_or_name).is_ok() {
                return Err(Error::NotFound(format!("no secret {id_or_name:?}")));
            }
            validate::secret_name(id_or_name).map_err(|m| Error::invalid("name", m))?;
            return Ok((self.insert_secret(tenant, id_or_name, value, ttl)?, true));
        };
        let now = crate::store::now();
        let key = self.key()?;
        let ciphertext = key.seal(rec.id, value);
        if !self.store.update_secret(rec.id, &ciphertext, ttl, now)? {
            return Err(Error::NotFound(format!("no secret {id_or_name:?}")));
        }
        rec.ciphertext = ciphertext;
        rec.cache_ttl_secs = ttl;
        rec.updated_at = now;
        {
            // A new version with a cold cache (the old one's plaintext goes
            // with the last set that holds it); the decrypt count goes on.
            let mut values = self
                .secrets
                .values
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let next = match values.get(&rec.id) {
                Some(old) => old.replaced(Self::sealed_parts(&rec)),
                None => self.sealed(key, &rec),
            };
            values.insert(rec.id, next);
        }
        self.publish_tenant(tenant)?;
        tracing::info!(tenant, secret = %rec.id, name = %rec.name, "secret value replaced");
        Ok((secret_view(&rec), false))
    }

    /// Deletes a secret and every binding of it; they stop being injected
    /// before this returns.
    pub fn delete_secret(&self, tenant: &str, id_or_name: &str) -> Result<Secret> {
        let _w = self.secrets.write.lock().unwrap_or_else(|e| e.into_inner());
        let rec = self.find_secret(tenant, id_or_name)?;
        if !self.store.delete_secret(tenant, rec.id)? {
            return Err(Error::NotFound(format!("no secret {id_or_name:?}")));
        }
        self.secrets
            .values
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&rec.id);
        self.publish_tenant(tenant)?;
        tracing::info!(tenant, secret = %rec.id, name = %rec.name, "secret deleted");
        Ok(secret_view(&rec))
    }

    // ---- bindings ----

    /// The runtime id of an owner (404 for a runtime of another tenant).
    fn owner_id(&self, tenant: &str, owner: BindingOwner<'_>) -> Result<Option<Uuid>> {
        match owner {
            BindingOwner::Runtime(r) => Ok(Some(self.find(tenant, r)?.id)),
            BindingOwner::TenantDefault => Ok(None),
        }
    }

    /// Validates one request into a record (not stored). `field` prefixes
    /// the names of refused fields (`stubs[2].host`).
    fn binding_record(
        &self,
        tenant: &str,
        runtime_id: Option<Uuid>,
        req: &CreateSecretBindingRequest,
        field: &str,
    ) -> Result<BindingRecord> {
        let f = |name: &str| format!("{field}{name}");
        let host = validate::host_pattern(&req.host).map_err(|m| Error::invalid(f("host"), m))?;
        let path = validate::path_pattern(req.path.as_deref().unwrap_or(""))
            .map_err(|m| Error::invalid(f("path"), m))?;
        let (target, template) = validate::injection(&req.injection, "injection")
            .map_err(|(_, m)| Error::invalid(f("injection"), m))?;
        // Another tenant's secret is as absent as one that never existed.
        let secret = self
            .store
            .find_secret(tenant, &req.secret)?
            .ok_or_else(|| {
                Error::NotFound(format!("{}: no secret {:?}", f("secret"), req.secret))
            })?;
        let (kind, name) = match &target {
            Target::Header { name } => ("header", name.clone()),
            Target::QueryParam { name } => ("param", name.clone()),
        };
        Ok(BindingRecord {
            seq: 0,
            id: Uuid::new_v4(),
            tenant: tenant.to_string(),
            runtime_id,
            secret_id: secret.id,
            host_pattern: host.to_string(),
            path_pattern: path.to_string(),
            target_kind: kind.into(),
            target_name: name,
            template,
            created_at: crate::store::now(),
            secret_name: secret.name,
            runtime_name: None,
        })
    }

    /// Commits `w` and publishes; the stored rows of `inserted` back.
    fn commit_bindings(
        &self,
        tenant: &str,
        runtime_id: Option<Uuid>,
        w: BindingWrite,
    ) -> Result<Vec<SecretBinding>> {
        let added = w.insert.len() as u64;
        let removed = w.delete.len() as u64;
        if added > removed
            && self.store.count_bindings(tenant)? + added - removed > MAX_BINDINGS_PER_TENANT
        {
            return Err(Error::QuotaExceeded(format!(
                "the tenant may have at most {MAX_BINDINGS_PER_TENANT} secret bindings"
            )));
        }
        self.store
            .write_bindings(tenant, runtime_id, &w)
            .map_err(|e| match e {
                BindingWriteError::Missing(id) => {
                    Error::NotFound(format!("no secret binding {id} here"))
                }
                BindingWriteError::Gone => Error::FailedPrecondition(
                    "the runtime or the secret was deleted meanwhile; nothing was changed".into(),
                ),
                BindingWriteError::Store(e) => e.into(),
            })?;
        self.publish_tenant(tenant)?;
        let mut out = Vec::new();
        for b in &w.insert {
            if let Some(stored) = self.store.find_binding(tenant, b.id)? {
                tracing::info!(tenant, binding = %b.id, secret = %b.secret_id, host = %b.host_pattern, "secret binding added");
                out.push(binding_view(&stored));
            }
        }
        for id in &w.delete {
            tracing::info!(tenant, binding = %id, "secret binding removed");
        }
        Ok(out)
    }

    /// Adds one binding (0.1.1 `POST …/secret-injection-rules`, 0.1.21
    /// `POST …/secret-stubs` and `POST /v1/default-secret-stubs`).
    pub fn create_binding(
        &self,
        tenant: &str,
        owner: BindingOwner<'_>,
        req: &CreateSecretBindingRequest,
    ) -> Result<SecretBinding> {
        let _w = self.secrets.write.lock().unwrap_or_else(|e| e.into_inner());
        let runtime_id = self.owner_id(tenant, owner)?;
        let rec = self.binding_record(tenant, runtime_id, req, "")?;
        let mut out = self.commit_bindings(
            tenant,
            runtime_id,
            BindingWrite {
                delete: vec![],
                insert: vec![rec],
            },
        )?;
        out.pop()
            .ok_or_else(|| Error::Internal("a binding just written is not in the store".into()))
    }

    /// "Store or replace" (0.1.21 `PUT …/secret-stubs`,
    /// `PUT /v1/default-secret-stubs`): a binding of the same owner with the
    /// same host, path and target is replaced, in the same transaction.
    pub fn set_binding(
        &self,
        tenant: &str,
        owner: BindingOwner<'_>,
        req: &CreateSecretBindingRequest,
    ) -> Result<SecretBinding> {
        let _w = self.secrets.write.lock().unwrap_or_else(|e| e.into_inner());
        let runtime_id = self.owner_id(tenant, owner)?;
        let rec = self.binding_record(tenant, runtime_id, req, "")?;
        let scope = match runtime_id {
            Some(id) => BindingScope::Runtime(id),
            None => BindingScope::Defaults,
        };
        let delete = self
            .store
            .list_bindings(tenant, scope)?
            .into_iter()
            .filter(|b| {
                b.host_pattern == rec.host_pattern
                    && b.path_pattern == rec.path_pattern
                    && b.target_kind == rec.target_kind
                    && b.target_name.eq_ignore_ascii_case(&rec.target_name)
            })
            .map(|b| b.id)
            .collect();
        let mut out = self.commit_bindings(
            tenant,
            runtime_id,
            BindingWrite {
                delete,
                insert: vec![rec],
            },
        )?;
        out.pop()
            .ok_or_else(|| Error::Internal("a binding just written is not in the store".into()))
    }

    /// 0.1.21 `PUT …/secret-stubs/replace`: removes `delete_ids` and adds
    /// `stubs` in one transaction; any bad entry refuses the whole request.
    pub fn replace_bindings(
        &self,
        tenant: &str,
        runtime: &str,
        delete_ids: &[Uuid],
        stubs: &[CreateSecretBindingRequest],
    ) -> Result<Vec<SecretBinding>> {
        if stubs.len() > MAX_BINDINGS_PER_REQUEST {
            return Err(Error::invalid(
                "stubs",
                format!("at most {MAX_BINDINGS_PER_REQUEST} per request"),
            ));
        }
        let _w = self.secrets.write.lock().unwrap_or_else(|e| e.into_inner());
        let runtime_id = self.owner_id(tenant, BindingOwner::Runtime(runtime))?;
        let mut insert = Vec::with_capacity(stubs.len());
        for (i, s) in stubs.iter().enumerate() {
            insert.push(self.binding_record(tenant, runtime_id, s, &format!("stubs[{i}]."))?);
        }
        let mut delete = delete_ids.to_vec();
        delete.sort();
        delete.dedup();
        self.commit_bindings(tenant, runtime_id, BindingWrite { delete, insert })?;
        self.list_bindings(tenant, Some(BindingOwner::Runtime(runtime)))
    }

    /// A runtime's own bindings, the tenant's defaults, or (`None`) every
    /// runtime's binding of the tenant.
    pub fn list_bindings(
        &self,
        tenant: &str,
        owner: Option<BindingOwner<'_>>,
    ) -> Result<Vec<SecretBinding>> {
        let scope = match owner {
            None => BindingScope::AllRuntimes,
            Some(BindingOwner::TenantDefault) => BindingScope::Defaults,
            Some(BindingOwner::Runtime(r)) => BindingScope::Runtime(self.find(tenant, r)?.id),
        };
        Ok(self
            .store
            .list_bindings(tenant, scope)?
            .iter()
            .map(binding_view)
            .collect())
    }

    /// One binding; `owner` `None` accepts a binding of any runtime of the
    /// tenant (the top-level routes), never a default.
    fn find_binding(
        &self,
        tenant: &str,
        owner: Option<BindingOwner<'_>>,
        id: &str,
    ) -> Result<BindingRecord> {
        let missing = || Error::NotFound(format!("no secret binding {id:?}"));
        let id = Uuid::from_str(id).map_err(|_| missing())?;
        let b = self.store.find_binding(tenant, id)?.ok_or_else(missing)?;
        let ok = match owner {
            None => b.runtime_id.is_some(),
            Some(BindingOwner::TenantDefault) => b.runtime_id.is_none(),
            Some(BindingOwner::Runtime(r)) => b.runtime_id == Some(self.find(tenant, r)?.id),
        };
        if ok {
            Ok(b)
        } else {
            Err(missing())
        }
    }

    pub fn get_binding(
        &self,
        tenant: &str,
        owner: Option<BindingOwner<'_>>,
        id: &str,
    ) -> Result<SecretBinding> {
        Ok(binding_view(&self.find_binding(tenant, owner, id)?))
    }

    /// Removes one binding; it stops being injected before this returns.
    pub fn delete_binding(
        &self,
        tenant: &str,
        owner: Option<BindingOwner<'_>>,
        id: &str,
    ) -> Result<SecretBinding> {
        let _w = self.secrets.write.lock().unwrap_or_else(|e| e.into_inner());
        let b = self.find_binding(tenant, owner, id)?;
        self.commit_bindings(
            tenant,
            b.runtime_id,
            BindingWrite {
                delete: vec![b.id],
                insert: vec![],
            },
        )?;
        Ok(binding_view(&b))
    }
}

#[cfg(test)]
mod tests {
    //! Against the in-memory backend: what the gateway would inject changes
    //! the moment a write returns, and survives a restart on the same key.

    use std::sync::Arc;

    use runta_api::{CreateRuntimeRequest, RequestsSpec, ResourcesSpec};
    use runta_backend::fake::FakeBackend;
    use serde_json::json;
    use uuid::Uuid;

    use super::super::Manager;
    use super::BindingOwner;
    use crate::store::Store;

    const T: &str = "acme";

    fn manager(dir: &std::path::Path) -> Arc<Manager> {
        let store = Arc::new(Store::open(&dir.join("runta.db")).unwrap());
        let cfg = super::super::tests::config_for_tests();
        Manager::new(store, Arc::new(FakeBackend::new()), cfg, Default::default())
    }

    fn rt(name: &str) -> CreateRuntimeRequest {
        CreateRuntimeRequest {
            name: name.into(),
            resources: ResourcesSpec {
                requests: RequestsSpec {
                    memory_mib: Some(128),
                    ..Default::default()
                },
                limits: None,
            },
            ..Default::default()
        }
    }

    fn bind(host: &str, secret: &str, header: &str) -> runta_api::CreateSecretBindingRequest {
        serde_json::from_value(json!({
            "host": host, "path": "/v1/*", "secret": secret,
            "injection": {"headerName": header, "valueFormat": "Bearer ${credential}"}
        }))
        .unwrap()
    }

    fn injected(m: &Manager, rt: Uuid, host: &str) -> Vec<String> {
        m.secrets_hub()
            .current(rt)
            .matching(host, "/v1/chat")
            .iter()
            .map(|i| i.value.to_string())
            .collect()
    }

    fn decrypts(m: &Manager) -> u64 {
        m.metrics
            .secret_decrypts
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    #[tokio::test]
    async fn the_cache_ttl_bounds_the_plaintext_and_writes_still_win() {
        let dir = std::env::temp_dir().join(format!("runta-secrets-ttl-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let m = manager(&dir);
        m.start_secrets(super::open_secrets(m.store(), None, &dir.join("secrets.key")).unwrap())
            .unwrap();
        let a = m.create(T, rt("a"), None, true).await.unwrap();
        m.create_secret(T, "zero", "z-1", Some(0)).unwrap();
        m.create_secret(T, "cached", "c-1", Some(30)).unwrap();
        m.create_binding(
            T,
            BindingOwner::Runtime("a"),
            &bind("zero.example", "zero", "Authorization"),
        )
        .unwrap();
        m.create_binding(
            T,
            BindingOwner::Runtime("a"),
            &bind("cached.example", "cached", "Authorization"),
        )
        .unwrap();
        // Writing and binding decrypt nothing.
        assert_eq!(decrypts(&m), 0);
        for i in 1..=3 {
            assert_eq!(injected(&m, a.id, "zero.example"), ["Bearer z-1"]);
            assert_eq!(decrypts(&m), i);
        }
        for _ in 0..3 {
            assert_eq!(injected(&m, a.id, "cached.example"), ["Bearer c-1"]);
        }
        assert_eq!(decrypts(&m), 4);
        // A replaced value is used by the next request, cache or not.
        m.set_secret(T, "cached", "c-2", Some(30)).unwrap();
        assert_eq!(injected(&m, a.id, "cached.example"), ["Bearer c-2"]);
        assert_eq!(injected(&m, a.id, "cached.example"), ["Bearer c-2"]);
        assert_eq!(decrypts(&m), 5);
        // A deleted one at once.
        m.delete_secret(T, "cached").unwrap();
        assert!(injected(&m, a.id, "cached.example").is_empty());
        // A restart keeps the TTLs and starts with nothing in clear.
        drop(m);
        let m = manager(&dir);
        m.start_secrets(super::open_secrets(m.store(), None, &dir.join("secrets.key")).unwrap())
            .unwrap();
        assert_eq!(decrypts(&m), 0);
        assert_eq!(injected(&m, a.id, "zero.example"), ["Bearer z-1"]);
        assert_eq!(decrypts(&m), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn writes_are_live_when_they_return_and_survive_a_restart() {
        let dir = std::env::temp_dir().join(format!("runta-secrets-mgr-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = dir.join("secrets.key");
        let m = manager(&dir);
        m.start_secrets(super::open_secrets(m.store(), None, &key).unwrap())
            .unwrap();
        let a = m.create(T, rt("a"), None, true).await.unwrap();
        m.create_secret(T, "openai", "sk-one", None).unwrap();
        assert!(injected(&m, a.id, "api.openai.com").is_empty());
        let b = m
            .create_binding(
                T,
                BindingOwner::Runtime("a"),
                &bind("api.openai.com", "openai", "Authorization"),
            )
            .unwrap();
        assert_eq!(injected(&m, a.id, "api.openai.com"), ["Bearer sk-one"]);
        // A replaced value is what the next request gets.
        m.set_secret(T, "openai", "sk-two", None).unwrap();
        assert_eq!(injected(&m, a.id, "api.openai.com"), ["Bearer sk-two"]);
        // A tenant default reaches existing and new runtimes.
        m.create_secret(T, "gh", "ghp-x", None).unwrap();
        m.create_binding(
            T,
            BindingOwner::TenantDefault,
            &bind("*.github.com", "gh", "X-Token"),
        )
        .unwrap();
        assert_eq!(injected(&m, a.id, "api.github.com"), ["Bearer ghp-x"]);
        let late = m.create(T, rt("late"), None, true).await.unwrap();
        assert_eq!(injected(&m, late.id, "api.github.com"), ["Bearer ghp-x"]);
        assert!(injected(&m, late.id, "api.openai.com").is_empty());
        // Another tenant's runtime sees none of it, and cannot bind it.
        let other = m.create("other", rt("o"), None, true).await.unwrap();
        assert!(injected(&m, other.id, "api.github.com").is_empty());
        assert!(m
            .create_binding(
                "other",
                BindingOwner::Runtime("o"),
                &bind("x.example", "gh", "X")
            )
            .is_err());

        // Restart on the same store and key: the same sets.
        drop(m);
        let m = manager(&dir);
        m.start_secrets(super::open_secrets(m.store(), None, &key).unwrap())
            .unwrap();
        assert_eq!(injected(&m, a.id, "api.openai.com"), ["Bearer sk-two"]);
        assert_eq!(injected(&m, late.id, "api.github.com"), ["Bearer ghp-x"]);

        // Removal is immediate.
        m.delete_binding(T, Some(BindingOwner::Runtime("a")), &b.id.to_string())
            .unwrap();
        assert!(injected(&m, a.id, "api.openai.com").is_empty());
        m.delete_secret(T, "gh").unwrap();
        assert!(injected(&m, a.id, "api.github.com").is_empty());
        assert!(m
            .list_bindings(T, Some(BindingOwner::TenantDefault))
            .unwrap()
            .is_empty());
        m.delete(T, "late").await.unwrap();
        assert!(m.secrets_hub().current(late.id).is_empty());

        // Another key does not open what is stored: a start-up error.
        drop(m);
        let m = manager(&dir);
        let wrong = dir.join("wrong.key");
        crate::secrets::crypto::SecretKey::load(&wrong, true).unwrap();
        let e = super::open_secrets(m.store(), Some(&wrong), &key)
            .err()
            .unwrap();
        assert!(e.contains("does not decrypt"), "{e}");
        std::fs::remove_file(&key).unwrap();
        let e = super::open_secrets(m.store(), None, &key).err().unwrap();
        assert!(e.contains("does not exist"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
