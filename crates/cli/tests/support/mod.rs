//! Shared by the update integration test (`tests/update.rs`) and the end-to-end update
//! section (`tests/e2e_sections/update.rs`): a test build of banger that trusts a test
//! key and a loopback manifest URL, releases made from real binaries, and install
//! directories to update.
//!
//! The release key and manifest URL are compiled into banger on purpose (nothing at run
//! time can redirect an update), so the "installed" banger of these tests is its own
//! build: `cargo build` into `target/update-it/target` with `BANGER_RELEASE_PUBKEY_FILE`,
//! `BANGER_RELEASE_MANIFEST_URL` (127.0.0.1 and a port kept in `target/update-it/port`),
//! `BANGER_BUILD_VERSION=0.0.1` and `BANGER_BUILD_COMMIT=1111111`. The key and port are
//! kept between runs so cargo rebuilds only when the sources change (the first run
//! compiles every dependency once, a few minutes). The "new" release is the regular test
//! build (`CARGO_BIN_EXE_banger`), whose version is the workspace's and commit is HEAD.

#![allow(dead_code)]

use banger_buildinfo::BuildInfo;
use banger_update::pack::{pack, write_channel, PackInput, Packed};
use banger_update::signature::PrivateKey;
use std::collections::BTreeMap;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

pub const TARGET: &str = "x86_64-unknown-linux-gnu";
/// The installed (old) build's identity.
pub const OLD_VERSION: &str = "0.0.1";
pub const OLD_COMMIT: &str = "1111111";

/// Why the update tests cannot run here, if they cannot.
pub fn skip_reason() -> Option<String> {
    if std::env::var("BANGER_UPDATE_IT").as_deref() != Ok("1")
        && std::env::var("BANGER_E2E").as_deref() != Ok("1")
    {
        return Some(
            "set BANGER_UPDATE_IT=1 (make test does): it builds a second banger with a test release key (minutes on the first run)"
                .into(),
        );
    }
    if Path::new("/etc/banger/install.toml").exists() {
        return Some("this host has a system install (/etc/banger/install.toml); the test updates a directory install".into());
    }
    None
}

/// `target/`, the directory cargo builds this test into.
fn target_root() -> PathBuf {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_banger"));
    bin.parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .expect("target dir")
}

/// The regular test build's binaries (the "new" release), stripped of debug info into
/// `target/update-it/new` (a tenth of the size; packing, hashing and unpacking them
/// dominates the test otherwise). Fails clearly when `bangerd` is of another build
/// (`cargo test -p banger-cli` does not rebuild it; `cargo build --workspace` does).
pub fn new_bins() -> PathBuf {
    static ONCE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    ONCE.get_or_init(strip_new_bins).clone()
}

fn strip_new_bins() -> PathBuf {
    let built = PathBuf::from(env!("CARGO_BIN_EXE_banger"))
        .parent()
        .unwrap()
        .to_path_buf();
    let b = identity(&built.join("banger"));
    let d = Command::new(built.join("bangerd"))
        .arg("--version")
        .output()
        .unwrap();
    let line = String::from_utf8_lossy(&d.stdout);
    assert!(
        line.contains(&format!(" {} (commit {}, built {},", b.version, b.commit, b.built_at)),
        "{}/bangerd ({}) is not the build of banger ({} {} {}): run `cargo build --workspace` first (make test does)",
        built.display(),
        line.trim(),
        b.version,
        b.commit,
        b.built_at
    );
    let out = target_root().join("update-it/new");
    std::fs::create_dir_all(&out).unwrap();
    for n in ["banger", "bangerd"] {
        let src = built.join(n);
        let dst = out.join(n);
        let fresh = match (std::fs::metadata(&src), std::fs::metadata(&dst)) {
            (Ok(s), Ok(d)) => d.modified().unwrap() >= s.modified().unwrap(),
            _ => false,
        };
        if !fresh {
            let _ = std::fs::remove_file(&dst);
            let st = Command::new("strip")
                .arg("--strip-debug")
                .arg(&src)
                .arg("-o")
                .arg(&dst)
                .status();
            if !matches!(st, Ok(s) if s.success()) {
                std::fs::copy(&src, &dst).unwrap();
            }
        }
    }
    out
}

/// The test release key pair and the test build's port, kept in `target/update-it`.
pub struct TestTrust {
    pub dir: PathBuf,
    pub key: PrivateKey,
    pub pub_path: PathBuf,
    pub port: u16,
}

impl TestTrust {
    /// Load or create the key; `free_port`: the kept port must be bindable on this
    /// host's loopback (false inside a fresh network namespace, where it always is).
    pub fn load(free_port: bool) -> (Self, Option<TcpListener>) {
        let dir = target_root().join("update-it");
        std::fs::create_dir_all(&dir).unwrap();
        let pem_path = dir.join("test-release.pem");
        let pub_path = dir.join("test-release.pub");
        let key = match std::fs::read_to_string(&pem_path) {
            Ok(p) => PrivateKey::from_pem(&p).unwrap(),
            Err(_) => {
                let k = banger_update::test_support::random_key();
                std::fs::write(&pem_path, k.to_pem().unwrap()).unwrap();
                k
            }
        };
        let pub_pem = key.public_key().to_pem().unwrap();
        if std::fs::read_to_string(&pub_path).ok().as_deref() != Some(pub_pem.as_str()) {
            std::fs::write(&pub_path, &pub_pem).unwrap();
        }
        let port_path = dir.join("port");
        let kept: Option<u16> = std::fs::read_to_string(&port_path)
            .ok()
            .and_then(|s| s.trim().parse().ok());
        let (port, listener) = match (kept, free_port) {
            (Some(p), false) => (p, None),
            (Some(p), true) => match TcpListener::bind(("127.0.0.1", p)) {
                Ok(l) => (p, Some(l)),
                Err(_) => fresh_port(),
            },
            (None, true) => fresh_port(),
            (None, false) => {
                let (p, _) = fresh_port();
                (p, None)
            }
        };
        std::fs::write(&port_path, port.to_string()).unwrap();
        (
            Self {
                dir,
                key,
                pub_path,
                port,
            },
            listener,
        )
    }

