//! `system install` / `uninstall` into a test root (the real layout moved below a temp
//! directory): files and modes, the helper config and install record, units, what an
//! uninstall removes and what --purge adds. The systemd half (units started, the daemon
//! answering) needs a real systemd and is tested in a guest (issue 11, phase 2).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use banger_helper::HelperConfig;
use banger_system::layout::{DAEMON_UNIT, HELPER_UNIT};
use banger_system::{install, Artifacts, InstallRecord, Owner, Sources, SystemLayout};

fn owner() -> Owner {
    Owner {
        name: "alice".into(),
        uid: 4242,
        gid: 4242,
        home: "/home/alice".into(),
        groups: vec![4242],
    }
}

fn sources(dir: &Path) -> Sources {
    let bin = dir.join("build");
    std::fs::create_dir_all(&bin).unwrap();
    for b in ["banger", "bangerd", "banger-helper", "banger-agent"] {
        std::fs::write(bin.join(b), format!("#!/bin/sh\necho {b}\n")).unwrap();
    }
    Sources {
        agent: bin.join("banger-agent"),
        bin_dir: bin,
    }
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

#[test]
fn install_then_uninstall_in_a_test_root() {
    if !nix::unistd::geteuid().is_root() {
        println!("skipping: the helper config must be root-owned, so installing needs root");
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let l = SystemLayout::under(&d.path().join("root"));
    let src = sources(d.path());
    let art = Artifacts {
        man_pages: vec![
            ("banger.1".into(), b".TH banger 1".to_vec()),
            ("banger-vm.1".into(), b".TH x".to_vec()),
        ],
        bash: b"bash".to_vec(),
        zsh: b"zsh".to_vec(),
        fish: b"fish".to_vec(),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let out = rt
        .block_on(install::install(&l, &owner(), &src, &art, "0.1.0"))
        .unwrap();
    assert!(!out.units, "not the real root: no units are started");
    for b in ["banger", "bangerd", "banger-helper"] {
        assert_eq!(
            std::fs::read_to_string(l.binary(b)).unwrap(),
            format!("#!/bin/sh\necho {b}\n")
        );
        assert_eq!(mode(&l.binary(b)), 0o755);
    }
    assert_eq!(mode(&l.agent()), 0o755);
    assert_eq!(
        std::fs::read(l.man_dir().join("banger-vm.1")).unwrap(),
        b".TH x"
    );
    assert_eq!(std::fs::read(l.fish_completion()).unwrap(), b"fish");
    assert_eq!(mode(&l.bash_completion()), 0o644);
    // The helper accepts its config as written (root-owned, 0644, known keys).
    let cfg = HelperConfig::load(&l.helper_config()).unwrap();
    assert_eq!((cfg.owner_uid, cfg.owner_gid), (4242, 4242));
    assert_eq!(cfg.socket, l.helper_socket());
    assert_eq!(cfg.owner_state_dir, l.state_dir());
    let rec = InstallRecord::read(&l.install_record()).unwrap().unwrap();
    assert_eq!(
        (rec.version.as_str(), rec.owner.as_str()),
        ("0.1.0", "alice")
    );

    // Units: written for the owner; a second write changes nothing.
    assert!(install::write_units(&l, "alice", cfg.jailer.is_some()).unwrap());
    assert!(!install::refresh_units(&l).unwrap());
    let unit = std::fs::read_to_string(l.unit(DAEMON_UNIT)).unwrap();
    assert!(unit.contains("User=alice\n"));
    assert!(unit.contains(&format!("ExecStart={}\n", l.binary("bangerd").display())));

    // A reinstall for another owner keeps the operator's bridge and subnet.
    let mut edited = cfg.clone();
    edited.bridge = "br-lab".into();
    edited.subnet = "10.77.0.0/24".into();
    install::write_helper_config(&l, &edited).unwrap();
    let mut bob = owner();
    bob.name = "bob".into();
    bob.uid = 4343;
    bob.gid = 4343;
    rt.block_on(install::install(&l, &bob, &src, &art, "0.1.1"))
        .unwrap();
    let cfg = HelperConfig::load(&l.helper_config()).unwrap();
    assert_eq!(
        (cfg.owner_uid, cfg.bridge.as_str(), cfg.subnet.as_str()),
        (4343, "br-lab", "10.77.0.0/24")
    );
    assert_eq!(
        InstallRecord::read(&l.install_record())
            .unwrap()
            .unwrap()
            .owner,
        "bob"
    );
    assert!(
        install::refresh_units(&l).unwrap(),
        "the daemon's unit follows the new owner"
    );

    // A missing binary is refused before anything is written.
    std::fs::remove_file(src.bin_dir.join("bangerd")).unwrap();
    let e = rt
        .block_on(install::install(&l, &bob, &src, &art, "0.1.2"))
        .unwrap_err();
    assert!(e.to_string().contains("bangerd is missing"), "{e}");
    assert_eq!(
        InstallRecord::read(&l.install_record())
            .unwrap()
            .unwrap()
            .version,
        "0.1.1"
    );

    // State the daemon made, then uninstall: files go, state stays without --purge.
    std::fs::create_dir_all(l.state_dir().join("images")).unwrap();
    std::fs::create_dir_all(l.cache_dir()).unwrap();
    let removed = install::uninstall(&l, false).unwrap();
    for p in [
        l.binary("banger"),
        l.agent(),
        l.unit(HELPER_UNIT),
        l.helper_config(),
        l.install_record(),
        l.man_dir().join("banger.1"),
    ] {
        assert!(
            removed.contains(&p),
            "{} not removed: {removed:?}",
            p.display()
        );
        assert!(!p.exists());
    }
    assert!(!l.etc_dir().exists(), "an empty /etc/banger goes too");
    assert!(l.state_dir().join("images").exists());
    let removed = install::uninstall(&l, true).unwrap();
    assert!(
        removed.contains(&l.state_dir()) && removed.contains(&l.cache_dir()),
        "{removed:?}"
    );
    assert!(!l.state_dir().exists());
    assert!(
        install::uninstall(&l, true).unwrap().is_empty(),
        "idempotent"
    );
}

#[test]
fn an_owner_the_helper_refuses_installs_nothing() {
    if !nix::unistd::geteuid().is_root() {
        println!("skipping: installing needs root (root-owned files)");
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("root");
    let l = SystemLayout::under(&root);
    let src = sources(d.path());
    let art = Artifacts {
        man_pages: vec![],
        bash: vec![],
        zsh: vec![],
        fish: vec![],
    };
    let mut nobody = owner();
    nobody.name = "nobody".into();
    (nobody.uid, nobody.gid) = (65534, 65534);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let err = rt
        .block_on(install::install(&l, &nobody, &src, &art, "0.1.0"))
        .unwrap_err();
    assert!(err.to_string().contains("owner_uid"), "{err}");
    assert!(!l.binary("banger").exists(), "nothing is copied");
    assert!(!l.helper_config().exists());
    assert!(!l.install_record().exists());
}
