//! `banger`: disposable Linux development VMs.
//!
//! The CLI is thin on purpose: it parses, calls bangerd over its unix socket and
//! renders. Everything stateful happens in the daemon.

mod complete;
mod daemon;
mod doctor;
mod images;
mod ssh;
#[allow(dead_code)] // wired to `banger ssh-config` with the daemon's known_hosts (issue 12)
mod ssh_config;
mod ui;
mod workspace;

use anyhow::Context;
use banger_model::{parse_size_mib, Layout, VmName, VmmChoice};
use banger_rpc::{
    methods as m, Client, NoParams, OperationInfo, PruneResult, SshInfo, VmCreateParams,
    VmDeleteParams, VmInfo, VmLogsParams, VmLogsResult, VmNameParams, VmPorts, VmSetParams,
    VmStats,
};
use clap::{Args, Parser, Subcommand};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

/// Exit status of `vm run` when banger itself (not the command) failed.
const EXIT_BANGER_FAILED: u8 = 125;

#[derive(Debug, Parser)]
#[command(
    name = "banger",
    version,
    about = "Disposable Linux development VMs: boot, run, throw away."
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Create, run and manage VMs.
    #[command(subcommand)]
    Vm(VmCmd),
    /// Build, pull, register, promote, list and delete base images.
    #[command(subcommand)]
    Image(images::ImageCmd),
    /// The kernel store: pull, import, list, show and remove kernels.
    #[command(subcommand)]
    Kernel(images::KernelCmd),
    /// Print the shell completion script (completes image, kernel, VM and catalog
    /// names from the running daemon).
    ///
    /// Example: source <(banger completion bash)
    Completion {
        /// Shell.
        #[arg(value_parser = ["bash", "zsh", "fish", "elvish", "powershell"])]
        shell: String,
    },
    /// Long operations in flight on the daemon (create, start, stop, image build).
    #[command(alias = "ops")]
    Operations {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// The background daemon (started automatically when needed).
    #[command(subcommand)]
    Daemon(DaemonCmd),
    /// Check this host: tools, /dev/kvm, privileges, guest agent, backends.
    ///
    /// Works without the daemon; prints the fix for each problem. Exit status 1 if any
    /// check fails.
    ///
    /// Example: banger doctor --json
    Doctor {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum DaemonCmd {
    /// Show whether bangerd runs, its pid and version (does not start it).
    Status,
    /// Stop bangerd. Running VMs keep running and are re-adopted on the next start.
    Stop,
}

#[derive(Debug, Args)]
struct Sizes {
    /// Image to boot [default: debian-bookworm, built on first use].
    #[arg(long, add = complete::images())]
    image: Option<String>,
    /// Virtual CPUs [default: 2].
    #[arg(long)]
    cpus: Option<u32>,
    /// Guest memory, e.g. 1G or 512M [default: 1G].
    #[arg(long, value_parser = parse_size)]
    memory: Option<u64>,
    /// Size of the work disk mounted at /root, e.g. 8G [default: 8G].
    #[arg(long, value_parser = parse_size)]
    disk: Option<u64>,
    /// VMM backend: auto (Firecracker when installed and KVM works, else QEMU), qemu,
    /// or firecracker [default: BANGER_VMM, else auto].
    #[arg(long)]
    vmm: Option<VmmChoice>,
}

fn parse_size(s: &str) -> Result<u64, String> {
    parse_size_mib(s).map_err(|e| e.to_string())
}

#[derive(Debug, Subcommand)]
enum VmCmd {
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
    /// Run a command in a VM's workspace (the repository shipped into it).
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
        /// Command to run in the workspace; a shell there when omitted.
        #[arg(last = true)]
        command: Vec<String>,
    },
    /// Ship a repository into a VM and bring changes back.
    #[command(subcommand)]
    Workspace(WorkspaceCmd),
    /// Open a shell in a VM, or run a command there.
    ///
    /// Example: banger vm ssh dev -- hostname
    Ssh {
        /// VM name.
        #[arg(add = complete::vms())]
        name: String,
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

#[derive(Debug, Subcommand)]
enum WorkspaceCmd {
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
    },
}

fn main() -> ExitCode {
    // `COMPLETE=<shell> banger …` is a completion request from the shell: answer and exit.
    clap_complete::CompleteEnv::with_factory(<Cli as clap::CommandFactory>::command).complete();
    let cli = Cli::parse();
    if let Cmd::Completion { shell } = &cli.cmd {
        // The registration script is what `COMPLETE=<shell> banger` prints.
        std::env::set_var("COMPLETE", shell);
        clap_complete::CompleteEnv::with_factory(<Cli as clap::CommandFactory>::command).complete();
        return ExitCode::SUCCESS;
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            ui::print_error(&anyhow::Error::new(e).context("starting the async runtime"));
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async {
        let layout = Layout::from_env();
        let is_run = matches!(cli.cmd, Cmd::Vm(VmCmd::Run { .. }));
        match dispatch(cli.cmd, &layout).await {
            Ok(code) => code,
            Err(e) => {
                ui::print_error(&e);
                if is_run {
                    ExitCode::from(EXIT_BANGER_FAILED)
                } else {
                    ExitCode::FAILURE
                }
            }
        }
    })
}

async fn dispatch(cmd: Cmd, layout: &Layout) -> anyhow::Result<ExitCode> {
    if let Cmd::Doctor { json } = cmd {
        return doctor::run(layout, json);
    }
    if let Cmd::Daemon(d) = cmd {
        return daemon_cmd(layout, d).await;
    }
    let mut c = daemon::connect(layout).await?;
    match cmd {
        Cmd::Vm(v) => vm(&mut c, v).await,
        Cmd::Image(i) => images::image(&mut c, i).await,
        Cmd::Kernel(k) => images::kernel(&mut c, k).await,
        Cmd::Completion { .. } => Ok(ExitCode::SUCCESS),
        Cmd::Operations { json } => operations(&mut c, json).await,
        Cmd::Daemon(_) => Ok(ExitCode::SUCCESS),
        Cmd::Doctor { .. } => Ok(ExitCode::SUCCESS),
    }
}

async fn daemon_cmd(layout: &Layout, cmd: DaemonCmd) -> anyhow::Result<ExitCode> {
    let Some(ping) = daemon::ping_running(layout).await else {
        println!(
            "bangerd is not running (socket {})",
            layout.socket().display()
        );
        return Ok(ExitCode::SUCCESS);
    };
    match cmd {
        DaemonCmd::Status => {
            println!(
                "bangerd {} running, pid {}, socket {}",
                ping.version,
                ping.pid,
                layout.socket().display()
            );
        }
        DaemonCmd::Stop => {
            daemon::stop(layout, ping.pid).await?;
            println!("bangerd stopped (pid {})", ping.pid);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn create_params(name: Option<VmName>, s: Sizes) -> VmCreateParams {
    VmCreateParams {
        name,
        image: s.image,
        cpus: s.cpus,
        memory_mib: s.memory,
        disk_mib: s.disk,
        no_start: false,
        vmm: s.vmm,
    }
}

async fn operations(c: &mut Client, json: bool) -> anyhow::Result<ExitCode> {
    let ops: Vec<OperationInfo> = c.call(m::OPERATIONS_LIST, &NoParams {}, |_| {}).await?;
    render(json, &ops, |ops| {
        let mut t = ui::table(&["OP", "METHOD", "TARGET", "STAGE", "ELAPSED"]);
        for o in ops {
            t.add_row(vec![
                o.op_id.clone(),
                o.method.clone(),
                o.target.clone(),
                o.stage.clone(),
                format!("{:.1}s", o.elapsed_ms as f64 / 1000.0),
            ]);
        }
        println!("{t}");
    })
}

/// A call on one VM that reports stages (start, stop, restart), with a spinner.
async fn staged(c: &mut Client, method: &str, name: &str, what: &str) -> anyhow::Result<VmInfo> {
    let mut sp = ui::Spinner::new(&format!("{what} {name}"));
    let r: Result<VmInfo, _> = c
        .call(
            method,
            &VmNameParams {
                name: name.to_string(),
            },
            |p| sp.update(&p),
        )
        .await;
    sp.finish();
    Ok(r?)
}

/// Print `value` as pretty JSON with `--json`, for people with `human` otherwise.
pub(crate) fn render<T: serde::Serialize>(
    json: bool,
    value: &T,
    human: impl FnOnce(&T),
) -> anyhow::Result<ExitCode> {
    if json {
        println!("{}", serde_json::to_string_pretty(value)?);
    } else {
        human(value);
    }
    Ok(ExitCode::SUCCESS)
}

fn print_vm(v: &VmInfo) {
    println!(
        "vmm:     {}{}",
        v.vmm.as_str(),
        v.backend
            .as_ref()
            .map(|b| format!(" (running on {b})"))
            .unwrap_or_default()
    );
    if let Some(w) = &v.workspace {
        println!(
            "workspace: {} -> {} at {}",
            w.host_path, w.guest_path, w.head
        );
    }
    println!(
        "name:    {}\nid:      {}\nstate:   {}\nip:      {}\nimage:   {}\ncpus:    {}\nmemory:  {}M\ndisk:    {}M\npid:     {}",
        v.name,
        v.id,
        v.state,
        v.ip,
        v.image,
        v.cpus,
        v.memory_mib,
        v.disk_mib,
        v.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into())
    );
    if let Some(e) = &v.error {
        println!("error:   {e}");
    }
}

async fn create(
    c: &mut Client,
    p: &VmCreateParams,
    timings: bool,
    op_id: Option<&str>,
) -> anyhow::Result<VmInfo> {
    let label = p.name.as_ref().map(|n| n.to_string()).unwrap_or_default();
    let mut sp = ui::Spinner::new(&format!("creating VM {label}"));
    let r: Result<VmInfo, _> = c
        .call_with_op_id(m::VM_CREATE, p, op_id, |pr| sp.update(&pr))
        .await;
    sp.finish();
    let info = r?;
    if timings {
        anstream::eprintln!("VM {} started:", info.name);
        ui::print_timings(&info.timings);
    }
    Ok(info)
}

async fn ssh_info(c: &mut Client, name: &str) -> anyhow::Result<SshInfo> {
    Ok(c.call(
        m::VM_SSH_INFO,
        &VmNameParams {
            name: name.to_string(),
        },
        |_| {},
    )
    .await?)
}

/// Run ssh as a child while ignoring ctrl-c ourselves: the terminal delivers it to ssh
/// (and through `-t` to the guest), and we must survive to clean up.
async fn run_ssh(info: &SshInfo, remote: Option<String>) -> anyhow::Result<i32> {
    let tty =
        std::io::stdin().is_terminal() && (remote.is_none() || std::io::stdout().is_terminal());
    let mut cmd = tokio::process::Command::from(ssh::command(info, remote.as_deref(), tty));
    let mut child = cmd
        .spawn()
        .context("running ssh (is openssh-client installed?)")?;
    let status = loop {
        tokio::select! {
            s = child.wait() => break s?,
            _ = tokio::signal::ctrl_c() => continue,
        }
    };
    Ok(status.code().unwrap_or(130))
}

/// The part of `vm run` after the VM is up: ship the repository if one was given,
/// then run the command (in the workspace, if any). Returns the command's status.
async fn run_in_new_vm(
    c: &mut Client,
    name: &str,
    path: Option<&std::path::Path>,
    command: &[String],
) -> anyhow::Result<i32> {
    let info = ssh_info(c, name).await?;
    let remote = match path {
        Some(p) => {
            let w = workspace::prepare(c, name, &info, p, None).await?;
            Some(workspace::in_workspace(&w, command))
        }
        None => (!command.is_empty()).then(|| ssh::remote_line(command)),
    };
    run_ssh(&info, remote).await
}

async fn vm(c: &mut Client, cmd: VmCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        VmCmd::Run {
            name,
            keep,
            timings,
            sizes,
            path,
            command,
        } => {
            // Refuse a bad repository before booting anything.
            if let Some(p) = &path {
                banger_workspace::inspect(p)?;
            }
            let name = match name {
                Some(n) => n,
                None => generated_name()?,
            };
            let p = create_params(Some(name.clone()), sizes);
            // Our own op id for the create call: cleanup deletes only the VM this call
            // created, never a same-named VM that existed before (`--name EXISTING`).
            let create_op = new_op_id();
            let created = tokio::select! {
                r = create(c, &p, timings, Some(&create_op)) => r,
                _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted while creating VM {name}")),
            };
            let result = match created {
                Ok(_) => run_in_new_vm(c, name.as_str(), path.as_deref(), &command).await,
                Err(e) => Err(e),
            };
            if !keep {
                // A fresh connection: the create call may have been abandoned mid-flight.
                let mut c2 = daemon::connect(&Layout::from_env()).await?;
                let del: Result<(), _> = c2
                    .call(
                        m::VM_DELETE,
                        &VmDeleteParams {
                            name: name.to_string(),
                            force: true,
                            created_op: Some(create_op),
                        },
                        |_| {},
                    )
                    .await;
                if let Err(e) = del {
                    if !matches!(&e, banger_rpc::ClientError::Rpc(r) if r.code == banger_rpc::ErrorCode::NotFound)
                    {
                        ui::print_error(
                            &anyhow::Error::new(e).context(format!("deleting VM {name}")),
                        );
                    }
                }
            }
            let code = result?;
            Ok(ExitCode::from(
                u8::try_from(code).unwrap_or(EXIT_BANGER_FAILED),
            ))
        }
        VmCmd::Create {
            name,
            timings,
            no_start,
            sizes,
        } => {
            let mut p = create_params(Some(name), sizes);
            p.no_start = no_start;
            let info = create(c, &p, timings, None).await?;
            if no_start {
                println!(
                    "{} is created (stopped); start it with banger vm start {}",
                    info.name, info.name
                );
            } else {
                println!("{} is running at {}", info.name, info.ip);
            }
            Ok(ExitCode::SUCCESS)
        }
        VmCmd::Start { name, timings } => {
            let info = staged(c, m::VM_START, &name, "starting").await?;
            if timings {
                ui::print_timings(&info.timings);
            }
            println!("{} is running at {}", info.name, info.ip);
            Ok(ExitCode::SUCCESS)
        }
        VmCmd::Stop { name } => {
            let info = staged(c, m::VM_STOP, &name, "stopping").await?;
            let total: u64 = info.timings.iter().map(|t| t.ms).sum();
            println!("{} stopped ({:.1} s)", info.name, total as f64 / 1000.0);
            Ok(ExitCode::SUCCESS)
        }
        VmCmd::Restart { name } => {
            let info = staged(c, m::VM_RESTART, &name, "restarting").await?;
            println!("{} is running at {}", info.name, info.ip);
            Ok(ExitCode::SUCCESS)
        }
        VmCmd::Kill { name } => {
            let info: VmInfo = c.call(m::VM_KILL, &VmNameParams { name }, |_| {}).await?;
            println!("{} killed", info.name);
            Ok(ExitCode::SUCCESS)
        }
        VmCmd::Prune { force } => {
            if !force {
                let vms: Vec<VmInfo> = c.call(m::VM_LIST, &NoParams {}, |_| {}).await?;
                let doomed: Vec<&str> = vms
                    .iter()
                    .filter(|v| v.state == "stopped" || v.state == "error")
                    .map(|v| v.name.as_str())
                    .collect();
                if doomed.is_empty() {
                    println!("nothing to prune: every VM is running");
                    return Ok(ExitCode::SUCCESS);
                }
                if !confirm(&format!(
                    "delete {} VM(s) and their disks: {}?",
                    doomed.len(),
                    doomed.join(", ")
                ))? {
                    anyhow::bail!("not pruned (use banger vm prune -f to skip this question)");
                }
            }
            let r: PruneResult = c.call(m::VM_PRUNE, &NoParams {}, |_| {}).await?;
            for n in &r.deleted {
                println!("deleted {n}");
            }
            if r.deleted.is_empty() {
                println!("nothing to prune: every VM is running");
            }
            Ok(ExitCode::SUCCESS)
        }
        VmCmd::Set {
            name,
            cpus,
            memory,
            disk,
        } => {
            let p = VmSetParams {
                name,
                cpus,
                memory_mib: memory,
                disk_mib: disk,
            };
            let v: VmInfo = c.call(m::VM_SET, &p, |_| {}).await?;
            print_vm(&v);
            Ok(ExitCode::SUCCESS)
        }
        VmCmd::Logs { name, follow } => {
            let mut offset = None;
            loop {
                let r: VmLogsResult = c
                    .call(
                        m::VM_LOGS,
                        &VmLogsParams {
                            name: name.clone(),
                            offset,
                        },
                        |_| {},
                    )
                    .await?;
                print!("{}", r.data);
                use std::io::Write;
                let _ = std::io::stdout().flush();
                offset = Some(r.next_offset);
                if !follow {
                    return Ok(ExitCode::SUCCESS);
                }
                tokio::select! {
                    _ = tokio::time::sleep(std::time::Duration::from_millis(500)) => {}
                    _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
                }
            }
        }
        VmCmd::Ports { name, json } => {
            let p: VmPorts = c.call(m::VM_PORTS, &VmNameParams { name }, |_| {}).await?;
            render(json, &p, |p| {
                let mut t = ui::table(&["PORT", "REACH IT AT"]);
                for port in &p.ports {
                    t.add_row(vec![port.to_string(), format!("{}:{port}", p.ip)]);
                }
                println!("{t}");
            })
        }
        VmCmd::Stats { name, json } => {
            let s: VmStats = c.call(m::VM_STATS, &VmNameParams { name }, |_| {}).await?;
            render(json, &s, |s| {
                let opt = |v: Option<String>| v.unwrap_or_else(|| "-".into());
                println!("name:     {}\nstate:    {}", s.name, s.state);
                println!(
                    "cpu:      {} (VMM, of one host CPU)",
                    opt(s.cpu_percent.map(|p| format!("{p:.1}%")))
                );
                println!(
                    "memory:   {} resident of {}M",
                    opt(s.rss_bytes.map(|b| format!("{}M", b >> 20))),
                    s.memory_mib
                );
                println!(
                    "disk:     /root {}M used on host of {}M; / changes {}M",
                    s.work_bytes >> 20,
                    s.disk_mib,
                    s.overlay_bytes >> 20
                );
            })
        }
        VmCmd::List { json } => {
            let vms: Vec<VmInfo> = c.call(m::VM_LIST, &NoParams {}, |_| {}).await?;
            render(json, &vms, |vms| {
                let mut t = ui::table(&[
                    "NAME",
                    "STATE",
                    "IP",
                    "IMAGE",
                    "CPUS",
                    "MEMORY",
                    "DISK",
                    "PID",
                    "WORKSPACE",
                ]);
                for v in vms {
                    t.add_row(vec![
                        v.name.clone(),
                        v.state.clone(),
                        v.ip.to_string(),
                        v.image.clone(),
                        v.cpus.to_string(),
                        format!("{}M", v.memory_mib),
                        format!("{}M", v.disk_mib),
                        v.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
                        v.workspace
                            .as_ref()
                            .map(|w| {
                                format!("{} ({})", w.guest_path, &w.head[..w.head.len().min(8)])
                            })
                            .unwrap_or_else(|| "-".into()),
                    ]);
                }
                println!("{t}");
            })
        }
        VmCmd::Show { name, json } => {
            let v: VmInfo = c.call(m::VM_SHOW, &VmNameParams { name }, |_| {}).await?;
            render(json, &v, |v| {
                print_vm(v);
            })
        }
        VmCmd::Exec {
            name,
            auto_prepare,
            command,
        } => {
            let info = ssh_info(c, &name).await?;
            let w = workspace::recorded(c, &name).await?;
            let w = workspace::check_moved(c, &name, &info, w, auto_prepare).await?;
            let code = run_ssh(&info, Some(workspace::in_workspace(&w, &command))).await?;
            Ok(ExitCode::from(u8::try_from(code).unwrap_or(255)))
        }
        VmCmd::Workspace(WorkspaceCmd::Prepare {
            name,
            path,
            guest_path,
        }) => {
            let info = ssh_info(c, &name).await?;
            workspace::prepare(c, &name, &info, &path, guest_path.as_deref()).await?;
            Ok(ExitCode::SUCCESS)
        }
        VmCmd::Workspace(WorkspaceCmd::Export {
            name,
            output,
            commits,
        }) => {
            let info = ssh_info(c, &name).await?;
            let w = workspace::recorded(c, &name).await?;
            workspace::export(&info, &w, output, commits).await?;
            Ok(ExitCode::SUCCESS)
        }
        VmCmd::Ssh { name, command } => {
            let info = ssh_info(c, &name).await?;
            let remote = (!command.is_empty()).then(|| ssh::remote_line(&command));
            let code = run_ssh(&info, remote).await?;
            Ok(ExitCode::from(u8::try_from(code).unwrap_or(255)))
        }
        VmCmd::Delete { names, force } => {
            let mut failed = false;
            for name in names {
                match delete_one(c, &name, force).await {
                    Ok(true) => println!("deleted {name}"),
                    Ok(false) => {
                        failed = true;
                        anstream::eprintln!(
                            "{name} is running; not deleted (use -f to delete it anyway)"
                        );
                    }
                    Err(e) => {
                        failed = true;
                        ui::print_error(&e);
                    }
                }
            }
            Ok(if failed {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
    }
}

/// Delete one VM. A running VM is deleted only with `force`, or when the user says
/// so on a terminal; returns false when it was left alone.
async fn delete_one(c: &mut Client, name: &str, force: bool) -> anyhow::Result<bool> {
    let mut force = force;
    if !force {
        let v: VmInfo = c
            .call(
                m::VM_SHOW,
                &VmNameParams {
                    name: name.to_string(),
                },
                |_| {},
            )
            .await?;
        if v.state == "running" {
            if !confirm(&format!(
                "VM {name} is running; kill it and delete it with its disks?"
            ))? {
                return Ok(false);
            }
            force = true;
        }
    }
    let p = VmDeleteParams {
        name: name.to_string(),
        force,
        created_op: None,
    };
    let (): () = c.call(m::VM_DELETE, &p, |_| {}).await?;
    Ok(true)
}

fn confirm(question: &str) -> anyhow::Result<bool> {
    if !std::io::stdin().is_terminal() {
        return Ok(false);
    }
    eprint!("{question} [y/N] ");
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    Ok(matches!(line.trim(), "y" | "Y" | "yes"))
}

/// A fresh op id for a call whose result we must recognise later.
fn new_op_id() -> String {
    use rand::Rng;
    format!("op-{:08x}", rand::rng().random::<u32>())
}

fn generated_name() -> anyhow::Result<VmName> {
    use rand::Rng;
    let n: u32 = rand::rng().random_range(0..0x10000);
    Ok(VmName::parse(&format!("run-{n:04x}"))?)
}
