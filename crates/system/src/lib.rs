//! banger as a system service.
//!
//! A system install is two services: `banger-helper` as root (the only process with
//! privilege, serving a vetted set of operations) and `bangerd` as the user who owns
//! the VMs. This crate holds everything about putting them in place and running
//! them, so that `banger system ...` (the CLI's thin `system.rs`), `banger update` and
//! `banger doctor` share one implementation:
//!
//! - [`SystemLayout`]: every path of a system install (binaries, man pages,
//!   completions, units, `/etc/banger/{helper,install}.toml`, state, cache, runtime).
//! - [`InstallRecord`]: `/etc/banger/install.toml` (version, commit, built_at, owner),
//!   read and written atomically; [`install::refresh_units`] re-renders the units of
//!   an existing install. Both are what `banger update` calls after a swap.
//! - [`units`]: the two unit files, hardened, rendered as pure functions.
//! - [`install`]: install, restart and uninstall (with systemd), and the wait until the
//!   daemon answers.
//! - [`run`]: `banger system run --owner USER`, both services in the foreground for
//!   any supervisor where systemd is not PID 1.
//! - [`checks`]: the doctor rows of a system install.

pub mod checks;
mod error;
pub mod files;
pub mod install;
pub mod layout;
mod owner;
pub mod record;
pub mod run;
pub mod systemd;
pub mod units;

pub use error::SystemError;
pub use install::{Artifacts, InstallOutcome, Sources};
pub use layout::SystemLayout;
pub use owner::Owner;
pub use record::InstallRecord;
