//! Dynamic shell completion: names of images, kernels, VMs and catalog entries come
//! from the running daemon at the moment you press TAB.
//!
//! Registration: `source <(COMPLETE=bash banger)` (or zsh, fish, elvish,
//! powershell); `banger completion SHELL` prints the same script. Completion never
//! starts the daemon and gives up after two seconds, so a stopped or busy daemon
//! only means fewer suggestions, never a hanging shell.

use banger_model::Layout;
use banger_rpc::{CatalogList, Client, ImageList, KernelList, Method, NoParams, VmList};
use clap_complete::engine::{ArgValueCompleter, CompletionCandidate};
use std::ffi::OsStr;
use std::time::Duration;

/// Ask a running daemon for `M`'s list, or nothing.
fn query<M: Method<Params = NoParams>>() -> Option<M::Result> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    rt.block_on(async {
        let layout = Layout::for_client();
        tokio::time::timeout(Duration::from_secs(2), async {
            let mut c = Client::connect(layout.socket()).await.ok()?;
            c.call::<M>(&NoParams {}, |_| {}).await.ok()
        })
        .await
        .ok()
        .flatten()
    })
}

fn candidates(items: impl IntoIterator<Item = (String, String)>) -> Vec<CompletionCandidate> {
    items
        .into_iter()
        .map(|(name, help)| CompletionCandidate::new(name).help(Some(help.into())))
        .collect()
}

fn local_images(_: &OsStr) -> Vec<CompletionCandidate> {
    let imgs = query::<ImageList>().unwrap_or_default();
    candidates(imgs.into_iter().map(|i| (i.name, i.source)))
}

fn local_kernels(_: &OsStr) -> Vec<CompletionCandidate> {
    let ks = query::<KernelList>().unwrap_or_default();
    candidates(ks.into_iter().map(|k| (k.name, k.release)))
}

fn local_vms(_: &OsStr) -> Vec<CompletionCandidate> {
    let vms = query::<VmList>().unwrap_or_default();
    candidates(
        vms.into_iter()
            .map(|v| (v.name, v.state.as_str().to_string())),
    )
}

fn catalog_image_names(_: &OsStr) -> Vec<CompletionCandidate> {
    let l = query::<CatalogList>().unwrap_or_default();
    candidates(l.images.into_iter().map(|i| (i.name, i.description)))
}

fn catalog_kernel_names(_: &OsStr) -> Vec<CompletionCandidate> {
    let l = query::<CatalogList>().unwrap_or_default();
    candidates(l.kernels.into_iter().map(|k| (k.name, k.detail)))
}

/// Local image names.
pub fn images() -> ArgValueCompleter {
    ArgValueCompleter::new(local_images)
}

/// Local kernel names.
pub fn kernels() -> ArgValueCompleter {
    ArgValueCompleter::new(local_kernels)
}

/// VM names.
pub fn vms() -> ArgValueCompleter {
    ArgValueCompleter::new(local_vms)
}

/// Catalog image names (what `image pull NAME` takes).
pub fn catalog_images() -> ArgValueCompleter {
    ArgValueCompleter::new(catalog_image_names)
}

/// Catalog kernel names (what `kernel pull NAME` takes).
pub fn catalog_kernels() -> ArgValueCompleter {
    ArgValueCompleter::new(catalog_kernel_names)
}
