//! `banger system install` and `uninstall`, and the pieces `banger update` reuses
//! ([`refresh_units`], [`crate::InstallRecord`]).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use banger_helper::HelperConfig;

use crate::files::{install_bytes, install_file, remove_dir_if_empty, remove_file, remove_tree};
use crate::layout::{SystemLayout, BINARIES, DAEMON_UNIT, HELPER_UNIT};
use crate::{systemd, units, InstallRecord, Owner, SystemError};

/// Files the CLI generates from its own command tree.
#[derive(Debug, Clone, Default)]
pub struct Artifacts {
    /// Man pages: file name (`banger.1`, `banger-vm.1`...) and content.
    pub man_pages: Vec<(String, Vec<u8>)>,
    /// bash completion registration.
    pub bash: Vec<u8>,
    /// zsh completion registration.
    pub zsh: Vec<u8>,
    /// fish completion registration.
    pub fish: Vec<u8>,
}

/// Where the files to install come from.
#[derive(Debug, Clone)]
pub struct Sources {
    /// Directory holding `banger`, `bangerd` and `banger-helper`.
    pub bin_dir: PathBuf,
    /// The static guest agent.
    pub agent: PathBuf,
}

impl Sources {
    /// The binaries beside the running `banger`, and the agent beside them
    /// (`target/release/` after `make build`) or at `BANGER_AGENT`.
    pub fn beside_current_exe() -> Result<Sources, SystemError> {
        let exe = std::env::current_exe().map_err(crate::error::io("find", Path::new("banger")))?;
        let bin_dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
        let agent = std::env::var_os("BANGER_AGENT")
            .map(PathBuf::from)
            .unwrap_or_else(|| bin_dir.join("banger-agent"));
        Ok(Sources { bin_dir, agent })
    }

    /// Refuse before anything is written if a file is missing.
    pub fn check(&self) -> Result<(), SystemError> {
        for b in BINARIES {
            let p = self.bin_dir.join(b);
            if !p.is_file() {
                return Err(SystemError::MissingBinary(p));
            }
        }
        if !self.agent.is_file() {
            return Err(SystemError::MissingBinary(self.agent.clone()));
        }
        Ok(())
    }
}

/// What an install did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallOutcome {
    /// Files written.
    pub files: Vec<PathBuf>,
    /// Whether units were written and started (false where systemd is not PID 1).
    pub units: bool,
}

/// Copy the binaries, the agent, man pages and completions into place.
pub fn install_files(
    l: &SystemLayout,
    src: &Sources,
    art: &Artifacts,
) -> Result<Vec<PathBuf>, SystemError> {
    src.check()?;
    let mut written = vec![];
    for b in BINARIES {
        let dest = l.binary(b);
        install_file(&src.bin_dir.join(b), &dest, 0o755)?;
        written.push(dest);
    }
    install_file(&src.agent, &l.agent(), 0o755)?;
    written.push(l.agent());
    for (name, bytes) in &art.man_pages {
        let dest = l.man_dir().join(name);
        install_bytes(bytes, &dest, 0o644)?;
        written.push(dest);
    }
    for (bytes, dest) in [
        (&art.bash, l.bash_completion()),
        (&art.zsh, l.zsh_completion()),
        (&art.fish, l.fish_completion()),
    ] {
        if !bytes.is_empty() {
            install_bytes(bytes, &dest, 0o644)?;
            written.push(dest);
        }
    }
    Ok(written)
}

/// The helper config for `owner`: the existing one with its owner changed (bridge,
/// subnet and Firecracker settings kept), or a new one with this layout's paths.
pub fn helper_config_for(l: &SystemLayout, owner: &Owner) -> HelperConfig {
    let path = l.helper_config();
    let mut cfg = std::fs::read_to_string(&path)
        .ok()
        .and_then(|t| HelperConfig::parse(&t).ok())
        .unwrap_or_else(|| {
            let mut c = HelperConfig::for_owner(owner.uid, owner.gid);
            c.socket = l.helper_socket();
            c.runtime_dir = l.helper_runtime_dir();
            c.owner_state_dir = l.state_dir();
            c.jail_root = l.jail_root();
            // Firecracker's release binaries, if an administrator put them here.
            let fc = l.bin_dir().join("firecracker");
            let jailer = l.bin_dir().join("jailer");
            if fc.is_file() && jailer.is_file() {
                c.firecracker = Some(fc);
                c.jailer = Some(jailer);
            }
            c
        });
    cfg.owner_uid = owner.uid;
    cfg.owner_gid = owner.gid;
    cfg
}

/// Write the helper config (root-owned 0644 in a 0755 directory).
pub fn write_helper_config(l: &SystemLayout, cfg: &HelperConfig) -> Result<(), SystemError> {
    check_helper_config(l, cfg)?;
    install_bytes(cfg.to_toml().as_bytes(), &l.helper_config(), 0o644)
}

/// Whether the helper would accept `cfg` (the owner, the subnet, the paths).
fn check_helper_config(l: &SystemLayout, cfg: &HelperConfig) -> Result<(), SystemError> {
    let path = l.helper_config();
    cfg.check(&path).map_err(|e| SystemError::BadFile {
        path: path.clone(),
        reason: e.to_string(),
    })
}

/// Render both units for `owner` and write those that differ from what is on disk;
/// `systemctl daemon-reload` when something changed and systemd runs. Returns
/// whether anything changed. Public for `banger update`, which swaps binaries and
/// must refresh units too (an old install's units would otherwise stay as they were).
pub fn write_units(l: &SystemLayout, owner: &str, jailer: bool) -> Result<bool, SystemError> {
    let mut changed = false;
    for (name, text) in [
        (HELPER_UNIT, units::helper_unit(l, jailer)),
        (DAEMON_UNIT, units::daemon_unit(l, owner)),
    ] {
        let path = l.unit(name);
        if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
            install_bytes(text.as_bytes(), &path, 0o644)?;
            changed = true;
        }
    }
    if changed && systemd::is_pid1() && l.root == Path::new("/") {
        systemd::systemctl(&["daemon-reload"])?;
    }
    Ok(changed)
}

