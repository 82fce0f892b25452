//! The `banger vm …` command line (clap definitions only; the handlers are in the
//! sibling modules).

use crate::complete;
use banger_model::{parse_size_mib, InitMode, PortForward, VmName, VmmChoice};
use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Args, Subcommand};
use std::path::PathBuf;

/// Image, sizes and backend of a new VM (`vm run`, `vm create`).
#[derive(Debug, Clone, Args)]
pub struct Sizes {
    /// Image to boot [default: debian-bookworm, built on first use].
    #[arg(long, add = complete::images())]
    pub image: Option<String>,
    /// Virtual CPUs, 1 to 64 [default: 2].
    #[arg(long, value_parser = parse_cpus)]
    pub cpus: Option<u32>,
    /// Guest memory with a unit, e.g. 512M, 1.5G [default: 1G].
    #[arg(long, value_parser = parse_memory)]
    pub memory: Option<u64>,
    /// Size of the work disk mounted at /root, with a unit, e.g. 8G, 1T [default: 8G].
    #[arg(long, value_parser = parse_disk)]
    pub disk: Option<u64>,
    /// VMM backend: auto (Firecracker when installed and KVM works, else QEMU), qemu,
    /// or firecracker [default: BANGER_VMM, else auto].
    #[arg(long, value_parser = vmm_parser())]
    pub vmm: Option<VmmChoice>,
    /// The guest's init: agent (banger's agent stays PID 1: boots in seconds, starts
    /// the image's sshd if it has one, no other services) or systemd (the image's
    /// services, timers and systemctl; slower) [default: agent].
    #[arg(long)]
    pub init: Option<InitMode>,
    /// Publish a guest TCP port on the host: [HOST_IP:]HOST_PORT:GUEST_PORT, on
    /// 127.0.0.1 unless HOST_IP is given (repeatable).
    #[arg(short = 'p', long = "publish", value_name = "[HOST_IP:]HOST:GUEST")]
    pub publish: Vec<PortForward>,
}

/// `--vmm`: its values are known to clap, so shells complete them.
fn vmm_parser() -> impl TypedValueParser<Value = VmmChoice> {
    PossibleValuesParser::new(["auto", "qemu", "firecracker"]).try_map(|s| s.parse::<VmmChoice>())
}

/// Sizes and CPU counts are checked here with the same rule (and message) the daemon
/// applies, so a mistake is refused before anything is sent.
pub(crate) fn parse_cpus(s: &str) -> Result<u32, String> {
    let n: u32 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a whole number of CPUs"))?;
    banger_model::check_resources(Some(n), None, None).map_err(|e| e.to_string())?;
    Ok(n)
}

pub(crate) fn parse_memory(s: &str) -> Result<u64, String> {
    let m = parse_size_mib(s).map_err(|e| e.to_string())?;
    banger_model::check_resources(None, Some(m), None).map_err(|e| e.to_string())?;
    Ok(m)
}

pub(crate) fn parse_disk(s: &str) -> Result<u64, String> {
    let d = parse_size_mib(s).map_err(|e| e.to_string())?;
    banger_model::check_resources(None, None, Some(d)).map_err(|e| e.to_string())?;
    Ok(d)
}

/// `--run-id`: usable in a VM name and a branch name alike.
fn parse_run_id(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.len() <= 20
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-');
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!(
            "{s:?}: a run id is 1 to 20 lower-case letters, digits and inner '-'"
        ))
    }
}

/// `vm list` / `banger ps`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Print names only, one per line.
    #[arg(short, long)]
    pub quiet: bool,
}

/// `vm run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Name the VM (default: generated).
    #[arg(long)]
    pub name: Option<VmName>,
    /// Keep the VM after the command exits (see banger vm list).
    #[arg(long)]
    pub keep: bool,
    /// Print how long each start stage took.
    #[arg(long)]
    pub timings: bool,
    #[command(flatten)]
    pub sizes: Sizes,
    /// A git repository to ship in first; the command then runs in its copy
    /// (/root/<repo-name>). Without it the command runs in /root.
    pub path: Option<PathBuf>,
    /// Use OpenSSH (the image's sshd) instead of banger's guest agent.
    #[arg(long)]
    pub via_ssh: bool,
    /// Collect the command's stdout and stderr (the first MiB of each) into the
    /// --json result instead of passing them through (they go to stderr in JSON
    /// mode otherwise).
    #[arg(long, conflicts_with = "via_ssh")]
    pub capture: bool,
    /// Run the command in N fresh VMs at once, each with its own copy of the
    /// repository at PATH; each attempt's changes become the branch
    /// banger/<run-id>/<i> in that repository (work tree, index and HEAD untouched).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=16), conflicts_with_all = ["via_ssh", "name", "each"], requires = "path")]
    pub parallel: Option<u32>,
    /// Name the parallel run (branches banger/<ID>/<i>, VMs run-<ID>-<i>): lower-case
    /// letters, digits and '-', up to 20 [default: random].
    #[arg(long, value_name = "ID", value_parser = parse_run_id)]
    pub run_id: Option<String>,
    /// Like --parallel, one attempt per shell command given: --each 'make a' 'make b'.
    #[arg(long, num_args = 1.., value_name = "CMD", conflicts_with_all = ["via_ssh", "name"], requires = "path")]
    pub each: Vec<String>,
    /// Command to run in the guest; an interactive shell when omitted.
    #[arg(last = true)]
    pub command: Vec<String>,
}

