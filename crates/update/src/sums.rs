//! `SHA256SUMS`: the signed list of release files and their hashes, in the format
//! `sha256sum` writes and `sha256sum -c` reads (`<64 hex>  <name>`, or `<hex> *<name>`).

/// What is wrong with a `SHA256SUMS` file.
#[derive(Debug, thiserror::Error)]
pub enum SumsError {
    /// Not UTF-8.
    #[error("SHA256SUMS is not text")]
    NotText,
    /// A line that is not `<64 hex> <name>`.
    #[error("SHA256SUMS line {0} is not `<sha256>  <file name>`")]
    BadLine(usize),
    /// A name with a path separator or other odd characters.
    #[error("SHA256SUMS line {0} names {1:?}, which is not a plain file name")]
    BadName(usize, String),
    /// The same name twice.
    #[error("SHA256SUMS lists {0:?} twice")]
    Duplicate(String),
    /// The file we need is not listed.
    #[error("SHA256SUMS does not list {0}; the release is incomplete or the manifest points at the wrong release")]
    Missing(String),
}

/// Parsed `SHA256SUMS`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sums(Vec<(String, [u8; 32])>);

/// SHA-256 of `b`.
pub fn sha256(b: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(b).into()
}

/// Lowercase hex of a digest.
pub fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// A release file name: letters, digits, `.`, `-`, `_`, `+`, not starting with a dot.
pub fn plain_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 255
        && !n.starts_with('.')
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-+".contains(c))
}

impl Sums {
    /// Parse the file.
    pub fn parse(bytes: &[u8]) -> Result<Self, SumsError> {
        let text = std::str::from_utf8(bytes).map_err(|_| SumsError::NotText)?;
        let mut out: Vec<(String, [u8; 32])> = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let n = i + 1;
            if line.trim().is_empty() {
                continue;
            }
            let (h, rest) = line.split_once(' ').ok_or(SumsError::BadLine(n))?;
            let name = rest
                .strip_prefix(' ')
                .or_else(|| rest.strip_prefix('*'))
                .ok_or(SumsError::BadLine(n))?;
            let digest = unhex(&h.to_ascii_lowercase()).ok_or(SumsError::BadLine(n))?;
            if !plain_name(name) {
                return Err(SumsError::BadName(n, name.chars().take(100).collect()));
            }
            if out.iter().any(|(o, _)| o == name) {
                return Err(SumsError::Duplicate(name.to_string()));
            }
            out.push((name.to_string(), digest));
        }
        Ok(Self(out))
    }

    /// The hash listed for `name`.
    pub fn get(&self, name: &str) -> Result<[u8; 32], SumsError> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, d)| *d)
            .ok_or_else(|| SumsError::Missing(name.to_string()))
    }

    /// Render in `sha256sum` format (what the release tool writes and signs).
    pub fn render(entries: &[(String, [u8; 32])]) -> String {
        entries
            .iter()
            .map(|(n, d)| format!("{}  {n}\n", hex(d)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_both_separators() {
        let a = [0xab; 32];
        let text = Sums::render(&[("banger-1.0.0-x.tar.gz".into(), a)]);
        let s = Sums::parse(text.as_bytes()).unwrap();
        assert_eq!(s.get("banger-1.0.0-x.tar.gz").unwrap(), a);
        let star = format!("{} *install.sh\n", hex(&[1; 32]));
        assert_eq!(
            Sums::parse(star.as_bytes())
                .unwrap()
                .get("install.sh")
                .unwrap(),
            [1; 32]
        );
        assert!(matches!(s.get("other"), Err(SumsError::Missing(_))));
    }

    #[test]
    fn refuses_bad_lines() {
        let h = hex(&[0; 32]);
        for bad in [
            format!("{h} one-space-only\n"),
            format!("{}  x\n", &h[..63]),
            format!("{h}  ../etc/passwd\n"),
            format!("{h}  .hidden\n"),
            "zz  x\n".to_string(),
            format!("{h}  a\n{h}  a\n"),
        ] {
            assert!(Sums::parse(bad.as_bytes()).is_err(), "{bad:?}");
        }
        assert!(matches!(Sums::parse(&[0xff]), Err(SumsError::NotText)));
    }
}
