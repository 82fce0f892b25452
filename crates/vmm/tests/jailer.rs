//! Jail staging against a temp dir: layout, hard links vs copies, device nodes (root
//! only), the short socket symlink, and a cleanup that will not follow symlinks.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

mod common;

use banger_vmm::firecracker::jailer::{
    short_socket_link, Jail, JailerError, Placement, INSIDE_KERNEL, KVM, TUN,
};
use banger_vmm::firecracker::Firecracker;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

struct Host {
    dir: tempfile::TempDir,
    spec: banger_vmm::MachineSpec,
    firecracker: PathBuf,
}

/// Fake host files: a firecracker binary, kernel, initrd and three disks.
fn host() -> Host {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    let firecracker = p.join("bin/firecracker");
    std::fs::create_dir_all(firecracker.parent().unwrap()).unwrap();
    std::fs::write(&firecracker, b"#!/bin/sh\n").unwrap();
    std::fs::set_permissions(&firecracker, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut spec = common::full_spec(&p.join("run"));
    spec.kernel = p.join("img/vmlinux");
    spec.initrd = Some(p.join("img/initrd.img"));
    std::fs::create_dir_all(p.join("img")).unwrap();
    std::fs::create_dir_all(p.join("vm")).unwrap();
    std::fs::write(&spec.kernel, b"\x7fELF kernel").unwrap();
    std::fs::write(spec.initrd.as_ref().unwrap(), b"initrd").unwrap();
    for (i, d) in spec.disks.iter_mut().enumerate() {
        d.path = p.join(format!("vm/disk{i}.ext4"));
        std::fs::write(&d.path, format!("disk {i}")).unwrap();
    }
    Host {
        dir,
        spec,
        firecracker,
    }
}

#[test]
fn plan_lays_out_the_jail_and_rewrites_paths() {
    let h = host();
    let base = h.dir.path().join("jail");
    let j = Jail::plan(&base, "banger-0a1b2c3d4e5f", &h.spec, &h.firecracker).unwrap();
    assert_eq!(j.dir, base.join("firecracker/banger-0a1b2c3d4e5f"));
    assert_eq!(j.root, j.dir.join("root"));
    assert_eq!(j.api_socket(), j.root.join("firecracker.sock"));
    assert_eq!(j.vsock_socket(), j.root.join("vsock.sock"));
    assert_eq!(j.devices, [KVM, TUN]);
    assert_eq!(
        (KVM.major, KVM.minor, TUN.major, TUN.minor),
        (10, 232, 10, 200)
    );
    let placements: Vec<(&str, Placement)> = j
        .files
        .iter()
        .map(|f| (f.inside.to_str().unwrap(), f.placement))
        .collect();
    assert_eq!(
        placements,
        [
            ("/firecracker", Placement::Copy),
            ("/vmlinux", Placement::LinkOrCopy),
            ("/initrd.img", Placement::LinkOrCopy),
            ("/disk0.img", Placement::LinkOnly),
            ("/disk1.img", Placement::LinkOnly),
            ("/disk2.img", Placement::LinkOnly),
        ]
    );
    // The API requests for a jailed VM carry chroot paths only.
    let reqs = Firecracker::default().configure_requests(&j.spec).unwrap();
    let text: String = reqs
        .iter()
        .map(|r| r.body.as_ref().unwrap().to_string())
        .collect();
    assert!(!text.contains(h.dir.path().to_str().unwrap()), "{text}");
    assert!(text.contains(r#""kernel_image_path":"/vmlinux""#), "{text}");
    assert!(text.contains(r#""uds_path":"/vsock.sock""#), "{text}");
    assert!(text.contains(r#""path_on_host":"/disk1.img""#), "{text}");
    assert_eq!(
        j.jailer_args(1000, 1000).join(" "),
        format!(
            "--id banger-0a1b2c3d4e5f --exec-file {} --uid 1000 --gid 1000 --chroot-base-dir {} -- --api-sock /firecracker.sock",
            h.firecracker.display(),
            base.display()
        )
    );
    // No network, no tun.
    let mut no_net = h.spec.clone();
    no_net.net = None;
    let j = Jail::plan(&base, "x", &no_net, &h.firecracker).unwrap();
    assert_eq!(j.devices, [KVM]);
}

#[test]
fn plan_refuses_bad_ids_and_paths() {
    let h = host();
    let base = h.dir.path().join("jail");
    for id in ["", "../etc", "a/b", "a b", &"x".repeat(65)] {
        let e = Jail::plan(&base, id, &h.spec, &h.firecracker).unwrap_err();
        assert!(matches!(e, JailerError::InvalidId(_)), "{id}: {e}");
    }
    for b in ["relative/jail", "/srv/../etc"] {
        let e = Jail::plan(Path::new(b), "x", &h.spec, &h.firecracker).unwrap_err();
        assert!(matches!(e, JailerError::NotAbsolute(_)), "{b}: {e}");
    }
}

#[test]
fn stage_links_disks_copies_the_binary_and_is_repeatable() {
    let h = host();
    let j = Jail::plan(&h.dir.path().join("jail"), "vm1", &h.spec, &h.firecracker).unwrap();
    j.stage(None).unwrap();
    j.stage(None).unwrap(); // idempotent
    let ino = |p: &Path| std::fs::metadata(p).unwrap().ino();
    let fc = j.host_path(Path::new("/firecracker"));
    assert_ne!(ino(&fc), ino(&h.firecracker), "the binary is a copy");
    assert_eq!(std::fs::read(&fc).unwrap(), b"#!/bin/sh\n");
    assert_eq!(
        std::fs::metadata(&fc).unwrap().permissions().mode() & 0o777,
        0o755
    );
    assert_eq!(
        ino(&j.host_path(Path::new(INSIDE_KERNEL))),
        ino(&h.spec.kernel)
    );
    for (i, d) in h.spec.disks.iter().enumerate() {
        let inside = j.host_path(Path::new(&format!("/disk{i}.img")));
        assert_eq!(ino(&inside), ino(&d.path), "disk {i} is a hard link");
    }
    // The guest writes to the VM's own disk file.
    std::fs::write(j.host_path(Path::new("/disk1.img")), b"written in the jail").unwrap();
    assert_eq!(
        std::fs::read(&h.spec.disks[1].path).unwrap(),
        b"written in the jail"
    );
}

#[test]
fn stage_across_filesystems_copies_the_kernel_but_refuses_disks() {
    let h = host();
    let other = Path::new("/dev/shm");
    let dev = |p: &Path| std::fs::metadata(p).map(|m| m.dev()).ok();
    if dev(other).is_none() || dev(other) == dev(h.dir.path()) {
        println!("skipping: no second filesystem (/dev/shm) to stage across");
        return;
    }
    let base = tempfile::tempdir_in(other).unwrap();
    let mut no_disks = h.spec.clone();
    no_disks.disks.clear();
    let j = Jail::plan(base.path(), "vm1", &no_disks, &h.firecracker).unwrap();
    j.stage(None).unwrap();
    assert_eq!(
        std::fs::read(j.host_path(Path::new(INSIDE_KERNEL))).unwrap(),
        b"\x7fELF kernel"
    );
    let j = Jail::plan(base.path(), "vm2", &h.spec, &h.firecracker).unwrap();
    let e = j.stage(None).unwrap_err();
    assert!(matches!(e, JailerError::CrossDevice { .. }), "{e}");
    assert!(e.to_string().contains("same filesystem"), "{e}");
}

#[test]
fn device_nodes_are_made_when_root() {
    let h = host();
    let j = Jail::plan(&h.dir.path().join("jail"), "vm1", &h.spec, &h.firecracker).unwrap();
    j.stage(None).unwrap();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        let e = j.make_device_nodes(None).unwrap_err();
        assert!(matches!(e, JailerError::NotRoot(_)), "{e}");
        println!("skipping the mknod part: not root");
        return;
    }
    j.make_device_nodes(Some((4242, 4343))).unwrap();
    j.make_device_nodes(Some((4242, 4343))).unwrap(); // existing nodes are kept
    for d in [KVM, TUN] {
        let m = std::fs::symlink_metadata(j.host_path(Path::new(d.path))).unwrap();
        assert!(m.file_type().is_char_device(), "{}", d.path);
        let rdev = m.rdev();
        assert_eq!((libc::major(rdev), libc::minor(rdev)), (d.major, d.minor));
        assert_eq!(m.mode() & 0o777, d.mode);
        assert_eq!((m.uid(), m.gid()), (4242, 4343));
    }
    // A regular file where a node belongs is not silently replaced.
    let mut bogus = j.clone();
    bogus.devices = vec![KVM];
    std::fs::remove_file(j.host_path(Path::new("/dev/kvm"))).unwrap();
    std::fs::write(j.host_path(Path::new("/dev/kvm")), b"").unwrap();
    assert!(matches!(
        bogus.make_device_nodes(None).unwrap_err(),
        JailerError::NotADevice(_)
    ));
}

#[test]
fn stage_hands_the_chroot_to_the_owner_when_root() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        println!("skipping: chown needs root");
        return;
    }
    let h = host();
    let j = Jail::plan(&h.dir.path().join("jail"), "vm1", &h.spec, &h.firecracker).unwrap();
    j.stage(Some((4242, 4343))).unwrap();
    let m = std::fs::metadata(&j.root).unwrap();
    assert_eq!((m.uid(), m.gid()), (4242, 4343));
    // The VM's files keep their owner (a hard link shares the inode).
    assert_eq!(std::fs::metadata(&h.spec.disks[0].path).unwrap().uid(), 0);
}

#[test]
fn a_short_symlink_reaches_a_socket_whose_path_is_too_long() {
    let dir = tempfile::tempdir().unwrap();
    let mut deep = dir.path().to_path_buf();
    while deep.as_os_str().len() < 150 {
        deep.push("a-rather-long-directory-name");
    }
    std::fs::create_dir_all(&deep).unwrap();
    // Bind where the path is short, then move the socket deep: a bound socket is
    // found by its inode, wherever its name goes (this is the jail's situation, where
    // firecracker binds a short path relative to its chroot).
    let short = dir.path().join("s.sock");
    let listener = std::os::unix::net::UnixListener::bind(&short).unwrap();
    let long = deep.join("firecracker.sock");
    std::fs::rename(&short, &long).unwrap();
    assert!(long.as_os_str().len() > 108);
    assert!(
        std::os::unix::net::UnixStream::connect(&long).is_err(),
        "the long path itself cannot be connected to"
    );

    let link = dir.path().join("vm1.sock");
    short_socket_link(&link, &long).unwrap();
    short_socket_link(&link, &long).unwrap(); // replacing works
    let _client = std::os::unix::net::UnixStream::connect(&link).unwrap();
    let (_server, _) = listener.accept().unwrap();

    let too_long = deep.join("link.sock");
    let e = short_socket_link(&too_long, &long).unwrap_err();
    assert!(matches!(e, JailerError::LinkTooLong { .. }), "{e}");
    let file = dir.path().join("plain");
    std::fs::write(&file, b"").unwrap();
    assert!(matches!(
        short_socket_link(&file, &long).unwrap_err(),
        JailerError::NotALink(_)
    ));
}

#[test]
fn cleanup_removes_the_jail_but_not_the_vms_files() {
    let h = host();
    let j = Jail::plan(&h.dir.path().join("jail"), "vm1", &h.spec, &h.firecracker).unwrap();
    j.stage(None).unwrap();
    // A symlink the owner planted inside the chroot is unlinked, not followed.
    let outside = h.dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("canary"), b"keep").unwrap();
    std::os::unix::fs::symlink(&outside, j.root.join("evil")).unwrap();
    j.cleanup().unwrap();
    assert!(!j.dir.exists());
    assert!(outside.join("canary").exists());
    assert!(h.spec.kernel.exists());
    assert_eq!(std::fs::read(&h.spec.disks[0].path).unwrap(), b"disk 0");
    j.cleanup().unwrap(); // already gone is fine
}

#[test]
fn cleanup_refuses_a_symlinked_component() {
    let h = host();
    let base = h.dir.path().join("jail");
    let j = Jail::plan(&base, "vm1", &h.spec, &h.firecracker).unwrap();
    j.stage(None).unwrap();
    // Replace <base>/firecracker with a symlink to a directory that has a "vm1" too.
    let victim = h.dir.path().join("victim");
    std::fs::create_dir_all(victim.join("vm1")).unwrap();
    std::fs::write(victim.join("vm1/precious"), b"keep").unwrap();
    std::fs::remove_dir_all(base.join("firecracker")).unwrap();
    std::os::unix::fs::symlink(&victim, base.join("firecracker")).unwrap();
    let e = j.cleanup().unwrap_err();
    assert!(
        matches!(e, JailerError::Symlinked(ref p) if p.ends_with("firecracker")),
        "{e}"
    );
    assert!(victim.join("vm1/precious").exists());
    // Staging refuses it too.
    assert!(matches!(
        j.stage(None).unwrap_err(),
        JailerError::Symlinked(_)
    ));
    // A symlinked base set up by the host admin is fine.
    let real = h.dir.path().join("real-base");
    std::fs::create_dir(&real).unwrap();
    let linked = h.dir.path().join("linked-base");
    std::os::unix::fs::symlink(&real, &linked).unwrap();
    let j = Jail::plan(&linked, "vm2", &h.spec, &h.firecracker).unwrap();
    j.stage(None).unwrap();
    j.cleanup().unwrap();
    assert!(!real.join("firecracker/vm2").exists());
}
