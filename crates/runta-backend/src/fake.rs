//! An in-memory [`Backend`] for logic tests (cargo feature `fake`): it keeps
//! each runtime's [`BackendState`] in a map, records every call, and fails the
//! operations a test asks it to. The daemon's state machine, admission and
//! reconcile can then be tested without root, containers or a kernel.
//!
//! It is as strict as a real runtime where the manager depends on it: pausing
//! what does not run, resuming what is not frozen, or resizing what has no
//! sandbox fails.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use uuid::Uuid;

use crate::{
    AgentAddress, Backend, BackendError, BackendState, Limits, Result, RuntimeSpec, Usage,
};

/// A backend operation, to inject failures into and to find in the call log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    EnsureImage,
    Create,
    Start,
    Stop,
    Pause,
    Resume,
    Update,
    Delete,
    State,
    Checkpoint,
    DeleteCheckpoint,
    WaitAgent,
}

#[derive(Debug, Clone)]
struct Sandbox {
    state: BackendState,
    limits: Limits,
    oom_kills: u64,
}

#[derive(Default)]
struct Inner {
    sandboxes: HashMap<Uuid, Sandbox>,
    calls: Vec<(Op, Option<Uuid>)>,
    failing: HashSet<Op>,
    checkpoints: HashSet<String>,
}

/// See the module documentation.
pub struct FakeBackend {
    inner: Mutex<Inner>,
    images: Vec<String>,
}

impl Default for FakeBackend {
    fn default() -> Self {
        FakeBackend {
            inner: Mutex::default(),
            images: vec![crate::images::BASE_IMAGE.to_string()],
        }
    }
}

impl FakeBackend {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes every later call of `op` fail until [`Self::heal`].
    pub fn fail(&self, op: Op) {
        self.lock().failing.insert(op);
    }

    pub fn heal(&self, op: Op) {
        self.lock().failing.remove(&op);
    }

    /// Every call so far, oldest first.
    pub fn calls(&self) -> Vec<(Op, Option<Uuid>)> {
        self.lock().calls.clone()
    }

    /// How often `op` was called (for any runtime).
    pub fn count(&self, op: Op) -> usize {
        self.lock().calls.iter().filter(|(o, _)| *o == op).count()
    }

    /// What the backend holds for `id` (`Missing` when nothing).
    pub fn state_of(&self, id: Uuid) -> BackendState {
        self.lock()
            .sandboxes
            .get(&id)
            .map(|s| s.state)
            .unwrap_or(BackendState::Missing)
    }

    pub fn limits_of(&self, id: Uuid) -> Option<Limits> {
        self.lock().sandboxes.get(&id).map(|s| s.limits)
    }

    /// Puts `id` in `state` behind the daemon's back (an init that died, a host
    /// reboot that lost the sandbox, a daemon restart that finds it running).
    pub fn set_state(&self, id: Uuid, state: BackendState) {
        let mut g = self.lock();
        if state == BackendState::Missing {
            g.sandboxes.remove(&id);
            return;
        }
        g.sandboxes
            .entry(id)
            .or_insert(Sandbox {
                state,
                limits: Limits {
                    vcpus: 1.0,
                    memory_limit_mib: 256,
                },
                oom_kills: 0,
            })
            .state = state;
    }

    /// Counts an OOM kill inside `id`, as the cgroup would.
    pub fn oom_kill(&self, id: Uuid) {
        if let Some(s) = self.lock().sandboxes.get_mut(&id) {
            s.oom_kills += 1;
        }
    }

    /// Records the call, then fails it if the test asked for that.
    fn call(&self, op: Op, id: Option<Uuid>) -> Result<std::sync::MutexGuard<'_, Inner>> {
        let mut g = self.lock();
        g.calls.push((op, id));
        if g.failing.contains(&op) {
            return Err(BackendError::Other(format!("injected failure of {op:?}")));
        }
        Ok(g)
    }
}

fn refuse(op: Op, id: Uuid, state: BackendState) -> BackendError {
    BackendError::Command {
        what: format!("{op:?} {id}"),
        detail: format!("the sandbox is {state:?}"),
    }
}

fn limits(spec: &RuntimeSpec) -> Limits {
    Limits {
        vcpus: spec.vcpus,
        memory_limit_mib: spec.memory_limit_mib,
    }
}

#[async_trait::async_trait]
impl Backend for FakeBackend {
    fn name(&self) -> String {
        "fake".into()
    }

    async fn ensure_image(&self, image: &str) -> Result<()> {
        drop(self.call(Op::EnsureImage, None)?);
        if self.images.iter().any(|i| i == image) {
            Ok(())
        } else {
            Err(BackendError::ImageNotFound(image.to_string()))
        }
    }

