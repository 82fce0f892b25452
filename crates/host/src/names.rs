//! Interface names: what Linux accepts and how banger names its taps.

use crate::NetError;

/// The longest interface name Linux accepts (IFNAMSIZ minus the trailing NUL).
pub const IFNAMSIZ_MAX: usize = 15;

/// Prefix of every tap banger creates, so its own taps are recognisable (and the
/// helper can refuse to touch anything else).
const TAP_PREFIX: &str = "bgr";

/// The tap name for a VM: `bgr` followed by up to 12 characters of its id.
///
/// Deterministic so a tap left behind by a crashed daemon can be found and reused
/// or deleted from the VM record alone.
pub fn tap_name(vm_id: &str) -> String {
    let id: String = vm_id
        .chars()
        .take(IFNAMSIZ_MAX - TAP_PREFIX.len())
        .collect();
    let name = format!("{TAP_PREFIX}{id}");
    // Multi-byte characters could push the name over IFNAMSIZ; ids are ASCII hex,
    // but trim by bytes anyway so the result is always a name Linux can hold.
    let mut end = name.len().min(IFNAMSIZ_MAX);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    name[..end].to_string()
}

/// Check that `name` is a usable interface name.
///
/// Stricter than the kernel (which takes almost any bytes): names also end up inside
/// nftables rules and log lines, so only `[A-Za-z0-9_.-]` is allowed.
pub fn validate_ifname(name: &str) -> Result<(), NetError> {
    let bad = |reason| {
        Err(NetError::InvalidName {
            name: name.to_string(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.len() > IFNAMSIZ_MAX {
        return bad("it is longer than 15 bytes (IFNAMSIZ)");
    }
    if name == "." || name == ".." {
        return bad("it is a path component");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    {
        return bad("it contains characters outside [A-Za-z0-9_.-]");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tap_name_takes_at_most_twelve_id_chars() {
        assert_eq!(tap_name("3fa9"), "bgr3fa9");
        assert_eq!(tap_name("0123456789abcdef"), "bgr0123456789ab");
        assert_eq!(tap_name("0123456789abcdef").len(), IFNAMSIZ_MAX);
        assert!(validate_ifname(&tap_name("0123456789abcdef")).is_ok());
    }

    #[test]
    fn tap_name_never_exceeds_ifnamsiz_even_for_odd_ids() {
        let name = tap_name("éééééééééééééé");
        assert!(name.len() <= IFNAMSIZ_MAX, "{name}");
        assert!(name.starts_with("bgr"));
    }

    #[test]
    fn validate_ifname_refuses_bad_names() {
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "a b",
            "abcdefghijklmnop",
            "br\"0",
            "tap:0",
        ] {
            assert!(
                matches!(validate_ifname(bad), Err(NetError::InvalidName { .. })),
                "{bad:?} should be refused"
            );
        }
        for good in ["banger0", "bgr1234", "a", "br-test_1.0", "abcdefghijklmno"] {
            assert!(validate_ifname(good).is_ok(), "{good:?} should be accepted");
        }
    }
}
