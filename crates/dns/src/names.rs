//! The live `<name>.vm` records: written by the daemon as VMs start, stop and go,
//! read by every query.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::RwLock;

/// Names of running VMs and their addresses. Cheap to share (`Arc<Names>`); the
/// lock is held only for a map lookup or update, never across I/O.
#[derive(Debug, Default)]
pub struct Names {
    inner: RwLock<HashMap<String, Ipv4Addr>>,
}

impl Names {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// `name.vm` answers `ip` from now on (names are case-insensitive, as in DNS).
    pub fn set(&self, name: &str, ip: Ipv4Addr) {
        let mut m = self.inner.write().unwrap_or_else(|p| p.into_inner());
        m.insert(name.to_ascii_lowercase(), ip);
    }

    /// `name.vm` is gone (NXDOMAIN from the next query on).
    pub fn remove(&self, name: &str) {
        let mut m = self.inner.write().unwrap_or_else(|p| p.into_inner());
        m.remove(&name.to_ascii_lowercase());
    }

    /// Replace the whole table (the daemon's view after a restart).
    pub fn replace_all(&self, entries: impl IntoIterator<Item = (String, Ipv4Addr)>) {
        let fresh: HashMap<String, Ipv4Addr> = entries
            .into_iter()
            .map(|(n, ip)| (n.to_ascii_lowercase(), ip))
            .collect();
        let mut m = self.inner.write().unwrap_or_else(|p| p.into_inner());
        *m = fresh;
    }

    /// The address of `name`, if a VM of that name runs.
    pub fn get(&self, name: &str) -> Option<Ipv4Addr> {
        let m = self.inner.read().unwrap_or_else(|p| p.into_inner());
        m.get(&name.to_ascii_lowercase()).copied()
    }

    /// How many names are served.
    pub fn len(&self) -> usize {
        self.inner.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether no name is served.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_case_insensitive_and_removable() {
        let n = Names::new();
        n.set("Dev", Ipv4Addr::new(172, 30, 0, 2));
        assert_eq!(n.get("dev"), Some(Ipv4Addr::new(172, 30, 0, 2)));
        assert_eq!(n.get("DEV"), Some(Ipv4Addr::new(172, 30, 0, 2)));
        n.remove("dEv");
        assert!(n.is_empty());
        n.replace_all([("a".to_string(), Ipv4Addr::new(10, 0, 0, 2))]);
        assert_eq!(n.len(), 1);
    }
}
