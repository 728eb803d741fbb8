#!/usr/bin/env bash
# Sequential 1 MiB-block throughput through the plaintext file: vaultdisk vs qemu-storage-daemon's
# FUSE export of a LUKS1 image, measured in the same run on the same backing directory.
# Usage: scripts/bench.sh [SIZE_MIB (default 1024)] [DIR (default: a temp dir under /var/tmp)]
set -euo pipefail
cd "$(dirname "$0")/.."
size_mib=${1:-1024}
dir=${2:-$(mktemp -d /var/tmp/vaultdisk-bench.XXXXXX)}
mkdir -p "$dir"

need() { command -v "$1" >/dev/null || { echo "bench: $1 is missing (apt-get install $2)" >&2; exit 1; }; }
need qemu-storage-daemon qemu-utils
need qemu-img qemu-utils
need fusermount3 fuse3

cargo build --release --quiet
bin=$PWD/target/release/vaultdisk
pass="$dir/pass"
printf 'bench-passphrase' > "$pass"
qsd_pid=""
cleanup() {
    set +e
    "$bin" close "$dir/plain" >/dev/null 2>&1
    fusermount3 -u "$dir/qexp" >/dev/null 2>&1
    [ -n "$qsd_pid" ] && kill "$qsd_pid" >/dev/null 2>&1 && wait "$qsd_pid" 2>/dev/null
    rm -rf "$dir"
}
trap cleanup EXIT INT TERM

drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true; }
# dd prints "... copied, S s, R MB/s"; report MB/s computed from bytes and seconds.
mbps() { awk '/copied/ { for (i = 1; i <= NF; i++) if ($i == "s,") s = $(i-1); printf "%.0f", $1 / s / 1e6 }'; }
write_test() { dd if=/dev/zero of="$1" bs=1M count="$size_mib" conv=notrunc,fdatasync 2>&1 | mbps; }
read_test() { drop_caches; dd if="$1" of=/dev/null bs=1M count="$size_mib" 2>&1 | mbps; }

# vaultdisk (pbkdf2 at the floor: the KDF is not what is measured here)
"$bin" format "$dir/disk.img" --size "${size_mib}M" --key-file "$pass" --pbkdf pbkdf2 --pbkdf-force-iterations 1000 -q
"$bin" open "$dir/disk.img" "$dir/plain" --key-file "$pass" -q
vd_w=$(write_test "$dir/plain")
vd_r=$(read_test "$dir/plain")
"$bin" close "$dir/plain"

# qemu-storage-daemon: LUKS1 image exported through FUSE (the secret goes through a file)
qemu-img create -q -f luks --object secret,id=s0,file="$pass" -o key-secret=s0,iter-time=10 "$dir/q.luks" "${size_mib}M"
touch "$dir/qexp"
qemu-storage-daemon --object secret,id=s0,file="$pass" \
    --blockdev driver=file,node-name=f0,filename="$dir/q.luks" \
    --blockdev driver=luks,node-name=l0,file=f0,key-secret=s0 \
    --export type=fuse,id=e0,node-name=l0,mountpoint="$dir/qexp",writable=on >/dev/null 2>&1 &
qsd_pid=$!
for _ in $(seq 50); do [ "$(stat -c %s "$dir/qexp")" -gt 0 ] && break; sleep 0.1; done
q_w=$(write_test "$dir/qexp")
q_r=$(read_test "$dir/qexp")
# SIGTERM makes qemu-storage-daemon remove its export and exit (after a bare fusermount3 -u
# it was seen spinning instead of exiting).
kill "$qsd_pid"; wait "$qsd_pid" 2>/dev/null || true; qsd_pid=""

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }'; }
printf '| %-34s | %10s | %10s |\n' "sequential, 1 MiB blocks, ${size_mib} MiB" "write MB/s" "read MB/s"
printf '|%s|%s|%s|\n' "------------------------------------" "------------" "------------"
printf '| %-34s | %10s | %10s |\n' "vaultdisk (aes-xts-plain64, 4K)" "$vd_w" "$vd_r"
printf '| %-34s | %10s | %10s |\n' "qemu-storage-daemon FUSE, LUKS1" "$q_w" "$q_r"
printf '| %-34s | %10s | %10s |\n' "ratio vaultdisk / qemu" "$(ratio "$vd_w" "$q_w")" "$(ratio "$vd_r" "$q_r")"
