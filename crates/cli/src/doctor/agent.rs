//! The guest agent binary: located and checked exactly as the daemon does.

use super::{Check, Status};
use banger_hostcheck::agent::{self, BUILD_HINT};

/// Whether the agent the daemon will use is a static x86-64 executable.
pub fn check() -> Check {
    const NAME: &str = "guest agent";
    let at = agent::locate();
    match agent::check(&at.path) {
        Ok(()) => Check::new(NAME, Status::Ok, format!("{} (static)", at.path.display())),
        Err(e) => Check::new(NAME, Status::Fail, format!("{e} (from {})", at.from)).fix(BUILD_HINT),
    }
}
