//! Human sizes ("512M", "1.5G", "1TB") for `--memory`, `--disk` and size settings,
//! and the one check of a VM's CPU count and sizes.
//!
//! Units are binary, as everywhere in banger's output: `1G` = `1GiB` = 1024 MiB,
//! and `GB` means the same (memory and disks are sized in powers of two; a second,
//! decimal meaning would only surprise). A number without a unit is refused rather
//! than guessed: `--memory 2048` could mean bytes, MiB or GiB depending on the tool
//! the user last used.

/// Why a size string was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SizeError {
    /// Not a number followed by a unit.
    #[error("size {0:?} is not a number with a unit (examples: 512M, 1.5G, 1T)")]
    Malformed(String),
    /// A number without a unit.
    #[error("size {0:?} has no unit: write {0}M for MiB or {0}G for GiB")]
    NoUnit(String),
    /// Parsed, but zero or larger than we can represent.
    #[error("size {0:?} is out of range")]
    OutOfRange(String),
}

/// Parse a size into MiB, rounding up to a whole MiB. Accepts a decimal number and
/// a unit `K`, `M`, `G` or `T`, optionally followed by `i` and/or `B`, in any case.
pub fn parse_size_mib(s: &str) -> Result<u64, SizeError> {
    let t = s.trim();
    let t = t.strip_suffix(['b', 'B']).unwrap_or(t);
    let t = t.strip_suffix(['i', 'I']).unwrap_or(t);
    let (num, mult_kib): (&str, u64) = match t.chars().last() {
        Some('k' | 'K') => (&t[..t.len() - 1], 1),
        Some('m' | 'M') => (&t[..t.len() - 1], 1024),
        Some('g' | 'G') => (&t[..t.len() - 1], 1024 * 1024),
        Some('t' | 'T') => (&t[..t.len() - 1], 1024 * 1024 * 1024),
        Some(c) if c.is_ascii_digit() && t.len() == s.trim().len() => {
            return Err(if t.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
                SizeError::NoUnit(s.trim().to_string())
            } else {
                SizeError::Malformed(s.to_string())
            })
        }
        _ => return Err(SizeError::Malformed(s.to_string())),
    };
    let num = num.trim();
    let (whole, frac) = num.split_once('.').unwrap_or((num, ""));
    if whole.is_empty() && frac.is_empty()
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
        || frac.len() > 6
    {
        return Err(SizeError::Malformed(s.to_string()));
    }
    let range = || SizeError::OutOfRange(s.to_string());
    let whole: u64 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| range())?
    };
    // Fixed point with six decimals: exact for everything a user types.
    let scale = 10u64.pow(frac.len() as u32);
    let frac: u64 = if frac.is_empty() {
        0
    } else {
        frac.parse().map_err(|_| range())?
    };
    let kib_scaled = whole
        .checked_mul(scale)
        .and_then(|w| w.checked_add(frac))
        .and_then(|n| n.checked_mul(mult_kib))
        .ok_or_else(range)?;
    let mib = kib_scaled.div_ceil(scale).div_ceil(1024);
    if mib == 0 {
        return Err(range());
    }
    Ok(mib)
}

/// A size in MiB the way banger prints sizes: `512 MiB`, `1 GiB`, `1.5 GiB`, `2 TiB`.
pub fn format_mib(mib: u64) -> String {
    format_bytes(mib.saturating_mul(1 << 20))
}

/// A byte count the way banger prints sizes (binary units, at most one decimal,
/// trailing `.0` dropped).
pub fn format_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        return format!("{bytes} B");
    }
    let s = format!("{v:.1}");
    let s = s.strip_suffix(".0").unwrap_or(&s);
    format!("{s} {}", UNITS[u])
}

/// The range of vCPUs a VM may have.
pub const CPUS: std::ops::RangeInclusive<u32> = 1..=64;
/// The range of guest memory, MiB (128 MiB to 1 TiB).
pub const MEMORY_MIB: std::ops::RangeInclusive<u64> = 128..=1024 * 1024;
/// The range of work disk sizes, MiB (256 MiB to 16 TiB).
pub const DISK_MIB: std::ops::RangeInclusive<u64> = 256..=16 * 1024 * 1024;

