//! `vm list | show | ports | stats` (and `banger ps`).

use super::cmd::ListArgs;
use crate::{output, ui};
use banger_model::{format_bytes, format_mib};
use banger_rpc::{Client, NoParams, VmInfo, VmList, VmNameParams, VmPorts, VmShow, VmStats};
use std::process::ExitCode;

/// One VM, field per line, name first (`vm show`, `vm set`).
pub fn print_vm(v: &VmInfo) {
    let mut rows: Vec<(&str, String)> = vec![
        ("name", v.name.clone()),
        ("state", v.state.as_str().to_string()),
        ("ip", v.ip.to_string()),
        ("image", v.image.clone()),
        ("cpus", v.cpus.to_string()),
        ("memory", format_mib(v.memory_mib)),
        ("disk", format_mib(v.disk_mib)),
        (
            "created",
            format!(
                "{} ({})",
                ui::timestamp(v.created_at),
                ui::ago(v.created_at)
            ),
        ),
    ];
    if let Some(s) = v.started_at {
        rows.push((
            "uptime",
            format!(
                "{} (since {})",
                ui::duration_words(ui::now() - s),
                ui::timestamp(s)
            ),
        ));
    }
    rows.push((
        "vmm",
        format!(
            "{}{}",
            v.vmm.as_str(),
            v.backend
                .as_ref()
                .map(|b| format!(" (running on {b})"))
                .unwrap_or_default()
        ),
    ));
    rows.push((
        "pid",
        v.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
    ));
    if let Some(w) = &v.workspace {
        rows.push((
            "workspace",
            format!("{} -> {} at {}", w.host_path, w.guest_path, short(&w.head)),
        ));
    }
    if !v.timings.is_empty() {
        let total: u64 = v.timings.iter().map(|t| t.ms).sum();
        let parts: Vec<String> = v
            .timings
            .iter()
            .map(|t| format!("{} {:.1}s", t.stage, t.ms as f64 / 1000.0))
            .collect();
        rows.push((
            "boot",
            format!("{:.1} s ({})", total as f64 / 1000.0, parts.join(", ")),
        ));
    }
    if let Some(e) = &v.error {
        rows.push(("error", ui::printable(e)));
    }
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 1;
    for (k, v) in rows {
        println!("{:<width$} {v}", format!("{k}:"));
    }
}

fn short(head: &str) -> &str {
    &head[..head.len().min(12)]
}

/// `banger vm list` / `banger ps`.
pub async fn list(c: &mut Client, a: ListArgs) -> anyhow::Result<ExitCode> {
    let vms = c.call::<VmList>(&NoParams {}, |_| {}).await?;
    if a.quiet && !output::json() {
        for v in &vms {
            println!("{}", v.name);
        }
        return Ok(ExitCode::SUCCESS);
    }
    output::render(&vms, |vms| {
        let mut t = ui::table(&[
            "NAME",
            "STATE",
            "IP",
            "IMAGE",
            "CPUS",
            "MEMORY",
            "DISK",
            "CREATED",
            "WORKSPACE",
        ]);
        for v in vms {
            t.add_row(vec![
                v.name.clone(),
                v.state.as_str().to_string(),
                v.ip.to_string(),
                v.image.clone(),
                v.cpus.to_string(),
                format_mib(v.memory_mib),
                format_mib(v.disk_mib),
                ui::ago(v.created_at),
                v.workspace
                    .as_ref()
                    .map(|w| format!("{} ({})", w.guest_path, &w.head[..w.head.len().min(8)]))
                    .unwrap_or_else(|| "-".into()),
            ]);
        }
        ui::print_table(&t);
    })
}

/// `banger vm show`.
pub async fn show(c: &mut Client, name: String) -> anyhow::Result<ExitCode> {
    let v = c.call::<VmShow>(&VmNameParams { name }, |_| {}).await?;
    output::render(&v, print_vm)
}

/// `banger vm ports`.
pub async fn ports(c: &mut Client, name: String) -> anyhow::Result<ExitCode> {
    let p = c.call::<VmPorts>(&VmNameParams { name }, |_| {}).await?;
    output::render(&p, |p| {
        if p.ports.is_empty() {
            anstream::eprintln!("nothing listens on TCP in {}", p.name);
            return;
        }
        let mut t = ui::table(&["PORT", "REACH IT AT"]);
        for port in &p.ports {
            t.add_row(vec![port.to_string(), format!("{}:{port}", p.ip)]);
        }
        ui::print_table(&t);
    })
}

/// `banger vm stats`.
pub async fn stats(c: &mut Client, name: String) -> anyhow::Result<ExitCode> {
    let s = c.call::<VmStats>(&VmNameParams { name }, |_| {}).await?;
    output::render(&s, |s| {
        let opt = |v: Option<String>| v.unwrap_or_else(|| "-".into());
        println!("name:    {}\nstate:   {}", s.name, s.state.as_str());
        println!(
            "cpu:     {} (VMM, of one host CPU)",
            opt(s.cpu_percent.map(|p| format!("{p:.1}%")))
        );
        println!(
            "memory:  {} resident of {}",
            opt(s.rss_bytes.map(format_bytes)),
            format_mib(s.memory_mib)
        );
        println!(
            "disk:    /root {} used on host of {}; / changes {}",
            format_bytes(s.work_bytes),
            format_mib(s.disk_mib),
            format_bytes(s.overlay_bytes)
        );
    })
}
