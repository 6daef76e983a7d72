//! The runtime state machine, as data: the statuses, what a caller can ask for
//! ([`Action`]), what can happen to a runtime ([`StatusEvent`]: a request, or
//! something the daemon notices), and the one [`transition`] function that says
//! where each event leads from each status. The daemon changes a status only
//! through it, and the runtime object carries [`allowed_actions`], so clients
//! do not keep copies of this table.
//!
//! The shape (docs/api.md, "Statuses"): `creating → running ⇄ paused`,
//! `running → shutdown → running`, `running → suspended → running` (idle policy
//! and wake), any → `deleting` → gone, and `error` / `crashed`, from which
//! `start` or delete always leads out. No status is a dead end.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::event::EventKind;

/// Where a runtime is in its life. No status is a dead end: `start` or
/// `DELETE` leads out of every one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RuntimeStatus {
    Creating,
    Running,
    Paused,
    Shutdown,
    Suspended,
    Deleting,
    Error,
    Crashed,
}

impl RuntimeStatus {
    pub const ALL: [RuntimeStatus; 8] = [
        RuntimeStatus::Creating,
        RuntimeStatus::Running,
        RuntimeStatus::Paused,
        RuntimeStatus::Shutdown,
        RuntimeStatus::Suspended,
        RuntimeStatus::Deleting,
        RuntimeStatus::Error,
        RuntimeStatus::Crashed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RuntimeStatus::Creating => "creating",
            RuntimeStatus::Running => "running",
            RuntimeStatus::Paused => "paused",
            RuntimeStatus::Shutdown => "shutdown",
            RuntimeStatus::Suspended => "suspended",
            RuntimeStatus::Deleting => "deleting",
            RuntimeStatus::Error => "error",
            RuntimeStatus::Crashed => "crashed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Its sandbox exists with processes in it (running or frozen): it has live
    /// usage, limits can change live, the monitor watches its init.
    pub fn is_up(self) -> bool {
        matches!(
            self,
            RuntimeStatus::Running | RuntimeStatus::Paused | RuntimeStatus::Suspended
        )
    }

    /// It holds memory, CPU and PIDs on the host (docs/operations.md, "Quotas and
    /// capacity"): up, or on its way up.
    pub fn holds_capacity(self) -> bool {
        self == RuntimeStatus::Creating || self.is_up()
    }

    /// Something went wrong and the record's `error` says what.
    pub fn is_failed(self) -> bool {
        matches!(self, RuntimeStatus::Error | RuntimeStatus::Crashed)
    }
}

impl std::fmt::Display for RuntimeStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a caller can ask of a runtime. `start`/`stop` are the official client's
/// `boot`/`shutdown` (its spellings are mapped at the API edge).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Start,
    Stop,
    Pause,
    Resume,
    Delete,
    /// `PATCH`: resize, rename, labels, env, published ports, idle policy.
    Update,
    /// Commands and file transfers (both need a running agent).
    Exec,
    Checkpoint,
}

impl Action {
    pub const ALL: [Action; 8] = [
        Action::Start,
        Action::Stop,
        Action::Pause,
        Action::Resume,
        Action::Delete,
        Action::Update,
        Action::Exec,
        Action::Checkpoint,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Start => "start",
            Action::Stop => "stop",
            Action::Pause => "pause",
            Action::Resume => "resume",
            Action::Delete => "delete",
            Action::Update => "update",
            Action::Exec => "exec",
            Action::Checkpoint => "checkpoint",
        }
    }

    /// Whether the action's point is to move the status. Asking a lifecycle
    /// action for the status a runtime already has is a no-op, so it is not
    /// offered; the others are offered wherever they are accepted.
    fn is_lifecycle(self) -> bool {
        matches!(
            self,
            Action::Start | Action::Stop | Action::Pause | Action::Resume | Action::Delete
        )
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything that can move a runtime's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StatusEvent {
    /// A caller asked (the backend has done it by the time the status is set).
    Requested(Action),
    /// The backend finished creating or booting it.
    Booted,
    /// Creating or booting it failed.
    BootFailed,
    /// The monitor saw its init process exit.
    InitExited,
    /// A process in it was OOM-killed (recorded; the status stays).
    OomKilled,
    /// The idle policy froze it.
    IdleSuspended,
    /// A request for it (ingress, exec, start/resume) thawed it.
    Woken,
    /// Its agent stopped answering while it ran.
    AgentWedged,
    /// The backend could not remove it.
    DeleteFailed,
    /// Reconcile after a daemon restart found its sandbox running.
    FoundRunning,
    /// Reconcile found its sandbox frozen.
    FoundPaused,
    /// Reconcile found its sandbox stopped or missing.
    FoundGone,
}

