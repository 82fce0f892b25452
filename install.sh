#!/bin/sh
# banger installer.
#
#   curl -fsSL https://releases.banger.dev/banger/install.sh | sh
#
# Runs as you. Downloads the newest banger release, checks that banger's release key
# signed it (openssl, with the public key written below) and that the download matches
# the signed checksums, then asks sudo to run `banger system install`, the one step
# that needs root. Set BANGER_INSTALL_NONINTERACTIVE=1 to skip the question (scripts,
# CI). BANGER_INSTALL_VERSION=X.Y.Z picks a version instead of the newest.
set -eu

# Where releases are published. BANGER_INSTALL_TEST_BASE_URL exists for banger's own
# tests only: whatever it points at must still be signed by the key below.
BASE_URL="https://releases.banger.dev/banger"

# BEGIN RELEASE KEY (kept identical to keys/release.pub by a test)
RELEASE_KEY='-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEHLz4gfmCvZSRPBixjsU4p9+chYk5
qK4gHBATVsMiIRL+A2ufx7UJBHDkMUxpYXL+Ubo1VqwjPk9fQkMql3l5Cg==
-----END PUBLIC KEY-----'
# END RELEASE KEY

say() { printf '%s\n' "$*" >&2; }
die() { say "banger install: $*"; exit 1; }

if [ -n "${BANGER_INSTALL_TEST_BASE_URL:-}" ]; then
    BASE_URL="$BANGER_INSTALL_TEST_BASE_URL"
    say "banger install: TEST MODE, downloading from $BASE_URL (the signature check still applies)"
fi

case "$(uname -s)/$(uname -m)" in
    Linux/x86_64) TARGET=x86_64-unknown-linux-gnu ;;
    *) die "banger runs on x86_64 Linux only (this is $(uname -s)/$(uname -m))" ;;
esac

command -v openssl >/dev/null 2>&1 || die "openssl is needed to check the release signature; install it (apt-get install openssl, dnf install openssl) and rerun"
command -v tar >/dev/null 2>&1 || die "tar is needed; install it and rerun"
if command -v curl >/dev/null 2>&1; then
    fetch() { curl -fsSL --retry 2 --max-filesize 536870912 -o "$2" "$1"; }
elif command -v wget >/dev/null 2>&1; then
    fetch() { wget -q -O "$2" "$1"; }
else
    die "curl or wget is needed to download banger; install one and rerun"
fi

TMP="$(mktemp -d "${TMPDIR:-/tmp}/banger-install.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT INT TERM

VERSION="${BANGER_INSTALL_VERSION:-}"
if [ -z "$VERSION" ]; then
    fetch "$BASE_URL/latest" "$TMP/latest" || die "could not download $BASE_URL/latest; check your network"
    VERSION="$(head -c 64 "$TMP/latest" | tr -d ' \r\n')"
fi
VERSION="${VERSION#v}"
printf '%s\n' "$VERSION" | grep -Eq '^[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.]+)?$' \
    || die "the release server named version '$VERSION', which is not X.Y.Z"

TARBALL="banger-$VERSION-$TARGET.tar.gz"
REL="$BASE_URL/v$VERSION"
say "banger install: downloading banger $VERSION"
fetch "$REL/SHA256SUMS" "$TMP/SHA256SUMS" || die "could not download $REL/SHA256SUMS"
fetch "$REL/SHA256SUMS.sig" "$TMP/SHA256SUMS.sig" || die "could not download $REL/SHA256SUMS.sig"

# The signature: ECDSA P-256 over SHA256SUMS, base64 of DER (cosign's blob format).
printf '%s\n' "$RELEASE_KEY" > "$TMP/release.pub"
openssl base64 -d -A -in "$TMP/SHA256SUMS.sig" -out "$TMP/sig.der" 2>/dev/null \
    || die "SHA256SUMS.sig is not base64; refusing the release"
if ! openssl dgst -sha256 -verify "$TMP/release.pub" -signature "$TMP/sig.der" "$TMP/SHA256SUMS" >/dev/null 2>&1; then
    die "the signature of SHA256SUMS does not verify with banger's release key: the release was altered or not made by banger; nothing was installed"
fi
say "banger install: signature verified"

fetch "$REL/$TARBALL" "$TMP/$TARBALL" || die "could not download $REL/$TARBALL"
WANT="$(awk -v f="$TARBALL" '$2 == f || $2 == "*" f { print $1 }' "$TMP/SHA256SUMS")"
[ "$(printf '%s\n' "$WANT" | wc -l)" -eq 1 ] && [ -n "$WANT" ] \
    || die "SHA256SUMS does not list $TARBALL exactly once"
GOT="$(openssl dgst -sha256 -r "$TMP/$TARBALL" | cut -d' ' -f1)"
[ "$GOT" = "$WANT" ] || die "$TARBALL does not match the signed SHA256SUMS (got $GOT): the download is corrupt or was altered; nothing was installed"

mkdir "$TMP/unpacked"
tar -xzf "$TMP/$TARBALL" -C "$TMP/unpacked" --no-same-owner
DIR="$TMP/unpacked/banger-$VERSION-$TARGET"
BANGER="$DIR/bin/banger"
[ -x "$BANGER" ] || die "the release lacks bin/banger"
say "banger install: banger $VERSION is downloaded and verified"

if ! "$BANGER" system install --help >/dev/null 2>&1; then
    KEEP="${XDG_CACHE_HOME:-$HOME/.cache}/banger/install/banger-$VERSION-$TARGET"
    rm -rf "$KEEP"
    mkdir -p "$(dirname "$KEEP")"
    mv "$DIR" "$KEEP"
    say ""
    say "This release of banger has no 'banger system install' yet, so it cannot set"
    say "itself up system-wide. The verified release is in:"
    say "  $KEEP"
    say "To use it now, put its binaries side by side on your PATH, e.g.:"
    say "  mkdir -p ~/.local/bin && cp $KEEP/bin/* $KEEP/lib/banger-agent ~/.local/bin/"
    say "then run 'banger doctor' to see what your host still needs."
    exit 3
fi

cat >&2 <<MSG

Why sudo: banger runs each VM as you, but a few things on this machine need root:
creating the network bridge and the VMs' network devices, the NAT rule that lets VMs
reach the internet, and installing banger into /usr/local with two system services
(a small root helper that does only those network steps, and the banger daemon, which
runs as you). 'banger system install' does exactly that and nothing else; you can undo
it with 'sudo banger system uninstall'.

MSG

if [ "$(id -u)" -eq 0 ]; then
    SUDO=""
else
    command -v sudo >/dev/null 2>&1 || die "sudo is needed for the system install; run as root: $BANGER system install"
    SUDO="sudo"
fi

if [ "${BANGER_INSTALL_NONINTERACTIVE:-}" != "1" ]; then
    if [ ! -r /dev/tty ]; then
        die "no terminal to ask on; rerun with BANGER_INSTALL_NONINTERACTIVE=1 to install without asking"
    fi
    printf 'Run %s banger system install now? [y/N] ' "${SUDO:-as root:}" >&2
    read -r answer </dev/tty || answer=""
    case "$answer" in
        y|Y|yes|YES) ;;
        *) die "not installed (nothing was changed)" ;;
    esac
fi

$SUDO "$BANGER" system install
say "banger install: done. Try: banger vm run -- uname -a"