/// `banger vm …`.
#[derive(Debug, Subcommand)]
pub enum VmCmd {
    /// Boot a fresh VM, run a command in it (or open a shell), then delete it.
    ///
    /// Examples:
    ///   banger vm run ./myrepo -- make test
    ///   banger vm run -- uname -a
    ///   banger vm run -p 8000:8000 --keep --name web -- python3 -m http.server 8000
    ///   banger vm run --json --capture -- make test
    ///   banger vm run ./myrepo --parallel 3 -- ./try-a-fix.sh
    ///   banger vm run ./myrepo --each 'make CC=gcc' 'make CC=clang'
    ///
    /// Exit status: the command's; 125 when banger itself failed (including a
    /// refused command line). --parallel/--each: 0 when every command exited 0, 1 when
    /// one did not, 125 when banger failed for one.
    #[command(verbatim_doc_comment)]
    Run(RunArgs),
    /// Create and boot a long-lived VM, optionally shipping a repository into it.
    ///
    /// Examples:
    ///   banger vm create dev --cpus 4 --memory 4G
    ///   banger vm create dev ./myrepo
    #[command(verbatim_doc_comment)]
    Create {
        /// Name, also the guest's hostname (lower-case letters, digits, '-').
        name: VmName,
        /// A git repository to ship in once it runs (as vm workspace prepare does).
        path: Option<PathBuf>,
        /// Print how long each start stage took.
        #[arg(long)]
        timings: bool,
        /// Reserve the VM (name, address) without booting it; start it later.
        #[arg(long, conflicts_with = "path")]
        no_start: bool,
        #[command(flatten)]
        sizes: Sizes,
    },
    /// Boot stopped VMs (their disks, and so their files, are kept).
    ///
    /// Example:
    ///   banger vm start dev other
    #[command(verbatim_doc_comment)]
    Start {
        /// VM names.
        #[arg(required = true, add = complete::vms())]
        names: Vec<String>,
        /// Print how long each start stage took.
        #[arg(long)]
        timings: bool,
    },
    /// Stop VMs gracefully: flush their disks and power them off (forced after 30 s).
    ///
    /// Example:
    ///   banger vm stop dev      (see also: kill, which does not wait)
    #[command(verbatim_doc_comment)]
    Stop {
        /// VM names.
        #[arg(required = true, add = complete::vms())]
        names: Vec<String>,
    },
    /// Stop then start VMs (a fresh boot; files are kept).
    ///
    /// Example:
    ///   banger vm restart dev
    #[command(verbatim_doc_comment)]
    Restart {
        /// VM names.
        #[arg(required = true, add = complete::vms())]
        names: Vec<String>,
    },
    /// Force VMs off now, like pulling the plug. Unflushed guest writes may be lost.
    ///
    /// Example:
    ///   banger vm kill dev      (prefer stop; kill is for hung guests)
    #[command(verbatim_doc_comment)]
    Kill {
        /// VM names.
        #[arg(required = true, add = complete::vms())]
        names: Vec<String>,
    },
    /// Delete every VM that is not running (stopped or failed). Irreversible.
    ///
    /// Example:
    ///   banger vm prune -f
    #[command(verbatim_doc_comment)]
    Prune {
        /// Do it without asking.
        #[arg(short, long)]
        force: bool,
    },
    /// Change a stopped VM's size. The work disk can only grow.
    ///
    /// Example:
    ///   banger vm set dev --cpus 4 --memory 4G --disk 32G
    #[command(verbatim_doc_comment)]
    Set {
        /// VM name.
        #[arg(add = complete::vms())]
        name: String,
        /// Virtual CPUs, 1 to 64.
        #[arg(long, value_parser = parse_cpus)]
        cpus: Option<u32>,
        /// Guest memory with a unit, e.g. 4G.
        #[arg(long, value_parser = parse_memory)]
        memory: Option<u64>,
        /// Work disk size with a unit (grow only), e.g. 32G.
        #[arg(long, value_parser = parse_disk)]
        disk: Option<u64>,
    },
    /// Wait until a VM is running or stopped, a TCP port listens in it, or a file
    /// exists in it (instead of polling). Exits 8 on timeout.
    ///
    /// Examples:
    ///   banger vm wait dev --for running
    ///   banger vm wait web --for port:8000 --timeout 2m
    ///   banger vm wait job --for file:/root/done
    #[command(verbatim_doc_comment)]
    Wait {
        /// VM name.
        #[arg(add = complete::vms())]
        name: String,
        /// running, stopped, port:N (listening in the guest) or file:PATH (exists in
        /// the guest).
        #[arg(long = "for", value_name = "CONDITION")]
        condition: super::wait::Condition,
        /// Give up after this long (30s, 5m, 1h).
        #[arg(long, default_value = "5m", value_parser = super::wait::parse_duration)]
        timeout: std::time::Duration,
    },
    /// Show a VM's console (kernel and boot messages).
    ///
    /// Examples:
    ///   banger vm logs dev -f
    ///   banger vm logs dev -n 20
    ///   banger vm logs dev --since 5m
    #[command(verbatim_doc_comment)]
    Logs {
        /// VM name.
        #[arg(add = complete::vms())]
        name: String,
        /// Keep printing new output until interrupted.
        #[arg(short, long)]
        follow: bool,
        /// Print only the last N lines.
        #[arg(short = 'n', long = "lines", value_name = "N")]
        lines: Option<usize>,
        /// Only what was printed since a time: a duration ago (30s, 5m, 2h, 1d) or
        /// an RFC 3339 time (2026-12-03T06:00:00Z). Precise to a few seconds.
        #[arg(long, value_name = "WHEN", value_parser = crate::vm::console::parse_since)]
        since: Option<i64>,
    },
    /// TCP ports listening in a VM (reach them from the host at the VM's address),
    /// and the host ports published to it.
    ///
    /// Example:
    ///   banger vm ports dev
    #[command(verbatim_doc_comment)]
    Ports {
        /// VM name.
        #[arg(add = complete::vms())]
        name: String,
    },
    /// Publish a guest TCP port on the host (relayed while the VM runs), or withdraw
    /// one with --remove.
    ///
    /// Examples:
    ///   banger vm port-forward dev 8000:8000      (then: curl http://127.0.0.1:8000)
    ///   banger vm port-forward dev 0.0.0.0:8080:80
    ///   banger vm port-forward dev 8000:8000 --remove
    #[command(verbatim_doc_comment)]
    PortForward {
        /// VM name.
        #[arg(add = complete::vms())]
        name: String,
        /// [HOST_IP:]HOST_PORT:GUEST_PORT (host address 127.0.0.1 unless given).
        #[arg(value_name = "[HOST_IP:]HOST:GUEST")]
        mapping: PortForward,
        /// Withdraw the mapping instead.
        #[arg(long)]
        remove: bool,
    },
    /// CPU, memory and disk use of a VM (measured on the host).
    ///
    /// Example:
    ///   banger vm stats dev
    #[command(verbatim_doc_comment)]
    Stats {
        /// VM name.
        #[arg(add = complete::vms())]
        name: String,
    },
    /// List VMs with their state, address, size and age.
    ///
    /// Examples:
    ///   banger vm list
    ///   banger ps -q
    ///   banger vm ls --json
    #[command(visible_aliases = ["ls", "ps"], verbatim_doc_comment)]
    List(ListArgs),
    /// Show one VM, including its uptime and why it failed if it is in the error state.
    ///
    /// Example:
    ///   banger vm show dev
    #[command(verbatim_doc_comment)]
    Show {
        /// VM name.
        #[arg(add = complete::vms())]
        name: String,
    },
    /// Run a command in a VM, in its workspace (the repository shipped into it) when
    /// it has one, else in /root. Several may run at once.
    ///
    /// Examples:
    ///   banger vm exec dev -- cargo test
    ///   banger vm exec dev -- uname -a
    ///
    /// Warns when the host repository moved since it was shipped.
    ///
    /// Exit status: the command's; 255 when the connection failed.
    #[command(verbatim_doc_comment)]
    Exec {
        /// VM name.
        #[arg(add = complete::vms())]
        name: String,
        /// Re-ship the repository first if its HEAD moved since the last prepare.
        #[arg(long)]
        auto_prepare: bool,
        /// Use OpenSSH (the image's sshd) instead of banger's guest agent.
        #[arg(long)]
        via_ssh: bool,
        /// Command to run in the workspace; a shell there when omitted.
        #[arg(last = true)]
        command: Vec<String>,
    },
    /// Copy files or directories between the host and a running VM (one side is
    /// NAME:PATH; a relative guest path is under /root). Modes are kept.
    ///
    /// Examples:
    ///   banger vm cp ./build dev:/root/
    ///   banger vm cp dev:/root/out/report.html .
    ///   banger vm cp dev:/var/log ./guest-logs
    #[command(verbatim_doc_comment)]
    Cp {
        /// What to copy: a host path or NAME:PATH.
        src: String,
        /// Where to: a host path or NAME:PATH (into it when it is a directory).
        dest: String,
    },
    /// Ship a repository into a VM and bring changes back.
    #[command(subcommand)]
    Workspace(WorkspaceCmd),
    /// Open a shell in a VM, or run a command there (through banger's guest agent;
    /// --via-ssh for OpenSSH).
    ///
    /// Example:
    ///   banger vm ssh dev -- hostname
    ///
    /// Exit status: the command's (ssh's 255 when the connection failed).
    #[command(verbatim_doc_comment)]
    Ssh {
        /// VM name.
        #[arg(add = complete::vms())]
        name: String,
        /// Use OpenSSH (the image's sshd) instead of banger's guest agent.
        #[arg(long)]
        via_ssh: bool,
        /// Command to run; an interactive shell when omitted.
        #[arg(last = true)]
        command: Vec<String>,
    },
    /// Show a VM's pinned ssh host key and the one its guest agent reports (a channel
    /// no other guest can reach); --accept pins the reported key, after you changed
    /// it in the guest on purpose. `ssh NAME.vm` refuses any other key.
    ///
    /// Example:
    ///   banger vm host-key dev --accept
    #[command(verbatim_doc_comment)]
    HostKey {
        /// VM name.
        #[arg(add = complete::vms())]
        name: String,
        /// Pin the key the guest reports now (the VM must be running).
        #[arg(long)]
        accept: bool,
    },
    /// Delete VMs and their disks. Irreversible. A running VM is refused unless
    /// -f (on a terminal you are asked).
    ///
    /// Example:
    ///   banger vm delete dev      (see also: stop, which keeps the disks)
    #[command(visible_alias = "rm", verbatim_doc_comment)]
    Delete {
        /// VM names.
        #[arg(required = true, add = complete::vms())]
        names: Vec<String>,
        /// Delete running VMs too (they are killed: no flush, no clean poweroff).
        #[arg(short, long)]
        force: bool,
    },
}