/// A VM resource outside what banger supports.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("--{flag} {value} is out of range ({min} to {max})")]
pub struct LimitError {
    /// The flag (`cpus`, `memory`, `disk`).
    pub flag: &'static str,
    /// The value asked for, as printed.
    pub value: String,
    /// The smallest accepted value, as printed.
    pub min: String,
    /// The largest accepted value, as printed.
    pub max: String,
}

fn check<T: PartialOrd + Copy>(
    flag: &'static str,
    v: T,
    r: &std::ops::RangeInclusive<T>,
    show: impl Fn(T) -> String,
) -> Result<(), LimitError> {
    if r.contains(&v) {
        return Ok(());
    }
    Err(LimitError {
        flag,
        value: show(v),
        min: show(*r.start()),
        max: show(*r.end()),
    })
}

/// The one check of a VM's CPU count and sizes: the CLI runs it on its flags (so a
/// mistake is caught before anything is sent) and the daemon on every request.
pub fn check_resources(
    cpus: Option<u32>,
    memory_mib: Option<u64>,
    disk_mib: Option<u64>,
) -> Result<(), LimitError> {
    if let Some(c) = cpus {
        check("cpus", c, &CPUS, |c| c.to_string())?;
    }
    if let Some(m) = memory_mib {
        check("memory", m, &MEMORY_MIB, format_mib)?;
    }
    if let Some(d) = disk_mib {
        check("disk", d, &DISK_MIB, format_mib)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_decimals() {
        assert_eq!(parse_size_mib("512M"), Ok(512));
        assert_eq!(parse_size_mib("4G"), Ok(4096));
        assert_eq!(parse_size_mib("4GiB"), Ok(4096));
        assert_eq!(parse_size_mib("4gb"), Ok(4096));
        assert_eq!(parse_size_mib("1.5G"), Ok(1536));
        assert_eq!(parse_size_mib("1TB"), Ok(1024 * 1024));
        assert_eq!(parse_size_mib("1T"), Ok(1024 * 1024));
        assert_eq!(parse_size_mib("1k"), Ok(1));
        assert_eq!(parse_size_mib("0.5M"), Ok(1));
        assert_eq!(parse_size_mib(".5G"), Ok(512));
        assert_eq!(parse_size_mib(" 2 G "), Ok(2048));
    }

    #[test]
    fn refuses_unitless_numbers_with_a_hint() {
        let e = parse_size_mib("1024").unwrap_err();
        assert_eq!(e, SizeError::NoUnit("1024".into()));
        assert!(e.to_string().contains("1024M"), "{e}");
        assert!(matches!(parse_size_mib("1.5"), Err(SizeError::NoUnit(_))));
    }

    #[test]
    fn refuses_garbage() {
        for bad in [
            "lots",
            "0G",
            "-1G",
            "G",
            "1..5G",
            "1.5.5G",
            "1e3M",
            "",
            "99999999999999999999T",
            "1.1234567G",
        ] {
            assert!(parse_size_mib(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn formats_with_one_unit_style() {
        assert_eq!(format_mib(512), "512 MiB");
        assert_eq!(format_mib(1024), "1 GiB");
        assert_eq!(format_mib(1536), "1.5 GiB");
        assert_eq!(format_mib(8192), "8 GiB");
        assert_eq!(format_bytes(1031 << 20), "1 GiB");
        assert_eq!(format_bytes(100), "100 B");
        assert_eq!(format_bytes(1 << 40), "1 TiB");
    }

    #[test]
    fn one_message_shape_for_every_limit() {
        assert_eq!(check_resources(Some(2), Some(1024), Some(8192)), Ok(()));
        assert_eq!(
            check_resources(Some(0), None, None)
                .unwrap_err()
                .to_string(),
            "--cpus 0 is out of range (1 to 64)"
        );
        assert_eq!(
            check_resources(None, Some(64), None)
                .unwrap_err()
                .to_string(),
            "--memory 64 MiB is out of range (128 MiB to 1 TiB)"
        );
        assert_eq!(
            check_resources(None, None, Some(100))
                .unwrap_err()
                .to_string(),
            "--disk 100 MiB is out of range (256 MiB to 16 TiB)"
        );
    }
}
