//! Install hints phrased for this host's package manager.

use banger_hostcheck::tools::Tool;

/// Package-manager family, from `/etc/os-release`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Distro {
    /// Debian, Ubuntu and derivatives: apt-get.
    Debian,
    /// Fedora, RHEL and derivatives: dnf.
    Fedora,
    /// Arch and derivatives: pacman.
    Arch,
    /// Anything else: a generic hint.
    Other,
}

/// The family from the text of `/etc/os-release`: `ID` first, then each of `ID_LIKE`
/// (so Ubuntu, whose ID_LIKE is `debian`, and Rocky, `rhel centos fedora`, resolve).
pub fn parse_os_release(text: &str) -> Distro {
    let field = |key: &str| {
        text.lines()
            .filter_map(|l| l.trim().split_once('='))
            .find(|(k, _)| k.trim() == key)
            .map(|(_, v)| v.trim().trim_matches(|c| c == '"' || c == '\'').to_string())
            .unwrap_or_default()
    };
    let id = field("ID");
    let like = field("ID_LIKE");
    std::iter::once(id.as_str())
        .chain(like.split_whitespace())
        .find_map(|id| match id.to_ascii_lowercase().as_str() {
            "debian" | "ubuntu" => Some(Distro::Debian),
            "fedora" | "rhel" | "centos" => Some(Distro::Fedora),
            "arch" | "archlinux" => Some(Distro::Arch),
            _ => None,
        })
        .unwrap_or(Distro::Other)
}

/// This host's family.
pub fn host_distro() -> Distro {
    let text = std::fs::read_to_string("/etc/os-release")
        .or_else(|_| std::fs::read_to_string("/usr/lib/os-release"))
        .unwrap_or_default();
    parse_os_release(&text)
}

/// The command that installs `tool`'s package (from banger-hostcheck's table); `sudo`
/// when not root.
pub fn install_hint(distro: Distro, tool: &Tool, root: bool) -> String {
    let sudo = if root { "" } else { "sudo " };
    let name = tool.command.unwrap_or(tool.debian);
    let generic = || {
        format!(
            "install the package that provides {name} with your distribution's package manager (on Debian: {})",
            tool.debian
        )
    };
    match distro {
        Distro::Debian => format!("{sudo}apt-get install {}", tool.debian),
        Distro::Fedora => tool
            .fedora
            .map_or_else(generic, |p| format!("{sudo}dnf install {p}")),
        Distro::Arch => tool
            .arch
            .map_or_else(generic, |p| format!("{sudo}pacman -S {p}")),
        Distro::Other => generic(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_release_picks_the_package_manager() {
        let debian = "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\nID=debian\n";
        assert_eq!(parse_os_release(debian), Distro::Debian);
        assert_eq!(
            parse_os_release("ID=ubuntu\nID_LIKE=debian\n"),
            Distro::Debian
        );
        assert_eq!(
            parse_os_release("ID=linuxmint\nID_LIKE=\"ubuntu debian\"\n"),
            Distro::Debian
        );
        assert_eq!(parse_os_release("ID=fedora\n"), Distro::Fedora);
        assert_eq!(
            parse_os_release("ID=\"rocky\"\nID_LIKE=\"rhel centos fedora\"\n"),
            Distro::Fedora
        );
        assert_eq!(parse_os_release("ID=manjaro\nID_LIKE=arch\n"), Distro::Arch);
        assert_eq!(parse_os_release("ID=arch\n"), Distro::Arch);
        assert_eq!(parse_os_release("ID=alpine\n"), Distro::Other);
        assert_eq!(parse_os_release(""), Distro::Other);
        // VERSION_ID must not be mistaken for ID.
        assert_eq!(
            parse_os_release("VERSION_ID=debian\nID=alpine\n"),
            Distro::Other
        );
    }

    #[test]
    fn hints_per_family() {
        let ssh = banger_hostcheck::tools::find("ssh").expect("ssh is in the table");
        let hint = |d, root| install_hint(d, &ssh, root);
        assert_eq!(hint(Distro::Debian, true), "apt-get install openssh-client");
        assert_eq!(
            hint(Distro::Debian, false),
            "sudo apt-get install openssh-client"
        );
        assert_eq!(hint(Distro::Fedora, true), "dnf install openssh-clients");
        assert_eq!(hint(Distro::Arch, true), "pacman -S openssh");
        let other = hint(Distro::Other, true);
        assert!(
            other.contains("ssh") && other.contains("openssh-client"),
            "{other}"
        );
        let registry = banger_hostcheck::tools::find("docker-registry").expect("in the table");
        assert!(
            install_hint(Distro::Fedora, &registry, true).contains("on Debian: docker-registry")
        );
    }
}
