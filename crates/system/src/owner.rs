//! The user who owns the VMs: the owner daemon runs as them, the helper serves them.

use std::ffi::CString;
use std::path::PathBuf;

use crate::SystemError;

/// A resolved owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// Login name.
    pub name: String,
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Home directory.
    pub home: PathBuf,
    /// Every group the user is in (primary included), as `initgroups` would set them.
    pub groups: Vec<u32>,
}

impl Owner {
    /// Look `name` up in the user database; refuse root.
    pub fn lookup(name: &str) -> Result<Owner, SystemError> {
        let u = nix::unistd::User::from_name(name)
            .ok()
            .flatten()
            .ok_or_else(|| SystemError::UnknownUser(name.to_string()))?;
        if u.uid.is_root() {
            return Err(SystemError::OwnerIsRoot);
        }
        let cname = CString::new(name).map_err(|_| SystemError::UnknownUser(name.to_string()))?;
        let groups = nix::unistd::getgrouplist(&cname, u.gid)
            .map(|g| g.into_iter().map(|g| g.as_raw()).collect())
            .unwrap_or_else(|_| vec![u.gid.as_raw()]);
        Ok(Owner {
            name: u.name,
            uid: u.uid.as_raw(),
            gid: u.gid.as_raw(),
            home: u.dir,
            groups,
        })
    }

    /// `--owner` if given, else `SUDO_USER` (who ran sudo).
    pub fn from_arg_or_sudo(arg: Option<&str>) -> Result<Owner, SystemError> {
        let name = match arg {
            Some(n) => n.to_string(),
            None => std::env::var("SUDO_USER")
                .ok()
                .filter(|u| !u.is_empty() && u != "root")
                .ok_or(SystemError::NoOwner)?,
        };
        Owner::lookup(&name)
    }

    /// Whether the owner is in group `name` (e.g. `kvm`).
    pub fn in_group(&self, name: &str) -> Option<bool> {
        let g = nix::unistd::Group::from_name(name).ok().flatten()?;
        Some(self.groups.contains(&g.gid.as_raw()))
    }
}
