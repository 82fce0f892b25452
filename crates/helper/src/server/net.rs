//! The network operations as the helper runs them: in the scope of its config, on
//! links it recorded, for the caller SO_PEERCRED names.

use std::os::fd::OwnedFd;

use banger_host::LinkState;

use super::{overlap, Server};
use crate::records::{now_unix, BridgeRecord, Links, TapRecord};
use crate::tools::checked_tool;
use crate::{HelperError, PrivOp};

impl Server {
    /// Refuse a request naming a bridge, gateway or subnet other than the config's,
    /// or (from a non-root caller) a tap owner other than the caller.
    pub(crate) fn check_scope(&self, op: &PrivOp, caller: u32) -> Result<(), HelperError> {
        let bridge = |asked: &str| {
            if asked == self.config.bridge {
                Ok(())
            } else {
                Err(HelperError::NotConfigured {
                    what: "bridge",
                    asked: asked.to_string(),
                    configured: self.config.bridge.clone(),
                })
            }
        };
        match op {
            PrivOp::CreateTap {
                bridge: b,
                owner_uid,
                ..
            } => {
                bridge(b)?;
                match owner_uid {
                    Some(asked) if caller != 0 && *asked != caller => {
                        Err(HelperError::OwnerNotCaller {
                            asked: *asked,
                            caller,
                        })
                    }
                    _ => Ok(()),
                }
            }
            PrivOp::DeleteTap { .. } => Ok(()),
            PrivOp::EnableNat { bridge: b, subnet } => {
                bridge(b)?;
                if *subnet != self.subnet {
                    return Err(HelperError::NotConfigured {
                        what: "subnet",
                        asked: subnet.to_string(),
                        configured: self.subnet.to_string(),
                    });
                }
                Ok(())
            }
            PrivOp::DisableNat { bridge: b } | PrivOp::DisableIsolation { bridge: b } => bridge(b),
            PrivOp::EnsureBridge {
                name: b,
                gateway,
                prefix,
            }
            | PrivOp::EnableIsolation {
                bridge: b,
                gateway,
                prefix,
                ..
            }
            | PrivOp::DeleteBridge {
                name: b,
                gateway,
                prefix,
            } => {
                bridge(b)?;
                let want = self.subnet;
                if *gateway != want.gateway() || *prefix != want.prefix {
                    return Err(HelperError::NotConfigured {
                        what: "gateway",
                        asked: format!("{gateway}/{prefix}"),
                        configured: format!("{}/{}", want.gateway(), want.prefix),
                    });
                }
                Ok(())
            }
            PrivOp::IsolateTap { ip, .. } => {
                if self.subnet.is_guest_addr(*ip) {
                    Ok(())
                } else {
                    Err(HelperError::NotGuestAddress(*ip, self.subnet))
                }
            }
        }
    }

    /// Run an operation already validated and in scope.
    pub(crate) async fn run_priv(&self, op: PrivOp, caller: u32) -> Result<(), HelperError> {
        match op {
            PrivOp::EnsureBridge { .. } => self.ensure_bridge().await,
            PrivOp::CreateTap {
                name, owner_uid, ..
            } => {
                let owner = if caller == 0 {
                    owner_uid.unwrap_or(0)
                } else {
                    caller
                };
                self.create_tap(&name, owner, caller).await
            }
            PrivOp::DeleteTap { name } => self.delete_tap(&name, caller).await,
            PrivOp::EnableNat { .. } => {
                let nft = checked_tool("nft", &self.config.nft)?;
                let own = self.own_bridge_index().await?;
                overlap::check(self.subnet, own).await?;
                banger_host::enable_nat_with(&nft, &self.config.bridge, self.subnet).await?;
                Ok(())
            }
            PrivOp::DisableNat { .. } if crate::tools::absent(&self.config.nft) => {
                nft_absent(&self.config.nft, "NAT");
                Ok(())
            }
            PrivOp::DisableNat { .. } => {
                let nft = checked_tool("nft", &self.config.nft)?;
                banger_host::disable_nat_with(&nft).await?;
                Ok(())
            }
            PrivOp::EnableIsolation { host_tcp_ports, .. } => {
                let nft = checked_tool("nft", &self.config.nft)?;
                banger_host::enable_guard(
                    &nft,
                    &self.config.bridge,
                    self.subnet.gateway(),
                    &host_tcp_ports,
                )
                .await?;
                Ok(())
            }
            PrivOp::DisableIsolation { .. } if crate::tools::absent(&self.config.nft) => {
                nft_absent(&self.config.nft, "isolation");
                Ok(())
            }
            PrivOp::DisableIsolation { .. } => {
                let nft = checked_tool("nft", &self.config.nft)?;
                banger_host::disable_guard(&nft).await?;
                Ok(())
            }
            PrivOp::IsolateTap { name, ip } => {
                let nft = checked_tool("nft", &self.config.nft)?;
                let book = self.book.lock().await;
                self.owned_tap(&book.links, &name, caller).await?;
                banger_host::isolate_tap(&nft, &name, &banger_model::guest_mac(ip), ip).await?;
                Ok(())
            }
            PrivOp::DeleteBridge { .. } => self.delete_bridge().await,
        }
    }

