//! Tar entry names, checked before anything touches the disk.
//!
//! A layer is attacker-controlled input. Every name is normalised into a list of plain
//! components here, and only such components ever reach a `*at` system call: no `..`, no
//! absolute paths, and nothing a debugfs script could not express (the ext4 ownership
//! pass names every recorded path in a debugfs script, read line by line: a name with a
//! newline would either break the script or, worse, inject a command into it). Inside
//! the script every path is double-quoted ([`quote`]), which carries spaces, quotes and
//! backslashes literally.

/// Why a name was refused; the caller adds the layer and entry for the error message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NameProblem {
    /// A `..` component.
    DotDot,
    /// The name starts with `/`.
    Absolute,
    /// Not UTF-8, or control characters.
    Unencodable,
}

/// True for characters a debugfs script cannot carry inside a path, even quoted: it
/// reads its script line by line, so no control character (newline, tab, NUL...) may
/// appear. Kept identical to the check in `ext4::Debugfs` so both passes agree.
pub(crate) fn unencodable_char(c: char) -> bool {
    c.is_control()
}

/// `s` as one debugfs (libss) argument: double-quoted, with `"` doubled. Inside quotes
/// libss takes spaces, single quotes, backslashes and `#` literally (checked against
/// e2fsprogs 1.47.0's debugfs). `s` must be [`encodable`].
pub(crate) fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// True when `s` can appear as (part of) a path in a debugfs script.
pub(crate) fn encodable(s: &str) -> bool {
    !s.chars().any(unencodable_char)
}

/// True when `s` may be a file name at all: UTF-8 without control characters. Spaces,
/// quotes and backslashes are legal in real images (Debian's systemd ships
/// `system-systemd\x2dcryptsetup.slice`, Python packages ship `launcher manifest.xml`),
/// and debugfs carries them quoted, so this is now the same rule as [`encodable`].
pub(crate) fn acceptable(s: &str) -> bool {
    !s.chars().any(char::is_control)
}

/// A normalised path relative to the staging root: plain components only.
/// The empty path is the root directory itself (tar's `./`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct RelPath {
    comps: Vec<String>,
}

impl RelPath {
    /// Normalise raw tar name bytes: empty and `.` components are dropped (`./a//b/` is
    /// `a/b`); anything else unsafe is refused.
    pub(crate) fn parse(raw: &[u8]) -> Result<RelPath, NameProblem> {
        RelPath::parse_with(raw, true)
    }

    /// [`RelPath::parse`], refusing debugfs-unencodable names only when `strict` (the
    /// owners will be applied by a debugfs script); otherwise only control characters.
    pub(crate) fn parse_with(raw: &[u8], strict: bool) -> Result<RelPath, NameProblem> {
        if raw.first() == Some(&b'/') {
            return Err(NameProblem::Absolute);
        }
        // `..` is checked on the raw bytes first so that a traversal attempt is reported
        // as such even when other parts of the name are also unencodable.
        if raw.split(|b| *b == b'/').any(|c| c == b"..") {
            return Err(NameProblem::DotDot);
        }
        let s = std::str::from_utf8(raw).map_err(|_| NameProblem::Unencodable)?;
        if !(if strict { encodable(s) } else { acceptable(s) }) {
            return Err(NameProblem::Unencodable);
        }
        let comps = s
            .split('/')
            .filter(|c| !c.is_empty() && *c != ".")
            .map(str::to_string)
            .collect();
        Ok(RelPath { comps })
    }

    /// All components.
    pub(crate) fn comps(&self) -> &[String] {
        &self.comps
    }

    /// Components of the parent directory (empty for top-level entries and the root).
    pub(crate) fn parent(&self) -> &[String] {
        match self.comps.split_last() {
            Some((_, parent)) => parent,
            None => &[],
        }
    }

    /// The last component; `None` for the root.
    pub(crate) fn file_name(&self) -> Option<&str> {
        self.comps.last().map(String::as_str)
    }

    /// The same directory with a different last component.
    pub(crate) fn sibling(&self, name: &str) -> RelPath {
        let mut comps = self.parent().to_vec();
        comps.push(name.to_string());
        RelPath { comps }
    }

    /// `a/b/c` (empty for the root): the key used in fixup and written-path sets.
    pub(crate) fn key(&self) -> String {
        self.comps.join("/")
    }
}

/// `a/b` + `c` → `a/b/c`, with the root's key being empty.
pub(crate) fn join_key(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

/// The guest path for a key: `a/b` → `/a/b`, root → `/`.
pub(crate) fn guest_path(key: &str) -> String {
    format!("/{key}")
}

/// Longest entry path (or hardlink target) accepted: Linux's `PATH_MAX`.
pub(crate) const MAX_PATH_BYTES: usize = 4096;

/// Deepest entry path accepted. Bookkeeping per entry grows with depth × length
/// (every ancestor is recorded), so depth is bounded separately; real images stay
/// far below (a deep `node_modules` tree is ~40 levels).
pub(crate) const MAX_PATH_DEPTH: usize = 256;

/// Refuse a path longer than [`MAX_PATH_BYTES`] or deeper than [`MAX_PATH_DEPTH`]
/// components, before anything is allocated for it.
pub(crate) fn check_path_caps(raw: &[u8], layer: &str) -> Result<(), super::error::ApplyError> {
    let depth = raw
        .split(|b| *b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .count();
    let what = if raw.len() > MAX_PATH_BYTES {
        format!(
            "{} bytes long (more than {MAX_PATH_BYTES} is refused)",
            raw.len()
        )
    } else if depth > MAX_PATH_DEPTH {
        format!("{depth} directories deep (more than {MAX_PATH_DEPTH} is refused)")
    } else {
        return Ok(());
    };
    let shown: String = String::from_utf8_lossy(&raw[..raw.len().min(80)]).into_owned();
    Err(super::error::ApplyError::PathTooLong {
        layer: layer.into(),
        path: format!("{shown}..."),
        what,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_and_refuses() {
        let p = RelPath::parse(b"./usr//bin/ls").unwrap();
        assert_eq!(p.key(), "usr/bin/ls");
        assert_eq!(p.parent(), ["usr".to_string(), "bin".to_string()]);
        assert_eq!(RelPath::parse(b"./").unwrap().key(), "");
        assert_eq!(RelPath::parse(b"usr/").unwrap().key(), "usr");
        assert_eq!(RelPath::parse(b"../x"), Err(NameProblem::DotDot));
        assert_eq!(RelPath::parse(b"a/../../x"), Err(NameProblem::DotDot));
        assert_eq!(RelPath::parse(b"a/.."), Err(NameProblem::DotDot));
        assert_eq!(RelPath::parse(b"/etc/x"), Err(NameProblem::Absolute));
        for bad in [&b"a\nb"[..], b"a\rb", b"\xff", b"a\tb", b"a\x7fb"] {
            assert_eq!(
                RelPath::parse(bad),
                Err(NameProblem::Unencodable),
                "{bad:?}"
            );
        }
        // Spaces, quotes and backslashes travel quoted in debugfs scripts.
        for ok in [&b"a b"[..], b"a\"b", b"a'b", b"a\\x2db"] {
            assert!(RelPath::parse(ok).is_ok(), "{ok:?}");
        }
        assert_eq!(quote("/a \"b\""), "\"/a \"\"b\"\"\"");
        // Non-ASCII UTF-8 is fine (Debian's CA bundle has such names).
        assert!(RelPath::parse("certs/Főtanúsítvány.crt".as_bytes()).is_ok());
        // `...` is an ordinary name.
        assert_eq!(RelPath::parse(b"a/...").unwrap().key(), "a/...");
    }
}