    pub fn manifest_url(&self) -> String {
        format!("http://127.0.0.1:{}/manifest.json", self.port)
    }

    /// Build the "installed" banger: test key, loopback URL, version 0.0.1. Returns the
    /// directory holding `banger` and `bangerd`.
    pub fn build_old(&self) -> PathBuf {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
        let target = self.dir.join("target");
        eprintln!(
            "building the test-key banger into {} (the first run compiles every dependency: minutes)",
            target.display()
        );
        let st = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .args([
                "build",
                "-q",
                "-p",
                "banger-cli",
                "-p",
                "banger-daemon",
                "--manifest-path",
            ])
            .arg(root.join("Cargo.toml"))
            .arg("--target-dir")
            .arg(&target)
            .env_remove("CARGO_TARGET_DIR")
            .env_remove("CARGO_BUILD_TARGET_DIR")
            .env("BANGER_RELEASE_PUBKEY_FILE", &self.pub_path)
            .env("BANGER_RELEASE_MANIFEST_URL", self.manifest_url())
            .env("BANGER_BUILD_VERSION", OLD_VERSION)
            .env("BANGER_BUILD_COMMIT", OLD_COMMIT)
            .status()
            .expect("running cargo build");
        assert!(st.success(), "building the test-key banger failed");
        target.join("debug")
    }
}

fn fresh_port() -> (u16, Option<TcpListener>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    (l.local_addr().unwrap().port(), Some(l))
}

/// What `banger version --json` says.
pub fn identity(banger: &Path) -> BuildInfo {
    let o = Command::new(banger)
        .args(["version", "--json"])
        .output()
        .unwrap();
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{}: {e}", banger.display()))
}

/// The static agent `make agent` builds, when present; a stand-in file otherwise (the
/// update never runs it).
pub fn agent(tmp: &Path) -> PathBuf {
    let real = target_root().join(format!("{TARGET}/guest/banger-agent"));
    if let Some(p) = std::env::var_os("BANGER_AGENT").map(PathBuf::from) {
        if p.exists() {
            return p;
        }
    }
    if real.exists() {
        return real;
    }
    let p = tmp.join("banger-agent-standin");
    std::fs::write(&p, b"not an agent").unwrap();
    p
}

/// A directory install of `bins` (banger, bangerd) and `agent`.
pub fn install_dir(at: &Path, bins: &Path, agent: &Path) -> PathBuf {
    std::fs::create_dir_all(at).unwrap();
    for b in ["banger", "bangerd"] {
        std::fs::copy(bins.join(b), at.join(b)).unwrap();
    }
    std::fs::copy(agent, at.join("banger-agent")).unwrap();
    at.to_path_buf()
}

/// How a release misbehaves.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Broken {
    No,
    /// Its bangerd passes --version and --check-migrations but exits 1 as a daemon.
    DaemonWontStart,
}

/// Publish a release of `bins` into the server root `www`, signed by `key`.
pub fn publish(www: &Path, key: &PrivateKey, bins: &Path, agent: &Path, broken: Broken) -> Packed {
    let b = identity(&bins.join("banger"));
    let mut bangerd = bins.join("bangerd");
    if broken == Broken::DaemonWontStart {
        let line = String::from_utf8(
            Command::new(&bangerd)
                .arg("--version")
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap();
        let fake = www.join("../broken-bangerd");
        std::fs::write(
            &fake,
            format!(
                "#!/bin/sh\ncase \"$1\" in\n  --version) printf '%s\\n' '{}';;\n  --check-migrations) echo 'fine';;\n  *) echo 'bangerd: error: this release is broken on purpose' >&2; exit 1;;\nesac\n",
                line.trim()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        bangerd = fake;
    }
    let p = pack(
        &PackInput {
            version: b.version.clone(),
            commit: b.commit.clone(),
            built_at: b.built_at.clone(),
            target: b.target.clone(),
            mtime: 1_700_000_000,
            files: vec![
                ("bin/banger".into(), bins.join("banger")),
                ("bin/bangerd".into(), bangerd),
                ("lib/banger-agent".into(), agent.to_path_buf()),
            ],
            assets: vec![],
        },
        key,
        www,
    )
    .unwrap();
    write_channel(www, p.entry.clone()).unwrap();
    p
}

/// Start over with an empty server root.
pub fn reset(www: &Path) {
    let _ = std::fs::remove_dir_all(www);
    std::fs::create_dir_all(www).unwrap();
}

/// Every file in `dir` (hidden ones too, the update lock aside) → its bytes' hash.
pub fn snapshot(dir: &Path) -> BTreeMap<String, [u8; 32]> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name() != ".banger-update.lock")
        .map(|e| {
            let bytes = std::fs::read(e.path()).unwrap_or_default();
            (
                e.file_name().to_string_lossy().into_owned(),
                banger_update::sums::sha256(&bytes),
            )
        })
        .collect()
}
