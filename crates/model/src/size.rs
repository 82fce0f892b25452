//! Human sizes ("512M", "4G", "1024") for `--memory` and `--disk`.

/// Why a size string was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SizeError {
    /// Not a number with an optional K/M/G/T suffix.
    #[error("size {0:?} is not a number with an optional unit (examples: 512M, 4G)")]
    Malformed(String),
    /// Parsed, but zero or larger than we can represent.
    #[error("size {0:?} is out of range")]
    OutOfRange(String),
}

/// Parse a size into MiB. A bare number means MiB; K rounds up to whole MiB.
pub fn parse_size_mib(s: &str) -> Result<u64, SizeError> {
    let t = s.trim();
    let t = t.strip_suffix(['b', 'B']).unwrap_or(t);
    let t = t.strip_suffix(['i']).unwrap_or(t);
    let (num, mult_kib): (&str, u64) = match t.chars().last() {
        Some('k' | 'K') => (&t[..t.len() - 1], 1),
        Some('m' | 'M') => (&t[..t.len() - 1], 1024),
        Some('g' | 'G') => (&t[..t.len() - 1], 1024 * 1024),
        Some('t' | 'T') => (&t[..t.len() - 1], 1024 * 1024 * 1024),
        _ => (t, 1024),
    };
    let n: u64 = num
        .trim()
        .parse()
        .map_err(|_| SizeError::Malformed(s.to_string()))?;
    let kib = n
        .checked_mul(mult_kib)
        .ok_or_else(|| SizeError::OutOfRange(s.to_string()))?;
    let mib = kib.div_ceil(1024);
    if mib == 0 {
        return Err(SizeError::OutOfRange(s.to_string()));
    }
    Ok(mib)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units() {
        assert_eq!(parse_size_mib("512M"), Ok(512));
        assert_eq!(parse_size_mib("4G"), Ok(4096));
        assert_eq!(parse_size_mib("4GiB"), Ok(4096));
        assert_eq!(parse_size_mib("1024"), Ok(1024));
        assert_eq!(parse_size_mib("1T"), Ok(1024 * 1024));
        assert_eq!(parse_size_mib("1k"), Ok(1));
    }

    #[test]
    fn refuses_garbage() {
        assert!(parse_size_mib("lots").is_err());
        assert!(parse_size_mib("0").is_err());
        assert!(parse_size_mib("-1G").is_err());
        assert!(parse_size_mib("99999999999999999999T").is_err());
    }
}
