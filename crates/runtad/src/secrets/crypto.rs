//! Secret values at rest: ChaCha20-Poly1305 (ring's AEAD, already in the
//! build through rustls) under one 256-bit key kept apart from the database.
//!
//! The key is a file of mode 0600: `<data dir>/secrets.key`, created on the
//! first start, or the operator's `--secrets-key-file FILE`, which must
//! exist. A ciphertext is `version (1) || nonce (12) || sealed value || tag
//! (16)`, with the secret's id as associated data, so a ciphertext copied onto
//! another row does not open. A missing or wrong key is a start-up error
//! (see docs/security.md, "Secrets at rest"), never a silent loss.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::Engine;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use uuid::Uuid;
use zeroize::Zeroizing;

const VERSION: u8 = 1;
const KEY_LEN: usize = 32;
/// The key file's first line: the format, then the key in base64.
const HEADER: &str = "runta-secrets-key-v1 ";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("secrets key file {path}: {why}")]
    File { path: PathBuf, why: String },
}

/// The store's key. Never printed (no `Debug` of the bytes).
pub struct SecretKey {
    key: LessSafeKey,
    path: PathBuf,
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretKey")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("a stored secret does not decrypt with this key")]
pub struct OpenError;

impl SecretKey {
    /// The key at `path`. With `create`, a missing file is made (mode 0600,
    /// fresh random key); otherwise it must exist. A file readable by group
    /// or others is refused: the key would not be "kept apart".
    pub fn load(path: &Path, create: bool) -> Result<Self, KeyError> {
        let err = |why: String| KeyError::File {
            path: path.to_path_buf(),
            why,
        };
        if create && !path.exists() {
            let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
            getrandom::fill(&mut bytes[..]).map_err(|e| err(format!("no randomness: {e}")))?;
            let text = Zeroizing::new(format!(
                "{HEADER}{}\n",
                base64::engine::general_purpose::STANDARD.encode(&bytes[..])
            ));
            let tmp = path.with_extension("key.tmp");
            let _ = std::fs::remove_file(&tmp);
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(|e| err(format!("create: {e}")))?;
            f.write_all(text.as_bytes())
                .and_then(|_| f.sync_all())
                .map_err(|e| err(format!("write: {e}")))?;
            drop(f);
            // A kill -9 between the two steps leaves only the .tmp file; the
            // next start makes a new key (no secret can be stored before the
            // rename has happened).
            std::fs::rename(&tmp, path).map_err(|e| err(format!("rename: {e}")))?;
            if let Some(dir) = path.parent() {
                if let Ok(d) = std::fs::File::open(dir) {
                    let _ = d.sync_all();
                }
            }
        }
        let meta = std::fs::metadata(path).map_err(|e| {
            err(if e.kind() == std::io::ErrorKind::NotFound {
                "does not exist (give the key file the secrets were stored with)".into()
            } else {
                e.to_string()
            })
        })?;
        if !meta.is_file() {
            return Err(err("is not a regular file".into()));
        }
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(err(format!(
                "has mode {:o}; it must be readable by its owner only (chmod 600)",
                meta.permissions().mode() & 0o777
            )));
        }
        let text =
            Zeroizing::new(std::fs::read_to_string(path).map_err(|e| err(format!("read: {e}")))?);
        let b64 = text
            .trim()
            .strip_prefix(HEADER.trim_end())
            .map(str::trim)
            .ok_or_else(|| {
                err(format!(
                    "is not a key file (want a line \"{HEADER}<base64>\")"
                ))
            })?;
        let bytes = Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|_| err("the key is not valid base64".into()))?,
        );
        if bytes.len() != KEY_LEN {
            return Err(err(format!("the key must be {KEY_LEN} bytes")));
        }
        let key = UnboundKey::new(&CHACHA20_POLY1305, &bytes)
            .map_err(|_| err("the key is unusable".into()))?;
        Ok(SecretKey {
            key: LessSafeKey::new(key),
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A fresh random key that no file holds, for unit tests.
    #[cfg(test)]
    pub fn ephemeral() -> Self {
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        getrandom::fill(&mut bytes[..]).expect("the system has randomness");
        let key = UnboundKey::new(&CHACHA20_POLY1305, &bytes[..]).expect("a 32-byte key");
        SecretKey {
            key: LessSafeKey::new(key),
            path: PathBuf::from("<ephemeral>"),
        }
    }

    /// Encrypts `value` for the secret `id`.
    pub fn seal(&self, id: Uuid, value: &str) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).expect("the system has randomness");
        let mut buf = Vec::with_capacity(1 + NONCE_LEN + value.len() + 16);
        buf.push(VERSION);
        buf.extend_from_slice(&nonce);
        let mut sealed = value.as_bytes().to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(id.as_bytes()),
                &mut sealed,
            )
            .expect("sealing cannot fail for a short value");
        buf.extend_from_slice(&sealed);
        buf
    }

    /// Decrypts what [`seal`](Self::seal) made for the same `id`.
    pub fn open(&self, id: Uuid, ciphertext: &[u8]) -> Result<Zeroizing<String>, OpenError> {
        if ciphertext.len() < 1 + NONCE_LEN + 16 || ciphertext[0] != VERSION {
            return Err(OpenError);
        }
        let nonce = Nonce::try_assume_unique_for_key(&ciphertext[1..1 + NONCE_LEN])
            .map_err(|_| OpenError)?;
        let mut buf = Zeroizing::new(ciphertext[1 + NONCE_LEN..].to_vec());
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(id.as_bytes()), &mut buf)
            .map_err(|_| OpenError)?;
        let s = std::str::from_utf8(plain).map_err(|_| OpenError)?;
        Ok(Zeroizing::new(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("runta-key-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn round_trip_and_binding_to_the_row() {
        let d = dir();
        let k = SecretKey::load(&d.join("secrets.key"), true).unwrap();
        let mode = std::fs::metadata(d.join("secrets.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let id = Uuid::new_v4();
        let c = k.seal(id, "sk-very-secret");
        assert!(!c.windows(6).any(|w| w == b"sk-ver"));
        assert_eq!(k.open(id, &c).unwrap().as_str(), "sk-very-secret");
        assert!(k.open(Uuid::new_v4(), &c).is_err());
        let mut t = c.clone();
        *t.last_mut().unwrap() ^= 1;
        assert!(k.open(id, &t).is_err());
        // Same file again: same key.
        let k2 = SecretKey::load(&d.join("secrets.key"), false).unwrap();
        assert_eq!(k2.open(id, &c).unwrap().as_str(), "sk-very-secret");
        // Another key: refused.
        let other = SecretKey::load(&d.join("other.key"), true).unwrap();
        assert!(other.open(id, &c).is_err());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn bad_files_are_clear_errors() {
        let d = dir();
        let missing = SecretKey::load(&d.join("none.key"), false)
            .unwrap_err()
            .to_string();
        assert!(missing.contains("does not exist"), "{missing}");
        let open = d.join("open.key");
        SecretKey::load(&open, true).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(SecretKey::load(&open, false)
            .unwrap_err()
            .to_string()
            .contains("chmod 600"));
        let junk = d.join("junk.key");
        std::fs::write(&junk, "hello").unwrap();
        std::fs::set_permissions(&junk, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(SecretKey::load(&junk, false)
            .unwrap_err()
            .to_string()
            .contains("not a key file"));
        std::fs::remove_dir_all(&d).unwrap();
    }
}