    /// Remove banger's bridge (and its resolved settings) if it is banger's; absent is
    /// fine, someone else's bridge of that name is refused.
    async fn delete_bridge(&self) -> Result<(), HelperError> {
        let mut book = self.book.lock().await;
        let name = self.config.bridge.clone();
        match banger_host::link_state(&name).await? {
            Some(st) if self.bridge_is_ours(&book.links, &st) => {}
            Some(_) => return Err(HelperError::ForeignBridge(name)),
            None => {}
        }
        self.link_dns.revert(self.resolved.as_ref(), &name).await?;
        banger_host::delete_bridge(&name, self.subnet.gateway()).await?;
        if book.links.bridges.remove(&name).is_some() {
            book.save()?;
        }
        Ok(())
    }

    /// Whether `st` (the link named like the configured bridge) is banger's: recorded
    /// by this helper with the same index, or carrying the MAC banger gives its bridges
    /// (a bridge made by banger's in-process mode before the helper was installed).
    fn bridge_is_ours(&self, links: &Links, st: &LinkState) -> bool {
        let recorded = links
            .bridges
            .get(&self.config.bridge)
            .is_some_and(|b| b.ifindex == st.index);
        let marked = st.mac == Some(banger_host::bridge_mac(self.subnet.gateway()));
        st.kind.as_deref() == Some("bridge") && (recorded || marked)
    }

    /// The index of banger's bridge if it exists and is banger's; an error if a link of
    /// that name exists and is not.
    async fn own_bridge_index(&self) -> Result<Option<u32>, HelperError> {
        let book = self.book.lock().await;
        match banger_host::link_state(&self.config.bridge).await? {
            Some(st) if self.bridge_is_ours(&book.links, &st) => Ok(Some(st.index)),
            Some(_) => Err(HelperError::ForeignBridge(self.config.bridge.clone())),
            None => Ok(None),
        }
    }

    async fn ensure_bridge(&self) -> Result<(), HelperError> {
        let mut book = self.book.lock().await;
        let name = self.config.bridge.clone();
        let existing = match banger_host::link_state(&name).await? {
            Some(st) if self.bridge_is_ours(&book.links, &st) => Some(st.index),
            Some(_) => return Err(HelperError::ForeignBridge(name)),
            None => None,
        };
        overlap::check(self.subnet, existing).await?;
        banger_host::ensure_bridge(&name, self.subnet.gateway(), self.subnet.prefix).await?;
        self.link_dns
            .ensure(self.resolved.as_ref(), &name, self.subnet.gateway())
            .await?;
        if let Some(st) = banger_host::link_state(&name).await? {
            let rec = BridgeRecord {
                name: name.clone(),
                ifindex: st.index,
            };
            if book.links.bridges.get(&name) != Some(&rec) {
                book.links.bridges.insert(name, rec);
                book.save()?;
            }
        }
        Ok(())
    }

    async fn create_tap(&self, name: &str, owner: u32, caller: u32) -> Result<(), HelperError> {
        let mut book = self.book.lock().await;
        match banger_host::link_state(&self.config.bridge).await? {
            Some(st) if self.bridge_is_ours(&book.links, &st) => {}
            Some(_) => return Err(HelperError::ForeignBridge(self.config.bridge.clone())),
            None => return Err(banger_host::NetError::Missing(self.config.bridge.clone()).into()),
        }
        let state = banger_host::link_state(name).await?;
        let record = book.links.taps.get(name).cloned();
        let owner = match (&record, &state) {
            (None, Some(st)) => return Err(foreign(name, st)),
            (Some(rec), _) if caller != 0 && rec.owner_uid != caller => {
                return Err(HelperError::NotYours {
                    name: name.to_string(),
                    owner: rec.owner_uid,
                    caller,
                })
            }
            (Some(rec), Some(st)) => {
                if !st.is_tap || rec.ifindex.is_some_and(|i| i != st.index) {
                    return Err(HelperError::NotOurLink(name.to_string()));
                }
                rec.owner_uid
            }
            (_, None) => owner,
        };
        // Record the intent first: a helper killed between the two steps adopts the
        // tap on restart instead of calling it foreign.
        book.links.taps.insert(
            name.to_string(),
            TapRecord {
                name: name.to_string(),
                owner_uid: owner,
                ifindex: record.as_ref().and_then(|r| r.ifindex),
                created_unix: record.as_ref().map_or_else(now_unix, |r| r.created_unix),
            },
        );
        book.save()?;
        if let Err(e) = banger_host::create_tap(name, &self.config.bridge, Some(owner)).await {
            if state.is_none() {
                book.links.taps.remove(name);
                book.save()?;
            }
            return Err(e.into());
        }
        let index = banger_host::link_state(name).await?.map(|st| st.index);
        if let Some(rec) = book.links.taps.get_mut(name) {
            rec.ifindex = index;
        }
        book.save()
    }

