//! `banger image …` and `banger kernel …`: base images, the kernel store and the
//! catalog. Paths given on the command line are made absolute here, because the
//! daemon resolves them from its own working directory.

use crate::{output, ui};
use anyhow::Context;
use banger_model::format_bytes;
use banger_rpc::{
    CachePruneParams, CatalogList, CatalogListing, Client, ImageBuild, ImageBuildParams,
    ImageCachePrune, ImageDelete, ImageInfo, ImageList, ImageNameParams, ImagePromote,
    ImagePromoteParams, ImagePull, ImagePullParams, ImageRegister, ImageRegisterParams, ImageShow,
    KernelDelete, KernelImport, KernelImportParams, KernelInfo, KernelList, KernelNameParams,
    KernelPull, KernelShow, Method, NoParams,
};
use clap::Subcommand;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, Subcommand)]
pub enum ImageCmd {
    /// Build an image from a distribution's archive.
    ///
    /// Example: banger image build debian --release bookworm
    Build {
        /// Distribution (only debian for now).
        #[arg(value_parser = ["debian"])]
        distro: String,
        /// Release [default: bookworm].
        #[arg(long)]
        release: Option<String>,
        /// Image name [default: debian-<release>].
        #[arg(long)]
        name: Option<String>,
        /// Extra Debian packages, comma-separated (e.g. python3,nodejs).
        #[arg(long, value_delimiter = ',')]
        packages: Vec<String>,
    },
    /// Show one image.
    ///
    /// Example: banger image show debian-bookworm --json
    Show {
        /// Image name.
        #[arg(add = crate::complete::images())]
        name: String,
    },
    /// Pull an image: a catalog name (see `banger image catalog`) or any OCI image
    /// from a registry. Any image boots (banger's agent is its init and runs the
    /// commands); OCI images boot the default image's kernel unless --kernel names
    /// another.
    ///
    /// Examples:
    ///   banger image pull debian-bookworm
    ///   banger image pull localhost:5000/team/devbox:latest --kernel debian-bookworm
    #[command(verbatim_doc_comment)]
    Pull {
        /// Catalog name, or OCI reference (registry/repository:tag or @digest).
        #[arg(add = crate::complete::catalog_images())]
        reference: String,
        /// Image name [default: the catalog name, or derived from the reference, e.g. devbox-latest].
        #[arg(long)]
        name: Option<String>,
        /// Kernel to boot (see `banger kernel list`).
        #[arg(long, add = crate::complete::kernels())]
        kernel: Option<String>,
    },
    /// Make an image from a root filesystem on this host: an ext4 image file or a tar
    /// archive (plain, gzip or zstd). systemd and openssh-server are optional.
    ///
    /// An ext4 file is read inside a throw-away guest, never mounted on the host.
    ///
    /// Examples:
    ///   banger image register devbox --rootfs ./rootfs.ext4
    ///   banger image register devbox --rootfs ./rootfs.tar.zst --kernel-file ./vmlinuz --modules ./modules
    #[command(verbatim_doc_comment)]
    Register {
        /// New image name.
        name: String,
        /// Root filesystem: ext4 image or tar archive.
        #[arg(long)]
        rootfs: PathBuf,
        /// Kernel from the kernel store [default: the default image's kernel].
        #[arg(long, add = crate::complete::kernels(), conflicts_with = "kernel_file")]
        kernel: Option<String>,
        /// A kernel file to import with the image (as kernel NAME).
        #[arg(long)]
        kernel_file: Option<PathBuf>,
        /// Modules directory for --kernel-file (holding lib/modules/<release>).
        #[arg(long, requires = "kernel_file")]
        modules: Option<PathBuf>,
    },
    /// Turn a stopped VM into a new image: its root filesystem (base plus changes)
    /// and its /root become the image and the image's /root template.
    ///
    /// The VM's disks are read inside a throw-away guest, never mounted on the host.
    /// Each VM made from the image gets a fresh ssh host key and machine id.
    ///
    /// Example: banger image promote dev devbox
    Promote {
        /// The stopped VM.
        #[arg(add = crate::complete::vms())]
        vm: String,
        /// New image name.
        name: String,
        /// Leave the VM's /root out (new VMs start with the base image's /root).
        #[arg(long)]
        no_work: bool,
    },
    /// Delete images (each is refused while a VM uses it).
    ///
    /// Example:
    ///   banger image delete devbox-latest old-devbox
    #[command(visible_alias = "rm", verbatim_doc_comment)]
    Delete {
        /// Image names.
        #[arg(required = true, add = crate::complete::images())]
        names: Vec<String>,
    },
    /// List images.
    #[command(visible_alias = "ls")]
    List,
    /// What `banger image pull NAME` can fetch from the catalog (BANGER_CATALOG).
    Catalog,
    /// Warm snapshots: boot a template VM of IMAGE once and save it, so that `vm run`
    /// and `vm create` of that image and shape restore it (a fraction of a cold boot) instead of
    /// booting. Each restored VM gets its own hostname, address, MAC, machine-id,
    /// ssh host key, boot id and random seed before anything runs in it.
    ///
    /// Examples:
    ///   banger image warm debian-bookworm
    ///   banger image warm debian-bookworm --cpus 4 --memory 4G
    ///   banger image warm --list
    ///   banger image warm debian-bookworm --rm
    #[command(verbatim_doc_comment)]
    Warm(crate::warm::WarmArgs),
    /// The download cache (OCI layers, catalog files).
    #[command(subcommand)]
    Cache(CacheCmd),
}

