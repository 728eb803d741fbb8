#!/usr/bin/env bash
# The README's test command: system packages, then fmt, clippy and every test.
# Idempotent; run as root on Debian 12 (installs packages only when something is missing).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

log() { printf '==> %s\n' "$*"; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
        echo "test.sh: need root to run: $*" >&2; return 1; fi
}

need=()
command -v cryptsetup  >/dev/null || need+=(cryptsetup-bin)
command -v fusermount3 >/dev/null || need+=(fuse3)
command -v qemu-img    >/dev/null || need+=(qemu-utils)
command -v mkfs.ext4   >/dev/null || need+=(e2fsprogs)
command -v losetup     >/dev/null || need+=(util-linux)
command -v mount       >/dev/null || need+=(mount)
command -v python3     >/dev/null || need+=(python3)
command -v sha256sum   >/dev/null || need+=(coreutils)
if ! python3 -c 'import cryptography' 2>/dev/null; then need+=(python3-cryptography); fi
if [ "${#need[@]}" -gt 0 ]; then
    log "installing ${need[*]}"
    as_root apt-get update
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${need[@]}"
fi
# a python3 earlier in PATH (pyenv, venv) may not see the Debian package
if ! python3 -c 'import cryptography' 2>/dev/null; then
    log "installing cryptography with pip"
    python3 -m pip install --quiet cryptography \
        || python3 -m pip install --quiet --break-system-packages cryptography
fi
python3 -c 'import cryptography' || { echo "test.sh: python3 cannot import cryptography" >&2; exit 1; }

log "kernel modules (best effort)"
as_root modprobe loop 2>/dev/null || true
as_root modprobe fuse 2>/dev/null || true
[ -e /dev/fuse ] || echo "test.sh: warning: /dev/fuse missing" >&2
[ -e /dev/loop-control ] || echo "test.sh: warning: /dev/loop-control missing" >&2

if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
    log "adding rustfmt and clippy"
    rustup component add rustfmt clippy
fi

log "cargo fmt --check"
cargo fmt --all -- --check
log "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets -- -D warnings
log "cargo test"
cargo test
log "all checks passed"
