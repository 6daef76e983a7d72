//! What every measured system offers: the same operations, so each benchmark
//! runs the same code against Runta, podman and crun.

use std::future::Future;

use crate::mem::Footprint;

/// A runtime / container of the system under test (UUID, name or container id).
#[derive(Debug, Clone)]
pub struct Handle(pub String);

pub trait System: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    /// Untimed set-up before `create` (crun writes its bundle here).
    fn prepare(&self, _name: &str) -> Result<(), String> {
        Ok(())
    }
    /// Create and start; returns when the system says it is up.
    fn create(&self, name: &str) -> impl Future<Output = Result<Handle, String>> + Send;
    /// Run `true` inside and wait for its exit status.
    fn exec_true(&self, h: &Handle) -> impl Future<Output = Result<(), String>> + Send;
    fn pause(&self, h: &Handle) -> impl Future<Output = Result<(), String>> + Send;
    fn resume(&self, h: &Handle) -> impl Future<Output = Result<(), String>> + Send;
    fn delete(&self, h: &Handle) -> impl Future<Output = Result<(), String>> + Send;
    /// Memory held by these (idle, running) runtimes.
    fn footprint(&self, handles: &[Handle]) -> impl Future<Output = Footprint> + Send;
}