#[derive(Debug, Subcommand)]
pub enum CacheCmd {
    /// Remove cached downloads no image was made from.
    ///
    /// Example: banger image cache prune --dry-run
    Prune {
        /// Only report what would be removed.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum KernelCmd {
    /// Pull a kernel from the catalog (see `banger kernel catalog`).
    ///
    /// Example: banger kernel pull debian-6.1-cloud
    Pull {
        /// Catalog name.
        #[arg(add = crate::complete::catalog_kernels())]
        name: String,
    },
    /// Import a kernel file from this host: a bzImage (/boot/vmlinuz-*) or an ELF
    /// vmlinux. banger builds its initrd from the kernel's modules (--modules);
    /// without them the kernel must have virtio, ext4 and overlay built in.
    ///
    /// Example: banger kernel import /boot/vmlinuz-6.1.0-40-cloud-amd64 --modules /
    Import {
        /// Kernel image file.
        path: PathBuf,
        /// Kernel name [default: its release].
        #[arg(long)]
        name: Option<String>,
        /// Kernel release, when the file does not say.
        #[arg(long)]
        release: Option<String>,
        /// Directory holding lib/modules/<release> (or that directory itself).
        #[arg(long, conflicts_with = "initrd")]
        modules: Option<PathBuf>,
        /// A ready initrd that runs banger's init (advanced).
        #[arg(long)]
        initrd: Option<PathBuf>,
    },
    /// List kernels.
    #[command(visible_alias = "ls")]
    List,
    /// Show one kernel.
    Show {
        /// Kernel name.
        #[arg(add = crate::complete::kernels())]
        name: String,
    },
    /// Remove kernels. Images made with one keep their own copy and still boot.
    ///
    /// Example:
    ///   banger kernel rm debian-6.1-cloud old-kernel
    #[command(visible_alias = "delete", verbatim_doc_comment)]
    Rm {
        /// Kernel names.
        #[arg(required = true, add = crate::complete::kernels())]
        names: Vec<String>,
    },
    /// What `banger kernel pull NAME` can fetch from the catalog (BANGER_CATALOG).
    Catalog,
}

/// What `kernel rm --json` prints (the `removed` shape; `network down` prints it too).
#[derive(Debug, serde::Serialize)]
pub struct Removed {
    /// Names removed (failures are reported on stderr, one JSON error each).
    pub removed: Vec<String>,
}

fn absolute(p: &Path) -> anyhow::Result<PathBuf> {
    std::path::absolute(p).with_context(|| format!("resolving {}", p.display()))
}

/// A long image call (build, pull, register, promote) with a spinner, then a
/// one-line summary.
async fn image_call<M: Method<Result = ImageInfo>>(
    c: &mut Client,
    params: &M::Params,
    what: &str,
    done: &str,
) -> anyhow::Result<ExitCode> {
    let mut sp = ui::Spinner::new(what);
    let r = c.call::<M>(params, |p| sp.update(&p)).await;
    sp.finish();
    let img = r?;
    output::render(&img, |img| {
        println!(
            "{done} image {} ({}, kernel {})",
            img.name,
            format_bytes(img.size_bytes),
            img.kernel.as_deref().unwrap_or(&img.kernel_release)
        )
    })
}

/// `banger image …`.
pub async fn image(c: &mut Client, cmd: ImageCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        ImageCmd::Build {
            distro: _,
            release,
            name,
            packages,
        } => {
            let p = ImageBuildParams {
                name,
                release,
                packages,
            };
            image_call::<ImageBuild>(c, &p, "building image", "built").await
        }
        ImageCmd::Pull {
            reference,
            name,
            kernel,
        } => {
            let what = format!("pulling {reference}");
            let p = ImagePullParams {
                reference,
                name,
                kernel,
            };
            image_call::<ImagePull>(c, &p, &what, "pulled").await
        }
        ImageCmd::Register {
            name,
            rootfs,
            kernel,
            kernel_file,
            modules,
        } => {
            let p = ImageRegisterParams {
                name,
                rootfs: absolute(&rootfs)?,
                kernel,
                kernel_file: kernel_file.as_deref().map(absolute).transpose()?,
                modules: modules.as_deref().map(absolute).transpose()?,
            };
            let what = format!("registering {}", rootfs.display());
            image_call::<ImageRegister>(c, &p, &what, "registered").await
        }
        ImageCmd::Promote { vm, name, no_work } => {
            let what = format!("promoting {vm}");
            let p = ImagePromoteParams { vm, name, no_work };
            image_call::<ImagePromote>(c, &p, &what, "promoted to").await
        }
        ImageCmd::Show { name } => {
            let i: ImageInfo = c
                .call::<ImageShow>(&ImageNameParams { name }, |_| {})
                .await?;
            output::render(&i, |i| {
                println!(
                    "name:    {}\nid:      {}\nsource:  {}\nkernel:  {} ({})\nsize:    {}",
                    i.name,
                    i.id,
                    i.source,
                    i.kernel.as_deref().unwrap_or("-"),
                    i.kernel_release,
                    format_bytes(i.size_bytes)
                );
            })
        }
        ImageCmd::Delete { names } => {
            let mut out = crate::vm::Outcomes::default();
            let mut deleted = vec![];
            for name in names {
                let r = c
                    .call::<ImageDelete>(&ImageNameParams { name: name.clone() }, |_| {})
                    .await;
                match r {
                    Ok(()) => {
                        output::say(format!("deleted image {name}"));
                        deleted.push(name);
                    }
                    Err(e) => out.failed(&anyhow::Error::new(e)),
                }
            }
            if output::json() {
                output::print_json(&serde_json::json!({ "deleted": deleted }))?;
            }
            Ok(out.code())
        }
        ImageCmd::List => {
            let imgs: Vec<ImageInfo> = c.call::<ImageList>(&NoParams {}, |_| {}).await?;
            output::render(&imgs, |imgs| {
                let mut t = ui::table(&["NAME", "SOURCE", "KERNEL", "SIZE", "CREATED"]);
                for i in imgs {
                    t.add_row(vec![
                        i.name.clone(),
                        i.source.clone(),
                        i.kernel.clone().unwrap_or_else(|| i.kernel_release.clone()),
                        format_bytes(i.size_bytes),
                        ui::ago(i.created_at),
                    ]);
                }
                println!("{t}");
            })
        }
        ImageCmd::Catalog => catalog(c, true).await,
        ImageCmd::Warm(args) => crate::warm::warm(c, args).await,
        ImageCmd::Cache(CacheCmd::Prune { dry_run }) => {
            let r = c
                .call::<ImageCachePrune>(&CachePruneParams { dry_run }, |_| {})
                .await?;
            output::render(&r, |r| {
                let verb = if r.dry_run { "would free" } else { "freed" };
                println!(
                    "{verb} {} in {} blobs; kept {} blobs that images were made from",
                    format_bytes(r.bytes),
                    r.blobs,
                    r.kept
                );
            })
        }
    }
}

