//! Metadata the host tree cannot hold, to be written into the ext4 image afterwards.
//!
//! Without root we cannot chown files to other users or create device nodes, and
//! `mkfs.ext4 -d` copies whatever the host tree has. So an unprivileged apply records,
//! per path, the owner and mode the image wants (and device nodes and xattrs), and
//! [`super::rootfs`] replays them with a debugfs script. The records are kept in step
//! with the tree: whatever a later layer removes or replaces loses its record.

use std::collections::BTreeMap;

/// A character or block device to create with debugfs `mknod`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Device {
    /// `true` for a block device, `false` for a character device.
    pub block: bool,
    /// Major number.
    pub major: u32,
    /// Minor number.
    pub minor: u32,
}

/// What the image wants for one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fixup {
    /// Owner uid.
    pub uid: u32,
    /// Owner gid.
    pub gid: u32,
    /// Full mode including the file type bits (e.g. `0o104755`).
    pub mode: u32,
    /// A device node that exists only here (not in the host tree).
    pub device: Option<Device>,
    /// Modification time (seconds) for nodes debugfs creates.
    pub mtime: i64,
    /// Extended attributes to set (`security.capability`, `user.*`, ...).
    pub xattrs: Vec<(String, Vec<u8>)>,
}

/// Recorded fixups keyed by path relative to the root (`a/b`; the root is ``).
#[derive(Debug, Clone, Default)]
pub struct Fixups {
    map: BTreeMap<String, Fixup>,
}

impl Fixups {
    /// Record (or replace) the fixup for `key`.
    pub(crate) fn set(&mut self, key: &str, f: Fixup) {
        self.map.insert(key.to_string(), f);
    }

    /// The fixup for `key`, if any.
    pub fn get(&self, key: &str) -> Option<&Fixup> {
        self.map.get(key)
    }

    /// Forget `key`'s own record (what is below it stays).
    pub(crate) fn remove(&mut self, key: &str) {
        self.map.remove(key);
    }

    /// Forget `key` and everything below it (it was removed or replaced).
    pub(crate) fn remove_tree(&mut self, key: &str) {
        self.map.remove(key);
        let below: Vec<String> = self.below(key).map(|(k, _)| k.clone()).collect();
        for k in below {
            self.map.remove(&k);
        }
    }

    /// Entries strictly below directory `key`.
    pub(crate) fn below<'a>(&'a self, key: &str) -> impl Iterator<Item = (&'a String, &'a Fixup)> {
        // Keys under `a` are `a/...`; '0' is the character after '/', so the range
        // `a/`..`a0` holds exactly them. The root's children are every other key.
        let (lo, hi) = if key.is_empty() {
            (String::new(), None)
        } else {
            (format!("{key}/"), Some(format!("{key}0")))
        };
        let root = key.is_empty();
        self.map
            .range(lo..)
            .take_while(move |(k, _)| hi.as_ref().is_none_or(|h| *k < h))
            .filter(move |(k, _)| !(root && k.is_empty()))
    }

    /// Move the records under directory `key` out, re-keyed relative to it: for a
    /// subtree moved out of the image (the work seed is the image's `/root`).
    pub fn split_off(&mut self, key: &str) -> Fixups {
        let mut out = Fixups::default();
        let keys: Vec<String> = self.below(key).map(|(k, _)| k.clone()).collect();
        for k in keys {
            if let Some(f) = self.map.remove(&k) {
                let rel = k[key.len() + 1..].to_string();
                out.map.insert(rel, f);
            }
        }
        if let Some(f) = self.map.remove(key) {
            out.map.insert(String::new(), f);
        }
        out
    }

    /// Every recorded path, in sorted order (parents before children).
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Fixup)> {
        self.map.iter()
    }

    /// How many paths are recorded.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when nothing is recorded.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f() -> Fixup {
        Fixup {
            uid: 0,
            gid: 0,
            mode: 0o100644,
            device: None,
            mtime: 0,
            xattrs: vec![],
        }
    }

    #[test]
    fn remove_tree_takes_exactly_the_subtree() {
        let mut x = Fixups::default();
        for k in ["", "a", "a/b", "a/b/c", "a0", "a.b", "ab"] {
            x.set(k, f());
        }
        assert_eq!(x.below("a").count(), 2);
        assert_eq!(x.below("").count(), 6);
        x.remove_tree("a");
        let keys: Vec<&String> = x.iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["", "a.b", "a0", "ab"]);
        let mut y = Fixups::default();
        for k in ["root", "root/.ssh", "root/.ssh/k", "rootx"] {
            y.set(k, f());
        }
        let seed = y.split_off("root");
        let keys: Vec<&String> = seed.iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["", ".ssh", ".ssh/k"]);
        assert_eq!(y.len(), 1);
    }
}
