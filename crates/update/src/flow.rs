//! One `banger update`, start to end. The steps that depend on how banger runs
//! (asking the daemon what is in flight, restarting it, judging its health, writing
//! the install record) are the caller's [`Hooks`]; everything else is here.
//!
//! Order, and what a failure at each step leaves behind:
//! 1. manifest → version decision → operations in flight: nothing changed.
//! 2. `SHA256SUMS` + signature (verified before the big download), tarball (size-capped,
//!    hashed while streaming, compared with `SHA256SUMS`), strict unpack into the
//!    staging directory, staged binaries report the identity the release claims, staged
//!    `bangerd --check-migrations` accepts the database: nothing changed.
//! 3. swap (each file atomically, backups kept; undone on error): nothing changed.
//! 4. restart → health → finish (install record): on failure the previous files are put
//!    back and the previous daemon restarted.

use crate::contents::{Contents, FileKind};
use crate::download::Fetcher;
use crate::layout::Install;
use crate::manifest::{Release, MAX_MANIFEST};
use crate::policy::Decision;
use crate::swap::Placement;
use crate::trust::Trust;
use banger_buildinfo::BuildInfo;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long a staged binary may take to say which build it is, or to check migrations.
const STAGED_TIMEOUT: Duration = Duration::from_secs(60);

/// What the user asked for.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// `--to`: this exact version (the only way to downgrade).
    pub to: Option<semver::Version>,
    /// `--check`: only say whether a newer release exists.
    pub check_only: bool,
    /// `--dry-run`: download, verify, stage and check, then stop.
    pub dry_run: bool,
    /// `--force`: update even while operations are in flight.
    pub force: bool,
}

/// A caller step failed; the message is shown to the user.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct HookError(pub String);

/// The parts of an update that depend on how banger runs here.
pub trait Hooks {
    /// Operations the daemon has in flight (empty when no daemon runs).
    fn operations_in_flight(&mut self) -> impl Future<Output = Result<Vec<String>, HookError>>;
    /// Just before the swap, nothing changed yet: note what `health` compares with.
    fn before_swap(&mut self) -> impl Future<Output = Result<(), HookError>>;
    /// After the swap: run the new binaries (restart the daemon, and the helper).
    fn restart(&mut self) -> impl Future<Output = Result<(), HookError>>;
    /// Are the new binaries healthy? `installed` is what they must report.
    fn health(&mut self, installed: &BuildInfo) -> impl Future<Output = Result<(), HookError>>;
    /// After a good health check (e.g. write the install record).
    fn finish(&mut self, installed: &BuildInfo) -> impl Future<Output = Result<(), HookError>>;
    /// After a rollback: run the previous binaries again.
    fn restart_previous(&mut self) -> impl Future<Output = Result<(), HookError>>;
    /// Progress, one line per step.
    fn step(&mut self, line: &str);
    /// The staged daemon's migration check (the caller may add environment).
    fn check_migrations_command(&self, staged_bangerd: &Path) -> tokio::process::Command {
        let mut c = tokio::process::Command::new(staged_bangerd);
        c.arg("--check-migrations");
        c
    }
}

/// How an update ended, when it did not fail.
#[derive(Debug)]
pub enum Outcome {
    /// `--check`: the newest release, and whether it is newer than what runs.
    Check {
        /// Newest published release for this machine.
        latest: Option<semver::Version>,
        /// The release an update would install, if any.
        available: Option<Box<Release>>,
    },
    /// Nothing newer.
    UpToDate {
        /// Newest published.
        latest: Option<semver::Version>,
    },
    /// `--to` names the installed version.
    AlreadyInstalled,
    /// `--dry-run`: verified and staged, nothing changed.
    DryRun {
        /// What would be installed.
        to: BuildInfo,
        /// Where each file would go.
        plan: Vec<Placement>,
        /// Operations in flight (a real run refuses them without `--force`).
        in_flight: Vec<String>,
    },
    /// Installed and healthy.
    Updated {
        /// What is installed now.
        to: BuildInfo,
        /// Backups of the previous files.
        backups: Vec<PathBuf>,
    },
}

/// Why an update failed.
#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    /// Nothing changed: any error before the swap.
    #[error("{0}; nothing was changed")]
    Refused(String),
    /// Operations in flight and no `--force`.
    #[error("operations are in flight: {}; wait for them (banger operations) or pass --force; nothing was changed", .0.join("; "))]
    InFlight(Vec<String>),
    /// A failure after the swap; the previous files are back.
    #[error("{stage} failed after installing {version}: {reason}; the previous version was restored{restart}")]
    RolledBack {
        /// Which step failed.
        stage: &'static str,
        /// The version that was rolled back.
        version: String,
        /// Why.
        reason: String,
        /// The outcome of restarting the previous binaries.
        restart: String,
    },
    /// Restoring the previous files failed too.
    #[error("{stage} failed after installing {version}: {reason}; and restoring the previous files failed: {restore}")]
    RestoreFailed {
        /// Which step failed.
        stage: &'static str,
        /// The version being installed.
        version: String,
        /// Why.
        reason: String,
        /// Why the restore failed.
        restore: String,
    },
}

