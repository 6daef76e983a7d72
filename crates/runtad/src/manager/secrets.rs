//! The manager's side of secrets: validation, the store, the decrypted values
//! in memory and publishing each runtime's [`BindingSet`] after every commit
//! that changes it (see `crate::secrets`).

use std::sync::{Arc, OnceLock};

use crate::secrets::crypto::SecretKey;
use crate::secrets::SecretsHub;

use super::Manager;

#[derive(Default)]
pub(super) struct SecretsState {
    hub: Arc<SecretsHub>,
    key: OnceLock<SecretKey>,
}

impl Manager {
    /// The live binding sets, one per runtime, for the egress gateway.
    pub fn secrets_hub(&self) -> &Arc<SecretsHub> {
        &self.secrets.hub
    }
}
