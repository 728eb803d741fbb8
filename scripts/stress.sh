#!/usr/bin/env bash
# Long data-integrity and crash runs (issue 6), as root: the CI tests in tests/it/reliability.rs
# at several GiB. Prints one "RESULT" line per part and exits non-zero on any mismatch.
#
#   scripts/stress.sh [JOB_MIB]         # default 1024: fio 4 jobs x JOB_MIB MiB through PLAIN,
#                                       # 4 x JOB_MIB/2 MiB through ext4 on a loop device
#   STRESS_DIR=/big/dir                 # where the volume lives (default target/stress)
#   CRASH_ROUNDS=20 SECTOR_ROUNDS=20000 MODEL_MIB=1024 MODEL_ROUNDS=20000 (defaults)
#   PARTS="fio ext4 model crash sector" (default: all)
#
# fio writes blocks of random, unaligned sizes (512 B .. 256 KiB) at random offsets with a
# crc32c header in each block and reads them all back (--verify=crc32c); then the volume is
# closed and reopened and fio checks everything again (--verify_only). "verified" counts
# the bytes fio read back and checked in both passes.
set -euo pipefail
cd "$(dirname "$0")/.."
JOB_MIB=${1:-1024}
STRESS_DIR=${STRESS_DIR:-$PWD/target/stress}
CRASH_ROUNDS=${CRASH_ROUNDS:-20}
SECTOR_ROUNDS=${SECTOR_ROUNDS:-20000}
MODEL_MIB=${MODEL_MIB:-1024}
MODEL_ROUNDS=${MODEL_ROUNDS:-20000}
PARTS=${PARTS:-fio ext4 model crash sector}
[ "$(id -u)" -eq 0 ] || { echo "stress.sh: run as root (loop devices, mount)" >&2; exit 1; }
for t in fio mkfs.ext4 losetup e2fsck python3; do
    command -v "$t" >/dev/null || { echo "stress.sh: $t missing (scripts/setup.sh installs it)" >&2; exit 1; }
done

cargo build --quiet
VD=${VAULTDISK_BIN:-$PWD/target/debug/vaultdisk}
mkdir -p "$STRESS_DIR"
W=$(mktemp -d "$STRESS_DIR/run.XXXXXX")
export VAULTDISK_RUNTIME_DIR=$W/rt
LOOP=""
cleanup() {
    set +e
    mountpoint -q "$W/mnt" && umount "$W/mnt"
    [ -n "$LOOP" ] && losetup -d "$LOOP" 2>/dev/null
    mountpoint -q "$W/plain" && "$VD" close "$W/plain"
    mountpoint -q "$W/plain" && fusermount3 -u -z "$W/plain"
    rm -rf "$W"
}
trap cleanup EXIT
head -c 32 /dev/urandom > "$W/key"
chmod 600 "$W/key"
SIZE_MIB=$((4 * JOB_MIB + 256))
"$VD" format "$W/disk.img" --size "${SIZE_MIB}M" --key-file "$W/key" \
    --pbkdf pbkdf2 --pbkdf-force-iterations 1000
open_plain() { "$VD" open "$W/disk.img" "$W/plain" --key-file "$W/key"; }
close_plain() { "$VD" close "$W/plain"; }

# fio_run NAME OUT.json ARGS...: runs fio, fails on any error, prints read/write bytes.
fio_run() {
    local name=$1 out=$2
    shift 2
    fio --name="$name" --ioengine=psync --numjobs=4 --verify=crc32c --verify_fatal=1 \
        --verify_state_save=0 --randrepeat=1 --group_reporting --output-format=json \
        --output="$out" "$@" >&2 || { echo "fio $name failed:" >&2; cat "$out" >&2; return 1; }
    python3 - "$out" <<'EOF'
import json, sys
text = open(sys.argv[1]).read()
j = json.loads(text[text.index("{"):])["jobs"][0]  # fio may print notes before the JSON
print(j["error"], j["read"]["io_bytes"], j["write"]["io_bytes"])
EOF
}

gib() { python3 -c "print(f'{$1 / 2**30:.2f}')"; }
total_verified=0

if [[ " $PARTS " == *" fio "* ]]; then
    open_plain
    raw=(--filename="$W/plain" --rw=randwrite --bsrange=512-256k --bs_unaligned=1
         --size="${JOB_MIB}M" --offset_increment="${JOB_MIB}M")
    fio_run plain "$W/fio1.json" "${raw[@]}" > "$W/r1"
    read -r err r1 w1 < "$W/r1"
    close_plain
    open_plain
    fio_run plain "$W/fio2.json" "${raw[@]}" --verify_only > "$W/r2"
    read -r err2 r2 _ < "$W/r2"
    close_plain
    [ "$err" = 0 ] && [ "$err2" = 0 ]
    total_verified=$((total_verified + r1 + r2))
    echo "RESULT fio-plain: wrote $(gib "$w1") GiB, verified $(gib "$r1") GiB, after reopen $(gib "$r2") GiB, mismatches 0"
fi

if [[ " $PARTS " == *" ext4 "* ]]; then
    open_plain
    mkfs.ext4 -q -F "$W/plain"
    mkdir -p "$W/mnt"
    ext4_pass() {
        LOOP=$(losetup -f --show "$W/plain")
        mount -t ext4 "$LOOP" "$W/mnt"
        fio_run ext4 "$W/$1" --directory="$W/mnt" --rw=randwrite --bs=4k \
            --size="$((JOB_MIB / 2))M" --fsync_on_close=1 "${@:2}"
        umount "$W/mnt"
        losetup -d "$LOOP"
        LOOP=""
    }
    ext4_pass fio3.json > "$W/r3"
    read -r err r1 w1 < "$W/r3"
    close_plain
    open_plain
    ext4_pass fio4.json --verify_only > "$W/r4"
    read -r err2 r2 _ < "$W/r4"
    e2fsck -fn "$W/plain" > "$W/fsck.txt" 2>&1 || { cat "$W/fsck.txt"; exit 1; }
    close_plain
    [ "$err" = 0 ] && [ "$err2" = 0 ]
    total_verified=$((total_verified + r1 + r2))
    echo "RESULT fio-ext4: wrote $(gib "$w1") GiB, verified $(gib "$r1") GiB, after reopen $(gib "$r2") GiB, e2fsck clean, mismatches 0"
fi
echo "RESULT fio total verified: $(gib "$total_verified") GiB, mismatches 0"

# The Rust tests at scale (their CI sizes are small).
it() {
    local log=$W/it.log
    env "$@" cargo test --quiet --test it -- --exact --nocapture --test-threads=1 "$TEST" > "$log" 2>&1 || true
    grep -E "^RESULT|panicked" "$log" || true
    grep -q "test result: ok. 1 passed" "$log" || { echo "stress.sh: $TEST failed:" >&2; tail -50 "$log" >&2; exit 1; }
}
if [[ " $PARTS " == *" model "* ]]; then
    TEST=reliability::model_writer_survives_close_and_reopen it \
        VAULTDISK_STRESS_MIB="$MODEL_MIB" VAULTDISK_STRESS_ROUNDS="$MODEL_ROUNDS"
fi
if [[ " $PARTS " == *" crash "* ]]; then
    TEST=reliability::kill_9_keeps_every_fsynced_write it VAULTDISK_CRASH_ROUNDS="$CRASH_ROUNDS"
fi
if [[ " $PARTS " == *" sector "* ]]; then
    TEST=reliability::two_writers_one_sector it VAULTDISK_SECTOR_ROUNDS="$SECTOR_ROUNDS"
fi
