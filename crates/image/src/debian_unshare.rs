//! `image build debian` without root: for the owner daemon of a system install, and
//! for rootless use.
//!
//! Decision: mmdebstrap's own unshare mode rather than a root-helper operation. The
//! helper would have to run apt's maintainer scripts (arbitrary code from the archive)
//! as root on the host; in unshare mode they run as root only inside a user namespace
//! mapped onto the user's subordinate ids, so nothing in a build can touch the host as
//! root. What it needs: Debian's `uidmap` (the setuid `newuidmap`/`newgidmap`) and a
//! subordinate id range of at least 65536 for the user in `/etc/subuid` and
//! `/etc/subgid` (`useradd` gives new users one; `usermod --add-subuids
//! 100000-165535 --add-subgids 100000-165535 USER` for others), plus unprivileged user
//! namespaces (on by default in Debian 12).
//!
//! The build: mmdebstrap `--mode=unshare --format=tar` writes the tree as a tar (inside
//! the namespace owners are real; in the tar they are plain numbers), which the same
//! no-follow applier as OCI layers unpacks into the staging directory, *recording*
//! owners, modes, device nodes and xattrs instead of applying them (an unprivileged
//! process cannot). Customisation, kernel, initrd and work seed are as for a root
//! build; the ext4 image is written by `oci::build_rootfs`, whose debugfs pass writes
//! the recorded owners, so the image is the same as a root build's.

use std::path::Path;

use crate::debian::{
    check_request, finish, io, mmdebstrap, take_kernel, warn_dropped, BuildError, BuildRequest,
    BuiltImage,
};
use crate::oci::{Applier, ApplyOptions, OwnerMode, TreeEditor, Whiteouts};
use crate::{customize, files, initrd, LABEL_ROOT};

/// The setuid helpers mmdebstrap's unshare mode needs (Debian's `uidmap`).
pub const UIDMAP_TOOLS: [&str; 2] = ["/usr/bin/newuidmap", "/usr/bin/newgidmap"];
/// The smallest subordinate range that maps every id a Debian tree uses (up to
/// `nogroup`, 65534).
pub const MIN_SUBID_RANGE: u64 = 65536;

/// The user's name, for `/etc/subuid` (which may name users or uids).
fn user_name(uid: u32) -> Option<String> {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.name)
}

/// The largest range `/etc/subuid`-style `text` gives `uid` (or `name`).
pub fn subid_range(text: &str, uid: u32, name: Option<&str>) -> u64 {
    text.lines()
        .filter_map(|l| {
            let mut f = l.trim().split(':');
            let (who, _start, count) = (f.next()?, f.next()?, f.next()?);
            let mine = who == uid.to_string() || Some(who) == name;
            mine.then(|| count.trim().parse::<u64>().ok()).flatten()
        })
        .max()
        .unwrap_or(0)
}

/// Whether this user can build without root here; the reason (and fix) if not.
pub fn unshare_preflight() -> Result<(), BuildError> {
    for t in UIDMAP_TOOLS {
        if !Path::new(t).exists() {
            return Err(BuildError::Rootless {
                reason: format!("{t} is missing"),
            });
        }
    }
    let uid = rustix::process::geteuid().as_raw();
    let name = user_name(uid);
    for file in ["/etc/subuid", "/etc/subgid"] {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        let range = subid_range(&text, uid, name.as_deref());
        if range < MIN_SUBID_RANGE {
            return Err(BuildError::Rootless {
                reason: format!(
                    "{file} gives {} (uid {uid}) {range} subordinate ids, fewer than {MIN_SUBID_RANGE}",
                    name.as_deref().unwrap_or("this user")
                ),
            });
        }
    }
    Ok(())
}

/// Build a Debian image into `req.staging` without root (see the module docs).
pub fn build_debian_unshare(
    req: &BuildRequest,
    progress: &mut dyn FnMut(&str, Option<String>),
) -> Result<BuiltImage, BuildError> {
    check_request(req)?;
    unshare_preflight()?;
    std::fs::create_dir_all(&req.staging).map_err(io("create", &req.staging))?;
    let tar = req.staging.join("rootfs.tar");
    progress(
        "debootstrap",
        Some(format!(
            "Debian {} from the archive (unshare mode)",
            req.release
        )),
    );
    mmdebstrap(req, &["--mode=unshare", "--format=tar"], &tar, progress)?;

    progress("unpack", None);
    let tree_dir = req.staging.join("tree");
    std::fs::create_dir_all(&tree_dir).map_err(io("create", &tree_dir))?;
    let mut applier = Applier::new(
        &tree_dir,
        ApplyOptions {
            owners: OwnerMode::Record,
            ..Default::default()
        },
    )?;
    let file = std::fs::File::open(&tar).map_err(io("open", &tar))?;
    // A whole tree, not a layer: `.wh.*` names are plain files.
    applier.apply_stream(&format!("debian:{}", req.release), file, Whiteouts::Literal)?;
    let mut tree = applier.finish()?;
    std::fs::remove_file(&tar).map_err(io("remove", &tar))?;

    progress("customize", None);
    customize::apply(&tree.root, &req.agent)?;
    let kernel_release = take_kernel(req, &tree.root)?;

    progress("initrd", Some(format!("kernel {kernel_release}")));
    let moddir = tree.root.join("lib/modules").join(&kernel_release);
    initrd::build(&req.staging.join(files::INITRD), &req.agent, &moddir)?;

    progress("work-seed", None);
    let seed = req.staging.join(files::WORK_SEED);
    let mut ed = TreeEditor::open(&tree.root)?;
    std::fs::rename(tree.root.join("root"), &seed).map_err(io("move /root of", &tree.root))?;
    let mut seed_owners = tree.fixups.split_off("root");
    warn_dropped(
        &crate::seed::sanitize_work_seed(&seed, Some(&mut seed_owners))?,
        progress,
    );
    ed.create_dir_all("root", 0o700)?;

    progress("ext4", None);
    let rootfs = req.staging.join(files::ROOTFS);
    crate::oci::build_rootfs(&tree, &rootfs, LABEL_ROOT)?;
    std::fs::remove_dir_all(&tree.root).map_err(io("remove", &tree.root))?;
    finish(req, kernel_release, &rootfs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subordinate_ranges_by_name_or_uid() {
        let text = "alice:100000:65536\n1001:200000:1000\nbob:300000:65536\n# junk\n";
        assert_eq!(subid_range(text, 1000, Some("alice")), 65536);
        assert_eq!(subid_range(text, 1001, Some("carol")), 1000);
        assert_eq!(subid_range(text, 1002, None), 0);
        assert_eq!(subid_range("", 0, Some("root")), 0);
    }
}
