//! A VM's pinned ssh host key: what `vm.host_key` shows, and the only two ways a key
//! is pinned besides the daemon generating it with a new overlay: the guest's agent
//! reports it (a channel no other guest can reach), for overlays made before banger
//! generated keys, or the user accepts a deliberately changed key (`--accept`).

use super::files;
use super::guest::Target;
use crate::app::App;
use crate::error::{DaemonError, Result};
use crate::handles;
use banger_model::{VmRecord, VmState};
use banger_rpc::{VmHostKeyInfo, VmHostKeyParams};
use banger_vmm::Handles;

/// Pin the key the guest's agent reports, if it reports a well-formed one. Best
/// effort (logged): without a pin, ssh to the VM refuses to connect, which is safe.
pub(crate) async fn pin_from_guest(app: &App, rec: &VmRecord, h: &Handles) {
    match read_guest_key(app, rec, h).await {
        Ok(line) => match write_pin(app, rec, &line) {
            Ok(()) => {
                tracing::info!(vm = %rec.name, "pinned the host key the guest's agent reported")
            }
            Err(e) => tracing::warn!(vm = %rec.name, "pinning the guest's host key: {e}"),
        },
        Err(why) => {
            tracing::warn!(vm = %rec.name, "no host key pinned: {why}; `banger vm host-key {} --accept` pins it once sshd has made one", rec.name)
        }
    }
}

/// In the background after a daemon start: pin the keys of running VMs that have none
/// (made by a banger from before host keys were generated), from their agents.
pub fn pin_missing(app: std::sync::Arc<App>) {
    tokio::spawn(async move {
        let Ok(vms) = app.db(|s| s.list_vms()) else {
            return;
        };
        for rec in vms.into_iter().filter(|r| r.state == VmState::Running) {
            let vm_dir = app.layout.vm_dir(&rec.id);
            if vm_dir.join(files::HOST_KEY).exists() {
                continue;
            }
            let lock = app.vm_lock(rec.name.as_str());
            let _guard = lock.lock().await;
            if let Some(h) = handles::read(&vm_dir) {
                pin_from_guest(&app, &rec, &h.vmm).await;
            }
        }
    });
}

/// The guest's key as its agent reads it, checked.
async fn read_guest_key(app: &App, rec: &VmRecord, h: &Handles) -> Result<String, String> {
    let target = Target {
        id: &rec.id,
        name: rec.name.as_str(),
        handles: h,
    };
    let text = app
        .guest
        .host_key(target)
        .await
        .map_err(|e| e.to_string())?;
    banger_guest::keys::host_key_line(&text)
        .ok_or_else(|| "the guest reported something that is not one ssh public key".to_string())
}

fn write_pin(app: &App, rec: &VmRecord, line: &str) -> Result<()> {
    let path = app.layout.vm_dir(&rec.id).join(files::HOST_KEY);
    banger_image::durable::write_file(&path, format!("{line}\n").as_bytes())
        .map_err(DaemonError::io("writing", &path))?;
    crate::ssh_files::refresh(app);
    Ok(())
}

/// `vm.host_key`: the pinned key and the guest's (when it runs); with `accept`, pin
/// the guest's.
pub async fn host_key(app: &App, p: VmHostKeyParams) -> Result<VmHostKeyInfo> {
    let lock = app.vm_lock(&p.name);
    let _guard = lock.lock().await;
    let rec = app.db(|s| s.get_vm_by_name(&p.name))?;
    let vm_dir = app.layout.vm_dir(&rec.id);
    let running = rec.state == VmState::Running;
    let (guest, guest_error) = match handles::read(&vm_dir).filter(|_| running) {
        Some(h) => match read_guest_key(app, &rec, &h.vmm).await {
            Ok(k) => (Some(k), None),
            Err(e) => (None, Some(e)),
        },
        None => (None, Some(format!("VM {} is not running", rec.name))),
    };
    let mut accepted = false;
    if p.accept {
        let Some(line) = &guest else {
            return Err(DaemonError::BadRequest(format!(
                "cannot accept VM {}'s host key: {}",
                rec.name,
                guest_error
                    .as_deref()
                    .unwrap_or("the guest did not report one")
            )));
        };
        write_pin(app, &rec, line)?;
        accepted = true;
        tracing::info!(vm = %rec.name, key = %line, "host key accepted by the user");
    }
    Ok(VmHostKeyInfo {
        name: rec.name.to_string(),
        alias: crate::ssh_files::alias(rec.name.as_str()),
        pinned: crate::ssh_files::read_pin(&vm_dir),
        guest,
        guest_error,
        accepted,
        known_hosts_path: app.layout.known_hosts(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_vm_without_a_pin_gets_the_key_its_agent_reports() {
        let (_d, app, _world) = crate::vm::tests::fakes::app_with(|_| {});
        let p = banger_rpc::VmCreateParams {
            name: Some(banger_model::VmName::parse("dev").unwrap()),
            ..Default::default()
        };
        let info = crate::vm::create::create(&app, "op", p, &banger_rpc::ProgressSink::detached())
            .await
            .unwrap();
        let pin = app.layout.vm_dir(&info.id).join(files::HOST_KEY);
        // A VM from before generated keys: no pin.
        std::fs::remove_file(&pin).unwrap();
        pin_missing(app.clone());
        for _ in 0..100 {
            if pin.exists() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert_eq!(
            std::fs::read_to_string(&pin).unwrap(),
            "ssh-ed25519 AAAAguestreported\n"
        );
        let kh = std::fs::read_to_string(app.layout.known_hosts()).unwrap();
        assert!(
            kh.contains(&format!("dev.vm,{} ssh-ed25519 AAAAguestreported", info.ip)),
            "{kh}"
        );
        // vm.host_key shows both; accepting pins what the guest reports.
        std::fs::write(&pin, "ssh-ed25519 AAAAold\n").unwrap();
        let k = host_key(
            &app,
            VmHostKeyParams {
                name: "dev".into(),
                accept: false,
            },
        )
        .await
        .unwrap();
        assert_eq!(k.pinned.as_deref(), Some("ssh-ed25519 AAAAold"));
        assert_eq!(k.guest.as_deref(), Some("ssh-ed25519 AAAAguestreported"));
        assert!(!k.accepted);
        let k = host_key(
            &app,
            VmHostKeyParams {
                name: "dev".into(),
                accept: true,
            },
        )
        .await
        .unwrap();
        assert!(k.accepted);
        assert_eq!(k.pinned, k.guest);
        // A stopped VM's key cannot be accepted (nobody to ask).
        crate::vm::stop::kill(&app, "dev").await.unwrap();
        let e = host_key(
            &app,
            VmHostKeyParams {
                name: "dev".into(),
                accept: true,
            },
        )
        .await
        .unwrap_err();
        assert!(e.to_string().contains("not running"), "{e}");
    }
}