fn refused(e: impl std::fmt::Display) -> UpdateError {
    UpdateError::Refused(e.to_string())
}

/// Run an update of `install` (currently `current`) as `opts` says.
pub async fn run<H: Hooks>(
    trust: &Trust,
    install: &Install,
    current: &BuildInfo,
    opts: &Options,
    hooks: &mut H,
) -> Result<Outcome, UpdateError> {
    let cur = crate::manifest::parse_version(&current.version).map_err(refused)?;
    let fetcher = Fetcher::new(&trust.manifest_url).map_err(refused)?;
    hooks.step(&format!("fetching {}", trust.manifest_url));
    let bytes = fetcher
        .bytes(&trust.manifest_url, MAX_MANIFEST)
        .await
        .map_err(refused)?;
    let releases =
        crate::manifest::parse(&bytes, &trust.manifest_url, &current.target).map_err(refused)?;
    let latest = releases
        .iter()
        .filter(|r| r.version.pre.is_empty())
        .map(|r| r.version.clone())
        .max();
    let decision = crate::policy::decide(&cur, &releases, opts.to.as_ref()).map_err(refused)?;
    if opts.check_only {
        let available = match decision {
            Decision::Upgrade(r) | Decision::Downgrade(r) => Some(Box::new(r)),
            _ => None,
        };
        return Ok(Outcome::Check { latest, available });
    }
    let release = match decision {
        Decision::Upgrade(r) | Decision::Downgrade(r) => r,
        Decision::UpToDate { latest } => return Ok(Outcome::UpToDate { latest }),
        Decision::AlreadyInstalled => return Ok(Outcome::AlreadyInstalled),
    };

    let in_flight = hooks.operations_in_flight().await.map_err(refused)?;
    if !in_flight.is_empty() && !opts.force && !opts.dry_run {
        return Err(UpdateError::InFlight(in_flight));
    }

    let staging = crate::staging::Staging::create(&install.staging_parent()).map_err(refused)?;
    let (contents, plan) =
        fetch_and_stage(&fetcher, trust, install, &release, staging.path(), hooks).await?;
    let to = contents.build_info();
    if opts.dry_run {
        return Ok(Outcome::DryRun {
            to,
            plan,
            in_flight,
        });
    }
    // Something may have started while we downloaded.
    let in_flight = hooks.operations_in_flight().await.map_err(refused)?;
    if !in_flight.is_empty() && !opts.force {
        return Err(UpdateError::InFlight(in_flight));
    }
    hooks.before_swap().await.map_err(refused)?;

    hooks.step(&format!("installing {} file(s)", plan.len()));
    let swapped = crate::swap::swap(&plan).map_err(refused)?;
    let version = to.version.clone();
    let failure = async {
        hooks.step("restarting on the new binaries");
        hooks.restart().await.map_err(|e| ("restart", e))?;
        hooks.step("checking the new install");
        hooks.health(&to).await.map_err(|e| ("health check", e))?;
        hooks.finish(&to).await.map_err(|e| ("finishing", e))
    }
    .await
    .err();
    let Some((stage, reason)) = failure else {
        return Ok(Outcome::Updated {
            backups: swapped.backups(),
            to,
        });
    };
    hooks.step(&format!(
        "{stage} failed: {reason}; restoring the previous binaries"
    ));
    if let Err(e) = swapped.rollback() {
        return Err(UpdateError::RestoreFailed {
            stage,
            version,
            reason: reason.0,
            restore: e.to_string(),
        });
    }
    let restart = match hooks.restart_previous().await {
        Ok(()) => " and is running again".to_string(),
        Err(e) => format!(", but restarting it failed: {e}"),
    };
    Err(UpdateError::RolledBack {
        stage,
        version,
        reason: reason.0,
        restart,
    })
}

