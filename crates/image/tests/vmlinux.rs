//! vmlinux extraction: synthetic bzImages for every compression the kernel build uses,
//! corrupted inputs, the cache helper, and the real Debian cloud kernel cross-checked
//! against `lz4 -dc` and `readelf` (the independent way `scripts/extract-vmlinux` works).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

use banger_image::vmlinux::{
    self, cache_path, elf_info, extract, payload, vmlinux_path, Compression, VmlinuxError, PT_LOAD,
};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

// ---------------------------------------------------------------- synthetic inputs

/// A small but well-formed x86-64 ELF executable: header, three program headers (two
/// PT_LOAD, one PT_NOTE) and `body` bytes of compressible, non-trivial content.
fn test_elf(body: usize) -> Vec<u8> {
    let phoff = 64u64;
    let phnum = 3u16;
    let data_off = 0x1000u64;
    let mut e = vec![0u8; data_off as usize];
    e[..4].copy_from_slice(b"\x7fELF");
    e[4] = 2; // ELFCLASS64
    e[5] = 1; // little-endian
    e[6] = 1; // EV_CURRENT
    e[0x10..0x12].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    e[0x12..0x14].copy_from_slice(&62u16.to_le_bytes()); // EM_X86_64
    e[0x14..0x18].copy_from_slice(&1u32.to_le_bytes());
    e[0x18..0x20].copy_from_slice(&0x0100_0000u64.to_le_bytes()); // entry
    e[0x20..0x28].copy_from_slice(&phoff.to_le_bytes());
    e[0x34..0x36].copy_from_slice(&64u16.to_le_bytes()); // ehsize
    e[0x36..0x38].copy_from_slice(&56u16.to_le_bytes()); // phentsize
    e[0x38..0x3a].copy_from_slice(&phnum.to_le_bytes());
    let half = body as u64 / 2;
    let phs: [(u32, u32, u64, u64, u64, u64); 3] = [
        (1, 5, data_off, 0xffff_ffff_8100_0000, 0x0100_0000, half),
        (
            1,
            6,
            data_off + half,
            0xffff_ffff_8200_0000,
            0x0200_0000,
            body as u64 - half,
        ),
        (4, 4, data_off, 0xffff_ffff_8100_0000, 0x0100_0000, 16),
    ];
    for (i, (kind, flags, off, vaddr, paddr, size)) in phs.iter().enumerate() {
        let o = phoff as usize + i * 56;
        e[o..o + 4].copy_from_slice(&kind.to_le_bytes());
        e[o + 4..o + 8].copy_from_slice(&flags.to_le_bytes());
        e[o + 8..o + 16].copy_from_slice(&off.to_le_bytes());
        e[o + 16..o + 24].copy_from_slice(&vaddr.to_le_bytes());
        e[o + 24..o + 32].copy_from_slice(&paddr.to_le_bytes());
        e[o + 32..o + 40].copy_from_slice(&size.to_le_bytes());
        e[o + 40..o + 48].copy_from_slice(&(size + 0x1000).to_le_bytes());
        e[o + 48..o + 56].copy_from_slice(&0x20_0000u64.to_le_bytes());
    }
    // Text-like content from a small LCG: compresses, but not to nothing.
    let mut x: u32 = 0x1234_5678;
    let words: [&[u8]; 8] = [
        b"mov ", b"rax,", b"call ", b"ret\n", b"push ", b"0x1f", b"jmp ", b"nop\n",
    ];
    while e.len() < data_off as usize + body {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        e.extend_from_slice(words[(x >> 16) as usize % words.len()]);
        if (x >> 8).is_multiple_of(7) {
            e.push((x >> 24) as u8);
        }
    }
    e.truncate(data_off as usize + body);
    e
}

