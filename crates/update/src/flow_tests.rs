//! The whole update flow against a loopback server, with shell-script stand-ins for the
//! binaries (they report the identity the release claims). The CLI's integration test
//! does the same with real binaries.

use crate::flow::{run, HookError, Hooks, Options, Outcome, UpdateError};
use crate::layout::Install;
use crate::pack::{merge_channel, pack, write_channel, PackInput};
use crate::signature::PrivateKey;
use crate::test_support::{random_key, Fault, Server};
use crate::trust::Trust;
use banger_buildinfo::BuildInfo;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

const T: &str = "x86_64-unknown-linux-gnu";

fn build(version: &str, commit: &str) -> BuildInfo {
    BuildInfo {
        version: version.into(),
        commit: commit.into(),
        built_at: "2025-01-01T00:00:00Z".into(),
        target: T.into(),
    }
}

fn script(path: &Path, body: &str) {
    std::fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Fake binaries of build `b` in `dir`; `bangerd --check-migrations` exits `migrations`.
fn fake_binaries(dir: &Path, b: &BuildInfo, migrations: i32) {
    std::fs::create_dir_all(dir).unwrap();
    let json = serde_json::to_string(b).unwrap();
    script(
        &dir.join("banger"),
        &format!("[ \"$1 $2\" = 'version --json' ] && echo '{json}'; exit 0"),
    );
    script(
        &dir.join("bangerd"),
        &format!(
            "case \"$1\" in --version) echo 'bangerd {} (commit {}, built {}, {T})';; --check-migrations) echo 'schema too new' >&2; exit {migrations};; esac",
            b.version, b.commit, b.built_at
        ),
    );
    std::fs::write(dir.join("banger-agent"), format!("agent {}", b.commit)).unwrap();
    std::fs::write(dir.join("banger.1"), ".TH BANGER 1\n").unwrap();
}

struct Fixture {
    _t: tempfile::TempDir,
    root: PathBuf,
    install_dir: PathBuf,
    server: Server,
    key: PrivateKey,
    trust: Trust,
}

impl Fixture {
    fn new() -> Self {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("www");
        std::fs::create_dir_all(&root).unwrap();
        let install_dir = t.path().join("install");
        fake_binaries(&install_dir, &build("1.0.0", "aaaaaaa"), 0);
        let server = Server::start(&root).unwrap();
        let key = random_key();
        let trust = Trust {
            key: key.public_key(),
            manifest_url: reqwest::Url::parse(&format!("{}/manifest.json", server.base())).unwrap(),
        };
        Self {
            root,
            install_dir,
            server,
            key,
            trust,
            _t: t,
        }
    }

    /// Publish release `b`, built by `key`, with fake binaries.
    fn publish(&self, b: &BuildInfo, migrations: i32) -> crate::pack::Packed {
        let bins = self.root.join(format!("../bins-{}", b.commit));
        fake_binaries(&bins, b, migrations);
        let input = PackInput {
            version: b.version.clone(),
            commit: b.commit.clone(),
            built_at: b.built_at.clone(),
            target: T.into(),
            mtime: 1_700_000_000,
            files: vec![
                ("bin/banger".into(), bins.join("banger")),
                ("bin/bangerd".into(), bins.join("bangerd")),
                ("lib/banger-agent".into(), bins.join("banger-agent")),
                ("man/man1/banger.1".into(), bins.join("banger.1")),
            ],
            assets: vec![],
        };
        let p = pack(&input, &self.key, &self.root).unwrap();
        write_channel(&self.root, p.entry.clone()).unwrap();
        assert_eq!(
            std::fs::read_to_string(self.root.join("latest"))
                .unwrap()
                .trim(),
            b.version,
            "each fixture publishes one release"
        );
        p
    }

    fn install(&self) -> Install {
        Install::Dir(self.install_dir.clone())
    }

    fn installed_agent(&self) -> String {
        std::fs::read_to_string(self.install_dir.join("banger-agent")).unwrap()
    }

    /// Every file of the install directory with its contents (staging included).
    fn snapshot(&self) -> Vec<(String, Vec<u8>)> {
        let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(&self.install_dir)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name() != ".banger-update.lock")
            .map(|e| {
                (
                    e.file_name().to_string_lossy().into_owned(),
                    std::fs::read(e.path()).unwrap_or_default(),
                )
            })
            .collect();
        v.sort();
        v
    }

    async fn update(&self, opts: &Options, hooks: &mut FakeHooks) -> Result<Outcome, UpdateError> {
        run(
            &self.trust,
            &self.install(),
            &build("1.0.0", "aaaaaaa"),
            opts,
            hooks,
        )
        .await
    }
}

