//! `vm list | show | ports | stats` (and `banger ps`).

use super::cmd::ListArgs;
use crate::{output, ui};
use banger_model::{format_bytes, format_mib, PortForward};
use banger_rpc::{
    Client, NoParams, PortForwardParams, VmInfo, VmList, VmNameParams, VmPortForward, VmPorts,
    VmShow, VmStats,
};
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
        "init",
        match v.init {
            banger_model::InitMode::Agent => "agent (banger's fast init)".to_string(),
            banger_model::InitMode::Systemd => "systemd".to_string(),
        },
    ));
    rows.push((
        "pid",
        v.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
    ));
    if !v.ports.is_empty() {
        rows.push(("ports", ports_text(&v.ports)));
    }
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
            "PORTS",
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
                if v.ports.is_empty() {
                    "-".to_string()
                } else {
                    ports_text(&v.ports)
                },
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

/// Published ports as `docker ps` shows them.
fn ports_text(ports: &[PortForward]) -> String {
    ports
        .iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// `banger vm ports`: what listens in the guest, and where each is reachable from
/// the host (its published host port too, if any).
pub async fn ports(c: &mut Client, name: String) -> anyhow::Result<ExitCode> {
    let p = c.call::<VmPorts>(&VmNameParams { name }, |_| {}).await?;
    output::render(&p, |p| {
        if p.ports.is_empty() && p.forwards.is_empty() {
            anstream::eprintln!("nothing listens on TCP in {}", p.name);
            return;
        }
        let mut t = ui::table(&["PORT", "LISTENING", "REACH IT AT"]);
        let mut guest: Vec<u16> = p.ports.clone();
        guest.extend(p.forwards.iter().map(|f| f.guest_port));
        guest.sort_unstable();
        guest.dedup();
        for port in guest {
            // Rootless: the guest's own address is private to its network stack.
            let mut at = match (p.rootless, p.ssh_port) {
                (false, _) => vec![format!("{}:{port}", p.ip)],
                (true, Some(ssh)) if port == 22 => vec![format!("127.0.0.1:{ssh}")],
                (true, _) => vec![],
            };
            at.extend(
                p.forwards
                    .iter()
                    .filter(|f| f.guest_port == port)
                    .map(|f| format!("{}:{}", f.host_ip, f.host_port)),
            );
            let listening = if p.ports.contains(&port) { "yes" } else { "no" };
            let at = if at.is_empty() {
                format!("not reachable from the host: publish it (vm stop, then banger vm port-forward {} HOST_PORT:{port})", p.name)
            } else {
                at.join(", ")
            };
            t.add_row(vec![port.to_string(), listening.into(), at]);
        }
        ui::print_table(&t);
    })
}

/// `banger vm port-forward NAME MAPPING [--remove]`.
pub async fn port_forward(
    c: &mut Client,
    name: String,
    forward: PortForward,
    remove: bool,
) -> anyhow::Result<ExitCode> {
    let v = c
        .call::<VmPortForward>(
            &PortForwardParams {
                name,
                forward,
                remove,
            },
            |_| {},
        )
        .await?;
    if output::json() {
        return output::render(&v, |_| {});
    }
    let (verb, when) = if remove {
        ("withdrew", String::new())
    } else if v.state == banger_model::VmState::Running {
        ("published", String::new())
    } else {
        ("published", format!(" (listening once {} runs)", v.name))
    };
    println!(
        "{verb} {}:{} -> {}:{}{when}",
        forward.host_ip, forward.host_port, v.name, forward.guest_port
    );
    Ok(ExitCode::SUCCESS)
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