/// A minimal bzImage: boot sector + 3 setup sectors with the setup header, then a
/// "decompressor" that deliberately contains other compressions' magics (extraction
/// must follow payload_offset, not scan), the payload, and trailing bytes.
fn fake_bzimage(payload: &[u8]) -> Vec<u8> {
    let setup_sects = 3u8;
    let pm = (usize::from(setup_sects) + 1) * 512;
    let decoy: &[u8] = &[
        0x1f, 0x8b, 0x08, 0x00, 0x28, 0xb5, 0x2f, 0xfd, 0x02, 0x21, 0x4c, 0x18,
    ];
    let payload_offset = 0x2c0usize;
    let mut b = vec![0u8; pm + payload_offset];
    b[0x1f1] = setup_sects;
    b[0x1fe] = 0x55;
    b[0x1ff] = 0xaa;
    b[0x202..0x206].copy_from_slice(b"HdrS");
    b[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
    b[0x248..0x24c].copy_from_slice(&(payload_offset as u32).to_le_bytes());
    b[0x24c..0x250].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    b[pm + 0x40..pm + 0x40 + decoy.len()].copy_from_slice(decoy);
    b.extend_from_slice(payload);
    b.extend_from_slice(&[0xcc; 333]);
    b
}

/// What `size_append` in the kernel's Makefile.lib does after every non-gzip payload.
fn with_size(mut compressed: Vec<u8>, original: &[u8]) -> Vec<u8> {
    compressed.extend_from_slice(&(original.len() as u32).to_le_bytes());
    compressed
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// xz as `scripts/xz_wrap.sh` makes it on x86: BCJ x86 filter, LZMA2, CRC32 check.
fn xz(data: &[u8]) -> Vec<u8> {
    let opts = liblzma::stream::LzmaOptions::new_preset(6).unwrap();
    let mut filters = liblzma::stream::Filters::new();
    filters.x86().lzma2(&opts);
    let stream =
        liblzma::stream::Stream::new_stream_encoder(&filters, liblzma::stream::Check::Crc32)
            .unwrap();
    let mut e = liblzma::write::XzEncoder::new_stream(Vec::new(), stream);
    e.write_all(data).unwrap();
    with_size(e.finish().unwrap(), data)
}

fn lzma(data: &[u8]) -> Vec<u8> {
    let opts = liblzma::stream::LzmaOptions::new_preset(6).unwrap();
    let stream = liblzma::stream::Stream::new_lzma_encoder(&opts).unwrap();
    let mut e = liblzma::write::XzEncoder::new_stream(Vec::new(), stream);
    e.write_all(data).unwrap();
    with_size(e.finish().unwrap(), data)
}

fn zstd(data: &[u8]) -> Vec<u8> {
    with_size(zstd::bulk::compress(data, 19).unwrap(), data)
}

/// lz4 legacy framing written here from the format description (magic, then
/// `[u32 size][block]` per 8 MiB of input).
fn lz4_legacy(data: &[u8]) -> Vec<u8> {
    let mut out = 0x184C_2102u32.to_le_bytes().to_vec();
    for chunk in data.chunks(8 << 20) {
        let block = lz4_flex::block::compress(chunk);
        out.extend_from_slice(&(block.len() as u32).to_le_bytes());
        out.extend_from_slice(&block);
    }
    with_size(out, data)
}

/// lz4 legacy framing from Debian's `lz4` tool, as the kernel build runs it
/// (`lz4 -l -c1`); None when the tool is missing.
fn lz4_cli(data: &[u8]) -> Option<Vec<u8>> {
    let mut child = Command::new("lz4")
        .args(["-l", "-9", "-c"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let mut stdin = child.stdin.take()?;
    let input = data.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().ok()?;
    writer.join().ok()?.ok()?;
    out.status.success().then(|| with_size(out.stdout, data))
}

/// A compressor producing a kernel payload (with the size word where the kernel adds one).
type Compressor = fn(&[u8]) -> Vec<u8>;

fn compressors() -> Vec<(Compression, Compressor)> {
    vec![
        (Compression::Gzip, gzip),
        (Compression::Xz, xz),
        (Compression::Zstd, zstd),
        (Compression::Lz4, lz4_legacy),
        (Compression::Lzma, lzma),
    ]
}

// ---------------------------------------------------------------- round trips

#[test]
fn every_supported_compression_round_trips() {
    let elf = test_elf(300_000);
    for (kind, compress) in compressors() {
        let image = fake_bzimage(&compress(&elf));
        let p = payload(&image).unwrap();
        assert_eq!(p.compression, kind);
        assert_eq!(p.file_offset, 4 * 512 + 0x2c0);
        let out = extract(&image).unwrap_or_else(|e| panic!("{kind}: {e}"));
        assert!(out == elf, "{kind}: extracted bytes differ from the ELF");
        let info = elf_info(&out).unwrap();
        assert_eq!(info.entry, 0x0100_0000);
        assert_eq!(
            info.program_headers
                .iter()
                .filter(|p| p.kind == PT_LOAD)
                .count(),
            2
        );
    }
}

#[test]
fn lz4_legacy_with_several_blocks_and_from_the_lz4_tool() {
    // Over 8 MiB: three legacy blocks, the last one short.
    let elf = test_elf(17 << 20);
    let ours = fake_bzimage(&lz4_legacy(&elf));
    assert!(extract(&ours).unwrap() == elf, "own framing, 3 blocks");
    match lz4_cli(&elf) {
        Some(cli) => {
            let image = fake_bzimage(&cli);
            assert_eq!(payload(&image).unwrap().compression, Compression::Lz4);
            assert!(extract(&image).unwrap() == elf, "lz4 -l output");
        }
        None => println!(
            "skipping the lz4 -l part: the lz4 tool is not installed (apt-get install lz4)"
        ),
    }
}

#[test]
fn concatenated_lz4_legacy_frames_are_one_stream() {
    // The kernel's unlz4 treats a block size equal to the magic as a new frame.
    let elf = test_elf(200_000);
    let (a, b) = elf.split_at(70_000);
    let mut first = lz4_legacy(a);
    first.truncate(first.len() - 4);
    let mut second = lz4_legacy(b);
    second.truncate(second.len() - 4);
    first.extend_from_slice(&second);
    let image = fake_bzimage(&with_size(first, &elf));
    assert!(extract(&image).unwrap() == elf);
}

// ---------------------------------------------------------------- corrupted inputs

fn err(image: &[u8]) -> VmlinuxError {
    match extract(image) {
        Ok(_) => panic!("corrupted input was accepted"),
        Err(e) => e,
    }
}

#[test]
fn not_a_bzimage() {
    let e = err(&[0u8; 4096]);
    assert!(matches!(e, VmlinuxError::NotBzImage), "{e}");
    assert!(e.to_string().contains("HdrS"), "{e}");
    assert!(matches!(err(b"short"), VmlinuxError::NotBzImage));
    // An ELF handed to extract is not a bzImage either (vmlinux_path passes it through).
    assert!(matches!(err(&test_elf(1000)), VmlinuxError::NotBzImage));
}

#[test]
fn old_boot_protocol() {
    let mut image = fake_bzimage(&gzip(&test_elf(1000)));
    image[0x206..0x208].copy_from_slice(&0x0207u16.to_le_bytes());
    let e = err(&image);
    assert!(
        matches!(e, VmlinuxError::ProtocolTooOld { major: 2, minor: 7 }),
        "{e}"
    );
    assert!(e.to_string().contains("2.07"), "{e}");
}

#[test]
fn payload_past_the_end_of_the_file() {
    let image = fake_bzimage(&gzip(&test_elf(1000)));
    let cut = &image[..image.len() - 400];
    let e = err(cut);
    assert!(matches!(e, VmlinuxError::Truncated { .. }), "{e}");
    assert!(e.to_string().contains("truncated"), "{e}");
}

#[test]
fn unknown_and_unsupported_magics() {
    let e = err(&fake_bzimage(b"\x00\x11\x22\x33\x44\x55\x66\x77\x88"));
    assert!(matches!(e, VmlinuxError::UnknownCompression { .. }), "{e}");
    assert!(e.to_string().contains("[00, 11, 22, 33, 44, 55]"), "{e}");
    let e = err(&fake_bzimage(b"BZh91AY&SYxxxxxxxx"));
    assert!(
        matches!(e, VmlinuxError::Unsupported(Compression::Bzip2)),
        "{e}"
    );
    let e = err(&fake_bzimage(b"\x89LZO\x00\r\n\x1a\nxxxxx"));
    assert!(
        matches!(e, VmlinuxError::Unsupported(Compression::Lzo)),
        "{e}"
    );
}

/// Cut the compressed stream short but keep the size word: what a bad copy looks like.
#[test]
fn truncated_streams_fail_to_decompress() {
    let elf = test_elf(300_000);
    for (kind, compress) in compressors() {
        let full = compress(&elf);
        let mut cut = full[..full.len() / 2].to_vec();
        cut.extend_from_slice(&full[full.len() - 4..]);
        let e = err(&fake_bzimage(&cut));
        assert!(
            matches!(e, VmlinuxError::Decompress { compression, .. } | VmlinuxError::SizeMismatch { compression, .. } if compression == kind),
            "{kind}: {e}"
        );
        let msg = e.to_string();
        assert!(
            msg.contains(&kind.to_string()) && msg.contains("corrupted"),
            "{msg}"
        );
    }
}

/// Flip bytes in the middle of the stream: the checksummed formats notice.
#[test]
fn flipped_bytes_fail_the_checksummed_formats() {
    let elf = test_elf(300_000);
    for (kind, compress) in compressors() {
        if matches!(kind, Compression::Lz4 | Compression::Lzma) {
            continue; // no checksum in these formats; covered by the size and ELF checks
        }
        let mut c = compress(&elf);
        let mid = c.len() / 2;
        for b in &mut c[mid..mid + 16] {
            *b ^= 0x5a;
        }
        let e = err(&fake_bzimage(&c));
        assert!(
            matches!(
                e,
                VmlinuxError::Decompress { .. } | VmlinuxError::SizeMismatch { .. }
            ),
            "{kind}: {e}"
        );
    }
}

#[test]
fn lz4_block_size_pointing_past_the_end() {
    let elf = test_elf(100_000);
    let mut c = lz4_legacy(&elf);
    c[4..8].copy_from_slice(&0x00ff_ffffu32.to_le_bytes());
    let e = err(&fake_bzimage(&c));
    assert!(e.to_string().contains("block 0 claims 16777215"), "{e}");
}

#[test]
fn recorded_size_must_match() {
    let elf = test_elf(100_000);
    let mut c = zstd(&elf);
    let n = c.len();
    c[n - 4..].copy_from_slice(&12345u32.to_le_bytes());
    let e = err(&fake_bzimage(&c));
    assert!(
        matches!(e, VmlinuxError::SizeMismatch { expected: 12345, got, .. } if got == elf.len()),
        "{e}"
    );
    // A size beyond the limit is refused before anything is allocated.
    c[n - 4..].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(err(&fake_bzimage(&c)).to_string().contains("limit"));
}

#[test]
fn payload_that_is_not_an_elf() {
    let text = b"#!/bin/sh\necho not a kernel\n".repeat(50);
    let e = err(&fake_bzimage(&zstd(&text)));
    assert!(matches!(e, VmlinuxError::NotElf(_)), "{e}");
    let mut elf = test_elf(10_000);
    elf[0x12] = 183; // aarch64
    let e = err(&fake_bzimage(&gzip(&elf)));
    assert!(e.to_string().contains("x86-64"), "{e}");
    let mut elf = test_elf(10_000);
    elf.truncate(6000); // segments now end past the file
    let e = err(&fake_bzimage(&gzip(&elf)));
    assert!(e.to_string().contains("past the end"), "{e}");
}

// ---------------------------------------------------------------- vmlinux_path

#[test]
fn vmlinux_path_extracts_once_and_caches_next_to_the_kernel() {
    let dir = tempfile::tempdir().unwrap();
    let kernel = dir.path().join("vmlinuz");
    let elf = test_elf(50_000);
    std::fs::write(&kernel, fake_bzimage(&xz(&elf))).unwrap();

    let out = vmlinux_path(&kernel).unwrap();
    assert_eq!(out, dir.path().join("vmlinux"));
    assert_eq!(out, cache_path(&kernel));
    assert!(std::fs::read(&out).unwrap() == elf);
    let first = std::fs::metadata(&out).unwrap().modified().unwrap();

    // Second call reuses the file (no rewrite).
    std::thread::sleep(std::time::Duration::from_millis(20));
    assert_eq!(vmlinux_path(&kernel).unwrap(), out);
    assert_eq!(std::fs::metadata(&out).unwrap().modified().unwrap(), first);

    // A newer kernel is extracted again.
    let elf2 = test_elf(60_000);
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::write(&kernel, fake_bzimage(&gzip(&elf2))).unwrap();
    assert!(std::fs::read(vmlinux_path(&kernel).unwrap()).unwrap() == elf2);

    // Nothing but the kernel and its vmlinux is left (no temp files).
    let mut names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["vmlinux", "vmlinuz"]);
}

#[test]
fn vmlinux_path_passes_elf_kernels_through_and_names_other_files() {
    let dir = tempfile::tempdir().unwrap();
    let k = dir.path().join("kernel.elf");
    std::fs::write(&k, test_elf(10_000)).unwrap();
    assert_eq!(vmlinux_path(&k).unwrap(), k);
    assert_eq!(
        cache_path(Path::new("/b/vmlinuz-6.1.0-56-cloud-amd64")),
        Path::new("/b/vmlinux-6.1.0-56-cloud-amd64")
    );
    assert_eq!(
        cache_path(Path::new("/b/bzImage")),
        Path::new("/b/bzImage.vmlinux")
    );
}

#[test]
fn vmlinux_path_leaves_nothing_for_a_corrupted_kernel() {
    let dir = tempfile::tempdir().unwrap();
    let kernel = dir.path().join("vmlinuz");
    let mut c = gzip(&test_elf(50_000));
    let mid = c.len() / 2;
    c[mid] ^= 0xff;
    c[mid + 1] ^= 0xff;
    std::fs::write(&kernel, fake_bzimage(&c)).unwrap();
    assert!(vmlinux_path(&kernel).is_err());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    let missing = vmlinux_path(&dir.path().join("nope")).unwrap_err();
    assert!(missing.to_string().contains("read kernel"), "{missing}");
}

// ---------------------------------------------------------------- the real Debian kernel

fn run(cmd: &mut Command) -> Result<String, String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn cache_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    target.join("test-cache/debian-cloud-kernel")
}

fn cached_vmlinuz(dir: &Path) -> Option<PathBuf> {
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
        })
}

