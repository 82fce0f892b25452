//! Per-VM disks: a sparse overlay disk (upper layer of /) and a sparse work disk
//! (mounted at /root) seeded from the image's /root, with banger's public key as
//! root's authorized key. Both are made with mkfs.ext4 + debugfs: milliseconds, no root.

use crate::ext4::{self, Debugfs, Ext4Error};
use crate::{LABEL_OVERLAY, LABEL_WORK};
use std::path::Path;

/// Size of the overlay disk: writes outside /root land here.
pub const OVERLAY_MIB: u64 = 8 * 1024;

/// Create an empty overlay disk at `path`.
pub fn create_overlay_disk(path: &Path, size_mib: u64) -> Result<(), Ext4Error> {
    ext4::mkfs(path, size_mib, LABEL_OVERLAY, None)
}

/// Write a guest host key pair into the overlay disk at `overlay` (new and empty: the
/// VM has not booted on it), as the upper layer's `/etc/ssh/ssh_host_ed25519_key`
/// (0600) and `.pub` (0644), root's. The guest's sshd then uses the key whose public
/// half the host pinned before the first boot. The directories it makes in the upper
/// layer (`/etc`, `/etc/ssh`: 0755, root's) hide the base image's modes, which are
/// the same in every image banger knows.
pub fn install_host_key(overlay: &Path, private: &Path, public: &Path) -> Result<(), Ext4Error> {
    use banger_contract::{disk::OVERLAY_UPPER, ssh::HOST_KEY};
    let mut d = Debugfs::new();
    let mut dir = format!("/{OVERLAY_UPPER}");
    d.mkdir(&dir, 0o755, 0, 0)?;
    let (parents, _) = HOST_KEY.rsplit_once('/').unwrap_or(("", HOST_KEY));
    for part in parents.split('/').filter(|p| !p.is_empty()) {
        dir = format!("{dir}/{part}");
        d.mkdir(&dir, 0o755, 0, 0)?;
    }
    let key = format!("/{OVERLAY_UPPER}/{HOST_KEY}");
    d.write(private, &key, 0o600, 0, 0)?;
    d.write(public, &format!("{key}.pub"), 0o644, 0, 0)?;
    d.apply(overlay)
}

/// Create the work disk at `path` from `seed` (the image's /root) with
/// `authorized_key` installed for root.
pub fn create_work_disk(
    path: &Path,
    size_mib: u64,
    seed: Option<&Path>,
    authorized_key: &str,
) -> Result<(), Ext4Error> {
    ext4::mkfs(path, size_mib, LABEL_WORK, seed.filter(|s| s.is_dir()))?;
    let key_file = path.with_extension("authorized_keys");
    // A seed may carry keys of its own (a promoted VM's /root): keep them, add banger's.
    let seed_keys = seed
        .map(|s| s.join(".ssh/authorized_keys"))
        .filter(|k| std::fs::symlink_metadata(k).is_ok_and(|m| m.is_file()));
    let mut keys: Vec<String> = seed_keys
        .as_ref()
        .and_then(|k| std::fs::read_to_string(k).ok())
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect();
    if !keys.iter().any(|l| l.trim() == authorized_key.trim()) {
        keys.push(authorized_key.trim().to_string());
    }
    std::fs::write(&key_file, keys.join("\n") + "\n").map_err(|source| Ext4Error::Io {
        what: "write",
        path: key_file.clone(),
        source,
    })?;
    let has_ssh_dir = seed.is_some_and(|s| s.join(".ssh").is_dir());
    let mut d = Debugfs::new();
    if let Some(s) = seed.filter(|s| s.is_dir()) {
        seed_to_root(s, &mut d)?;
    }
    // The root of the work disk is /root in the guest: sshd's StrictModes wants it
    // owned by root and not group/world writable, whoever ran mkfs.
    d.set_owner("/", 0o040700, 0, 0)?;
    if has_ssh_dir {
        d.set_owner("/.ssh", 0o040700, 0, 0)?;
    } else {
        d.mkdir("/.ssh", 0o700, 0, 0)?;
    }
    if seed_keys.is_some() {
        d.rm("/.ssh/authorized_keys")?;
    }
    d.write(&key_file, "/.ssh/authorized_keys", 0o600, 0, 0)?;
    let r = d.apply(path);
    let _ = std::fs::remove_file(&key_file);
    r
}

