//! The `banger vm …` command line (clap definitions only; the handlers are in the
//! sibling modules).

use crate::complete;
use banger_model::{parse_size_mib, InitMode, VmName, VmmChoice};
use clap::{Args, Subcommand};
use std::path::PathBuf;

/// Image, sizes and backend of a new VM (`vm run`, `vm create`).
#[derive(Debug, Args)]
pub struct Sizes {
    /// Image to boot [default: debian-bookworm, built on first use].
    #[arg(long, add = complete::images())]
    pub image: Option<String>,
    /// Virtual CPUs [default: 2].
    #[arg(long)]
    pub cpus: Option<u32>,
    /// Guest memory, e.g. 1G or 512M [default: 1G].
    #[arg(long, value_parser = parse_size)]
    pub memory: Option<u64>,
    /// Size of the work disk mounted at /root, e.g. 8G [default: 8G].
    #[arg(long, value_parser = parse_size)]
    pub disk: Option<u64>,
    /// VMM backend: auto (Firecracker when installed and KVM works, else QEMU), qemu,
    /// or firecracker [default: BANGER_VMM, else auto].
    #[arg(long)]
    pub vmm: Option<VmmChoice>,
    /// The guest's init: agent (banger's agent stays PID 1: boots in seconds, starts
    /// the image's sshd if it has one, no other services) or systemd (the image's
    /// services, timers and systemctl; slower) [default: agent].
    #[arg(long)]
    pub init: Option<InitMode>,
}

fn parse_size(s: &str) -> Result<u64, String> {
    parse_size_mib(s).map_err(|e| e.to_string())
}

/// `banger vm …`.
#[derive(Debug, Subcommand)]
pub enum VmCmd {
    /// Boot a fresh VM, run a command in it (or open a shell), then delete it.
    ///
    /// Example: banger vm run ./myrepo -- make test   (ships the repo, runs in it)
    /// Example: banger vm run -- uname -a
    /// Exit status: the command's; 125 when banger itself failed.
    Run {
        /// Name the VM (default: generated).
        #[arg(long)]
        name: Option<VmName>,
        /// Keep the VM after the command exits (see banger vm list).
        #[arg(long)]
        keep: bool,
        /// Print how long each start stage took.
        #[arg(long)]
        timings: bool,
        #[command(flatten)]
        sizes: Sizes,
        /// A git repository to ship in first; the command then runs in its copy
        /// (/root/<repo-name>). Without it the command runs in /root.
        path: Option<PathBuf>,
        /// Use OpenSSH (the image's sshd) instead of banger's guest agent.
        #[arg(long)]
        via_ssh: bool,
        /// Command to run in the guest; an interactive shell when omitted.
        #[arg(last = true)]
        command: Vec<String>,
    },
    /// Create and boot a long-lived VM.
    ///
    /// Example: banger vm create dev --cpus 4 --memory 4G
    Create {
        /// Name, also the guest's hostname (lower-case letters, digits, '-').
        name: VmName,
        /// Print how long each start stage took.
        #[arg(long)]
        timings: bool,
        /// Reserve the VM (name, address) without booting it; start it later.
        #[arg(long)]
        no_start: bool,
        #[command(flatten)]
        sizes: Sizes,
    },
    /// Boot a stopped VM (its disks, and so its files, are kept).
    ///
    /// Example: banger vm start dev
    Start {
        /// VM name.
        #[arg(add = complete::vms())]
        name: String,
        /// Print how long each start stage took.
        #[arg(long)]
        timings: bool,
    },
    /// Stop a VM gracefully: flush its disks and power it off (forced after 30 s).
    ///
    /// Example: banger vm stop dev      (see also: kill, which does not wait)
    Stop {
        /// VM name.
        #[arg(add = complete::vms())]
        name: String,
    },
    /// Stop then start a VM (a fresh boot; files are kept).
    ///
    /// Example: banger vm restart dev
    Restart {
        /// VM name.
        #[arg(add = complete::vms())]
        name: String,
    },
    /// Force a VM off now, like pulling the plug. Unflushed guest writes may be lost.
    ///
    /// Example: banger vm kill dev      (prefer stop; kill is for hung guests)
    Kill {
        /// VM name.
        #[arg(add = complete::vms())]
        name: String,
    },
    /// Delete every VM that is not running (stopped or failed). Irreversible.
    ///
    /// Example: banger vm prune -f
    Prune {
        /// Do it without asking.
        #[arg(short, long)]
        force: bool,
    },
    /// Change a stopped VM's size. The work disk can only grow.
    ///
    /// Example: banger vm set dev --cpus 4 --memory 4G --disk 32G
    Set {
        /// VM name.
        #[arg(add = complete::vms())]
        name: String,
        /// Virtual CPUs.
        #[arg(long)]
        cpus: Option<u32>,
        /// Guest memory, e.g. 4G.
        #[arg(long, value_parser = parse_size)]
        memory: Option<u64>,
        /// Work disk size (grow only), e.g. 32G.
        #[arg(long, value_parser = parse_size)]
        disk: Option<u64>,
    },
    /// Show a VM's console (kernel and boot messages).
    ///
    /// Example: banger vm logs dev -f
    Logs {
        /// VM name.
        #[arg(add = complete::vms())]
        name: String,
        /// Keep printing new output until interrupted.
        #[arg(short, long)]
        follow: bool,
    },
    /// TCP ports listening in a VM (reach them from the host at the VM's address).
    ///
    /// Example: banger vm ports dev
    Ports {
        /// VM name.
        #[arg(add = complete::vms())]
        name: String,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// CPU, memory and disk use of a VM (measured on the host).
    ///
    /// Example: banger vm stats dev
    Stats {
        /// VM name.
        #[arg(add = complete::vms())]
        name: String,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// List VMs with their state, address and size.
    ///
    /// Example: banger vm list --json
    #[command(alias = "ps")]
    List {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Show one VM, including why it failed if it is in the error state.
    ///
    /// Example: banger vm show dev
    Show {
        /// VM name.
        #[arg(add = complete::vms())]
        name: String,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Run a command in a VM, in its workspace (the repository shipped into it) when
    /// it has one, else in /root. Several may run at once.
    ///
    /// Example: banger vm exec dev -- cargo test
    /// Exit status: the command's. Warns when the host repository moved since it was shipped.
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
    /// Ship a repository into a VM and bring changes back.
    #[command(subcommand)]
    Workspace(WorkspaceCmd),
    /// Open a shell in a VM, or run a command there (through banger's guest agent;
    /// --via-ssh for OpenSSH).
    ///
    /// Example: banger vm ssh dev -- hostname
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
    /// Delete VMs and their disks. Irreversible. A running VM is refused unless
    /// -f (on a terminal you are asked).
    ///
    /// Example: banger vm delete dev      (see also: stop, which keeps the disks)
    #[command(alias = "rm")]
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
    /// Example: banger vm workspace prepare dev ./myrepo
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
    /// Example: banger vm workspace export dev --output fix.patch
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
