//! [`Unprivileged`]: what a daemon that is neither root nor connected to a helper
//! has. Everything is refused with the one error that names the fix.

use std::net::Ipv4Addr;
use std::os::fd::OwnedFd;
use std::path::PathBuf;

use crate::{DnsProto, HelperError, PrivOp, Privileged};

/// Refuses every privileged operation with [`HelperError::NoPrivilege`]. A daemon
/// with it still serves everything that needs no privilege (images, kernels,
/// listing); VM starts are refused up front through [`Privileged::available`].
#[derive(Debug, Clone)]
pub struct Unprivileged {
    /// The daemon's uid.
    pub uid: u32,
    /// Where the system helper's socket would be.
    pub system_socket: PathBuf,
}

impl Unprivileged {
    fn refusal(&self) -> HelperError {
        HelperError::NoPrivilege {
            uid: self.uid,
            system_socket: self.system_socket.clone(),
        }
    }
}

#[async_trait::async_trait]
impl Privileged for Unprivileged {
    async fn run(&self, _op: PrivOp) -> Result<(), HelperError> {
        Err(self.refusal())
    }

    async fn open_tap(&self, _name: &str) -> Result<OwnedFd, HelperError> {
        Err(self.refusal())
    }

    async fn bind_dns(&self, _gateway: Ipv4Addr, _proto: DnsProto) -> Result<OwnedFd, HelperError> {
        Err(self.refusal())
    }

    async fn list_tap_names(&self) -> Result<Vec<String>, HelperError> {
        Err(self.refusal())
    }

    fn available(&self) -> Result<(), HelperError> {
        Err(self.refusal())
    }
}