/// `mkfs.ext4 -d` copies host owners. A daemon that is not root holds the work seed
/// under its own uid (an unprivileged apply records owners instead of applying them),
/// so without this every file of the guest's `/root` would belong to that uid. Give
/// what this user owns in the seed to root, as the image had it. Symlinks are left
/// (debugfs would resolve them inside the disk) and so are names debugfs cannot carry.
fn seed_to_root(seed: &Path, d: &mut Debugfs) -> Result<(), Ext4Error> {
    use std::os::unix::fs::MetadataExt;
    let me = rustix::process::geteuid().as_raw();
    if me == 0 {
        return Ok(());
    }
    fn walk(dir: &Path, rel: &str, me: u32, d: &mut Debugfs) -> Result<(), Ext4Error> {
        let io = |source| Ext4Error::Io {
            what: "read the work seed",
            path: dir.to_path_buf(),
            source,
        };
        for e in std::fs::read_dir(dir).map_err(io)? {
            let e = e.map_err(io)?;
            // DirEntry::metadata does not follow symlinks.
            let md = e.metadata().map_err(io)?;
            let Some(name) = e.file_name().to_str().map(str::to_string) else {
                continue;
            };
            let path = format!("{rel}/{name}");
            if md.file_type().is_symlink() {
                continue;
            }
            if md.uid() == me {
                if let Err(err) = d.set_owner(&path, md.mode(), 0, 0) {
                    tracing::warn!(path, error = %err, "work seed entry keeps the daemon's uid in the guest");
                }
            }
            if md.is_dir() {
                walk(&e.path(), &path, me, d)?;
            }
        }
        Ok(())
    }
    walk(seed, "", me, d)
}