/// The Debian cloud kernel's bzImage, downloaded once with apt into target/.
fn debian_cloud_kernel() -> Result<PathBuf, String> {
    let dir = cache_dir();
    if let Some(k) = cached_vmlinuz(&dir) {
        return Ok(k);
    }
    std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let root = is_root();
    let package = || -> Result<String, String> {
        let deps = run(Command::new("apt-cache").args(["depends", "linux-image-cloud-amd64"]))?;
        deps.lines()
            .filter_map(|l| l.trim().strip_prefix("Depends: "))
            .find(|p| p.starts_with("linux-image-") && p.ends_with("-cloud-amd64"))
            .map(str::to_string)
            .ok_or_else(|| "apt-cache knows no linux-image-*-cloud-amd64 package".to_string())
    };
    let pkg = match package() {
        Ok(p) => p,
        Err(_) if root => {
            run(Command::new("apt-get").args(["update", "-qq"]))?;
            package()?
        }
        Err(e) => return Err(e),
    };
    let download = || {
        run(Command::new("apt-get")
            .args(["download", "-qq", &pkg])
            .current_dir(&dir))
    };
    if let Err(e) = download() {
        if !root {
            return Err(e);
        }
        run(Command::new("apt-get").args(["update", "-qq"]))?;
        download()?;
    }
    let deb = std::fs::read_dir(&dir)
        .map_err(|e| e.to_string())?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .ok_or("apt-get download left no .deb")?;
    let unpacked = dir.join("unpacked");
    let _ = std::fs::remove_dir_all(&unpacked);
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpacked))?;
    let boot = unpacked.join("boot");
    let k = cached_vmlinuz(&boot).ok_or("the package has no /boot/vmlinuz-*")?;
    let dest = dir.join(k.file_name().ok_or("no file name")?);
    std::fs::rename(&k, &dest).map_err(|e| e.to_string())?;
    let _ = std::fs::remove_dir_all(&unpacked);
    Ok(dest)
}