#[derive(Default)]
struct FakeHooks {
    in_flight: Vec<String>,
    fail_restart: bool,
    fail_health: bool,
    calls: Vec<String>,
}

impl Hooks for FakeHooks {
    async fn operations_in_flight(&mut self) -> Result<Vec<String>, HookError> {
        self.calls.push("ops".into());
        Ok(self.in_flight.clone())
    }
    async fn before_swap(&mut self) -> Result<(), HookError> {
        self.calls.push("before".into());
        Ok(())
    }
    async fn restart(&mut self) -> Result<(), HookError> {
        self.calls.push("restart".into());
        if self.fail_restart {
            return Err(HookError("daemon exited (status 1)".into()));
        }
        Ok(())
    }
    async fn health(&mut self, installed: &BuildInfo) -> Result<(), HookError> {
        self.calls.push(format!("health {}", installed.commit));
        if self.fail_health {
            return Err(HookError("doctor: new failure".into()));
        }
        Ok(())
    }
    async fn finish(&mut self, installed: &BuildInfo) -> Result<(), HookError> {
        self.calls.push(format!("finish {}", installed.commit));
        Ok(())
    }
    async fn restart_previous(&mut self) -> Result<(), HookError> {
        self.calls.push("restart_previous".into());
        Ok(())
    }
    fn step(&mut self, _line: &str) {}
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn opts() -> Options {
    Options::default()
}

#[test]
fn check_dry_run_and_update() {
    let f = Fixture::new();
    f.publish(&build("1.1.0", "bbbbbbb"), 0);
    rt().block_on(async {
        let mut h = FakeHooks::default();
        let o = f
            .update(
                &Options {
                    check_only: true,
                    ..opts()
                },
                &mut h,
            )
            .await
            .unwrap();
        match o {
            Outcome::Check { latest, available } => {
                assert_eq!(latest.unwrap().to_string(), "1.1.0");
                assert_eq!(available.unwrap().version.to_string(), "1.1.0");
            }
            o => panic!("{o:?}"),
        }

        let before = f.snapshot();
        let o = f
            .update(
                &Options {
                    dry_run: true,
                    ..opts()
                },
                &mut h,
            )
            .await
            .unwrap();
        let Outcome::DryRun { to, plan, .. } = o else {
            panic!("{o:?}")
        };
        assert_eq!(to.commit, "bbbbbbb");
        let dests: Vec<String> = plan
            .iter()
            .map(|p| p.dest.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            dests,
            ["banger-agent", "bangerd", "banger"],
            "no man page in a directory install; banger last"
        );
        assert_eq!(f.snapshot(), before, "a dry run changes nothing");

        let mut h = FakeHooks::default();
        let o = f.update(&opts(), &mut h).await.unwrap();
        let Outcome::Updated { to, backups } = o else {
            panic!("{o:?}")
        };
        assert_eq!(to.commit, "bbbbbbb");
        assert_eq!(backups.len(), 3);
        assert_eq!(f.installed_agent(), "agent bbbbbbb");
        assert_eq!(
            std::fs::read_to_string(f.install_dir.join(".banger-agent.previous")).unwrap(),
            "agent aaaaaaa"
        );
        assert_eq!(
            h.calls,
            [
                "ops",
                "ops",
                "before",
                "restart",
                "health bbbbbbb",
                "finish bbbbbbb"
            ]
        );
        assert!(
            !f.snapshot()
                .iter()
                .any(|(n, _)| n.starts_with(".banger-update-")),
            "staging is removed"
        );
    });
}

/// Each of these is refused before anything changes.
#[test]
fn refusals_change_nothing() {
    let f = Fixture::new();
    let p = f.publish(&build("1.1.0", "bbbbbbb"), 0);
    let v = "/v1.1.0";
    let tar = format!("{v}/banger-1.1.0-{T}.tar.gz");
    let sums = p.dir.join("SHA256SUMS");
    let sig = p.dir.join("SHA256SUMS.sig");
    let good_sums = std::fs::read(&sums).unwrap();
    let good_sig = std::fs::read(&sig).unwrap();
    let good_tar = std::fs::read(&p.tarball).unwrap();
    let before = f.snapshot();
    let rt = rt();
    let refuse = |what: &str, want: &str| {
        let mut h = FakeHooks::default();
        let e = rt.block_on(f.update(&opts(), &mut h)).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, UpdateError::Refused(_)), "{what}: {msg}");
        assert!(msg.contains(want), "{what}: {msg}");
        assert!(!h.calls.iter().any(|c| c == "restart"), "{what}");
        assert_eq!(f.snapshot(), before, "{what} changed the install");
        f.server.clear_faults();
        f.server.take_log()
    };

    // A signature by another key (same length, so the manifest's size still holds).
    std::fs::write(&sig, random_key().sign(&good_sums)).unwrap();
    let log = refuse("wrong key", "not signed by banger's release key");
    assert!(
        !log.contains(&tar),
        "the tarball is not fetched when the signature fails"
    );
    // A tampered SHA256SUMS under the good signature.
    std::fs::write(&sig, &good_sig).unwrap();
    let mut bad = good_sums.clone();
    bad[0] = if bad[0] == b'0' { b'1' } else { b'0' };
    std::fs::write(&sums, &bad).unwrap();
    refuse("tampered sums", "not signed");
    std::fs::write(&sums, &good_sums).unwrap();
    // A signature file that is not base64.
    std::fs::write(&sig, "!".repeat(good_sig.len())).unwrap();
    refuse("garbage signature", "not base64");
    std::fs::write(&sig, &good_sig).unwrap();
    // A tarball whose bytes differ from the signed hash.
    let mut other = good_tar.clone();
    let mid = other.len() / 2;
    other[mid] ^= 0xff;
    std::fs::write(&p.tarball, &other).unwrap();
    refuse("wrong hash", "the download is corrupt or was altered");
    std::fs::write(&p.tarball, &good_tar).unwrap();
    // Truncated in transit.
    f.server
        .fault(&tar, Fault::Truncate(good_tar.len() as u64 / 2));
    refuse("truncated", &tar);
    // Larger than the manifest says.
    let mut big = good_tar.clone();
    big.extend_from_slice(&[0u8; 4096]);
    std::fs::write(&p.tarball, &big).unwrap();
    refuse("oversized", "oversized");
    std::fs::write(&p.tarball, &good_tar).unwrap();
    // A redirect off the release server.
    f.server.fault(
        &tar,
        Fault::Redirect(format!("http://127.0.0.2:{}{tar}", f.server.port())),
    );
    refuse("redirect elsewhere", "off the release server");
    // A manifest pointing at another host.
    let m = std::fs::read_to_string(f.root.join("manifest.json")).unwrap();
    let moved = m.replace(
        &format!("\"{}", &tar[1..]),
        &format!("\"http://127.0.0.2:{}{tar}", f.server.port()),
    );
    assert_ne!(moved, m);
    std::fs::write(f.root.join("manifest.json"), &moved).unwrap();
    refuse("other host", "not on the manifest's server");
    std::fs::write(f.root.join("manifest.json"), &m).unwrap();
    // Operations in flight.
    let mut h = FakeHooks {
        in_flight: vec!["op-1 vm.create dev".into()],
        ..Default::default()
    };
    let e = rt.block_on(f.update(&opts(), &mut h)).unwrap_err();
    assert!(matches!(e, UpdateError::InFlight(_)), "{e}");
    assert_eq!(f.snapshot(), before);
}

