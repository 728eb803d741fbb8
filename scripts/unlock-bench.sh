#!/usr/bin/env bash
# Unlock time, median of N runs (default 20): a transit vault keyslot through an OpenBao dev
# server on 127.0.0.1, beside a default passphrase keyslot (Argon2id calibrated to 2 s) and a
# recovery key (PBKDF2, 1000 iterations). Each run is a whole `vaultdisk test-key` process.
#   bash scripts/unlock-bench.sh [N]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-20}
cargo build --release --quiet
vd=$PWD/target/release/vaultdisk
work=$(mktemp -d /tmp/vaultdisk-unlock.XXXXXX)
eval "$(bash scripts/vault-dev.sh)"
trap 'kill "$VAULTDISK_BAO_PID" 2>/dev/null; rm -rf "$work"' EXIT INT TERM
printf 'correct horse battery staple' > "$work/pass"
chmod 600 "$work/pass"
"$vd" format "$work/disk.img" --size 64M --key-file "$work/pass"
"$vd" vault enroll "$work/disk.img" --key-file "$work/pass" --transit-key bench --create >/dev/null
"$vd" add-recovery-key "$work/disk.img" --key-file "$work/pass" > "$work/recovery" 2>/dev/null

median_ms() {  # command... -> median wall time in ms over $runs runs
    local times=()
    for _ in $(seq 1 "$runs"); do
        local t0 t1
        t0=$(date +%s%N)
        "$@" >/dev/null 2>&1 </dev/null || { echo "unlock-bench: $* failed" >&2; exit 1; }
        t1=$(date +%s%N)
        times+=($(( (t1 - t0) / 1000000 )))
    done
    printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%s ms (min %s, max %s)", m, a[1], a[NR]}'
}

echo "unlock time, median of $runs whole test-key runs (load: $(cut -d' ' -f1-3 /proc/loadavg))"
echo "| key source | median (min, max) |"
echo "|---|---|"
echo "| vault transit token (OpenBao dev on 127.0.0.1) | $(median_ms "$vd" test-key "$work/disk.img" --token-only) |"
unset VAULT_TOKEN
echo "| recovery key (PBKDF2-SHA256, 1000 it.) | $(median_ms sh -c "\"$vd\" test-key \"$work/disk.img\" --recovery-key --key-slot 2 < \"$work/recovery\"") |"
echo "| passphrase (Argon2id, calibrated 2 s) | $(median_ms "$vd" test-key "$work/disk.img" --key-file "$work/pass" --key-slot 0) |"
