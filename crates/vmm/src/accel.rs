//! Choosing between KVM and TCG by *probing*, not assuming.
//!
//! `/dev/kvm` existing proves little: on nested, paravirtual KVM hosts (these CI
//! machines among them) stock kernels hang early in boot under KVM. So the probe boots
//! the real guest kernel with banger's initrd in probe mode under KVM and waits for the
//! init's marker on the console. The verdict is cached per host boot and kernel.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Marker the guest init prints in probe mode (kept in sync with banger-agent).
pub const PROBE_OK: &str = "BANGER-PROBE-OK";
/// How long a KVM guest may take to reach its init before we call KVM unusable.
/// Real KVM gets there in well under a second.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(8);

/// Hardware-assisted or software emulation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    /// KVM: near-native speed.
    Kvm,
    /// QEMU's TCG software emulation: works everywhere, several times slower.
    Tcg,
}

impl Accel {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

/// The decision and why, for logs, `doctor` and the one-line CLI notice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccelChoice {
    /// What to use.
    pub accel: Accel,
    /// Why, in a sentence a user can act on.
    pub reason: String,
}

#[derive(Serialize, Deserialize)]
struct Cached {
    key: String,
    choice: AccelChoice,
}

fn cache_key(kernel: &Path) -> String {
    let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    let md = std::fs::metadata(kernel).ok();
    format!(
        "{}|{}|{}",
        boot_id.trim(),
        kernel.display(),
        md.map(|m| m.len()).unwrap_or(0)
    )
}

/// Decide the accelerator for `kernel`+`initrd`. `forced` (from `BANGER_ACCEL`) wins;
/// `cache` is a JSON file remembering the verdict for this host boot.
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
    if std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_err()
    {
        return AccelChoice {
            accel: Accel::Tcg,
            reason: "/dev/kvm is missing or not accessible; using TCG software emulation (slower)"
                .into(),
        };
    }
    let key = cache_key(kernel);
    if let Some(c) = cache
        .and_then(|p| std::fs::read(p).ok())
        .and_then(|b| serde_json::from_slice::<Cached>(&b).ok())
        .filter(|c| c.key == key)
    {
        return c.choice;
    }
    let choice = probe(qemu, kernel, initrd, scratch).await;
    if let Some(p) = cache {
        let c = Cached {
            key,
            choice: choice.clone(),
        };
        if let Ok(b) = serde_json::to_vec(&c) {
            let _ = std::fs::write(p, b);
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
        .args(["-display", "none", "-no-reboot"])
        .arg("-serial")
        .arg(format!("file:{}", log.display()))
        .arg("-kernel")
        .arg(kernel)
        .arg("-initrd")
        .arg(initrd)
        .arg("-append")
        .arg(format!(
            "console=ttyS0 panic=-1 quiet banger.probe tsc_early_khz={tsc} tsc=reliable"
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