/// Step 2: everything that can be checked before anything changes.
async fn fetch_and_stage<H: Hooks>(
    fetcher: &Fetcher,
    trust: &Trust,
    install: &Install,
    release: &Release,
    dir: &Path,
    hooks: &mut H,
) -> Result<(Contents, Vec<Placement>), UpdateError> {
    hooks.step(&format!("verifying release {}", release.version));
    let sums_bytes = fetcher
        .exact(&release.sums.url, release.sums.size)
        .await
        .map_err(refused)?;
    let sig = fetcher
        .exact(&release.signature.url, release.signature.size)
        .await
        .map_err(refused)?;
    crate::signature::verify(&trust.key, &sums_bytes, &sig).map_err(refused)?;
    let sums = crate::sums::Sums::parse(&sums_bytes).map_err(refused)?;
    let name = release.tarball.file_name().to_string();
    let want = sums.get(&name).map_err(refused)?;

    hooks.step(&format!(
        "downloading {name} ({:.1} MiB)",
        release.tarball.size as f64 / (1 << 20) as f64
    ));
    let tarball = dir.join(&name);
    let got = fetcher
        .exact_to_file(&release.tarball.url, release.tarball.size, &tarball)
        .await
        .map_err(refused)?;
    if got != want {
        return Err(refused(format!(
            "{name} has sha256 {}, but the signed SHA256SUMS says {}: the download is corrupt or was altered",
            crate::sums::hex(&got),
            crate::sums::hex(&want)
        )));
    }

    let tree = dir.join("tree");
    std::fs::create_dir(&tree).map_err(|e| refused(format!("creating {}: {e}", tree.display())))?;
    let (contents, files) = crate::unpack::unpack(
        &tarball,
        &release.version.to_string(),
        &release.target,
        &tree,
    )
    .map_err(refused)?;
    let _ = std::fs::remove_file(&tarball);

    let staged = |p: &str| tree.join(p);
    let expected = contents.build_info();
    hooks.step("checking the staged binaries");
    check_identity(&staged("bin/banger"), &staged("bin/bangerd"), &expected).await?;
    let mut c = hooks.check_migrations_command(&staged("bin/bangerd"));
    let out = run_staged(&mut c, "bangerd --check-migrations").await?;
    if !out.status.success() {
        return Err(refused(format!(
            "the new bangerd refuses this installation's database: {}",
            tail(&out.stderr)
        )));
    }

    let mut plan: Vec<(u8, Placement)> = files
        .into_iter()
        .filter_map(|f| {
            let dest = install.dest(&f.kind)?;
            let order = match &f.kind {
                FileKind::Binary(n) if n == "banger" => 4,
                FileKind::Binary(n) if n == "bangerd" => 3,
                FileKind::Binary(_) => 2,
                FileKind::Agent => 1,
                FileKind::ManPage(_) | FileKind::Completion(_) => 0,
            };
            Some((
                order,
                Placement {
                    staged: f.staged,
                    dest,
                },
            ))
        })
        .collect();
    plan.sort_by_key(|(o, p)| (*o, p.dest.clone()));
    Ok((contents, plan.into_iter().map(|(_, p)| p).collect()))
}

async fn run_staged(
    c: &mut tokio::process::Command,
    what: &str,
) -> Result<std::process::Output, UpdateError> {
    c.stdin(std::process::Stdio::null()).kill_on_drop(true);
    match tokio::time::timeout(STAGED_TIMEOUT, c.output()).await {
        Ok(Ok(o)) => Ok(o),
        Ok(Err(e)) => Err(refused(format!("running the staged {what}: {e}"))),
        Err(_) => Err(refused(format!(
            "the staged {what} did not finish within {} s",
            STAGED_TIMEOUT.as_secs()
        ))),
    }
}

fn tail(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(b);
    let lines: Vec<&str> = s.lines().filter(|l| !l.trim().is_empty()).collect();
    let t = lines[lines.len().saturating_sub(3)..].join(" | ");
    t.chars().filter(|c| !c.is_control()).take(500).collect()
}

/// The staged binaries must be the build the release claims: the install record and
/// the report are written from this identity, so it has to be true.
async fn check_identity(
    banger: &Path,
    bangerd: &Path,
    want: &BuildInfo,
) -> Result<(), UpdateError> {
    let mut c = tokio::process::Command::new(banger);
    c.args(["version", "--json"]);
    let out = run_staged(&mut c, "banger version --json").await?;
    let got: Option<BuildInfo> = serde_json::from_slice(&out.stdout).ok();
    if !out.status.success() || got.as_ref() != Some(want) {
        return Err(refused(format!(
            "the release's banger reports {}, its manifest says {} (commit {}): refusing a mislabelled release",
            got.map(|g| format!("{} (commit {})", g.version, g.commit))
                .unwrap_or_else(|| format!("nothing usable ({})", tail(&out.stderr))),
            want.version,
            want.commit
        )));
    }
    let mut c = tokio::process::Command::new(bangerd);
    c.arg("--version");
    let out = run_staged(&mut c, "bangerd --version").await?;
    let line = String::from_utf8_lossy(&out.stdout);
    let needle = format!(" {} (commit {},", want.version, want.commit);
    if !out.status.success() || !line.contains(&needle) {
        return Err(refused(format!(
            "the release's bangerd reports {:?}, expected version {} commit {}: refusing a mislabelled release",
            tail(&out.stdout),
            want.version,
            want.commit
        )));
    }
    Ok(())
}