fn is_root() -> bool {
    run(Command::new("id").arg("-u")).is_ok_and(|s| s.trim() == "0")
}

/// Offsets of the legacy lz4 magic in `data`, as extract-vmlinux finds candidates.
fn scan(data: &[u8], magic: &[u8]) -> Vec<usize> {
    data.windows(magic.len())
        .enumerate()
        .filter(|(_, w)| *w == magic)
        .map(|(i, _)| i)
        .collect()
}

/// Entry point and LOAD headers as `readelf` prints them.
/// (offset, vaddr, paddr, filesz, memsz) of one LOAD header.
type Load = (u64, u64, u64, u64, u64);

fn readelf(path: &Path) -> Result<(u64, Vec<Load>), String> {
    let out = run(Command::new("readelf").args(["-hlW"]).arg(path))?;
    let hex =
        |s: &str| u64::from_str_radix(s.trim_start_matches("0x"), 16).map_err(|e| e.to_string());
    let entry = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("Entry point address:"))
        .ok_or("readelf printed no entry point")?;
    let loads = out
        .lines()
        .filter(|l| l.trim_start().starts_with("LOAD "))
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Ok((hex(f[1])?, hex(f[2])?, hex(f[3])?, hex(f[4])?, hex(f[5])?))
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok((hex(entry.trim())?, loads))
}

