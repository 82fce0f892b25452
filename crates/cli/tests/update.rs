//! `banger update` and `install.sh` against releases served on 127.0.0.1, signed with a
//! key generated for the test, driving the real binaries (see `support` for how the
//! installed banger comes to trust that key). No root needed.
//!
//! The update test runs with `BANGER_UPDATE_IT=1` (or `BANGER_E2E=1`); it skips with a
//! printed reason otherwise, because its first run compiles a second banger.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use banger_update::test_support::{random_key, Fault, Server};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use support::*;

fn show(what: &str, o: &Output) {
    eprintln!(
        "$ {what} -> {}\n{}{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// One installed banger with its own state directory and daemon.
struct Installed {
    dir: PathBuf,
    home: PathBuf,
}

impl Installed {
    fn banger(&self, args: &[&str]) -> Output {
        let o = Command::new(self.dir.join("banger"))
            .args(args)
            .env("BANGER_HOME", &self.home)
            .env_remove("XDG_RUNTIME_DIR")
            .env_remove("BANGER_DAEMON")
            .output()
            .unwrap();
        show(&format!("banger {}", args.join(" ")), &o);
        o
    }

    /// The daemon's pid and the file it runs, or None.
    fn daemon(&self) -> Option<(u32, PathBuf)> {
        let o = self.banger(&["daemon", "status"]);
        let s = String::from_utf8_lossy(&o.stdout).to_string();
        let pid: u32 = s
            .split("pid ")
            .nth(1)?
            .split(',')
            .next()?
            .trim()
            .parse()
            .ok()?;
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok()?;
        Some((pid, exe))
    }

    fn commit(&self) -> String {
        identity(&self.dir.join("banger")).commit
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = self.banger(&["daemon", "stop"]);
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}
fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

/// Refused, nothing changed, the same daemon still answering.
fn assert_refused(
    inst: &Installed,
    o: &Output,
    want: &str,
    before: &std::collections::BTreeMap<String, [u8; 32]>,
    daemon: &Option<(u32, PathBuf)>,
) {
    assert!(
        !o.status.success(),
        "accepted; wanted a refusal mentioning {want:?}"
    );
    let e = stderr(o);
    assert!(e.contains(want), "expected {want:?} in: {e}");
    assert!(e.contains("nothing was changed"), "{e}");
    assert_eq!(&snapshot(&inst.dir), before, "the install changed");
    assert_eq!(&inst.daemon(), daemon, "the daemon changed");
}

#[test]
fn update_check_dry_run_refusals_rollback_and_swap() {
    if let Some(why) = skip_reason() {
        eprintln!("skipping update_check_dry_run_refusals_rollback_and_swap: {why}");
        return;
    }
    let (trust, listener) = TestTrust::load(true);
    let old_bins = trust.build_old();
    let tmp = tempfile::tempdir().unwrap();
    let www = tmp.path().join("www");
    reset(&www);
    let server =
        Server::from_listener(listener.expect("a listener on the kept port"), &www).unwrap();
    let agent = agent(tmp.path());
    let inst = Installed {
        dir: install_dir(&tmp.path().join("install"), &old_bins, &agent),
        home: tmp.path().join("home"),
    };
    let old = identity(&inst.dir.join("banger"));
    assert_eq!(
        (old.version.as_str(), old.commit.as_str()),
        (OLD_VERSION, OLD_COMMIT)
    );
    let new = identity(&new_bins().join("banger"));
    assert!(
        banger_update::manifest::parse_version(&new.version).unwrap()
            > banger_update::manifest::parse_version(OLD_VERSION).unwrap()
    );

    // The installed daemon runs (started by the CLI, as usual).
    assert!(inst.banger(&["operations", "--json"]).status.success());
    let daemon0 = inst.daemon();
    assert_eq!(daemon0.as_ref().unwrap().1, inst.dir.join("bangerd"));
    let before = snapshot(&inst.dir);

    // Nothing published yet, then only an older release: up to date, no downgrade.
    let o = inst.banger(&["update", "--check"]);
    assert!(
        !o.status.success() && stderr(&o).contains("404"),
        "no manifest is an error"
    );
    let p = publish(&www, &trust.key, &old_bins, &agent, Broken::No);
    let m = std::fs::read_to_string(www.join("manifest.json")).unwrap();
    std::fs::write(
        www.join("manifest.json"),
        m.replace(&format!("\"{OLD_VERSION}\""), "\"0.0.0\"")
            .replace(&format!("banger-{OLD_VERSION}-"), "banger-0.0.0-"),
    )
    .unwrap();
    std::fs::rename(
        &p.tarball,
        p.dir.join(format!("banger-0.0.0-{TARGET}.tar.gz")),
    )
    .unwrap();
    let o = inst.banger(&["update"]);
    assert!(o.status.success());
    assert!(
        stdout(&o).contains("up to date (newest release: 0.0.0)"),
        "{}",
        stdout(&o)
    );
    let o = inst.banger(&["update", "--to", "v9.9.9"]);
    assert!(
        !o.status.success() && stderr(&o).contains("v0.0.0"),
        "{}",
        stderr(&o)
    );
    assert_eq!(snapshot(&inst.dir), before);

    // A release whose daemon will not start: swapped, restarted, refused, rolled back,
    // and the previous daemon runs again.
    reset(&www);
    publish(
        &www,
        &trust.key,
        &new_bins(),
        &agent,
        Broken::DaemonWontStart,
    );
    let o = inst.banger(&["update"]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("broken on purpose") && e.contains("previous version was restored"),
        "{e}"
    );
    assert!(e.contains("is running again"), "{e}");
    assert_eq!(snapshot(&inst.dir), before, "rolled back to the same files");
    assert_eq!(inst.commit(), OLD_COMMIT);
    let d = inst.daemon().expect("the previous daemon answers");
    assert_eq!(
        d.1,
        inst.dir.join("bangerd"),
        "and runs the restored bangerd"
    );
    let daemon1 = Some(d);

    // The good release.
    reset(&www);
    let rel = publish(&www, &trust.key, &new_bins(), &agent, Broken::No);
    let tar_name = rel
        .tarball
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let tar_url = format!("/v{}/{tar_name}", new.version);
    let o = inst.banger(&["update", "--check"]);
    assert!(o.status.success());
    assert!(
        stdout(&o).contains(&format!(
            "update available: {OLD_VERSION} -> {}",
            new.version
        )),
        "{}",
        stdout(&o)
    );

    let o = inst.banger(&["update", "--dry-run"]);
    assert!(o.status.success());
    assert!(stdout(&o).contains("nothing was changed"), "{}", stdout(&o));
    assert!(stdout(&o).contains(&inst.dir.join("bangerd").display().to_string()));
    assert_eq!(snapshot(&inst.dir), before, "a dry run changes nothing");
    assert_eq!(inst.daemon(), daemon1);

    // Each refused with nothing changed.
    let sig = rel.dir.join("SHA256SUMS.sig");
    let good_sig = std::fs::read(&sig).unwrap();
    let sums = std::fs::read(rel.dir.join("SHA256SUMS")).unwrap();
    std::fs::write(&sig, random_key().sign(&sums)).unwrap();
    server.take_log();
    assert_refused(
        &inst,
        &inst.banger(&["update"]),
        "not signed by banger's release key",
        &before,
        &daemon1,
    );
    assert!(
        !server.take_log().contains(&tar_url),
        "no tarball download after a bad signature"
    );
    std::fs::write(&sig, &good_sig).unwrap();

    let good_tar = std::fs::read(&rel.tarball).unwrap();
    let mut bad = good_tar.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x5a;
    std::fs::write(&rel.tarball, &bad).unwrap();
    assert_refused(
        &inst,
        &inst.banger(&["update"]),
        "the download is corrupt or was altered",
        &before,
        &daemon1,
    );
    let mut big = good_tar.clone();
    big.extend_from_slice(&[0u8; 8192]);
    std::fs::write(&rel.tarball, &big).unwrap();
    assert_refused(
        &inst,
        &inst.banger(&["update"]),
        "oversized",
        &before,
        &daemon1,
    );
    std::fs::write(&rel.tarball, &good_tar).unwrap();

    server.fault(&tar_url, Fault::Truncate(good_tar.len() as u64 / 3));
    assert_refused(
        &inst,
        &inst.banger(&["update"]),
        &tar_name,
        &before,
        &daemon1,
    );
    server.clear_faults();

    let m = std::fs::read_to_string(www.join("manifest.json")).unwrap();
    let elsewhere = m.replace(
        &format!("\"v{}/{tar_name}\"", new.version),
        &format!("\"http://127.0.0.2:{}{tar_url}\"", trust.port),
    );
    assert_ne!(elsewhere, m);
    std::fs::write(www.join("manifest.json"), &elsewhere).unwrap();
    assert_refused(
        &inst,
        &inst.banger(&["update"]),
        "not on the manifest's server",
        &before,
        &daemon1,
    );
    std::fs::write(www.join("manifest.json"), &m).unwrap();

    // The real update: new binaries in place, the old ones kept, the new daemon runs.
    let o = inst.banger(&["update"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains(&format!("-> {} (commit {})", new.version, new.commit)));
    assert_eq!(
        inst.commit(),
        new.commit,
        "banger version shows the new commit"
    );
    let after = snapshot(&inst.dir);
    assert_eq!(after[".banger.previous"], before["banger"]);
    assert_eq!(after[".bangerd.previous"], before["bangerd"]);
    assert_eq!(
        after["banger"],
        banger_update::sums::sha256(&std::fs::read(new_bins().join("banger")).unwrap())
    );
    let d = inst.daemon().expect("the new daemon answers");
    assert_ne!(Some(&d), daemon1.as_ref());
    assert_eq!(d.1, inst.dir.join("bangerd"));
    assert!(
        !after.keys().any(|k| k.starts_with(".banger-update-")),
        "staging is gone"
    );
}

/// `banger version` is the build's commit.
#[test]
fn version_matches_git_head() {
    let b = identity(Path::new(env!("CARGO_BIN_EXE_banger")));
    let git = Command::new("git")
        .args([
            "-C",
            env!("CARGO_MANIFEST_DIR"),
            "rev-parse",
            "--short",
            "HEAD",
        ])
        .output();
    match git {
        Ok(o) if o.status.success() && std::env::var_os("BANGER_BUILD_COMMIT").is_none() => {
            assert_eq!(b.commit, String::from_utf8_lossy(&o.stdout).trim());
        }
        _ => eprintln!(
            "skipping the commit check: not built from a git checkout (commit {})",
            b.commit
        ),
    }
    let d = Command::new(new_bins().join("bangerd"))
        .arg("--version")
        .output()
        .unwrap();
    let line = String::from_utf8_lossy(&d.stdout);
    assert!(
        line.starts_with(&format!("bangerd {} (commit {},", b.version, b.commit)),
        "{line}"
    );
    let v = Command::new(env!("CARGO_BIN_EXE_banger"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&v.stdout).contains(&format!("(commit {},", b.commit)));
}

/// install.sh, up to the system-install step, with a fake sudo (and a fake `id` that
/// says we are not root, so the script never runs anything as root here).
#[test]
fn install_sh_verifies_and_stops_at_the_system_install() {
    if Command::new("openssl").arg("version").output().is_err() {
        eprintln!("skipping install_sh: openssl is not installed");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let www = tmp.path().join("www");
    reset(&www);
    let server = Server::start(&www).unwrap();
    let key = random_key();
    let agent = agent(tmp.path());
    let rel = publish(&www, &key, &new_bins(), &agent, Broken::No);
    let new = identity(&new_bins().join("banger"));
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let script = banger_update::pack::install_sh_with_key(
        &std::fs::read_to_string(root.join("install.sh")).unwrap(),
        &key.public_key().to_pem().unwrap(),
    )
    .unwrap();
    let script_path = tmp.path().join("install.sh");
    std::fs::write(&script_path, script).unwrap();
    let fakes = tmp.path().join("fakebin");
    std::fs::create_dir_all(&fakes).unwrap();
    let sudo_log = tmp.path().join("sudo.log");
    for (name, body) in [
        (
            "sudo",
            format!("echo \"$@\" >> {}\nexit 0", sudo_log.display()),
        ),
        (
            "id",
            "if [ \"$1\" = -u ]; then echo 1000; else exec /usr/bin/id \"$@\"; fi".to_string(),
        ),
    ] {
        let p = fakes.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let home = tmp.path().join("home");
    let run = |extra: &[(&str, &str)]| {
        let mut c = Command::new("sh");
        c.arg(&script_path)
            .env(
                "PATH",
                format!(
                    "{}:{}",
                    fakes.display(),
                    std::env::var("PATH").unwrap_or_default()
                ),
            )
            .env("HOME", &home)
            .env_remove("XDG_CACHE_HOME")
            .env("BANGER_INSTALL_TEST_BASE_URL", server.base())
            .env("BANGER_INSTALL_NONINTERACTIVE", "1");
        for (k, v) in extra {
            c.env(k, v);
        }
        let o = c.output().unwrap();
        show("sh install.sh", &o);
        o
    };

    let o = run(&[]);
    let e = stderr(&o);
    assert!(e.contains("signature verified"), "{e}");
    assert!(
        e.contains(&format!(
            "banger {} is downloaded and verified",
            new.version
        )),
        "{e}"
    );
    let has_system_install = Command::new(new_bins().join("banger"))
        .args(["system", "install", "--help"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if has_system_install {
        assert!(o.status.success(), "{e}");
        assert!(e.contains("Why sudo"), "{e}");
        let log = std::fs::read_to_string(&sudo_log).unwrap();
        assert!(log.contains("bin/banger system install"), "{log}");
    } else {
        assert_eq!(o.status.code(), Some(3), "{e}");
        assert!(e.contains("no 'banger system install' yet"), "{e}");
        let kept = home.join(format!(
            ".cache/banger/install/banger-{}-{TARGET}/bin/banger",
            new.version
        ));
        assert!(
            kept.exists(),
            "the verified release is kept at {}",
            kept.display()
        );
        assert!(!sudo_log.exists(), "sudo was not called");
    }

    // Refusals: another key's signature, a tarball that does not match. The first run
    // may have called the fake sudo; start the refusals with a clean log.
    let _ = std::fs::remove_dir_all(home.join(".cache"));
    let _ = std::fs::remove_file(&sudo_log);
    let sig = rel.dir.join("SHA256SUMS.sig");
    let good = std::fs::read(&sig).unwrap();
    std::fs::write(
        &sig,
        random_key().sign(&std::fs::read(rel.dir.join("SHA256SUMS")).unwrap()),
    )
    .unwrap();
    let o = run(&[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("does not verify with banger's release key"));
    std::fs::write(&sig, &good).unwrap();
    let mut tar = std::fs::read(&rel.tarball).unwrap();
    tar[100] ^= 1;
    std::fs::write(&rel.tarball, &tar).unwrap();
    let o = run(&[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("does not match the signed SHA256SUMS"));
    assert!(
        !home.join(".cache/banger").exists() && !sudo_log.exists(),
        "nothing installed or kept"
    );
    // A version that is not X.Y.Z.
    let o = run(&[("BANGER_INSTALL_VERSION", "1.0; rm -rf /")]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("not X.Y.Z"));
}