/// Grow a (stopped VM's) ext4 disk file to `new_mib`: extend the sparse file, check
/// the filesystem (resize2fs insists on a fresh check), then grow it offline.
pub fn grow_disk(path: &Path, new_mib: u64) -> Result<(), Ext4Error> {
    let io = |what: &'static str| {
        let path = path.to_path_buf();
        move |source| Ext4Error::Io { what, path, source }
    };
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io("open disk"))?;
    let old = f.metadata().map_err(io("stat disk"))?.len();
    let new = new_mib * 1024 * 1024;
    if new <= old {
        return Ok(());
    }
    f.set_len(new).map_err(io("extend disk"))?;
    drop(f);
    let mut fsck = std::process::Command::new(crate::run::program("e2fsck"));
    fsck.args(["-f", "-p"]).arg(path);
    // e2fsck -p exits 1 when it fixed something harmless: only >= 4 is a failure.
    let out = fsck.output().map_err(io("run e2fsck on"))?;
    if out.status.code().is_none_or(|c| c >= 4) {
        return Err(Ext4Error::Tool(crate::run::ToolError::Failed {
            tool: "e2fsck".into(),
            status: out.status.to_string(),
            tail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        }));
    }
    let mut resize = std::process::Command::new(crate::run::program("resize2fs"));
    resize.arg(path);
    crate::run::run(resize)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn work_disk_holds_the_key_and_seed() {
        if Command::new("mkfs.ext4").arg("-V").output().is_err() {
            eprintln!("skipping: e2fsprogs not installed");
            return;
        }
        let t = tempfile::tempdir().unwrap();
        let seed = t.path().join("seed");
        std::fs::create_dir_all(&seed).unwrap();
        std::fs::write(seed.join(".bashrc"), "# hi\n").unwrap();
        let disk = t.path().join("work.ext4");
        let start = std::time::Instant::now();
        create_work_disk(&disk, 4096, Some(&seed), "ssh-ed25519 AAAAtest banger").unwrap();
        eprintln!("work disk in {:?}", start.elapsed());
        let cat = |p: &str| {
            let o = Command::new("debugfs")
                .args(["-R", &format!("cat {p}")])
                .arg(&disk)
                .output()
                .unwrap();
            String::from_utf8_lossy(&o.stdout).to_string()
        };
        assert_eq!(
            cat("/.ssh/authorized_keys"),
            "ssh-ed25519 AAAAtest banger\n"
        );
        assert_eq!(cat("/.bashrc"), "# hi\n");
        // Sparse: a 4 GiB disk occupies a few MiB.
        use std::os::unix::fs::MetadataExt;
        let md = std::fs::metadata(&disk).unwrap();
        assert_eq!(md.len(), 4096 * 1024 * 1024);
        assert!(
            md.blocks() * 512 < 64 * 1024 * 1024,
            "{} bytes used",
            md.blocks() * 512
        );
        let ovl = t.path().join("ovl.ext4");
        create_overlay_disk(&ovl, 1024).unwrap();
        let (private, public) = (t.path().join("hk"), t.path().join("hk.pub"));
        std::fs::write(&private, "PRIVATE\n").unwrap();
        std::fs::write(&public, "ssh-ed25519 AAAA\n").unwrap();
        install_host_key(&ovl, &private, &public).unwrap();
        let stat = |p: &str| {
            let o = Command::new("debugfs")
                .args(["-R", &format!("stat {p}")])
                .arg(&ovl)
                .output()
                .unwrap();
            String::from_utf8_lossy(&o.stdout).to_string()
        };
        let key = stat("/upper/etc/ssh/ssh_host_ed25519_key");
        assert!(key.contains("Mode:  0600"), "{key}");
        assert!(key.contains("User:     0"), "{key}");
        assert!(stat("/upper/etc/ssh").contains("Mode:  0755"));
        let o = Command::new("debugfs")
            .args(["-R", "cat /upper/etc/ssh/ssh_host_ed25519_key.pub"])
            .arg(&ovl)
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&o.stdout), "ssh-ed25519 AAAA\n");

        // A seed with keys of its own (a promoted VM's /root) keeps them, plus banger's.
        std::fs::create_dir_all(seed.join(".ssh")).unwrap();
        std::fs::write(
            seed.join(".ssh/authorized_keys"),
            "ssh-ed25519 AAAAuser me\nssh-ed25519 AAAAtest banger\n",
        )
        .unwrap();
        let again = t.path().join("again.ext4");
        create_work_disk(&again, 1024, Some(&seed), "ssh-ed25519 AAAAtest banger").unwrap();
        let o = Command::new("debugfs")
            .args(["-R", "cat /.ssh/authorized_keys"])
            .arg(&again)
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&o.stdout),
            "ssh-ed25519 AAAAuser me\nssh-ed25519 AAAAtest banger\n"
        );

        // Growing keeps the content and the filesystem sees the new size.
        grow_disk(&disk, 6144).unwrap();
        assert_eq!(std::fs::metadata(&disk).unwrap().len(), 6144 * 1024 * 1024);
        assert_eq!(
            cat("/.ssh/authorized_keys"),
            "ssh-ed25519 AAAAtest banger\n"
        );
        let o = Command::new("dumpe2fs")
            .arg("-h")
            .arg(&disk)
            .output()
            .unwrap();
        let h = String::from_utf8_lossy(&o.stdout);
        let blocks: u64 = h
            .lines()
            .find_map(|l| l.strip_prefix("Block count:"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert_eq!(blocks * 4096, 6144 * 1024 * 1024);
    }
}