#[test]
fn real_debian_cloud_kernel_matches_lz4_and_readelf() {
    let kernel = match debian_cloud_kernel() {
        Ok(k) => k,
        Err(e) => {
            println!("skipping: cannot get the Debian cloud kernel with apt: {e}");
            return;
        }
    };
    let image = std::fs::read(&kernel).unwrap();
    let p = payload(&image).unwrap();
    assert_eq!(
        p.compression,
        Compression::Lz4,
        "Debian's cloud kernel used to be lz4-compressed"
    );

    let t = Instant::now();
    let ours = extract(&image).unwrap();
    let took = t.elapsed();
    println!(
        "extracted {} ({} bytes, lz4) -> {} bytes of vmlinux in {:.0?}",
        kernel.display(),
        image.len(),
        ours.len(),
        took
    );
    let info = elf_info(&ours).unwrap();
    assert!(
        info.program_headers
            .iter()
            .filter(|p| p.kind == PT_LOAD)
            .count()
            >= 2
    );

    let dir = cache_dir();
    let ours_path = dir.join("vmlinux.ours");
    std::fs::write(&ours_path, &ours).unwrap();

    // Independent check 1: readelf (binutils) reads the same entry and LOAD headers.
    match readelf(&ours_path) {
        Ok((entry, loads)) => {
            assert_eq!(entry, info.entry);
            let mine: Vec<_> = info
                .program_headers
                .iter()
                .filter(|p| p.kind == PT_LOAD)
                .map(|p| (p.offset, p.vaddr, p.paddr, p.filesz, p.memsz))
                .collect();
            assert_eq!(loads, mine);
            println!(
                "readelf agrees: entry {entry:#x}, {} LOAD headers",
                loads.len()
            );
        }
        Err(e) => println!("skipping the readelf check: {e}"),
    }

    // Independent check 2: scan for the lz4 magic and decompress with the lz4 tool,
    // the way scripts/extract-vmlinux does; the first candidate giving an ELF wins.
    if run(Command::new("lz4").arg("--version")).is_err() {
        println!(
            "skipping the lz4 cross-check: the lz4 tool is not installed (apt-get install lz4)"
        );
    } else {
        let mut theirs = None;
        for off in scan(&image, &[0x02, 0x21, 0x4c, 0x18]) {
            let cand = dir.join("candidate.lz4");
            std::fs::write(&cand, &image[off..]).unwrap();
            // lz4 exits 1 on the bytes after the stream (the size word, the rest of the
            // decompressor); extract-vmlinux ignores that too and judges the output.
            let out = Command::new("lz4").arg("-dc").arg(&cand).output().unwrap();
            let _ = std::fs::remove_file(&cand);
            if vmlinux::is_elf(&out.stdout) {
                theirs = Some((off, out.stdout));
                break;
            }
        }
        let (off, theirs) = theirs.expect("lz4 -dc found an ELF at some magic offset");
        assert_eq!(
            off, p.file_offset,
            "scan and setup header agree on the payload"
        );
        assert_eq!(theirs.len(), ours.len());
        assert!(
            theirs == ours,
            "lz4 -dc and banger produced different bytes"
        );
        assert_eq!(elf_info(&theirs).unwrap(), info);
        println!("lz4 -dc agrees byte for byte ({} bytes)", theirs.len());
    }
    let _ = std::fs::remove_file(&ours_path);

    // vmlinux_path on a copy: writes vmlinux-<release> next to it.
    let tmp = tempfile::tempdir().unwrap();
    let copy = tmp.path().join(kernel.file_name().unwrap());
    std::fs::copy(&kernel, &copy).unwrap();
    let v = vmlinux_path(&copy).unwrap();
    assert!(v
        .file_name()
        .unwrap()
        .to_string_lossy()
        .starts_with("vmlinux-"));
    assert_eq!(std::fs::metadata(&v).unwrap().len(), ours.len() as u64);
}

#[test]
fn concurrent_vmlinux_path_calls_agree() {
    let dir = tempfile::tempdir().unwrap();
    let kernel = dir.path().join("vmlinuz");
    let elf = test_elf(400_000);
    std::fs::write(&kernel, fake_bzimage(&zstd(&elf))).unwrap();
    let results: Vec<PathBuf> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| s.spawn(|| vmlinux_path(&kernel).unwrap()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(results.iter().all(|p| *p == dir.path().join("vmlinux")));
    assert!(std::fs::read(dir.path().join("vmlinux")).unwrap() == elf);
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        2,
        "no temporary files left"
    );
}
