#!/usr/bin/env bash
# Discard figure of issue 13: write SIZE MiB of files (default 1024) into ext4 through
# `vaultdisk mount --allow-discards`, delete them, `fstrim` the mount point, and report how much
# of the backing file's allocated size (st_blocks, what du shows) came back; then the same
# without --allow-discards, where nothing may be punched. Exit 1 if the flag frees less than
# 90 % of SIZE or the run without it frees anything. tests/it/discard.rs is the CI-sized version.
#
# Usage: scripts/discard-bench.sh [--size-mib N] [--dir DIR]
#   DIR (default /var/tmp) must be on a filesystem with hole punching (ext4, xfs, tmpfs, btrfs).
# Needs root (loop device, mount). VAULTDISK=path picks the binary (default target/debug).
set -euo pipefail
cd "$(dirname "$0")/.."
size_mib=1024 base=/var/tmp
while [ $# -gt 0 ]; do
    case $1 in
        --size-mib) size_mib=$2; shift ;;
        --dir) base=$2; shift ;;
        *) echo "usage: scripts/discard-bench.sh [--size-mib N] [--dir DIR]" >&2; exit 1 ;;
    esac
    shift
done
[ "$(id -u)" -eq 0 ] || { echo "discard-bench: run as root (loop device, mount)" >&2; exit 1; }
vd=${VAULTDISK:-$PWD/target/debug/vaultdisk}
[ -x "$vd" ] || { echo "discard-bench: no $vd (cargo build first)" >&2; exit 1; }

work=$(mktemp -d "$base/vaultdisk-discard.XXXXXX")
export VAULTDISK_RUNTIME_DIR=$work/rt
mnt=$work/mnt
cleanup() {
    if mountpoint -q "$mnt"; then "$vd" umount "$mnt" || umount -l "$mnt" || true; fi
    rm -rf "$work"
}
trap cleanup EXIT INT TERM
mkdir "$mnt"
(umask 077; printf 'discard bench' >"$work/key")
"$vd" format "$work/disk.img" --size "$((size_mib + size_mib / 4 + 128))M" --key-file "$work/key" \
    --pbkdf pbkdf2 --pbkdf-force-iterations 1000 >/dev/null
"$vd" mount "$work/disk.img" "$mnt" --key-file "$work/key" --mkfs ext4
"$vd" umount "$mnt"

allocated() { echo $(( $(stat -c %b "$work/disk.img") * $(stat -c %B "$work/disk.img") )); }

# one run: $1 = label, rest = extra mount flags; prints "label before after freed"
run() {
    local label=$1; shift
    "$vd" mount "$work/disk.img" "$mnt" --key-file "$work/key" "$@"
    local i n=$((size_mib / 64))
    for ((i = 0; i < n; i++)); do
        dd if=/dev/urandom of="$mnt/f$i" bs=1M count=64 status=none
    done
    sync
    rm -f "$mnt"/f*
    sync
    local before after
    before=$(allocated)
    fstrim "$mnt" 2>/dev/null || true
    sync
    after=$(allocated)
    "$vd" umount "$mnt"
    echo "$label $before $after $((before > after ? before - after : 0))"
}

total=$((size_mib << 20))
read -r _ b0 a0 f0 < <(run without)
read -r _ b1 a1 f1 < <(run with --allow-discards)
pct() { awk -v f="$1" -v t="$total" 'BEGIN { printf "%.1f", 100 * f / t }'; }
echo "| mount | deleted MiB | allocated before | after fstrim | freed | of deleted |"
echo "|---|---|---|---|---|---|"
echo "| without --allow-discards | $size_mib | $b0 | $a0 | $f0 | $(pct "$f0") % |"
echo "| --allow-discards | $size_mib | $b1 | $a1 | $f1 | $(pct "$f1") % |"
ok=1
[ "$f0" -eq 0 ] || { echo "discard-bench: punched without --allow-discards" >&2; ok=0; }
[ $((f1 * 10)) -ge $((total * 9)) ] || { echo "discard-bench: freed less than 90 %" >&2; ok=0; }
[ "$ok" = 1 ]