impl StatusEvent {
    /// Every event, for tables that must cover them all.
    pub const ALL: [StatusEvent; 19] = [
        StatusEvent::Requested(Action::Start),
        StatusEvent::Requested(Action::Stop),
        StatusEvent::Requested(Action::Pause),
        StatusEvent::Requested(Action::Resume),
        StatusEvent::Requested(Action::Delete),
        StatusEvent::Requested(Action::Update),
        StatusEvent::Requested(Action::Exec),
        StatusEvent::Requested(Action::Checkpoint),
        StatusEvent::Booted,
        StatusEvent::BootFailed,
        StatusEvent::InitExited,
        StatusEvent::OomKilled,
        StatusEvent::IdleSuspended,
        StatusEvent::Woken,
        StatusEvent::AgentWedged,
        StatusEvent::DeleteFailed,
        StatusEvent::FoundRunning,
        StatusEvent::FoundPaused,
        StatusEvent::FoundGone,
    ];

    /// The entry it leaves in the runtime's event list (`GET …/events`), if any.
    pub fn kind(self) -> Option<EventKind> {
        use EventKind as K;
        Some(match self {
            StatusEvent::Requested(Action::Start) | StatusEvent::Booted => K::Started,
            StatusEvent::Requested(Action::Stop) => K::Stopped,
            StatusEvent::Requested(Action::Pause) => K::Paused,
            StatusEvent::Requested(Action::Resume) => K::Resumed,
            StatusEvent::BootFailed | StatusEvent::AgentWedged | StatusEvent::DeleteFailed => {
                K::Error
            }
            StatusEvent::InitExited | StatusEvent::FoundGone => K::Crashed,
            StatusEvent::OomKilled => K::OomKilled,
            StatusEvent::IdleSuspended => K::IdleSuspended,
            StatusEvent::Woken => K::Woken,
            StatusEvent::Requested(
                Action::Delete | Action::Update | Action::Exec | Action::Checkpoint,
            )
            | StatusEvent::FoundRunning
            | StatusEvent::FoundPaused => return None,
        })
    }

    /// Whether reaching `running` through it is a boot (so `started_at` moves).
    pub fn boots(self) -> bool {
        matches!(
            self,
            StatusEvent::Requested(Action::Start) | StatusEvent::Booted
        )
    }
}

/// An event that cannot happen in a status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub from: RuntimeStatus,
    pub event: StatusEvent,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:?} is not possible while a runtime is {}",
            self.event, self.from
        )
    }
}

impl std::error::Error for Refusal {}

