//! `image promote` and `image register`: turn disks banger must not trust into a
//! new base image.
//!
//! A stopped VM's overlay and work disks were written by the guest, and a user's
//! rootfs.ext4 is just as opaque; mounting either on the host would hand the host
//! kernel's ext4 driver a possibly crafted filesystem. Instead banger boots a
//! throw-away guest (its own kernel and initrd, no network, `banger.mode=export`):
//! the guest mounts the disks read-only, lets its own overlayfs merge the layers
//! (whiteouts, opaque directories) and writes one tar stream to a raw export disk.
//! The host then applies that tar through the same no-follow applier as registry
//! layers, and the rest is the common image path ([`finish_tree`]).

use crate::app::App;
use crate::error::{blocking, Cause, DaemonError, Result};
use crate::images::kernel_for_new_image;
use crate::kernels;
use crate::publish::{check_name, finish_tree, publish, unpack_tar, KernelFiles};
use crate::vm::files as vm_files;
use banger_image::files as img_files;
use banger_image::oci;
use banger_image::{export, BuiltImage};
use banger_model::{ImageRecord, VmState, VmmChoice};
use banger_rpc::{ImagePromoteParams, ImageRegisterParams, ProgressSink};
use banger_vmm::{DiskSpec, MachineSpec};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long the export guest may run: a few GiB at TCG speed, with margin.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// Run a standard tool (`cp`, `e2label`) and turn a failure into its stderr.
fn tool(cmd: &str, args: &[&std::ffi::OsStr]) -> Result<(), Cause> {
    let out = std::process::Command::new(cmd)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => banger_hostcheck::tools::install_advice(cmd),
            _ => format!("running {cmd}: {e}"),
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )
        .into())
    }
}

