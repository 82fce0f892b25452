//! Random ids for VMs and images.

use std::fmt::Write;

/// A fresh 12-hex-character id. Short enough to read in paths and logs
/// (`state/vms/<id>/`); 48 random bits make collisions within one host
/// negligible, and inserts re-check uniqueness anyway.
pub fn new_id() -> String {
    let bytes: [u8; 6] = rand::random();
    bytes.iter().fold(String::with_capacity(12), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_12_lower_hex_and_vary() {
        let a = new_id();
        assert_eq!(a.len(), 12);
        assert!(a
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
        assert_ne!(a, new_id());
    }
}