#[test]
fn staged_binaries_must_be_what_the_release_claims() {
    let f = Fixture::new();
    // Binaries that report another commit than the release's manifest.json.
    let bins = f.root.join("../liar");
    fake_binaries(&bins, &build("1.1.0", "ccccccc"), 0);
    let input = PackInput {
        version: "1.1.0".into(),
        commit: "bbbbbbb".into(),
        built_at: "2025-01-01T00:00:00Z".into(),
        target: T.into(),
        mtime: 0,
        files: vec![
            ("bin/banger".into(), bins.join("banger")),
            ("bin/bangerd".into(), bins.join("bangerd")),
            ("lib/banger-agent".into(), bins.join("banger-agent")),
        ],
        assets: vec![],
    };
    let p = pack(&input, &f.key, &f.root).unwrap();
    std::fs::write(
        f.root.join("manifest.json"),
        merge_channel(None, p.entry).unwrap(),
    )
    .unwrap();
    let before = f.snapshot();
    let e = rt()
        .block_on(f.update(&opts(), &mut FakeHooks::default()))
        .unwrap_err();
    assert!(e.to_string().contains("mislabelled"), "{e}");
    assert_eq!(f.snapshot(), before);
}

#[test]
fn a_database_the_new_daemon_refuses_stops_the_update() {
    let f = Fixture::new();
    f.publish(&build("1.1.0", "bbbbbbb"), 1);
    let before = f.snapshot();
    let e = rt()
        .block_on(f.update(&opts(), &mut FakeHooks::default()))
        .unwrap_err();
    assert!(e.to_string().contains("schema too new"), "{e}");
    assert_eq!(f.snapshot(), before);
}

