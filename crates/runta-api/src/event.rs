//! The kinds of entry in a runtime's event list (`GET /v1/runtimes/{id}/events`,
//! the `type` field). The official client has no enum for them (its event
//! `type` is a plain string), so the spellings are ours, exactly as the daemon
//! has always written them; a stored kind is kept as its string.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// What happened to a runtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// It was created.
    Created,
    /// It booted (on create, `start`, or a restore).
    Started,
    /// `pause` froze it.
    Paused,
    /// `resume` thawed it.
    Resumed,
    /// `stop` stopped it.
    Stopped,
    /// A PATCH changed its vCPUs or memory.
    Resized,
    /// A PATCH changed something else (labels, published ports, idle policy, …).
    Updated,
    /// A process in it was OOM-killed (the runtime keeps running).
    OomKilled,
    /// Its init process exited, or its sandbox was gone after a daemon restart.
    Crashed,
    /// The idle policy froze it.
    IdleSuspended,
    /// A request thawed it after an idle suspend.
    Woken,
    /// Booting, deleting or its agent failed.
    Error,
    /// Its egress policy denied a destination (at most once a minute per host).
    Egress,
    /// A checkpoint of it was taken.
    Checkpointed,
    /// Its image was pulled on first use before the create.
    ImagePulled,
    /// Its files were saved as a new image (`commit`).
    Committed,
}

impl EventKind {
    /// Every kind, in the order the docs list them.
    pub const ALL: [EventKind; 16] = [
        EventKind::Created,
        EventKind::Started,
        EventKind::Paused,
        EventKind::Resumed,
        EventKind::Stopped,
        EventKind::Resized,
        EventKind::Updated,
        EventKind::OomKilled,
        EventKind::Crashed,
        EventKind::IdleSuspended,
        EventKind::Woken,
        EventKind::Error,
        EventKind::Egress,
        EventKind::Checkpointed,
        EventKind::ImagePulled,
        EventKind::Committed,
    ];

    /// The wire and store spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Created => "created",
            EventKind::Started => "started",
            EventKind::Paused => "paused",
            EventKind::Resumed => "resumed",
            EventKind::Stopped => "stopped",
            EventKind::Resized => "resized",
            EventKind::Updated => "updated",
            EventKind::OomKilled => "oom_killed",
            EventKind::Crashed => "crashed",
            EventKind::IdleSuspended => "idle_suspended",
            EventKind::Woken => "woken",
            EventKind::Error => "error",
            EventKind::Egress => "egress",
            EventKind::Checkpointed => "checkpointed",
            EventKind::ImagePulled => "image_pulled",
            EventKind::Committed => "committed",
        }
    }

    /// The kind a spelling names, if any.
    pub fn parse(s: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// serde writes exactly `as_str`, and both read back.
    #[test]
    fn every_kind_serializes_as_its_string() {
        for k in EventKind::ALL {
            let json = serde_json::to_value(k).unwrap();
            assert_eq!(json, serde_json::Value::String(k.as_str().into()), "{k:?}");
            assert_eq!(serde_json::from_value::<EventKind>(json).unwrap(), k);
            assert_eq!(EventKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(EventKind::parse("exploded"), None);
    }
}
