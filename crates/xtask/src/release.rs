//! `xtask release`: build, document, pack, sign, check.

use anyhow::{bail, Context, Result};
use banger_buildinfo::BuildInfo;
use banger_update::pack::{install_sh_with_key, pack, write_channel, PackInput};
use banger_update::signature::{PrivateKey, PublicKey};
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Debug, clap::Args)]
pub struct ReleaseArgs {
    /// The release signing key: PEM, unencrypted, PKCS#8 or SEC1 P-256. Its public half
    /// must be keys/release.pub (or BANGER_RELEASE_PUBKEY_FILE), the key banger verifies.
    #[arg(long)]
    key: PathBuf,
    /// The static guest agent, as `make agent` builds it.
    #[arg(long)]
    agent: PathBuf,
    /// Where to write the release and the channel files.
    #[arg(long, default_value = "dist")]
    out: PathBuf,
    /// The channel manifest currently published, to add this release to (default: OUT/manifest.json if present).
    #[arg(long)]
    channel: Option<PathBuf>,
    /// Release from a work tree with uncommitted changes (the binaries' commit would not describe them).
    #[arg(long)]
    allow_dirty: bool,
    /// Use the binaries already in target/release instead of building them.
    #[arg(long)]
    no_build: bool,
}

fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

fn output(c: &mut Command) -> Result<String> {
    let o = c.output().with_context(|| format!("running {c:?}"))?;
    if !o.status.success() {
        bail!(
            "{c:?} failed ({}): {}",
            o.status,
            String::from_utf8_lossy(&o.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

/// The package that builds a `banger-helper` binary, once issue 11 adds one.
fn helper_package(root: &Path) -> Result<Option<String>> {
    let meta = output(
        cargo()
            .args([
                "metadata",
                "--no-deps",
                "--format-version",
                "1",
                "--manifest-path",
            ])
            .arg(root.join("Cargo.toml")),
    )?;
    let v: serde_json::Value = serde_json::from_str(&meta).context("parsing cargo metadata")?;
    for p in v["packages"].as_array().into_iter().flatten() {
        for t in p["targets"].as_array().into_iter().flatten() {
            let bin = t["kind"]
                .as_array()
                .is_some_and(|k| k.iter().any(|k| k == "bin"));
            if bin && t["name"] == "banger-helper" {
                return Ok(p["name"].as_str().map(str::to_string));
            }
        }
    }
    Ok(None)
}

pub fn run(a: ReleaseArgs) -> Result<()> {
    let root = crate::root()
        .canonicalize()
        .context("finding the workspace root")?;

    // The key must be the one banger is built to trust, or no banger will accept it.
    let key_pem = std::fs::read_to_string(&a.key)
        .with_context(|| format!("reading the signing key {}", a.key.display()))?;
    let key = PrivateKey::from_pem(&key_pem)?;
    let pub_path = std::env::var_os("BANGER_RELEASE_PUBKEY_FILE")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("keys/release.pub"));
    let pub_pem = std::fs::read_to_string(&pub_path)
        .with_context(|| format!("reading {}", pub_path.display()))?;
    if key.public_key() != PublicKey::from_pem(&pub_pem)? {
        bail!(
            "{} is not the private half of {}: banger would refuse this release. Sign with the release key",
            a.key.display(),
            pub_path.display()
        );
    }

    if !a.allow_dirty {
        let status = output(Command::new("git").arg("-C").arg(&root).args([
            "status",
            "--porcelain",
            "--untracked-files=no",
        ]))?;
        if !status.trim().is_empty() {
            bail!("the work tree has uncommitted changes; commit them (or pass --allow-dirty)");
        }
    }

    let helper = helper_package(&root)?;
    if !a.no_build {
        let mut c = cargo();
        c.current_dir(&root).args([
            "build",
            "--release",
            "--locked",
            "-p",
            "banger-cli",
            "-p",
            "banger-daemon",
        ]);
        if let Some(h) = &helper {
            c.args(["-p", h]);
        }
        eprintln!("building: {c:?}");
        let s = c.status().context("running cargo build")?;
        if !s.success() {
            bail!("cargo build failed ({s})");
        }
    }
    if helper.is_none() {
        eprintln!(
            "note: no package builds a banger-helper binary yet (issue 11); the release ships without it"
        );
    }

    let bin = root.join("target/release");
    let agent = std::fs::read(&a.agent)
        .with_context(|| format!("reading the agent {} (run make agent)", a.agent.display()))?;
    match crate::elf::is_static(&agent) {
        Ok(true) => {}
        Ok(false) => bail!(
            "{} is dynamically linked; build it with `make agent`",
            a.agent.display()
        ),
        Err(e) => bail!("{}: {e}", a.agent.display()),
    }

    let build: BuildInfo = serde_json::from_str(&output(
        Command::new(bin.join("banger")).args(["version", "--json"]),
    )?)
    .context("reading the built banger's identity")?;
    if build.commit == "unknown" {
        bail!("the binaries do not know their commit; build from a git checkout or set BANGER_BUILD_COMMIT");
    }
    let daemon = output(Command::new(bin.join("bangerd")).arg("--version"))?;
    if !daemon.contains(&format!(" {} (commit {},", build.version, build.commit)) {
        bail!(
            "bangerd reports {daemon:?}, banger {} (commit {}): rebuild both",
            build.version,
            build.commit
        );
    }

    let gen = tempfile::tempdir().context("creating a temporary directory")?;
    output(
        Command::new(bin.join("banger"))
            .args(["__generate", "--out"])
            .arg(gen.path()),
    )?;
    let mut files: Vec<(String, PathBuf)> = vec![
        ("bin/banger".into(), bin.join("banger")),
        ("bin/bangerd".into(), bin.join("bangerd")),
    ];
    if helper.is_some() {
        files.push(("bin/banger-helper".into(), bin.join("banger-helper")));
    }
    files.push(("lib/banger-agent".into(), a.agent.clone()));
    let mut docs: Vec<PathBuf> = std::fs::read_dir(gen.path().join("man/man1"))
        .context("reading the generated man pages")?
        .flatten()
        .map(|e| e.path())
        .collect();
    docs.sort();
    for p in docs {
        let name = p
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        files.push((format!("man/man1/{name}"), p));
    }
    for c in ["banger.bash", "_banger", "banger.fish"] {
        files.push((
            format!("completions/{c}"),
            gen.path().join("completions").join(c),
        ));
    }

    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    if let Some(ch) = &a.channel {
        std::fs::copy(ch, a.out.join("manifest.json"))
            .with_context(|| format!("copying the channel manifest {}", ch.display()))?;
    }
    let installer = install_sh_with_key(
        &std::fs::read_to_string(root.join("install.sh")).context("reading install.sh")?,
        &pub_pem,
    )?;
    let installer_path = gen.path().join("install.sh");
    std::fs::write(&installer_path, &installer).context("writing install.sh")?;

    let mtime =
        match std::env::var("SOURCE_DATE_EPOCH") {
            Ok(s) => s.parse().context("SOURCE_DATE_EPOCH is not unix seconds")?,
            Err(_) => output(Command::new("git").arg("-C").arg(&root).args([
                "log",
                "-1",
                "--format=%ct",
            ]))?
            .trim()
            .parse()
            .context("reading the commit time")?,
        };
    let packed = pack(
        &PackInput {
            version: build.version.clone(),
            commit: build.commit.clone(),
            built_at: build.built_at.clone(),
            target: build.target.clone(),
            mtime,
            files,
            assets: vec![("install.sh".into(), installer_path.clone())],
        },
        &key,
        &a.out,
    )?;
    write_channel(&a.out, packed.entry.clone())?;
    std::fs::copy(&installer_path, a.out.join("install.sh")).context("writing OUT/install.sh")?;

    self_check(&a.out, &packed, &build, &pub_pem)?;
    println!(
        "release {} (commit {}, {}) written to {}:",
        build.version,
        build.commit,
        build.target,
        a.out.display()
    );
    for f in &packed.contents.files {
        println!("  {:<44} {:>10}  {}", f.path, f.size, &f.sha256[..16]);
    }
    println!(
        "publish {}/ at the release URL (manifest.json, latest, install.sh and v{}/)",
        a.out.display(),
        build.version
    );
    Ok(())
}

/// Read the release back the way `banger update` does: manifest, signature, hash, unpack.
fn self_check(
    out: &Path,
    packed: &banger_update::pack::Packed,
    b: &BuildInfo,
    pub_pem: &str,
) -> Result<()> {
    use banger_update::{manifest, signature, sums, unpack};
    let base = manifest::Url::parse("https://release.invalid/banger/manifest.json")?;
    let releases = manifest::parse(&std::fs::read(out.join("manifest.json"))?, &base, &b.target)?;
    let r = releases
        .iter()
        .find(|r| r.version.to_string() == b.version)
        .context("the channel manifest lacks this release")?;
    let sums_bytes = std::fs::read(packed.dir.join("SHA256SUMS"))?;
    signature::verify(
        &PublicKey::from_pem(pub_pem)?,
        &sums_bytes,
        &std::fs::read(packed.dir.join("SHA256SUMS.sig"))?,
    )?;
    let want = sums::Sums::parse(&sums_bytes)?.get(r.tarball.file_name())?;
    let tar = std::fs::read(&packed.tarball)?;
    if sums::sha256(&tar) != want {
        bail!("the tarball does not match SHA256SUMS");
    }
    let t = tempfile::tempdir()?;
    unpack::unpack(&packed.tarball, &b.version, &b.target, t.path())?;
    Ok(())
}