/// Re-render the units of an existing install from its record (owner) and helper
/// config (jailer or not); see [`write_units`]. For `banger update`.
pub fn refresh_units(l: &SystemLayout) -> Result<bool, SystemError> {
    let record = InstallRecord::read(&l.install_record())?.ok_or_else(|| SystemError::BadFile {
        path: l.install_record(),
        reason: "missing: banger is not installed as a system service".into(),
    })?;
    let jailer = std::fs::read_to_string(l.helper_config())
        .ok()
        .and_then(|t| HelperConfig::parse(&t).ok())
        .is_some_and(|c| c.jailer.is_some());
    write_units(l, &record.owner, jailer)
}

/// Ask the daemon at `socket` for a ping until it answers or `timeout` passes.
pub async fn wait_for_daemon(
    socket: &Path,
    timeout: Duration,
) -> Result<banger_rpc::PingResult, SystemError> {
    let t = Instant::now();
    loop {
        let last = match banger_rpc::Client::connect(socket).await {
            Ok(mut c) => match c
                .call::<banger_rpc::Ping>(&banger_rpc::NoParams {}, |_| {})
                .await
            {
                Ok(p) => return Ok(p),
                Err(e) => e.to_string(),
            },
            Err(e) => e.to_string(),
        };
        if t.elapsed() > timeout {
            return Err(SystemError::DaemonNotAnswering {
                socket: socket.to_path_buf(),
                seconds: timeout.as_secs(),
                reason: last,
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The whole install: files, helper config, install record, and (where systemd is PID
/// 1) units started and the daemon answering. `version` is the CLI's.
pub async fn install(
    l: &SystemLayout,
    owner: &Owner,
    src: &Sources,
    art: &Artifacts,
    version: &str,
) -> Result<InstallOutcome, SystemError> {
    // The helper config is checked first (an owner it refuses, such as nobody, fails
    // here) so that a refused install has copied nothing.
    let cfg = helper_config_for(l, owner);
    check_helper_config(l, &cfg)?;
    let mut files = install_files(l, src, art)?;
    write_helper_config(l, &cfg)?;
    files.push(l.helper_config());
    InstallRecord::for_this_build(version, &owner.name).write(&l.install_record())?;
    files.push(l.install_record());
    if !(systemd::is_pid1() && l.root == Path::new("/")) {
        return Ok(InstallOutcome {
            files,
            units: false,
        });
    }
    write_units(l, &owner.name, cfg.jailer.is_some())?;
    files.push(l.unit(HELPER_UNIT));
    files.push(l.unit(DAEMON_UNIT));
    systemd::systemctl(&["enable", HELPER_UNIT, DAEMON_UNIT])?;
    restart(l).await?;
    Ok(InstallOutcome { files, units: true })
}

/// Restart the helper, then the daemon, and wait until the daemon answers. Guests keep
/// running (`KillMode=process`).
pub async fn restart(l: &SystemLayout) -> Result<banger_rpc::PingResult, SystemError> {
    if !systemd::is_pid1() {
        return Err(SystemError::NoSystemd("system restart"));
    }
    systemd::systemctl(&["restart", HELPER_UNIT])?;
    systemd::systemctl(&["restart", DAEMON_UNIT])?;
    wait_for_daemon(&l.daemon_socket(), Duration::from_secs(30)).await
}

/// Remove what an install put in place (units stopped and disabled first, where
/// systemd runs). With `purge`, also the state, cache and runtime directories (every
/// image and VM disk). Running guests are not stopped; their taps stay until the host
/// reboots or `ip link del`. Returns what was removed.
pub fn uninstall(l: &SystemLayout, purge: bool) -> Result<Vec<PathBuf>, SystemError> {
    let mut removed = vec![];
    if systemd::is_pid1() && l.root == Path::new("/") {
        for unit in [DAEMON_UNIT, HELPER_UNIT] {
            if l.unit(unit).exists() {
                systemd::systemctl(&["disable", "--now", unit])?;
            }
        }
    }
    let mut files: Vec<PathBuf> = vec![l.unit(DAEMON_UNIT), l.unit(HELPER_UNIT)];
    files.extend(BINARIES.iter().map(|b| l.binary(b)));
    files.extend([
        l.agent(),
        l.bash_completion(),
        l.zsh_completion(),
        l.fish_completion(),
        l.helper_config(),
        l.install_record(),
    ]);
    if let Ok(dir) = std::fs::read_dir(l.man_dir()) {
        for e in dir.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if n == "banger.1" || (n.starts_with("banger-") && n.ends_with(".1")) {
                files.push(e.path());
            }
        }
    }
    for f in files {
        if remove_file(&f)? {
            removed.push(f);
        }
    }
    if systemd::is_pid1() && l.root == Path::new("/") {
        systemd::systemctl(&["daemon-reload"])?;
    }
    for d in [l.agent().parent().map(Path::to_path_buf), Some(l.etc_dir())]
        .into_iter()
        .flatten()
    {
        remove_dir_if_empty(&d);
    }
    if purge {
        for d in [
            l.state_dir(),
            l.cache_dir(),
            l.runtime_dir(),
            l.helper_runtime_dir(),
            l.jail_root(),
        ] {
            if remove_tree(&d)? {
                removed.push(d);
            }
        }
    }
    Ok(removed)
}
