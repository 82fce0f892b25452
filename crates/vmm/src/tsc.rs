//! Host TSC frequency. QEMU's `-M microvm` gives the guest no PIT/HPET calibration
//! source it trusts, and Debian's kernel then spins forever calibrating the TSC; passing
//! `tsc_early_khz=<host rate> tsc=reliable` skips calibration (measured: without it
//! the guest hangs). Under TCG the guest TSC runs at the host's rate, so we measure the
//! host's: rdtsc against CLOCK_MONOTONIC over a short window.

use std::time::{Duration, Instant};

/// Measure the host TSC rate in kHz over `window` (50-100 ms is plenty: ±0.01 %).
pub fn measure_khz(window: Duration) -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        let t0 = Instant::now();
        // SAFETY: rdtsc has no preconditions on x86_64.
        let c0 = unsafe { core::arch::x86_64::_rdtsc() };
        while t0.elapsed() < window {
            std::hint::spin_loop();
        }
        // SAFETY: as above.
        let c1 = unsafe { core::arch::x86_64::_rdtsc() };
        let ns = t0.elapsed().as_nanos().max(1);
        let khz = u128::from(c1.wrapping_sub(c0)) * 1_000_000 / ns;
        u64::try_from(khz).unwrap_or(0)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = window;
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures_a_plausible_rate_consistently() {
        let a = measure_khz(Duration::from_millis(50));
        let b = measure_khz(Duration::from_millis(50));
        assert!((500_000..10_000_000).contains(&a), "{a} kHz");
        let diff = a.abs_diff(b) as f64 / a as f64;
        assert!(diff < 0.01, "{a} vs {b}");
    }
}
