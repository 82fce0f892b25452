//! Methods whose connection becomes a relayed agent session after the result line:
//! `vm.exec` (a process: stdin, stdout, stderr, signals, resizes, exit status).
//!
//! The daemon opens the session on the VM's agent connection, answers with
//! [`SessionResult`], then speaks `banger-channel` on the same socket (the CLI is the
//! client; both attach session [`SessionResult::session`] without an open frame) and
//! relays every frame of that one session to and from the guest. The agent's answers
//! (`started`, `exit`, `error {not_found}`, `done`) reach the CLI as the agent sent
//! them.

use super::method;
use banger_channel::{Command, WinSize};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

method!(
    /// `vm.exec`: run a process in a running VM; the connection then carries its
    /// session (stdin, stdout, stderr, signals, resizes, exit status).
    VmExec = "vm.exec", VmExecParams => SessionResult
);

/// The session number both ends attach after `vm.exec`.
pub const RELAYED_SESSION: u32 = 1;

/// Params of `vm.exec`. What the daemon adds from the image's recorded config
/// (environment, working directory, user, entrypoint) is described in the README
/// ("Images from registries").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmExecParams {
    /// The VM's name.
    pub name: String,
    /// What to run: a program and its arguments, a `/bin/sh -c` line, or the user's
    /// login shell.
    pub command: Command,
    /// Variables set on top of the image's environment.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working directory; default: the image's working directory, else the user's home.
    #[serde(default)]
    pub cwd: Option<String>,
    /// User name or uid; default: the image's user, else root.
    #[serde(default)]
    pub user: Option<String>,
    /// A pseudo-terminal of this size (interactive use).
    #[serde(default)]
    pub pty: Option<WinSize>,
    /// Prefix an argv command with the image's entrypoint (`vm run IMAGE -- cmd`, as
    /// `docker run` does); `vm exec` and `vm ssh` leave it off (as `docker exec`).
    #[serde(default)]
    pub entrypoint: bool,
}

/// Result of `vm.exec`: the session the connection now carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionResult {
    /// The session number to attach ([`RELAYED_SESSION`]).
    pub session: u32,
}
