//! Who an exec runs as, from the guest's own `/etc/passwd` and `/etc/group`.
//!
//! Parsed directly rather than through `getpwnam`: the agent is static, and a static
//! glibc cannot load NSS modules (nor should PID 1 depend on them). Images without the
//! files (a scratch busybox image) still run commands as root.

use banger_channel::{ErrorKind, ErrorReply, User};

/// Largest passwd or group file read.
const MAX_FILE: u64 = 4 << 20;

/// A resolved user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// Login name (the uid as text for a uid not in passwd).
    pub name: String,
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Supplementary groups (from `/etc/group`), primary included.
    pub groups: Vec<u32>,
    /// Home directory.
    pub home: String,
    /// Login shell.
    pub shell: String,
}

fn read(path: &str) -> String {
    use std::io::Read;
    let mut s = String::new();
    if let Ok(f) = std::fs::File::open(path) {
        let _ = f.take(MAX_FILE).read_to_string(&mut s);
    }
    s
}

fn root() -> Account {
    Account {
        name: "root".into(),
        uid: 0,
        gid: 0,
        groups: vec![0],
        home: "/root".into(),
        shell: "/bin/sh".into(),
    }
}

/// Look `user` up in `passwd`/`group` text (default: root).
pub fn resolve_in(user: Option<&User>, passwd: &str, group: &str) -> Result<Account, ErrorReply> {
    let entries = passwd.lines().filter_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        if f.len() < 7 {
            return None;
        }
        Some(Account {
            name: f[0].to_string(),
            uid: f[2].parse().ok()?,
            gid: f[3].parse().ok()?,
            groups: Vec::new(),
            home: f[5].to_string(),
            shell: f[6].to_string(),
        })
    });
    let mut found = match user {
        None => entries
            .into_iter()
            .find(|a| a.uid == 0)
            .unwrap_or_else(root),
        Some(User::Uid(uid)) => {
            let uid = *uid;
            let mut e = entries;
            e.find(|a| a.uid == uid).unwrap_or_else(|| Account {
                name: uid.to_string(),
                uid,
                gid: uid,
                groups: Vec::new(),
                home: "/".into(),
                shell: "/bin/sh".into(),
            })
        }
        Some(User::Name(n)) => {
            let mut e = entries;
            match e.find(|a| &a.name == n) {
                Some(a) => a,
                None if n == "root" => root(),
                None => {
                    return Err(ErrorReply::new(
                        ErrorKind::NotFound,
                        format!("no user {n:?} in the guest's /etc/passwd: create it in the image or pass a numeric uid"),
                    ))
                }
            }
        }
    };
    let mut groups = vec![found.gid];
    for l in group.lines() {
        let f: Vec<&str> = l.split(':').collect();
        if f.len() < 4 {
            continue;
        }
        let Ok(gid) = f[2].parse::<u32>() else {
            continue;
        };
        if f[3].split(',').any(|m| m == found.name) && !groups.contains(&gid) {
            groups.push(gid);
        }
    }
    found.groups = groups;
    Ok(found)
}

/// Look `user` up in the guest's files.
pub fn resolve(user: Option<&User>) -> Result<Account, ErrorReply> {
    resolve_in(user, &read("/etc/passwd"), &read("/etc/group"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\n\
        daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n\
        broken line\n\
        dev:x:1000:1000:Dev,,,:/home/dev:/bin/zsh\n";
    const GROUP: &str = "root:x:0:\nsudo:x:27:dev\ndocker:x:999:other,dev\ndev:x:1000:\n";

    #[test]
    fn names_uids_and_groups_resolve() {
        let dev = resolve_in(Some(&User::Name("dev".into())), PASSWD, GROUP).unwrap();
        assert_eq!((dev.uid, dev.gid), (1000, 1000));
        assert_eq!(dev.groups, vec![1000, 27, 999]);
        assert_eq!(dev.home, "/home/dev");
        assert_eq!(dev.shell, "/bin/zsh");
        let by_uid = resolve_in(Some(&User::Uid(1000)), PASSWD, GROUP).unwrap();
        assert_eq!(by_uid.name, "dev");
        let root = resolve_in(None, PASSWD, GROUP).unwrap();
        assert_eq!((root.uid, root.shell.as_str()), (0, "/bin/bash"));
    }

    #[test]
    fn unknown_names_are_refused_and_unknown_uids_run_anyway() {
        let e = resolve_in(Some(&User::Name("ghost".into())), PASSWD, GROUP).unwrap_err();
        assert_eq!(e.kind, ErrorKind::NotFound);
        let u = resolve_in(Some(&User::Uid(4242)), PASSWD, GROUP).unwrap();
        assert_eq!((u.uid, u.gid, u.home.as_str()), (4242, 4242, "/"));
        // No passwd at all (a scratch image): root still works.
        assert_eq!(resolve_in(None, "", "").unwrap().uid, 0);
        assert_eq!(
            resolve_in(Some(&User::Name("root".into())), "", "")
                .unwrap()
                .home,
            "/root"
        );
    }
}
