//! The one setter of a runtime's status. Every change, whether a caller asked
//! for it or the monitor, reconcile or an exec noticed something, goes through
//! [`Manager::set_status`], which checks it against the state machine in
//! `runta_api::status`, writes the store and records the event. The caller
//! holds the runtime's lock and has already done the backend's part.

use runta_api::{status, Action, RuntimeStatus, StatusEvent};

use super::{Error, Manager, Result};
use crate::store::RuntimeRecord;

/// The refusal a caller sees: 409 naming the current status.
pub(super) fn refused(r: &RuntimeRecord, verb: &str) -> Error {
    Error::FailedPrecondition(format!(
        "cannot {verb} runtime {:?}: it is {}",
        r.name, r.status
    ))
}

impl Manager {
    /// Where `action` would take `r`, or the 409 a caller gets when it is not
    /// possible now. Equal to `r.status` when there is nothing to do.
    pub(super) fn check(&self, r: &RuntimeRecord, action: Action) -> Result<RuntimeStatus> {
        status::transition(r.status, StatusEvent::Requested(action))
            .map_err(|_| refused(r, action.as_str()))
    }

    /// Moves `r` through `event`: checks the transition, sets the status (and
    /// `error` in `error`/`crashed`, cleared elsewhere; `started_at` on a boot),
    /// writes the record when the status moved, and records the event with
    /// `message`. On a refusal or a failed write `r` is left as it was.
    pub(super) fn set_status(
        &self,
        r: &mut RuntimeRecord,
        event: StatusEvent,
        message: Option<String>,
    ) -> Result<()> {
        let from = r.status;
        let to = status::transition(from, event).map_err(|refusal| match event {
            StatusEvent::Requested(a) => refused(r, a.as_str()),
            // The daemon's own events are checked before they are sent; one
            // refused here is a bug, not the caller's fault.
            _ => Error::Internal(format!("runtime {:?}: {refusal}", r.name)),
        })?;
        if to != from {
            let before = (r.error.clone(), r.started_at);
            r.status = to;
            r.error = if to.is_failed() {
                message.clone().or_else(|| r.error.take())
            } else {
                None
            };
            if to == RuntimeStatus::Running && event.boots() {
                r.started_at = Some(crate::store::now());
            }
            if let Err(e) = self.store.update_runtime(r) {
                r.status = from;
                (r.error, r.started_at) = before;
                return Err(e.into());
            }
        }
        if let Some(kind) = event.kind() {
            self.event(r, kind, message.as_deref());
        }
        Ok(())
    }
}