/// Where `event` takes a runtime that is `from`. Equal statuses mean the event
/// leaves the status alone (a lifecycle request for the status it already has
/// is a no-op, an exec or update happens in place).
pub fn transition(from: RuntimeStatus, event: StatusEvent) -> Result<RuntimeStatus, Refusal> {
    use Action as A;
    use RuntimeStatus as S;
    use StatusEvent as E;
    let to = match (event, from) {
        // Delete leads out of everything; a second delete of a record already
        // being deleted finishes the first.
        (E::Requested(A::Delete), _) => S::Deleting,
        (E::DeleteFailed, S::Deleting) => S::Error,

        (E::Requested(A::Start), S::Running) => S::Running,
        (E::Requested(A::Start), S::Shutdown | S::Error | S::Crashed) => S::Running,
        // Start of a suspended runtime wakes it, as resume does.
        (E::Requested(A::Start), S::Suspended) => S::Running,

        (E::Requested(A::Stop), S::Shutdown) => S::Shutdown,
        (E::Requested(A::Stop), S::Running | S::Paused | S::Suspended | S::Error | S::Crashed) => {
            S::Shutdown
        }

        (E::Requested(A::Pause), S::Paused) => S::Paused,
        // From suspended: already frozen by the idle policy; now the caller owns the pause.
        (E::Requested(A::Pause), S::Running | S::Suspended) => S::Paused,

        (E::Requested(A::Resume), S::Running) => S::Running,
        (E::Requested(A::Resume), S::Paused | S::Suspended) => S::Running,

        (E::Requested(A::Update), s) if !matches!(s, S::Creating | S::Deleting) => s,
        // An exec or a file transfer wakes a suspended runtime first.
        (E::Requested(A::Exec), S::Running | S::Suspended) => S::Running,
        (E::Requested(A::Checkpoint), s) if s.is_up() => s,

        (E::Booted, S::Creating) => S::Running,
        (E::BootFailed, S::Creating | S::Shutdown | S::Error | S::Crashed) => S::Error,
        (E::InitExited, s) if s.is_up() => S::Crashed,
        (E::OomKilled, s) if s.is_up() => s,
        (E::IdleSuspended, S::Running) => S::Suspended,
        (E::Woken, S::Suspended) => S::Running,
        (E::AgentWedged, S::Running) => S::Error,

        (E::FoundRunning, s) if s.is_up() => S::Running,
        // A frozen sandbox stays suspended if the idle policy froze it.
        (E::FoundPaused, S::Suspended) => S::Suspended,
        (E::FoundPaused, S::Running | S::Paused) => S::Paused,
        (E::FoundGone, s) if s.is_up() => S::Crashed,

        _ => return Err(Refusal { from, event }),
    };
    Ok(to)
}

