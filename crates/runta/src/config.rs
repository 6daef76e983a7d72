//! Where the daemon is and which token to use: `--endpoint/--token` flags, then
//! `RUNTA_ENDPOINT/RUNTA_TOKEN`, then the config file (`RUNTA_CONFIG`, default
//! `~/.config/runta/config.toml`), then the default endpoint.

use std::path::PathBuf;

use serde::Deserialize;

use crate::error::{CliError, Result};

pub const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:8080";

#[derive(Debug, Default, Deserialize)]
pub struct FileConfig {
    pub endpoint: Option<String>,
    pub token: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub endpoint: String,
    pub token: Option<String>,
}

pub fn config_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("RUNTA_CONFIG").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    if let Some(x) = std::env::var_os("XDG_CONFIG_HOME").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(x).join("runta/config.toml"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config/runta/config.toml"))
}

fn load_file() -> Result<FileConfig> {
    let Some(path) = config_path() else {
        return Ok(FileConfig::default());
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => toml::from_str(&text).map_err(|e| {
            CliError::usage(format!(
                "config file {}: {}",
                path.display(),
                e.message().trim()
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(FileConfig::default()),
        Err(e) => Err(CliError::usage(format!(
            "config file {}: {e}",
            path.display()
        ))),
    }
}

/// `flag_*` already hold flag-or-environment (clap reads the environment).
pub fn resolve(flag_endpoint: Option<String>, flag_token: Option<String>) -> Result<Settings> {
    let file = if flag_endpoint.is_some() && flag_token.is_some() {
        FileConfig::default()
    } else {
        load_file()?
    };
    let endpoint = flag_endpoint
        .or(file.endpoint)
        .filter(|e| !e.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string());
    let endpoint = endpoint.trim().trim_end_matches('/').to_string();
    if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
        return Err(CliError::usage(format!(
            "endpoint {endpoint:?} must start with http:// or https://"
        )));
    }
    let token = flag_token
        .or(file.token)
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty());
    Ok(Settings { endpoint, token })
}
