//! Host checks shared by the daemon and `banger doctor`.
//!
//! `banger doctor` must work when `bangerd` does not (that is when people run it), so
//! it cannot ask the daemon; but it must say exactly what the daemon will decide. Both
//! therefore call the functions here: one home for finding tools ([`which`]), running
//! `--version` with a timeout ([`run`]), the tool → package table ([`tools`]), the
//! static-ELF check of the guest agent ([`elf`], [`agent`]), the cached KVM/TCG
//! verdict's format ([`accel`]) and the policy for when Firecracker may be used
//! ([`firecracker`]), and whether systemd-resolved runs ([`resolved`]).
//!
//! Everything here is synchronous and bounded (reads are capped, children are timed
//! out); async callers run it on a blocking thread.

pub mod accel;
pub mod agent;
pub mod elf;
pub mod firecracker;
pub mod resolved;
pub mod run;
pub mod tools;
pub mod which;

pub use accel::{Accel, AccelChoice};