/// What a caller can do with a runtime that is `status`: the lifecycle actions
/// that move it, and the others that are accepted in it.
pub fn allowed_actions(status: RuntimeStatus) -> Vec<Action> {
    Action::ALL
        .into_iter()
        .filter(|&a| match transition(status, StatusEvent::Requested(a)) {
            // `start` is accepted on a suspended runtime but `resume` is the
            // action that thaws: offer one button, not two that do the same.
            Ok(_) if (a, status) == (Action::Start, RuntimeStatus::Suspended) => false,
            Ok(to) => to != status || !a.is_lifecycle(),
            Err(_) => false,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use Action as A;
    use RuntimeStatus as S;
    use StatusEvent as E;

    /// `None`: refused.
    fn expected(from: S, event: E) -> Option<S> {
        // Written out per status, so a new status or event fails to compile
        // here (non-exhaustive match) until every pair has a decision.
        let row: &[(E, Option<S>)] = match from {
            S::Creating => &[
                (E::Requested(A::Start), None),
                (E::Requested(A::Stop), None),
                (E::Requested(A::Pause), None),
                (E::Requested(A::Resume), None),
                (E::Requested(A::Delete), Some(S::Deleting)),
                (E::Requested(A::Update), None),
                (E::Requested(A::Exec), None),
                (E::Requested(A::Checkpoint), None),
                (E::Booted, Some(S::Running)),
                (E::BootFailed, Some(S::Error)),
                (E::InitExited, None),
                (E::OomKilled, None),
                (E::IdleSuspended, None),
                (E::Woken, None),
                (E::AgentWedged, None),
                (E::DeleteFailed, None),
                (E::FoundRunning, None),
                (E::FoundPaused, None),
                (E::FoundGone, None),
            ],
            S::Running => &[
                (E::Requested(A::Start), Some(S::Running)),
                (E::Requested(A::Stop), Some(S::Shutdown)),
                (E::Requested(A::Pause), Some(S::Paused)),
                (E::Requested(A::Resume), Some(S::Running)),
                (E::Requested(A::Delete), Some(S::Deleting)),
                (E::Requested(A::Update), Some(S::Running)),
                (E::Requested(A::Exec), Some(S::Running)),
                (E::Requested(A::Checkpoint), Some(S::Running)),
                (E::Booted, None),
                (E::BootFailed, None),
                (E::InitExited, Some(S::Crashed)),
                (E::OomKilled, Some(S::Running)),
                (E::IdleSuspended, Some(S::Suspended)),
                (E::Woken, None),
                (E::AgentWedged, Some(S::Error)),
                (E::DeleteFailed, None),
                (E::FoundRunning, Some(S::Running)),
                (E::FoundPaused, Some(S::Paused)),
                (E::FoundGone, Some(S::Crashed)),
            ],
            S::Paused => &[
                (E::Requested(A::Start), None),
                (E::Requested(A::Stop), Some(S::Shutdown)),
                (E::Requested(A::Pause), Some(S::Paused)),
                (E::Requested(A::Resume), Some(S::Running)),
                (E::Requested(A::Delete), Some(S::Deleting)),
                (E::Requested(A::Update), Some(S::Paused)),
                (E::Requested(A::Exec), None),
                (E::Requested(A::Checkpoint), Some(S::Paused)),
                (E::Booted, None),
                (E::BootFailed, None),
                (E::InitExited, Some(S::Crashed)),
                (E::OomKilled, Some(S::Paused)),
                (E::IdleSuspended, None),
                (E::Woken, None),
                (E::AgentWedged, None),
                (E::DeleteFailed, None),
                (E::FoundRunning, Some(S::Running)),
                (E::FoundPaused, Some(S::Paused)),
                (E::FoundGone, Some(S::Crashed)),
            ],
            S::Shutdown => &[
                (E::Requested(A::Start), Some(S::Running)),
                (E::Requested(A::Stop), Some(S::Shutdown)),
                (E::Requested(A::Pause), None),
                (E::Requested(A::Resume), None),
                (E::Requested(A::Delete), Some(S::Deleting)),
                (E::Requested(A::Update), Some(S::Shutdown)),
                (E::Requested(A::Exec), None),
                (E::Requested(A::Checkpoint), None),
                (E::Booted, None),
                (E::BootFailed, Some(S::Error)),
                (E::InitExited, None),
                (E::OomKilled, None),
                (E::IdleSuspended, None),
                (E::Woken, None),
                (E::AgentWedged, None),
                (E::DeleteFailed, None),
                (E::FoundRunning, None),
                (E::FoundPaused, None),
                (E::FoundGone, None),
            ],
            S::Suspended => &[
                (E::Requested(A::Start), Some(S::Running)),
                (E::Requested(A::Stop), Some(S::Shutdown)),
                (E::Requested(A::Pause), Some(S::Paused)),
                (E::Requested(A::Resume), Some(S::Running)),
                (E::Requested(A::Delete), Some(S::Deleting)),
                (E::Requested(A::Update), Some(S::Suspended)),
                (E::Requested(A::Exec), Some(S::Running)),
                (E::Requested(A::Checkpoint), Some(S::Suspended)),
                (E::Booted, None),
                (E::BootFailed, None),
                (E::InitExited, Some(S::Crashed)),
                (E::OomKilled, Some(S::Suspended)),
                (E::IdleSuspended, None),
                (E::Woken, Some(S::Running)),
                (E::AgentWedged, None),
                (E::DeleteFailed, None),
                (E::FoundRunning, Some(S::Running)),
                (E::FoundPaused, Some(S::Suspended)),
                (E::FoundGone, Some(S::Crashed)),
            ],
            S::Deleting => &[
                (E::Requested(A::Start), None),
                (E::Requested(A::Stop), None),
                (E::Requested(A::Pause), None),
                (E::Requested(A::Resume), None),
                (E::Requested(A::Delete), Some(S::Deleting)),
                (E::Requested(A::Update), None),
                (E::Requested(A::Exec), None),
                (E::Requested(A::Checkpoint), None),
                (E::Booted, None),
                (E::BootFailed, None),
                (E::InitExited, None),
                (E::OomKilled, None),
                (E::IdleSuspended, None),
                (E::Woken, None),
                (E::AgentWedged, None),
                (E::DeleteFailed, Some(S::Error)),
                (E::FoundRunning, None),
                (E::FoundPaused, None),
                (E::FoundGone, None),
            ],
            S::Error | S::Crashed => &[
                (E::Requested(A::Start), Some(S::Running)),
                (E::Requested(A::Stop), Some(S::Shutdown)),
                (E::Requested(A::Pause), None),
                (E::Requested(A::Resume), None),
                (E::Requested(A::Delete), Some(S::Deleting)),
                (E::Requested(A::Update), Some(from)),
                (E::Requested(A::Exec), None),
                (E::Requested(A::Checkpoint), None),
                (E::Booted, None),
                (E::BootFailed, Some(S::Error)),
                (E::InitExited, None),
                (E::OomKilled, None),
                (E::IdleSuspended, None),
                (E::Woken, None),
                (E::AgentWedged, None),
                (E::DeleteFailed, None),
                (E::FoundRunning, None),
                (E::FoundPaused, None),
                (E::FoundGone, None),
            ],
        };
        assert_eq!(
            row.len(),
            StatusEvent::ALL.len(),
            "row of {from} misses events"
        );
        row.iter()
            .find(|(e, _)| *e == event)
            .unwrap_or_else(|| panic!("row of {from} has no decision for {event:?}"))
            .1
    }

    #[test]
    fn every_status_event_pair_is_decided() {
        for from in S::ALL {
            for event in E::ALL {
                assert_eq!(
                    transition(from, event).ok(),
                    expected(from, event),
                    "{from} + {event:?}"
                );
            }
        }
    }

    #[test]
    fn every_event_is_listed_once() {
        // Fails to compile when an event is added, so `ALL` gets it too.
        fn _exhaustive(e: E) {
            match e {
                E::Requested(_)
                | E::Booted
                | E::BootFailed
                | E::InitExited
                | E::OomKilled
                | E::IdleSuspended
                | E::Woken
                | E::AgentWedged
                | E::DeleteFailed
                | E::FoundRunning
                | E::FoundPaused
                | E::FoundGone => {}
            }
        }
        let set: std::collections::HashSet<_> = E::ALL.into_iter().collect();
        assert_eq!(set.len(), E::ALL.len());
        for a in A::ALL {
            assert!(
                set.contains(&E::Requested(a)),
                "{a} missing from StatusEvent::ALL"
            );
        }
    }

    /// No status is a dead end: from every status some chain of requests and
    /// events reaches `running`, and delete leads out of every one.
    #[test]
    fn no_status_is_a_dead_end() {
        for from in S::ALL {
            assert_eq!(transition(from, E::Requested(A::Delete)), Ok(S::Deleting));
            let mut seen = vec![from];
            let mut frontier = vec![from];
            while let Some(s) = frontier.pop() {
                for e in E::ALL {
                    if let Ok(to) = transition(s, e) {
                        if !seen.contains(&to) {
                            seen.push(to);
                            frontier.push(to);
                        }
                    }
                }
            }
            assert!(seen.contains(&S::Running), "{from} never reaches running");
        }
        for s in [S::Error, S::Crashed] {
            assert_eq!(transition(s, E::Requested(A::Start)), Ok(S::Running));
        }
    }

    #[test]
    fn allowed_actions_per_status() {
        let names = |s: S| -> Vec<&str> { allowed_actions(s).iter().map(|a| a.as_str()).collect() };
        assert_eq!(names(S::Creating), ["delete"]);
        assert_eq!(
            names(S::Running),
            ["stop", "pause", "delete", "update", "exec", "checkpoint"]
        );
        assert_eq!(
            names(S::Paused),
            ["stop", "resume", "delete", "update", "checkpoint"]
        );
        assert_eq!(names(S::Shutdown), ["start", "delete", "update"]);
        assert_eq!(
            names(S::Suspended),
            [
                "stop",
                "pause",
                "resume",
                "delete",
                "update",
                "exec",
                "checkpoint"
            ]
        );
        assert!(names(S::Deleting).is_empty());
        assert_eq!(names(S::Error), ["start", "stop", "delete", "update"]);
        assert_eq!(names(S::Crashed), ["start", "stop", "delete", "update"]);
    }

    #[test]
    fn status_groups() {
        let up: Vec<S> = S::ALL.into_iter().filter(|s| s.is_up()).collect();
        assert_eq!(up, [S::Running, S::Paused, S::Suspended]);
        let holding: Vec<S> = S::ALL.into_iter().filter(|s| s.holds_capacity()).collect();
        assert_eq!(holding, [S::Creating, S::Running, S::Paused, S::Suspended]);
        let failed: Vec<S> = S::ALL.into_iter().filter(|s| s.is_failed()).collect();
        assert_eq!(failed, [S::Error, S::Crashed]);
        for s in S::ALL {
            assert_eq!(S::parse(s.as_str()), Some(s));
        }
    }
}
