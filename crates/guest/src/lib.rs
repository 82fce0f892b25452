//! Talking to guests from the host.
//!
//! * [`keys`]: banger's own ed25519 key pair (made with `ssh-keygen`, the standard
//!   tool) whose public half goes into every work disk.
//! * [`agent`]: the guest agent over the VMM's virtio-serial socket.
//! * [`ssh`]: sshd readiness and the OpenSSH options every banger ssh uses, including
//!   the per-VM known_hosts file that pins the guest's host key on first contact.

pub mod agent;
pub mod keys;
pub mod ssh;
pub mod vsock;
