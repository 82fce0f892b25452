//! Choosing between KVM and TCG by *probing*, not assuming.
//!
//! `/dev/kvm` existing proves little: on nested, paravirtual KVM hosts (these CI
//! machines among them) stock kernels hang early in boot under KVM. So the probe boots
//! the real guest kernel with banger's initrd in probe mode under KVM and waits for the
//! init's marker on the console. The verdict is cached per host boot and kernel.

use banger_hostcheck::accel::{self as verdict, Verdict};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use banger_contract::cmdline::PROBE_OK;
pub use banger_hostcheck::accel::{Accel, AccelChoice};

/// How long a KVM guest may take to reach its init before we call KVM unusable.
/// Real KVM gets there in well under a second.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(8);

/// Decide the accelerator for `kernel`+`initrd`. `forced` (from `BANGER_ACCEL`) wins;
/// `cache` is a JSON file remembering the verdict for this host boot (format:
/// [`banger_hostcheck::accel`], which `banger doctor` reads too).
pub async fn choose(
    qemu: &str,
    kernel: &Path,
    initrd: &Path,
    scratch: &Path,
    cache: Option<&Path>,
    forced: Option<Accel>,
) -> AccelChoice {
    if let Some(a) = forced {
        return AccelChoice {
            accel: a,
            reason: format!("{} forced by BANGER_ACCEL", a.as_str()),
        };
    }
    if verdict::open_kvm().is_err() {
        return AccelChoice {
            accel: Accel::Tcg,
            reason: "/dev/kvm is missing or not accessible; using TCG software emulation (slower)"
                .into(),
        };
    }
    let key = verdict::cache_key(&verdict::boot_id(), kernel);
    if let Some(v) = cache
        .and_then(|p| verdict::read(p).ok().flatten())
        .filter(|v| v.key == key)
    {
        return v.choice;
    }
    let choice = probe(qemu, kernel, initrd, scratch).await;
    if let Some(p) = cache {
        let v = Verdict {
            key,
            choice: choice.clone(),
        };
        if let Err(e) = verdict::write(p, &v) {
            tracing::warn!(path = %p.display(), "could not cache the accelerator verdict: {e}");
        }
    }
    choice
}

async fn probe(qemu: &str, kernel: &Path, initrd: &Path, scratch: &Path) -> AccelChoice {
    let log: PathBuf = scratch.join(format!("kvm-probe-{}.log", std::process::id()));
    let _ = std::fs::remove_file(&log);
    let tsc = crate::tsc::measure_khz(Duration::from_millis(50));
    let started = Instant::now();
    let child = tokio::process::Command::new(qemu)
        .args([
            "-M",
            "microvm,pit=on,pic=on,rtc=on",
            "-accel",
            "kvm",
            "-cpu",
            "host",
        ])
        .args(["-smp", "1", "-m", "256", "-nodefaults", "-no-user-config"])
        .args([
            "-display",
            "none",
            "-no-reboot",
            "-sandbox",
            crate::qemu::SANDBOX,
        ])
        .arg("-serial")
        .arg(format!("file:{}", log.display()))
        .arg("-kernel")
        .arg(kernel)
        .arg("-initrd")
        .arg(initrd)
        .arg("-append")
        .arg(format!(
            "console=ttyS0 panic=-1 quiet {} tsc_early_khz={tsc} tsc=reliable",
            banger_contract::cmdline::PROBE
        ))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            return AccelChoice {
                accel: Accel::Tcg,
                reason: format!("could not run {qemu} for the KVM probe ({e}); using TCG"),
            }
        }
    };
    let ok = loop {
        let seen = std::fs::read_to_string(&log).unwrap_or_default();
        if seen.contains(PROBE_OK) {
            break true;
        }
        if started.elapsed() > PROBE_TIMEOUT {
            break false;
        }
        if let Ok(Some(_)) = child.try_wait() {
            let seen = std::fs::read_to_string(&log).unwrap_or_default();
            break seen.contains(PROBE_OK);
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    let _ = child.kill().await;
    let _ = std::fs::remove_file(&log);
    if ok {
        AccelChoice {
            accel: Accel::Kvm,
            reason: format!(
                "KVM boots guests on this host (probe reached init in {} ms)",
                started.elapsed().as_millis()
            ),
        }
    } else {
        AccelChoice {
            accel: Accel::Tcg,
            reason: format!(
                "/dev/kvm exists but a guest kernel did not reach its init under KVM within {}s \
                 (nested or paravirtual KVM?); using TCG software emulation (slower)",
                PROBE_TIMEOUT.as_secs()
            ),
        }
    }
}