/// Remove what export guests of a previous daemon left (console logs, sockets, the
/// initrd copy); their staging directories go with the image staging sweep.
pub fn sweep(app: &App) {
    let dir = app.layout.runtime.join("exports");
    if dir.exists() {
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// Boot the export guest over `disks` (base first) and leave the merged tree as a
/// tar on `export_disk`. The guest runs the current agent as its init (appended to
/// the kernel's initrd), so images built by older bangers can be exported too.
async fn run_export_guest(
    app: &App,
    kernel_dir: &Path,
    disks: Vec<DiskSpec>,
    export_disk: &Path,
    progress: &ProgressSink,
) -> Result<()> {
    let id = format!("export-{}", banger_store::new_id());
    let rt = app.layout.runtime.join("exports").join(&id);
    std::fs::create_dir_all(&rt).map_err(DaemonError::io("creating", &rt))?;
    let result = async {
        let initrd = rt.join(img_files::INITRD);
        let (base, agent, out) = (
            kernel_dir.join(img_files::INITRD),
            app.config.agent.clone(),
            initrd.clone(),
        );
        blocking("export initrd", move || {
            let run = || -> Result<(), Cause> {
                banger_image::debian::check_agent(&agent)?;
                Ok(banger_image::initrd::with_init(&base, &agent, &out)?)
            };
            run().map_err(DaemonError::build("preparing the export guest's initrd"))
        })
        .await?;
        let selected = app
            .backends
            .select(VmmChoice::Auto, kernel_dir, progress)
            .await?;
        let (vmm, kernel) = (selected.vmm, selected.kernel);
        let mut all = disks;
        all.push(DiskSpec {
            path: export_disk.to_path_buf(),
            read_only: false,
        });
        let spec = MachineSpec {
            id: id.clone(),
            cpus: app.config.default_cpus,
            memory_mib: 512,
            kernel,
            initrd: Some(initrd),
            cmdline: export::KERNEL_ARG.to_string(),
            disks: all,
            net: None,
            runtime_dir: rt.clone(),
            restore: None,
        };
        progress.send("export", Some("booting the export guest".into()));
        let started = Instant::now();
        let h = vmm
            .launch(&spec)
            .await
            .map_err(DaemonError::vmm("starting the export guest"))?;
        if !vmm.wait_exit(&h, EXPORT_TIMEOUT).await {
            let _ = vmm.kill(&h).await;
            return Err(DaemonError::Build {
                what: "exporting the disks".into(),
                source: format!(
                    "the export guest did not finish within {} minutes; its console log was {}",
                    EXPORT_TIMEOUT.as_secs() / 60,
                    h.console_log.display()
                )
                .into(),
            });
        }
        tracing::info!(
            ms = started.elapsed().as_millis() as u64,
            "export guest finished"
        );
        match export::read_result(export_disk) {
            Ok(r) => {
                progress.send(
                    "export",
                    Some(format!(
                        "{:.1} MiB exported in {:.1} s",
                        r.tar_len as f64 / 1048576.0,
                        started.elapsed().as_secs_f64()
                    )),
                );
                Ok(())
            }
            Err(e) => {
                let console = crate::vm::start::tail_text(&h.console_log, 16 * 1024);
                let tail: Vec<&str> = console.lines().rev().take(8).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                Err(DaemonError::Build {
                    what: "reading the export disk".into(),
                    source: format!(
                        "{e}; the export guest's console ended with:\n{}",
                        tail.join("\n")
                    )
                    .into(),
                })
            }
        }
    }
    .await;
    let _ = std::fs::remove_dir_all(&rt);
    result
}

/// What a promoted image must not inherit from the VM: its identity.
fn forget_identity(root: &Path) -> Result<(), Cause> {
    let mut ed = oci::TreeEditor::open(root)?;
    if let Ok(names) = ed.list("etc/ssh") {
        for n in names.iter().filter(|n| n.starts_with("ssh_host_")) {
            ed.remove(&format!("etc/ssh/{n}"))?;
        }
    }
    // An empty machine-id makes systemd generate a fresh one on each boot.
    if ed.kind("etc/machine-id")?.is_some() {
        ed.write("etc/machine-id", b"", 0o444)?;
    }
    Ok(())
}

/// Apply the export disk into `staging/tree`, then make the image.
#[allow(clippy::too_many_arguments)]
async fn build_from_export(
    app: &App,
    name: &str,
    staging: &Path,
    export_disk: PathBuf,
    kernel: &KernelFiles,
    source: String,
    seed_from: Option<PathBuf>,
    progress: &ProgressSink,
) -> Result<ImageRecord> {
    let started = Instant::now();
    let (st, agent, sink, kfiles) = (
        staging.to_path_buf(),
        app.config.agent.clone(),
        progress.clone(),
        kernel.clone(),
    );
    let src = source.clone();
    let what = format!("making image {name}");
    let built = blocking("image export", move || {
        let run = || -> Result<BuiltImage, Cause> {
            sink.send("image:apply", Some("exported tree".into()));
            std::fs::create_dir_all(st.join("tree"))
                .map_err(|e| format!("create {}: {e}", st.display()))?;
            let tree =
                export::apply_export(&export_disk, &st.join("tree"), oci::ApplyOptions::default())?;
            let _ = std::fs::remove_file(&export_disk);
            forget_identity(&tree.root)?;
            let built = finish_tree(
                tree,
                &st,
                &agent,
                &kfiles,
                &src,
                serde_json::json!({}),
                &sink,
            )?;
            if let Some(seed) = seed_from {
                // --no-work: new VMs start with the original image's /root.
                let dest = st.join(img_files::WORK_SEED);
                std::fs::remove_dir_all(&dest)
                    .map_err(|e| format!("remove {}: {e}", dest.display()))?;
                tool("cp", &["-a".as_ref(), seed.as_os_str(), dest.as_os_str()])
                    .map_err(|e| format!("copying the work seed: {e}"))?;
                // The old image's seed predates sanitising, perhaps.
                crate::publish::sanitize_seed(&dest, None, &sink)?;
            }
            Ok(built)
        };
        run().map_err(DaemonError::build(what))
    })
    .await?;
    publish(
        app,
        &staging_id(&built),
        name,
        &built,
        kernel.name.as_deref(),
        &[],
        started,
    )
}

/// The image id of a staging directory (`images/.staging/<id>`).
fn staging_id(b: &BuiltImage) -> String {
    b.dir
        .file_name()
        .map(|f| f.to_string_lossy().to_string())
        .unwrap_or_default()
}

/// `image.promote`: a stopped VM's root filesystem and /root become a new image.
pub async fn promote(
    app: &App,
    p: ImagePromoteParams,
    progress: &ProgressSink,
) -> Result<ImageRecord> {
    check_name(&p.name)?;
    let lock = app.vm_lock(&p.vm);
    let _vm = lock.lock().await;
    let rec = app.db(|s| s.get_vm_by_name(&p.vm))?;
    if rec.state != VmState::Stopped {
        return Err(DaemonError::BadRequest(format!(
            "VM {} is {}; stop it first (banger vm stop {}) so its disks are consistent",
            p.vm,
            rec.state.as_str(),
            p.vm
        )));
    }
    let image = app.db(|s| s.get_image(&rec.image_id))?;
    let image_dir = app.layout.image_dir(&image.id);
    let vm_dir = app.layout.vm_dir(&rec.id);
    let name = p.name.clone();
    app.images_in_flight
        .run(&name, progress, || async {
            if app.db(|s| s.get_image_by_name(&name)).is_ok() {
                return Err(DaemonError::AlreadyExists(format!(
                    "an image named {name} already exists (see banger image list); pick another name"
                )));
            }
            let id = banger_store::new_id();
            let staging = app.layout.image_staging().join(&id);
            crate::publish::create_private_dir(&staging).map_err(DaemonError::io("creating", &staging))?;
            let rootfs = image_dir.join(img_files::ROOTFS);
            let overlay = vm_dir.join(vm_files::OVERLAY);
            let work = vm_dir.join(vm_files::WORK);
            let mut disks = vec![
                DiskSpec { path: rootfs.clone(), read_only: true },
                // Writable only so a dirty journal can be replayed; the guest mounts it read-only.
                DiskSpec { path: overlay.clone(), read_only: false },
            ];
            if !p.no_work {
                disks.push(DiskSpec { path: work.clone(), read_only: false });
            }
            let inputs: Vec<&Path> = if p.no_work { vec![&rootfs, &overlay] } else { vec![&rootfs, &overlay, &work] };
            let export_disk = staging.join("export.disk");
            let result = async {
                export::create_export_disk(&export_disk, export::size_for(&inputs))
                    .map_err(DaemonError::build("creating the export disk"))?;
                run_export_guest(app, &image_dir, disks, &export_disk, progress).await?;
                let kernel = KernelFiles {
                    dir: image_dir.clone(),
                    name: image.kernel.clone(),
                    release: image.kernel_release.clone(),
                };
                let seed = p.no_work.then(|| image_dir.join(img_files::WORK_SEED));
                build_from_export(
                    app,
                    &name,
                    &staging,
                    export_disk.clone(),
                    &kernel,
                    format!("vm:{}", p.vm),
                    seed,
                    progress,
                )
                .await
            }
            .await;
            if result.is_err() {
                let _ = std::fs::remove_dir_all(&staging);
            }
            result
        })
        .await
}

/// Whether `path` holds an ext4 filesystem (superblock magic 0xEF53 at 1080).
fn is_ext4(path: &Path) -> std::io::Result<bool> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path)?;
    let mut magic = [0u8; 2];
    f.seek(SeekFrom::Start(1024 + 0x38))?;
    Ok(f.read_exact(&mut magic).is_ok() && magic == [0x53, 0xEF])
}