/// `banger vm workspace …`.
#[derive(Debug, Subcommand)]
pub enum WorkspaceCmd {
    /// Ship a git repository (tracked + untracked-not-ignored files and .git) into a
    /// running VM, replacing any earlier copy there.
    ///
    /// Example:
    ///   banger vm workspace prepare dev ./myrepo
    #[command(verbatim_doc_comment)]
    Prepare {
        /// VM name.
        #[arg(add = complete::vms())]
        name: String,
        /// The repository (or any directory inside it).
        #[arg(default_value = ".")]
        path: PathBuf,
        /// Where it goes in the guest [default: /root/<repo-name>]; must be under /root.
        #[arg(long)]
        guest_path: Option<String>,
        /// Ship over OpenSSH instead of banger's guest agent.
        #[arg(long)]
        via_ssh: bool,
    },
    /// Print (or write) a binary-safe patch of everything changed in the VM's copy,
    /// against the commit that was shipped: `git apply` reproduces the guest's tree.
    ///
    /// Example:
    ///   banger vm workspace export dev --output fix.patch
    #[command(verbatim_doc_comment)]
    Export {
        /// VM name.
        #[arg(add = complete::vms())]
        name: String,
        /// Write the patch here instead of to stdout.
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// Export the commits made in the guest instead, as an mbox for `git am`.
        #[arg(long)]
        commits: bool,
        /// Export over OpenSSH instead of banger's guest agent.
        #[arg(long)]
        via_ssh: bool,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_use_the_one_size_check() {
        assert_eq!(parse_memory("1.5G"), Ok(1536));
        assert!(parse_memory("1024").unwrap_err().contains("1024M"));
        assert_eq!(
            parse_memory("64M").unwrap_err(),
            "--memory 64 MiB is out of range (128 MiB to 1 TiB)"
        );
        assert_eq!(
            parse_cpus("0").unwrap_err(),
            "--cpus 0 is out of range (1 to 64)"
        );
        assert_eq!(parse_disk("1TB"), Ok(1024 * 1024));
    }
}
