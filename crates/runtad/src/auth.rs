//! Tokens: `rt_` followed by 40 random base32 characters. Only a SHA-256 of each
//! token is stored, so a copy of the database does not leak credentials.

use std::path::Path;

use sha2::{Digest, Sha256};

use crate::store::{Store, StoreError, TokenRecord};

pub const TOKEN_PREFIX: &str = "rt_";
pub const ADMIN_TENANT: &str = "admin";

/// Who is calling, as established by the bearer token.
#[derive(Debug, Clone)]
pub struct Principal {
    pub tenant: String,
    pub admin: bool,
    /// The id of the token the caller presented.
    pub token_id: String,
}

fn random_base32(n: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut bytes = vec![0u8; n];
    getrandom::fill(&mut bytes).expect("OS random source");
    bytes
        .iter()
        .map(|b| ALPHABET[(b & 31) as usize] as char)
        .collect()
}

pub fn hash_token(token: &str) -> String {
    let d = Sha256::digest(token.as_bytes());
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// Shape check before any lookup: `rt_` + 20..=128 chars of [a-z0-9].
pub fn well_formed(token: &str) -> bool {
    token
        .strip_prefix(TOKEN_PREFIX)
        .map(|rest| {
            (20..=128).contains(&rest.len())
                && rest
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
        .unwrap_or(false)
}

/// Mints a token for `tenant` (creating the tenant if needed).
pub fn mint(store: &Store, tenant: &str, admin: bool) -> Result<(String, String), StoreError> {
    store.ensure_tenant(tenant)?;
    let token = format!("{TOKEN_PREFIX}{}", random_base32(40));
    let id = format!("tok_{}", random_base32(12));
    store.insert_token(&id, tenant, &hash_token(&token), admin)?;
    Ok((id, token))
}

pub fn lookup(store: &Store, token: &str) -> Result<Option<TokenRecord>, StoreError> {
    if !well_formed(token) {
        return Ok(None);
    }
    let found = store.token_by_hash(&hash_token(token))?;
    if let Some(t) = &found {
        // Bookkeeping only: a failed write must not refuse the request.
        if let Err(e) = store.mark_token_used(&t.id, t.last_used_at) {
            tracing::warn!(token = %t.id, "record token use: {e}");
        }
    }
    Ok(found)
}

/// Replaces token `id` with a fresh one of the same tenant; the old one stops
/// working at once. `None` if there is no such token.
pub fn rotate(store: &Store, id: &str) -> Result<Option<(String, String)>, StoreError> {
    let token = format!("{TOKEN_PREFIX}{}", random_base32(40));
    let new_id = format!("tok_{}", random_base32(12));
    Ok(store
        .rotate_token(id, &new_id, &hash_token(&token))?
        .then_some((new_id, token)))
}

/// On first start, creates the admin token and writes it to `<data>/admin-token`
/// (mode 0600). Later starts leave it alone.
pub fn ensure_admin_token(store: &Store, data_dir: &Path) -> Result<Option<String>, StoreError> {
    let path = data_dir.join("admin-token");
    if store.has_admin_token()? && path.exists() {
        return Ok(None);
    }
    let (_, token) = mint(store, ADMIN_TENANT, true)?;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| StoreError::Corrupt(format!("write {}: {e}", path.display())))?;
    use std::io::Write;
    writeln!(f, "{token}").map_err(|e| StoreError::Corrupt(e.to_string()))?;
    Ok(Some(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_shape() {
        let t = format!("{TOKEN_PREFIX}{}", random_base32(40));
        assert!(well_formed(&t));
        assert!(!well_formed("rt_short"));
        assert!(!well_formed("xx_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"));
        assert!(!well_formed(&format!("{t}!")));
        assert_eq!(hash_token("a").len(), 64);
    }
}