    async fn delete_tap(&self, name: &str, caller: u32) -> Result<(), HelperError> {
        let mut book = self.book.lock().await;
        let state = banger_host::link_state(name).await?;
        let Some(rec) = book.links.taps.get(name).cloned() else {
            return match state {
                None => Ok(()),
                Some(st) => Err(foreign(name, &st)),
            };
        };
        if caller != 0 && rec.owner_uid != caller {
            return Err(HelperError::NotYours {
                name: name.to_string(),
                owner: rec.owner_uid,
                caller,
            });
        }
        if let Some(st) = &state {
            if !st.is_tap || rec.ifindex.is_some_and(|i| i != st.index) {
                // Our tap is gone and something else took its name: forget ours,
                // leave theirs.
                book.links.taps.remove(name);
                book.save()?;
                return Err(HelperError::NotOurLink(name.to_string()));
            }
            banger_host::delete_link(name).await?;
        }
        if let Ok(nft) = checked_tool("nft", &self.config.nft) {
            crate::in_process::release_tap_rules(&nft, name).await;
        }
        book.links.taps.remove(name);
        book.save()
    }

    /// Open the caller's tap (TUNSETIFF, as QEMU's `ifname=` would) for passing.
    pub(crate) async fn open_tap(&self, name: &str, caller: u32) -> Result<OwnedFd, HelperError> {
        crate::validate::tap_name(name)?;
        let book = self.book.lock().await;
        self.owned_tap(&book.links, name, caller).await?;
        Ok(banger_host::open_tap(name)?)
    }

    /// Check that `name` is a live tap the helper made for `caller` (any, for root).
    pub(crate) async fn owned_tap(
        &self,
        links: &Links,
        name: &str,
        caller: u32,
    ) -> Result<TapRecord, HelperError> {
        let state = banger_host::link_state(name).await?;
        let Some(rec) = links.taps.get(name) else {
            return Err(match state {
                Some(st) => foreign(name, &st),
                None => banger_host::NetError::Missing(name.to_string()).into(),
            });
        };
        if caller != 0 && rec.owner_uid != caller {
            return Err(HelperError::NotYours {
                name: name.to_string(),
                owner: rec.owner_uid,
                caller,
            });
        }
        match state {
            Some(st) if st.is_tap && rec.ifindex.is_none_or(|i| i == st.index) => Ok(rec.clone()),
            Some(_) => Err(HelperError::NotOurLink(name.to_string())),
            None => Err(banger_host::NetError::Missing(name.to_string()).into()),
        }
    }

    /// The caller's taps (all of them for root).
    pub(crate) async fn list_taps(&self, caller: u32) -> Vec<TapRecord> {
        let book = self.book.lock().await;
        book.links
            .taps
            .values()
            .filter(|t| caller == 0 || t.owner_uid == caller)
            .cloned()
            .collect()
    }

    /// On start: forget records whose link is gone or is no longer the one recorded,
    /// and adopt taps whose creation a killed helper had only announced.
    pub(crate) async fn reconcile(&self) -> Result<(), HelperError> {
        let mut book = self.book.lock().await;
        let before = book.links.clone();
        let names: Vec<String> = book.links.taps.keys().cloned().collect();
        for name in names {
            let st = banger_host::link_state(&name).await?;
            let Some(rec) = book.links.taps.get_mut(&name) else {
                continue;
            };
            let keep = match (&st, rec.ifindex) {
                (Some(st), Some(i)) => st.is_tap && st.index == i,
                (Some(st), None) if st.is_tap && st.tap_owner == Some(rec.owner_uid) => {
                    rec.ifindex = Some(st.index);
                    true
                }
                _ => false,
            };
            if !keep {
                tracing::info!(tap = %name, "forgetting the record of a tap that is gone");
                book.links.taps.remove(&name);
            }
        }
        let bridges: Vec<(String, u32)> = book
            .links
            .bridges
            .values()
            .map(|b| (b.name.clone(), b.ifindex))
            .collect();
        for (name, index) in bridges {
            let st = banger_host::link_state(&name).await?;
            if st.is_none_or(|s| s.index != index) {
                book.links.bridges.remove(&name);
            }
        }
        if book.links != before {
            book.save()?;
        }
        Ok(())
    }
}

/// The refusal for an unrecorded link: "not a tap" when it is not one, else "not ours".
fn foreign(name: &str, st: &LinkState) -> HelperError {
    if st.is_tap {
        HelperError::NotOurLink(name.to_string())
    } else {
        HelperError::NotATap(name.to_string())
    }
}

/// Removing banger's tables without nftables installed: there is nothing to remove
/// them with, and on a host that never had nft there are none (`system uninstall`
/// and `network down` on a host without nftables must not fail for that).
fn nft_absent(nft: &std::path::Path, what: &str) {
    tracing::info!(
        nft = %nft.display(),
        "nft is not installed: no banger {what} tables to remove (if nftables was removed after banger used it, its tables stay until reboot)"
    );
}
