//! `banger-update`: banger's releases and self-update.
//!
//! - [`trust`]: the release key and manifest URL compiled into the binary;
//! - [`manifest`], [`policy`]: which releases exist and which one to install;
//! - [`signature`], [`sums`], [`download`]: fetching and believing them;
//! - [`contents`], [`unpack`], [`staging`]: a release's files, strictly unpacked;
//! - [`layout`], [`swap`], [`record`]: where files go, replacing them with a way back,
//!   and the install record;
//! - [`flow`]: one update, start to end, with the caller's restart and health hooks;
//! - [`pack`]: making a release (the release tool and tests).

pub mod contents;
pub mod download;
pub mod flow;
pub mod layout;
pub mod manifest;
pub mod pack;
pub mod policy;
pub mod record;
pub mod signature;
pub mod staging;
pub mod sums;
pub mod swap;
pub mod trust;
pub mod unpack;

pub use semver;

pub use flow::{run, HookError, Hooks, Options, Outcome, UpdateError};
pub use layout::Install;
pub use trust::Trust;
#[cfg(test)]
mod flow_tests;
#[cfg(any(test, feature = "test-support"))]
pub mod test_support;
