//! `vm list | show | logs | ports | stats`.

use crate::{render, ui};
use banger_rpc::{
    Client, NoParams, VmInfo, VmList, VmLogs, VmLogsParams, VmNameParams, VmPorts, VmShow, VmStats,
};
use std::process::ExitCode;

/// One VM, field per line (`vm show`, `vm set`).
pub fn print_vm(v: &VmInfo) {
    println!(
        "vmm:     {}{}",
        v.vmm.as_str(),
        v.backend
            .as_ref()
            .map(|b| format!(" (running on {b})"))
            .unwrap_or_default()
    );
    println!(
        "init:    {}",
        match v.init {
            banger_model::InitMode::Agent => "agent (banger's fast init)",
            banger_model::InitMode::Systemd => "systemd",
        }
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
        v.state.as_str(),
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

/// `banger vm list`.
pub async fn list(c: &mut Client, json: bool) -> anyhow::Result<ExitCode> {
    let vms = c.call::<VmList>(&NoParams {}, |_| {}).await?;
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
                v.state.as_str().to_string(),
                v.ip.to_string(),
                v.image.clone(),
                v.cpus.to_string(),
                format!("{}M", v.memory_mib),
                format!("{}M", v.disk_mib),
                v.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
                v.workspace
                    .as_ref()
                    .map(|w| format!("{} ({})", w.guest_path, &w.head[..w.head.len().min(8)]))
                    .unwrap_or_else(|| "-".into()),
            ]);
        }
        println!("{t}");
    })
}

/// `banger vm show`.
pub async fn show(c: &mut Client, name: String, json: bool) -> anyhow::Result<ExitCode> {
    let v = c.call::<VmShow>(&VmNameParams { name }, |_| {}).await?;
    render(json, &v, print_vm)
}

/// `banger vm logs [-f]`.
pub async fn logs(c: &mut Client, name: String, follow: bool) -> anyhow::Result<ExitCode> {
    let mut offset = None;
    loop {
        let r = c
            .call::<VmLogs>(
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

/// `banger vm ports`.
pub async fn ports(c: &mut Client, name: String, json: bool) -> anyhow::Result<ExitCode> {
    let p = c.call::<VmPorts>(&VmNameParams { name }, |_| {}).await?;
    render(json, &p, |p| {
        let mut t = ui::table(&["PORT", "REACH IT AT"]);
        for port in &p.ports {
            t.add_row(vec![port.to_string(), format!("{}:{port}", p.ip)]);
        }
        println!("{t}");
    })
}

/// `banger vm stats`.
pub async fn stats(c: &mut Client, name: String, json: bool) -> anyhow::Result<ExitCode> {
    let s = c.call::<VmStats>(&VmNameParams { name }, |_| {}).await?;
    render(json, &s, |s| {
        let opt = |v: Option<String>| v.unwrap_or_else(|| "-".into());
        println!("name:     {}\nstate:    {}", s.name, s.state.as_str());
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
