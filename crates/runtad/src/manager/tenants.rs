//! Tenants, their tokens and the caller behind a token: the admin routes and
//! the API's authentication read and change them only through these methods.

use chrono::Utc;
use runta_api::{Event, ListResponse, Tenant, TokenCreated, TokenInfo};

use super::{Error, Manager, Result};
use crate::auth::{self, Principal};
use crate::store::TokenInfoRecord;

fn info(t: TokenInfoRecord) -> TokenInfo {
    TokenInfo {
        id: t.id,
        tenant: t.tenant,
        admin: t.admin,
        created_at: t.created_at,
        last_used_at: t.last_used_at,
    }
}

fn no_token(id: &str) -> Error {
    Error::NotFound(format!("no token with id {id:?}"))
}

impl Manager {
    /// Who holds `token`, or `None` for a token nobody holds.
    pub fn authenticate(&self, token: &str) -> Result<Option<Principal>> {
        Ok(auth::lookup(&self.store, token)?.map(|t| Principal {
            tenant: t.tenant,
            admin: t.admin,
            token_id: t.id,
        }))
    }

    /// Resolves once the token `token_id` no longer exists (revoked or
    /// rotated): a session that outlives its request ends with it.
    pub async fn token_revoked(&self, token_id: &str) {
        let mut changed = self.tokens_changed.subscribe();
        loop {
            if !matches!(self.store.get_token(token_id), Ok(Some(_))) {
                return;
            }
            if changed.changed().await.is_err() {
                // The manager is going away; so is every session.
                return;
            }
        }
    }

    /// Creates the tenant if it is new; `true` when it was.
    pub fn create_tenant(&self, name: &str) -> Result<(bool, Tenant)> {
        let created = self.store.ensure_tenant(name)?;
        let created_at = self.store.tenant_created_at(name)?.unwrap_or_else(Utc::now);
        Ok((
            created,
            Tenant {
                name: name.to_string(),
                created_at,
            },
        ))
    }

    pub fn tenant_exists(&self, name: &str) -> Result<bool> {
        Ok(self.store.tenant_created_at(name)?.is_some())
    }

    pub fn mint_token(&self, tenant: &str) -> Result<TokenCreated> {
        let (id, token) = auth::mint(&self.store, tenant, false)?;
        Ok(TokenCreated {
            id,
            tenant: tenant.to_string(),
            token,
            created_at: Utc::now(),
        })
    }

    pub fn list_tokens(&self, tenant: Option<&str>) -> Result<Vec<TokenInfo>> {
        Ok(self
            .store
            .list_tokens(tenant)?
            .into_iter()
            .map(info)
            .collect())
    }

    /// A tenant's token. The admin token is replaced by the operator on the
    /// host, not over the API, so an API caller can never lock every admin out.
    fn tenant_token(&self, id: &str) -> Result<TokenInfo> {
        let t = self.store.get_token(id)?.ok_or_else(|| no_token(id))?;
        if t.admin {
            return Err(Error::FailedPrecondition(
                "the admin token is not revoked or rotated over the API; see docs/operations.md"
                    .into(),
            ));
        }
        Ok(info(t))
    }

    pub fn revoke_token(&self, id: &str) -> Result<()> {
        self.tenant_token(id)?;
        if !self.store.delete_token(id)? {
            return Err(no_token(id));
        }
        self.tokens_changed.send_modify(|n| *n += 1);
        Ok(())
    }

    /// A new token for the same tenant; the old one is revoked.
    pub fn rotate_token(&self, id: &str) -> Result<TokenCreated> {
        let old = self.tenant_token(id)?;
        let (new_id, token) = auth::rotate(&self.store, id)?.ok_or_else(|| no_token(id))?;
        self.tokens_changed.send_modify(|n| *n += 1);
        Ok(TokenCreated {
            id: new_id,
            tenant: old.tenant,
            token,
            created_at: Utc::now(),
        })
    }

    /// A page of a runtime's events after `after`, at most `limit`.
    pub fn events(
        &self,
        tenant: &str,
        id_or_name: &str,
        after: i64,
        limit: u32,
    ) -> Result<ListResponse<Event>> {
        let r = self.find(tenant, id_or_name)?;
        let rows = self.store.events(r.id, after, limit + 1)?;
        Ok(
            ListResponse::page(rows, limit, |e| e.id.to_string()).map(|e| Event {
                id: e.id,
                runtime_id: e.runtime_id,
                kind: e.kind,
                message: e.message,
                created_at: e.created_at,
            }),
        )
    }

    /// Whether the store answers (`/healthz`).
    pub fn ping(&self) -> Result<()> {
        Ok(self.store.ping()?)
    }
}
