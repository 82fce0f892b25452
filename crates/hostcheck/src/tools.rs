//! The host tools banger uses, the packages that provide them, and what each is for.
//!
//! The table is `tools.txt` at the crate root, compiled in: `make deps` and `.ci/run`
//! read the same file (its `debian` column), so the list lives in one place. A test
//! checks that every line parses.

/// The table's text.
pub const TABLE: &str = include_str!("../tools.txt");

/// How much banger needs a tool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// banger does not work without it.
    Required,
    /// banger works; a feature is missing.
    Optional,
    /// Only the test suite uses it.
    Test,
    /// Only the benchmark (`scripts/bench`) uses it: the tools a user would reach for
    /// by hand, measured beside banger.
    Bench,
}

/// One row of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tool {
    /// The executable (`None` for a package without one, like `ca-certificates`).
    pub command: Option<&'static str>,
    /// Debian/Ubuntu package.
    pub debian: &'static str,
    /// Fedora/RHEL package, if any.
    pub fedora: Option<&'static str>,
    /// Arch package, if any.
    pub arch: Option<&'static str>,
    /// How much banger needs it.
    pub need: Need,
    /// What banger uses it for.
    pub why: &'static str,
}

fn parse_line(line: &'static str) -> Option<Tool> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let mut rest = line;
    let mut col = || -> Option<&'static str> {
        let r = rest.trim_start();
        let end = r.find(char::is_whitespace).unwrap_or(r.len());
        let (word, tail) = r.split_at(end);
        rest = tail;
        (!word.is_empty()).then_some(word)
    };
    let opt = |w: &'static str| (w != "-").then_some(w);
    let command = opt(col()?);
    let debian = col()?;
    let fedora = opt(col()?);
    let arch = opt(col()?);
    let need = match col()? {
        "required" => Need::Required,
        "optional" => Need::Optional,
        "test" => Need::Test,
        "bench" => Need::Bench,
        _ => return None,
    };
    let why = rest.trim();
    (!why.is_empty()).then_some(Tool {
        command,
        debian,
        fedora,
        arch,
        need,
        why,
    })
}

/// Every row, in table order. Malformed rows are skipped (the test below keeps the
/// table free of them).
pub fn all() -> impl Iterator<Item = Tool> {
    TABLE.lines().filter_map(parse_line)
}

/// The row for `command`.
pub fn find(command: &str) -> Option<Tool> {
    all().find(|t| t.command == Some(command))
}

/// The Debian package that ships `command` (a name, or a path whose file name is
/// looked up), for "is not installed" errors.
pub fn debian_package(command: &str) -> &'static str {
    let base = command.rsplit('/').next().unwrap_or(command);
    find(base).map_or("the package that provides it", |t| t.debian)
}

/// The advice for a missing `command`: which package to install, and `banger doctor`.
pub fn install_advice(command: &str) -> String {
    format!(
        "{command} is not installed; install it (Debian: apt-get install {}) or run `banger doctor`",
        debian_package(command)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_line_of_the_table_parses() {
        let rows = TABLE
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.trim().starts_with('#'))
            .count();
        assert_eq!(all().count(), rows, "a malformed line in tools.txt");
        assert!(rows > 10);
    }

    #[test]
    fn lookups() {
        assert_eq!(debian_package("mkfs.ext4"), "e2fsprogs");
        assert_eq!(debian_package("qemu-system-x86_64"), "qemu-system-x86");
        assert_eq!(debian_package("nope"), "the package that provides it");
        let ssh = find("ssh").unwrap();
        assert_eq!(ssh.fedora, Some("openssh-clients"));
        assert_eq!(ssh.need, Need::Required);
        assert_eq!(ssh.why, "commands and shells in VMs");
        assert!(all().any(|t| t.command.is_none() && t.debian == "ca-certificates"));
        assert!(install_advice("mmdebstrap").contains("apt-get install mmdebstrap"));
        assert_eq!(find("umoci").map(|t| t.need), Some(Need::Bench));
        assert_eq!(
            debian_package("/usr/bin/qemu-system-x86_64"),
            "qemu-system-x86"
        );
    }
}
