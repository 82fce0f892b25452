//! The signature format, pinned against the standard tool: a signature we make verifies
//! with `openssl dgst -sha256 -verify` (what install.sh runs, and what cosign's blob
//! format is), and one openssl makes verifies with ours, for both PEM key flavours.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use banger_update::signature::{verify, PrivateKey, PublicKey};
use std::path::Path;
use std::process::Command;

fn openssl(args: &[&str], dir: &Path) -> std::process::Output {
    Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("running openssl")
}

#[test]
fn signatures_interoperate_with_openssl() {
    if Command::new("openssl").arg("version").output().is_err() {
        eprintln!("skipping: openssl is not installed");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let data = b"3f2a  banger-1.0.0-x86_64-unknown-linux-gnu.tar.gz\n";
    std::fs::write(d.join("SHA256SUMS"), data).unwrap();
    for (name, gen) in [
        (
            "pkcs8.pem",
            vec![
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-out",
                "pkcs8.pem",
            ],
        ),
        (
            "sec1.pem",
            vec![
                "ecparam",
                "-name",
                "prime256v1",
                "-genkey",
                "-noout",
                "-out",
                "sec1.pem",
            ],
        ),
    ] {
        assert!(openssl(&gen, d).status.success(), "{name}");
        assert!(
            openssl(&["pkey", "-in", name, "-pubout", "-out", "pub.pem"], d)
                .status
                .success()
        );
        let pem = std::fs::read_to_string(d.join(name)).unwrap();
        let key = PrivateKey::from_pem(&pem).unwrap();
        let pub_pem = std::fs::read_to_string(d.join("pub.pem")).unwrap();
        assert_eq!(
            PublicKey::from_pem(&pub_pem).unwrap(),
            key.public_key(),
            "{name}"
        );

        // Ours → openssl (base64-decoded by openssl too, as install.sh does).
        std::fs::write(d.join("SHA256SUMS.sig"), key.sign(data)).unwrap();
        assert!(openssl(
            &[
                "base64",
                "-d",
                "-A",
                "-in",
                "SHA256SUMS.sig",
                "-out",
                "sig.der"
            ],
            d
        )
        .status
        .success());
        let v = openssl(
            &[
                "dgst",
                "-sha256",
                "-verify",
                "pub.pem",
                "-signature",
                "sig.der",
                "SHA256SUMS",
            ],
            d,
        );
        assert!(
            v.status.success(),
            "{name}: openssl refused our signature: {}",
            String::from_utf8_lossy(&v.stderr)
        );

        // openssl → ours (random nonces, high or low S: both must verify).
        for _ in 0..4 {
            assert!(openssl(
                &[
                    "dgst",
                    "-sha256",
                    "-sign",
                    name,
                    "-out",
                    "o.der",
                    "SHA256SUMS"
                ],
                d
            )
            .status
            .success());
            let der = std::fs::read(d.join("o.der")).unwrap();
            let b64 = openssl(&["base64", "-A", "-in", "o.der"], d).stdout;
            verify(&key.public_key(), data, &b64)
                .unwrap_or_else(|e| panic!("{name}: {e} ({der:?})"));
            let mut tampered = data.to_vec();
            tampered[0] ^= 1;
            assert!(verify(&key.public_key(), &tampered, &b64).is_err());
        }
    }
}