async fn catalog(c: &mut Client, images: bool) -> anyhow::Result<ExitCode> {
    let l: CatalogListing = c.call::<CatalogList>(&NoParams {}, |_| {}).await?;
    let items = if images { &l.images } else { &l.kernels };
    output::render(items, |items| {
        let Some(loc) = &l.location else {
            println!("no catalog is configured: set BANGER_CATALOG to a catalog index URL or path (see docs/catalog.md)");
            return;
        };
        let detail = if images { "KERNEL" } else { "RELEASE" };
        let mut t = ui::table(&["NAME", detail, "DOWNLOAD", "DESCRIPTION"]);
        for i in items {
            t.add_row(vec![
                i.name.clone(),
                i.detail.clone(),
                format_bytes(i.size_bytes),
                i.description.clone(),
            ]);
        }
        println!("{t}\n(from {loc})");
    })
}

/// `banger kernel …`.
pub async fn kernel(c: &mut Client, cmd: KernelCmd) -> anyhow::Result<ExitCode> {
    let summary = |k: &KernelInfo, done: &str| {
        if output::json() {
            let _ = output::print_json(k);
            return;
        }
        println!(
            "{done} kernel {} (release {}, {})",
            k.name,
            k.release,
            format_bytes(k.size_bytes)
        );
    };
    match cmd {
        KernelCmd::Pull { name } => {
            let mut sp = ui::Spinner::new(&format!("pulling kernel {name}"));
            let r: Result<KernelInfo, _> = c
                .call::<KernelPull>(&KernelNameParams { name }, |p| sp.update(&p))
                .await;
            sp.finish();
            summary(&r?, "pulled");
            Ok(ExitCode::SUCCESS)
        }
        KernelCmd::Import {
            path,
            name,
            release,
            modules,
            initrd,
        } => {
            let p = KernelImportParams {
                path: absolute(&path)?,
                name,
                release,
                modules: modules.as_deref().map(absolute).transpose()?,
                initrd: initrd.as_deref().map(absolute).transpose()?,
            };
            let mut sp = ui::Spinner::new(&format!("importing {}", path.display()));
            let r: Result<KernelInfo, _> = c.call::<KernelImport>(&p, |p| sp.update(&p)).await;
            sp.finish();
            summary(&r?, "imported");
            Ok(ExitCode::SUCCESS)
        }
        KernelCmd::List => {
            let ks: Vec<KernelInfo> = c.call::<KernelList>(&NoParams {}, |_| {}).await?;
            output::render(&ks, |ks| {
                let mut t = ui::table(&["NAME", "RELEASE", "SOURCE", "SIZE", "CREATED"]);
                for k in ks {
                    t.add_row(vec![
                        k.name.clone(),
                        k.release.clone(),
                        k.source.clone(),
                        format_bytes(k.size_bytes),
                        ui::ago(k.created_at),
                    ]);
                }
                println!("{t}");
            })
        }
        KernelCmd::Show { name } => {
            let k: KernelInfo = c
                .call::<KernelShow>(&KernelNameParams { name }, |_| {})
                .await?;
            output::render(&k, |k| {
                println!(
                    "name:    {}\nid:      {}\nrelease: {}\nsource:  {}\nsize:    {}",
                    k.name,
                    k.id,
                    k.release,
                    k.source,
                    format_bytes(k.size_bytes)
                );
            })
        }
        KernelCmd::Rm { names } => {
            let mut out = crate::vm::Outcomes::default();
            let mut removed = vec![];
            for name in names {
                let r = c
                    .call::<KernelDelete>(&KernelNameParams { name: name.clone() }, |_| {})
                    .await;
                match r {
                    Ok(()) => {
                        output::say(format!("removed kernel {name}"));
                        removed.push(name);
                    }
                    Err(e) => out.failed(&anyhow::Error::new(e)),
                }
            }
            if output::json() {
                output::print_json(&Removed { removed })?;
            }
            Ok(out.code())
        }
        KernelCmd::Catalog => catalog(c, false).await,
    }
}