#[test]
fn a_failed_restart_or_health_check_rolls_back() {
    for health in [false, true] {
        let f = Fixture::new();
        f.publish(&build("1.1.0", "bbbbbbb"), 0);
        let before = f.snapshot();
        let mut h = FakeHooks {
            fail_restart: !health,
            fail_health: health,
            ..Default::default()
        };
        let e = rt().block_on(f.update(&opts(), &mut h)).unwrap_err();
        assert!(matches!(e, UpdateError::RolledBack { .. }), "{e}");
        assert!(
            e.to_string().contains("previous version was restored"),
            "{e}"
        );
        assert_eq!(h.calls.last().unwrap(), "restart_previous");
        assert!(!h.calls.iter().any(|c| c.starts_with("finish")));
        let after = f.snapshot();
        assert_eq!(
            after, before,
            "the previous files are back (health={health})"
        );
    }
}

#[test]
fn downgrades_need_to() {
    let f = Fixture::new();
    f.publish(&build("0.9.0", "9999999"), 0);
    let rt = rt();
    let o = rt
        .block_on(f.update(&opts(), &mut FakeHooks::default()))
        .unwrap();
    assert!(matches!(o, Outcome::UpToDate { .. }), "{o:?}");
    assert_eq!(f.installed_agent(), "agent aaaaaaa");
    let o = rt
        .block_on(f.update(
            &Options {
                to: Some(semver::Version::parse("0.9.0").unwrap()),
                ..opts()
            },
            &mut FakeHooks::default(),
        ))
        .unwrap();
    assert!(matches!(o, Outcome::Updated { .. }), "{o:?}");
    assert_eq!(f.installed_agent(), "agent 9999999");
}