    async fn create(&self, spec: &RuntimeSpec) -> Result<()> {
        // A failed create leaves nothing, as the real backend cleans up after itself.
        let mut g = self.call(Op::Create, Some(spec.id))?;
        g.sandboxes.insert(
            spec.id,
            Sandbox {
                state: BackendState::Running { pid: 1 },
                limits: limits(spec),
                oom_kills: 0,
            },
        );
        Ok(())
    }

    async fn start(&self, spec: &RuntimeSpec) -> Result<()> {
        let mut g = match self.call(Op::Start, Some(spec.id)) {
            Ok(g) => g,
            Err(e) => {
                // A failed boot tears down what it started; the files stay.
                if let Some(s) = self.lock().sandboxes.get_mut(&spec.id) {
                    s.state = BackendState::Stopped;
                }
                return Err(e);
            }
        };
        let s = g.sandboxes.entry(spec.id).or_insert(Sandbox {
            state: BackendState::Missing,
            limits: limits(spec),
            oom_kills: 0,
        });
        // Like the real one, a boot clears whatever sandbox was left first.
        s.state = BackendState::Running { pid: 1 };
        s.limits = limits(spec);
        Ok(())
    }

    async fn stop(&self, id: Uuid, _grace: Duration) -> Result<()> {
        let mut g = self.call(Op::Stop, Some(id))?;
        if let Some(s) = g.sandboxes.get_mut(&id) {
            s.state = BackendState::Stopped;
        }
        Ok(())
    }

    async fn pause(&self, id: Uuid) -> Result<()> {
        let mut g = self.call(Op::Pause, Some(id))?;
        match g.sandboxes.get_mut(&id) {
            Some(s) if matches!(s.state, BackendState::Running { .. }) => {
                s.state = BackendState::Paused;
                Ok(())
            }
            s => Err(refuse(
                Op::Pause,
                id,
                s.map(|s| s.state).unwrap_or(BackendState::Missing),
            )),
        }
    }

    async fn resume(&self, id: Uuid) -> Result<()> {
        let mut g = self.call(Op::Resume, Some(id))?;
        match g.sandboxes.get_mut(&id) {
            Some(s) if s.state == BackendState::Paused => {
                s.state = BackendState::Running { pid: 1 };
                Ok(())
            }
            s => Err(refuse(
                Op::Resume,
                id,
                s.map(|s| s.state).unwrap_or(BackendState::Missing),
            )),
        }
    }

    async fn update(&self, id: Uuid, limits: Limits) -> Result<()> {
        let mut g = self.call(Op::Update, Some(id))?;
        match g.sandboxes.get_mut(&id) {
            Some(s) => {
                s.limits = limits;
                Ok(())
            }
            None => Err(refuse(Op::Update, id, BackendState::Missing)),
        }
    }

    async fn delete(&self, id: Uuid) -> Result<()> {
        let mut g = self.call(Op::Delete, Some(id))?;
        g.sandboxes.remove(&id);
        Ok(())
    }

    async fn state(&self, id: Uuid) -> Result<BackendState> {
        let g = self.call(Op::State, Some(id))?;
        Ok(g.sandboxes
            .get(&id)
            .map(|s| s.state)
            .unwrap_or(BackendState::Missing))
    }

    fn usage(&self, id: Uuid) -> Option<Usage> {
        let g = self.lock();
        let s = g.sandboxes.get(&id)?;
        matches!(s.state, BackendState::Running { .. } | BackendState::Paused).then(|| Usage {
            memory_bytes: 1 << 20,
            cpu_nanos: 1_000_000,
            oom_kills: s.oom_kills,
        })
    }

    fn is_alive(&self, id: Uuid) -> bool {
        matches!(
            self.state_of(id),
            BackendState::Running { .. } | BackendState::Paused
        )
    }

    async fn checkpoint(&self, id: Uuid, checkpoint_id: &str) -> Result<u64> {
        let mut g = self.call(Op::Checkpoint, Some(id))?;
        g.checkpoints.insert(checkpoint_id.to_string());
        Ok(4096)
    }

    async fn delete_checkpoint(&self, checkpoint_id: &str) -> Result<()> {
        let mut g = self.call(Op::DeleteCheckpoint, None)?;
        g.checkpoints.remove(checkpoint_id);
        Ok(())
    }

    async fn shutdown_host(&self) {}

    fn agent_address(&self, id: Uuid) -> AgentAddress {
        // Nothing listens here: logic tests never reach an agent.
        AgentAddress {
            socket: std::env::temp_dir().join(format!("runta-fake-{id}.sock")),
            cgroup: format!("/runta-fake/{id}"),
        }
    }

    async fn wait_agent(&self, id: Uuid, _timeout: Duration) -> Result<()> {
        drop(self.call(Op::WaitAgent, Some(id))?);
        Ok(())
    }
}
