//! Telling the daemon when a VM's state changes, from the one place every change goes
//! through: the rows themselves. The daemon turns these into `banger events` and
//! `vm wait`; hooking here rather than at each verb means a new verb (or a new path
//! through an old one) cannot forget to announce what it did.

use banger_model::VmState;
use std::sync::OnceLock;

/// A VM row changed state (or was created or deleted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmChange {
    /// The VM's id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its new state; `None` when the row was deleted.
    pub state: Option<VmState>,
    /// The stored error, for `error`.
    pub error: Option<String>,
}

/// Called after each committed change, on the writer's thread, with the store's
/// connection lock released. It must be quick and must not call back into the store.
pub type Observer = Box<dyn Fn(&VmChange) + Send + Sync>;

/// The installed observer, if any.
#[derive(Default)]
pub(crate) struct Observers(OnceLock<Observer>);

impl std::fmt::Debug for Observers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.get().is_some() {
            "Observers(set)"
        } else {
            "Observers(none)"
        })
    }
}

impl Observers {
    pub(crate) fn set(&self, o: Observer) -> bool {
        self.0.set(o).is_ok()
    }

    pub(crate) fn emit(&self, c: VmChange) {
        if let Some(o) = self.0.get() {
            o(&c);
        }
    }
}