/// `image.register`: a root filesystem from this host (ext4 image or tar archive).
pub async fn register(
    app: &App,
    p: ImageRegisterParams,
    progress: &ProgressSink,
) -> Result<ImageRecord> {
    check_name(&p.name)?;
    for path in [Some(&p.rootfs), p.kernel_file.as_ref(), p.modules.as_ref()]
        .into_iter()
        .flatten()
    {
        if !path.is_absolute() {
            return Err(DaemonError::BadRequest(format!(
                "{} is not an absolute path",
                path.display()
            )));
        }
    }
    let ext4 = is_ext4(&p.rootfs).map_err(|e| {
        DaemonError::BadRequest(format!("cannot read rootfs {}: {e}", p.rootfs.display()))
    })?;
    if app.db(|s| s.get_image_by_name(&p.name)).is_ok() {
        return Err(DaemonError::AlreadyExists(format!(
            "an image named {} already exists (see banger image list); pick another name",
            p.name
        )));
    }
    let name = p.name.clone();
    app.images_in_flight
        .run(&name, progress, || async {
            let kernel = match &p.kernel_file {
                Some(file) => {
                    let k = kernels::import(
                        app,
                        banger_rpc::KernelImportParams {
                            path: file.clone(),
                            name: Some(name.clone()),
                            release: None,
                            modules: p.modules.clone(),
                            initrd: None,
                        },
                        progress,
                    )
                    .await?;
                    kernels::files_of(app, k)
                }
                None => kernel_for_new_image(app, p.kernel.as_deref(), progress).await?,
            };
            let id = banger_store::new_id();
            let staging = app.layout.image_staging().join(&id);
            crate::publish::create_private_dir(&staging)
                .map_err(DaemonError::io("creating", &staging))?;
            let source = format!("file:{}", p.rootfs.display());
            let result = if ext4 {
                register_ext4(app, &name, &staging, &p.rootfs, &kernel, source, progress).await
            } else {
                register_tar(app, &name, &staging, &p.rootfs, &kernel, source, progress).await
            };
            if result.is_err() {
                let _ = std::fs::remove_dir_all(&staging);
                // A kernel imported only for this image goes with it.
                if p.kernel_file.is_some() {
                    if let Some(k) = &kernel.name {
                        let _ = kernels::delete(app, k);
                    }
                }
            }
            result
        })
        .await
}

