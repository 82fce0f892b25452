//! `banger image warm`: make, list and remove warm snapshots (docs/warm.md).

use crate::vm::cmd::{parse_cpus, parse_disk, parse_memory};
use crate::{output, ui};
use banger_model::{format_bytes, InitMode};
use banger_rpc::{
    Client, ImageWarm, ImageWarmList, ImageWarmParams, ImageWarmRm, NoParams, WarmInfo,
};
use clap::Args;
use std::process::ExitCode;

/// `banger image warm [IMAGE] [--cpus N --memory M --disk D --init MODE] [--list | --rm]`.
#[derive(Debug, Args)]
pub struct WarmArgs {
    /// Image name (not with --list).
    #[arg(add = crate::complete::images(), required_unless_present = "list")]
    pub image: Option<String>,
    /// vCPUs of the VMs it serves [default: the VM default].
    #[arg(long, value_parser = parse_cpus)]
    pub cpus: Option<u32>,
    /// Memory of the VMs it serves, e.g. 1G [default: the VM default].
    #[arg(long, value_parser = parse_memory)]
    pub memory: Option<u64>,
    /// Work disk size of the VMs it serves, e.g. 8G [default: the VM default].
    #[arg(long, value_parser = parse_disk)]
    pub disk: Option<u64>,
    /// Init mode of the VMs it serves [default: agent].
    #[arg(long, value_parser = ["agent", "systemd"])]
    pub init: Option<String>,
    /// List every warm snapshot and whether it still fits its image.
    #[arg(long, conflicts_with_all = ["rm", "image", "cpus", "memory", "disk", "init"])]
    pub list: bool,
    /// Remove the image's snapshots (only the named shape when a size is given).
    #[arg(long)]
    pub rm: bool,
}

/// Run `banger image warm …`.
pub async fn warm(c: &mut Client, a: WarmArgs) -> anyhow::Result<ExitCode> {
    if a.list {
        let list: Vec<WarmInfo> = c.call::<ImageWarmList>(&NoParams {}, |_| {}).await?;
        return output::render(&list, |list| {
            let mut t = ui::table(&[
                "IMAGE", "CPUS", "MEMORY", "DISK", "INIT", "SIZE", "CREATED", "STATUS",
            ]);
            for w in list {
                t.add_row(vec![
                    w.image.clone(),
                    w.cpus.to_string(),
                    format_bytes(w.memory_mib << 20),
                    format_bytes(w.disk_mib << 20),
                    w.init.clone(),
                    format_bytes(w.bytes),
                    ui::ago(w.created_at),
                    w.status.clone(),
                ]);
            }
            println!("{t}");
        });
    }
    let name = a.image.clone().unwrap_or_default();
    let p = ImageWarmParams {
        name: name.clone(),
        cpus: a.cpus,
        memory_mib: a.memory,
        disk_mib: a.disk,
        init: a.init.as_deref().map(|m| {
            if m == "systemd" {
                InitMode::Systemd
            } else {
                InitMode::Agent
            }
        }),
    };
    if a.rm {
        let r = c.call::<ImageWarmRm>(&p, |_| {}).await?;
        return output::render(&r, |r| {
            println!("removed {} warm snapshot(s) of {name}", r.removed);
        });
    }
    let mut sp = ui::Spinner::new(&format!("warming {name}"));
    let r = c.call::<ImageWarm>(&p, |pr| sp.update(&pr)).await;
    sp.finish();
    let w = r?;
    output::render(&w, |w| {
        println!(
            "warmed {} for {} vCPU, {} memory, {} disk ({} init): {} on disk, made in {:.1} s",
            w.image,
            w.cpus,
            format_bytes(w.memory_mib << 20),
            format_bytes(w.disk_mib << 20),
            w.init,
            format_bytes(w.bytes),
            w.warm_ms as f64 / 1000.0
        );
    })
}
