//! The metadata of one tar entry, with PAX overrides (large ids, precise mtimes,
//! `SCHILY.xattr.*`), read before the entry's data.

use rustix::fs::Timespec;

/// Owner, permissions, time, device numbers and xattrs of an entry.
#[derive(Debug, Clone)]
pub(crate) struct EntryMeta {
    pub uid: u32,
    pub gid: u32,
    /// Permission bits including setuid/setgid/sticky (`mode & 0o7777`).
    pub perm: u32,
    pub mtime: Timespec,
    pub major: u32,
    pub minor: u32,
    pub xattrs: Vec<(String, Vec<u8>)>,
}

/// xattr namespaces worth carrying into a guest image. `system.*` (ACLs) and vendor
/// namespaces are skipped: nothing in a development image depends on them, and
/// their binary formats are filesystem-specific.
fn wanted_xattr(name: &str) -> bool {
    ["user.", "security.", "trusted."]
        .iter()
        .any(|p| name.starts_with(p))
        && super::names::encodable(name)
}

fn id(v: u64, what: &str) -> Result<u32, String> {
    // (uid_t)-1 means "unchanged" to chown(2): it can never be a real owner.
    u32::try_from(v)
        .ok()
        .filter(|v| *v != u32::MAX)
        .ok_or_else(|| format!("{what} {v} is out of range"))
}

fn parse_pax_time(s: &str) -> Option<Timespec> {
    let (sec, frac) = s.split_once('.').unwrap_or((s, ""));
    let tv_sec: i64 = sec.parse().ok()?;
    let digits: String = frac.chars().take(9).collect();
    let tv_nsec = if digits.is_empty() {
        0
    } else {
        let n: i64 = digits.parse().ok()?;
        n * 10i64.pow(9 - digits.len() as u32)
    };
    Some(Timespec {
        tv_sec,
        tv_nsec: tv_nsec as _,
    })
}

impl EntryMeta {
    /// Read the header fields, letting PAX records override them.
    pub(crate) fn read<R: std::io::Read>(
        entry: &mut tar::Entry<'_, R>,
    ) -> Result<EntryMeta, String> {
        let h = entry.header();
        let mut uid = h.uid().map_err(|e| format!("bad uid: {e}"))?;
        let mut gid = h.gid().map_err(|e| format!("bad gid: {e}"))?;
        let mode = h.mode().map_err(|e| format!("bad mode: {e}"))?;
        let mut mtime = Timespec {
            tv_sec: h.mtime().map_err(|e| format!("bad mtime: {e}"))? as i64,
            tv_nsec: 0,
        };
        let major = h.device_major().ok().flatten().unwrap_or(0);
        let minor = h.device_minor().ok().flatten().unwrap_or(0);
        let mut xattrs = vec![];
        if let Some(pax) = entry
            .pax_extensions()
            .map_err(|e| format!("bad PAX header: {e}"))?
        {
            for ext in pax {
                let ext = ext.map_err(|e| format!("bad PAX record: {e}"))?;
                let Ok(key) = ext.key() else { continue };
                let text = || ext.value().ok().map(str::trim);
                match key {
                    "uid" => uid = text().and_then(|v| v.parse().ok()).ok_or("bad PAX uid")?,
                    "gid" => gid = text().and_then(|v| v.parse().ok()).ok_or("bad PAX gid")?,
                    "mtime" => {
                        if let Some(t) = text().and_then(parse_pax_time) {
                            mtime = t;
                        }
                    }
                    _ => {
                        if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                            if wanted_xattr(name) {
                                xattrs.push((name.to_string(), ext.value_bytes().to_vec()));
                            } else {
                                tracing::debug!(xattr = name, "skipping xattr");
                            }
                        }
                    }
                }
            }
        }
        Ok(EntryMeta {
            uid: id(uid, "uid")?,
            gid: id(gid, "gid")?,
            perm: mode & 0o7777,
            mtime,
            major,
            minor,
            xattrs,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_times() {
        let t = parse_pax_time("1700000000.5").unwrap();
        assert_eq!((t.tv_sec, t.tv_nsec), (1700000000, 500_000_000));
        let t = parse_pax_time("12").unwrap();
        assert_eq!((t.tv_sec, t.tv_nsec), (12, 0));
        assert!(parse_pax_time("x").is_none());
    }

    #[test]
    fn ids_in_range() {
        assert_eq!(id(1000, "uid").unwrap(), 1000);
        assert!(id(u32::MAX as u64, "uid").is_err());
        assert!(id(1 << 40, "uid").is_err());
        assert!(!wanted_xattr("system.posix_acl_access"));
        assert!(wanted_xattr("security.capability"));
    }
}