async fn register_ext4(
    app: &App,
    name: &str,
    staging: &Path,
    rootfs: &Path,
    kernel: &KernelFiles,
    source: String,
    progress: &ProgressSink,
) -> Result<ImageRecord> {
    // The user's file stays untouched: the guest reads a sparse copy relabelled as
    // banger's root (the init finds disks by label; a journal replay writes the copy).
    progress.send("image:copy", Some(rootfs.display().to_string()));
    let copy = staging.join("input.ext4");
    tool(
        "cp",
        &[
            "--sparse=always".as_ref(),
            "--reflink=auto".as_ref(),
            rootfs.as_os_str(),
            copy.as_os_str(),
        ],
    )
    .map_err(DaemonError::build(format!("copying {}", rootfs.display())))?;
    tool(
        "e2label",
        &[copy.as_os_str(), banger_image::LABEL_ROOT.as_ref()],
    )
    .map_err(DaemonError::build("relabelling the copy"))?;
    let export_disk = staging.join("export.disk");
    export::create_export_disk(&export_disk, export::size_for(&[&copy]))
        .map_err(DaemonError::build("creating the export disk"))?;
    let disks = vec![DiskSpec {
        path: copy.clone(),
        read_only: false,
    }];
    run_export_guest(app, &kernel.dir, disks, &export_disk, progress).await?;
    let _ = std::fs::remove_file(&copy);
    build_from_export(
        app,
        name,
        staging,
        export_disk,
        kernel,
        source,
        None,
        progress,
    )
    .await
}

async fn register_tar(
    app: &App,
    name: &str,
    staging: &Path,
    rootfs: &Path,
    kernel: &KernelFiles,
    source: String,
    progress: &ProgressSink,
) -> Result<ImageRecord> {
    let started = Instant::now();
    let (st, agent, sink, kfiles, src, file) = (
        staging.to_path_buf(),
        app.config.agent.clone(),
        progress.clone(),
        kernel.clone(),
        source.clone(),
        rootfs.to_path_buf(),
    );
    let what = format!("making image {name} from {}", rootfs.display());
    let built = blocking("image register", move || {
        let run = || -> Result<BuiltImage, Cause> {
            let label = file.display().to_string();
            sink.send("image:apply", Some(label.clone()));
            let tree = unpack_tar(&file, &label, &st.join("tree"))?;
            finish_tree(
                tree,
                &st,
                &agent,
                &kfiles,
                &src,
                serde_json::json!({}),
                &sink,
            )
        };
        run().map_err(DaemonError::build(what))
    })
    .await?;
    publish(
        app,
        &staging_id(&built),
        name,
        &built,
        kernel.name.as_deref(),
        &[],
        started,
    )
}
