//! Shell scripts run in the guest (over ssh) for prepare and export. Every value
//! spliced in is shell-quoted.

/// Quote `s` for a POSIX shell.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b))
    {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Unpack the tar on stdin as the new workspace at `guest_path`, replacing any
/// previous copy only once the new one is complete, then set the git identity and
/// trust mise configuration (best effort).
pub fn prepare_script(guest_path: &str, identity: Option<&(String, String)>) -> String {
    let p = shell_quote(guest_path);
    let new = shell_quote(&format!("{guest_path}.banger-new"));
    let mut s = format!(
        "set -e; rm -rf {new}; mkdir -p {new}; tar -x -f - -C {new}; rm -rf {p}; mv {new} {p}; \
         git config --global --add safe.directory {p} >/dev/null 2>&1 || true; "
    );
    if let Some((name, email)) = identity {
        s.push_str(&format!(
            "git config --global user.name {}; git config --global user.email {}; ",
            shell_quote(name),
            shell_quote(email)
        ));
    }
    s.push_str(&format!(
        "if command -v mise >/dev/null 2>&1 && {{ [ -f {p}/.mise.toml ] || [ -f {p}/.tool-versions ]; }}; then \
         (cd {p} && mise trust >/dev/null 2>&1) || true; fi"
    ));
    s
}

/// Print a binary-safe patch of everything changed in the guest's tree at
/// `guest_path` against commit `base`, using a throw-away index so the guest's own
/// index is untouched. Renames are detected; ignored files are left out.
pub fn export_script(guest_path: &str, base: &str) -> String {
    format!(
        "set -e; cd {p}; idx=$(mktemp); trap 'rm -f \"$idx\"' EXIT; export GIT_INDEX_FILE=\"$idx\"; \
         git read-tree {b}; git add -A; git diff --cached --binary -M --full-index {b}",
        p = shell_quote(guest_path),
        b = shell_quote(base)
    )
}

/// Print the commits made in the guest since `base` as an mbox for `git am`.
pub fn commits_script(guest_path: &str, base: &str) -> String {
    format!(
        "set -e; cd {p}; git format-patch --stdout --binary {b}..HEAD",
        p = shell_quote(guest_path),
        b = shell_quote(base)
    )
}
