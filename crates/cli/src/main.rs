//! `banger`: disposable Linux development VMs.
//!
//! The CLI is thin on purpose: it parses, calls bangerd over its unix socket and
//! renders. Everything stateful happens in the daemon.

mod daemon;
mod ssh;
mod ui;

use anyhow::Context;
use banger_model::{parse_size_mib, Layout, VmName};
use banger_rpc::{
    methods as m, Client, ImageBuildParams, ImageInfo, NoParams, SshInfo, VmCreateParams, VmInfo,
    VmNameParams,
};
use clap::{Args, Parser, Subcommand};
use std::io::IsTerminal;
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
    /// Build and list base images.
    #[command(subcommand)]
    Image(ImageCmd),
    /// The background daemon (started automatically when needed).
    #[command(subcommand)]
    Daemon(DaemonCmd),
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
    #[arg(long)]
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
}

fn parse_size(s: &str) -> Result<u64, String> {
    parse_size_mib(s).map_err(|e| e.to_string())
}

#[derive(Debug, Subcommand)]
enum VmCmd {
    /// Boot a fresh VM, run a command in it (or open a shell), then delete it.
    ///
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
        #[command(flatten)]
        sizes: Sizes,
    },
    /// List VMs.
    #[command(alias = "ps")]
    List {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Show one VM.
    Show {
        /// VM name.
        name: String,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Open a shell in a VM, or run a command there.
    ///
    /// Example: banger vm ssh dev -- hostname
    Ssh {
        /// VM name.
        name: String,
        /// Command to run; an interactive shell when omitted.
        #[arg(last = true)]
        command: Vec<String>,
    },
    /// Delete a VM: stop it and remove its disks. Irreversible.
    #[command(alias = "rm")]
    Delete {
        /// VM names.
        #[arg(required = true)]
        names: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
enum ImageCmd {
    /// Build an image from a distribution's archive.
    ///
    /// Example: banger image build debian --release bookworm
    Build {
        /// Distribution (only debian for now).
        #[arg(value_parser = ["debian"])]
        distro: String,
        /// Release [default: bookworm].
        #[arg(long)]
        release: Option<String>,
        /// Image name [default: debian-<release>].
        #[arg(long)]
        name: Option<String>,
    },
    /// List images.
    #[command(alias = "ls")]
    List {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
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
    if let Cmd::Daemon(d) = cmd {
        return daemon_cmd(layout, d).await;
    }
    let mut c = daemon::connect(layout).await?;
    match cmd {
        Cmd::Vm(v) => vm(&mut c, v).await,
        Cmd::Image(i) => image(&mut c, i).await,
        Cmd::Daemon(_) => Ok(ExitCode::SUCCESS),
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
    }
}

async fn create(c: &mut Client, p: &VmCreateParams, timings: bool) -> anyhow::Result<VmInfo> {
    let label = p.name.as_ref().map(|n| n.to_string()).unwrap_or_default();
    let mut sp = ui::Spinner::new(&format!("creating VM {label}"));
    let r: Result<VmInfo, _> = c.call(m::VM_CREATE, p, |pr| sp.update(&pr)).await;
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
async fn run_ssh(info: &SshInfo, argv: &[String]) -> anyhow::Result<i32> {
    let tty =
        std::io::stdin().is_terminal() && (argv.is_empty() || std::io::stdout().is_terminal());
    let mut cmd = tokio::process::Command::from(ssh::command(info, argv, tty));
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

async fn vm(c: &mut Client, cmd: VmCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        VmCmd::Run {
            name,
            keep,
            timings,
            sizes,
            command,
        } => {
            let name = match name {
                Some(n) => n,
                None => generated_name()?,
            };
            let p = create_params(Some(name.clone()), sizes);
            let created = tokio::select! {
                r = create(c, &p, timings) => r,
                _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted while creating VM {name}")),
            };
            let result = match created {
                Ok(_) => match ssh_info(c, name.as_str()).await {
                    Ok(info) => run_ssh(&info, &command).await,
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            };
            if !keep {
                // A fresh connection: the create call may have been abandoned mid-flight.
                let mut c2 = daemon::connect(&Layout::from_env()).await?;
                let del: Result<(), _> = c2
                    .call(
                        m::VM_DELETE,
                        &VmNameParams {
                            name: name.to_string(),
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
            sizes,
        } => {
            let info = create(c, &create_params(Some(name), sizes), timings).await?;
            println!("{} is running at {}", info.name, info.ip);
            Ok(ExitCode::SUCCESS)
        }
        VmCmd::List { json } => {
            let vms: Vec<VmInfo> = c.call(m::VM_LIST, &NoParams {}, |_| {}).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&vms)?);
            } else {
                let mut t = ui::table(&[
                    "NAME", "STATE", "IP", "IMAGE", "CPUS", "MEMORY", "DISK", "PID",
                ]);
                for v in &vms {
                    t.add_row(vec![
                        v.name.clone(),
                        v.state.clone(),
                        v.ip.to_string(),
                        v.image.clone(),
                        v.cpus.to_string(),
                        format!("{}M", v.memory_mib),
                        format!("{}M", v.disk_mib),
                        v.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
                    ]);
                }
                println!("{t}");
            }
            Ok(ExitCode::SUCCESS)
        }
        VmCmd::Show { name, json } => {
            let v: VmInfo = c.call(m::VM_SHOW, &VmNameParams { name }, |_| {}).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!("name:    {}\nid:      {}\nstate:   {}\nip:      {}\nimage:   {}\ncpus:    {}\nmemory:  {}M\ndisk:    {}M\npid:     {}",
                    v.name, v.id, v.state, v.ip, v.image, v.cpus, v.memory_mib, v.disk_mib,
                    v.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()));
                if let Some(e) = &v.error {
                    println!("error:   {e}");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        VmCmd::Ssh { name, command } => {
            let info = ssh_info(c, &name).await?;
            let code = run_ssh(&info, &command).await?;
            Ok(ExitCode::from(u8::try_from(code).unwrap_or(255)))
        }
        VmCmd::Delete { names } => {
            let mut failed = false;
            for name in names {
                let r: Result<(), _> = c
                    .call(m::VM_DELETE, &VmNameParams { name: name.clone() }, |_| {})
                    .await;
                match r {
                    Ok(()) => println!("deleted {name}"),
                    Err(e) => {
                        failed = true;
                        ui::print_error(&anyhow::Error::new(e));
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

fn generated_name() -> anyhow::Result<VmName> {
    use rand::Rng;
    let n: u32 = rand::rng().random_range(0..0x10000);
    Ok(VmName::parse(&format!("run-{n:04x}"))?)
}

async fn image(c: &mut Client, cmd: ImageCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        ImageCmd::Build {
            distro: _,
            release,
            name,
        } => {
            let mut sp = ui::Spinner::new("building image");
            let r: Result<ImageInfo, _> = c
                .call(m::IMAGE_BUILD, &ImageBuildParams { name, release }, |p| {
                    sp.update(&p)
                })
                .await;
            sp.finish();
            let img = r?;
            println!(
                "built image {} ({} MiB, kernel {})",
                img.name,
                img.size_bytes >> 20,
                img.kernel_release
            );
            Ok(ExitCode::SUCCESS)
        }
        ImageCmd::List { json } => {
            let imgs: Vec<ImageInfo> = c.call(m::IMAGE_LIST, &NoParams {}, |_| {}).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&imgs)?);
            } else {
                let mut t = ui::table(&["NAME", "SOURCE", "KERNEL", "SIZE"]);
                for i in &imgs {
                    t.add_row(vec![
                        i.name.clone(),
                        i.source.clone(),
                        i.kernel_release.clone(),
                        format!("{} MiB", i.size_bytes >> 20),
                    ]);
                }
                println!("{t}");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
