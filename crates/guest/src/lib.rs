//! Talking to guests from the host.
//!
//! * [`keys`]: banger's own ed25519 key pair (made with `ssh-keygen`, the standard
//!   tool) whose public half goes into every work disk.
//! * [`client`]: the guest agent over its channel (banger-channel): one multiplexed
//!   connection per VM carrying execs, file transfers, ping, ports and shutdown.
//! * [`agent`]: the daemon's simple requests (ping, ports, shutdown) as JSON values,
//!   with a fallback for agents older than the channel ([`legacy`]).
//! * [`vsock`]: Firecracker's `CONNECT <port>` handshake.
//! * [`ssh`]: sshd readiness and the OpenSSH options every banger ssh uses, including
//!   the per-VM known_hosts file that pins the guest's host key on first contact.

pub mod agent;
pub mod client;
pub mod keys;
pub mod legacy;
pub mod ssh;
pub mod vsock;
