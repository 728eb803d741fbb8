#!/usr/bin/env bash
# The main job, end to end on a fresh machine: install, build, format a small encrypted volume,
# open it, put ext4 on it through a loop device, write files, close, reopen, check, clean up.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
install_system_packages

step() { printf '\n== %s\n' "$*"; }

step "build (release)"
cargo build --release --quiet
vd=$PWD/target/release/vaultdisk

work=$(mktemp -d /var/tmp/vaultdisk-demo.XXXXXX)
mnt=$work/mnt
cleanup() {
    set +e
    mountpoint -q "$mnt" && umount "$mnt"
    [ -e "$work/plain.img" ] && "$vd" close "$work/plain.img" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT INT TERM
mkdir "$mnt"

# A key file keeps the demo unattended; on a terminal, leave out --key-file to be asked.
printf 'correct horse battery staple' > "$work/pass"
chmod 600 "$work/pass"

step "format a 64 MiB volume (LUKS2, aes-xts-plain64, Argon2id calibrated to 1 s)"
time "$vd" format "$work/disk.img" --size 64M --key-file "$work/pass" --iter-time 1000
ls -ls "$work/disk.img"

step "the header, as cryptsetup reads it"
cryptsetup luksDump "$work/disk.img" | sed -n '1,6p'

step "open: the plaintext appears as the regular file plain.img"
"$vd" open "$work/disk.img" "$work/plain.img" --key-file "$work/pass" --verbose
ls -l "$work/plain.img"

step "mkfs.ext4 on plain.img and mount it through a loop device"
mkfs.ext4 -q -F "$work/plain.img"
mount -o loop "$work/plain.img" "$mnt"
head -c 8M /dev/urandom > "$mnt/random.bin"
echo "hello from an encrypted disk" > "$mnt/hello.txt"
(cd "$mnt" && sha256sum random.bin hello.txt) > "$work/sums"
df -h "$mnt" | tail -1

step "unmount and close (close returns once the daemon has flushed and exited)"
umount "$mnt"
"$vd" close "$work/plain.img"
[ ! -e "$work/plain.img" ] && echo "plain.img is gone; only ciphertext remains in disk.img"
if grep -q "hello from an encrypted disk" "$work/disk.img"; then
    echo "demo: plaintext found in the backing file!" >&2
    exit 1
fi
echo "the backing file does not contain the plaintext"

step "reopen read-only, mount, and check the files"
"$vd" open "$work/disk.img" "$work/plain.img" --key-file "$work/pass" --read-only
mount -o loop,ro "$work/plain.img" "$mnt"
(cd "$mnt" && sha256sum -c "$work/sums")
umount "$mnt"
"$vd" close "$work/plain.img"

step "a wrong passphrase is refused (exit 2)"
set +e
printf 'wrong' | "$vd" open "$work/disk.img" "$work/plain.img" --key-file -
code=$?
set -e
[ "$code" -eq 2 ] || { echo "demo: expected exit 2, got $code" >&2; exit 1; }

if command -v bao >/dev/null; then
    step "vault: a volume whose key is wrapped by a transit key in a throwaway OpenBao dev server"
    eval "$(bash scripts/vault-dev.sh)"
    trap 'kill "$VAULTDISK_BAO_PID" 2>/dev/null; cleanup' EXIT INT TERM
    "$vd" format "$work/vault.img" --size 64M --transit-key demo-disk --create > "$work/recovery.txt"
    echo "recovery key saved to recovery.txt ($(wc -c < "$work/recovery.txt") bytes)"
    "$vd" vault list "$work/vault.img"
    # Only VAULT_TOKEN is needed now: the address is in the header's token.
    (unset VAULT_ADDR; "$vd" open "$work/vault.img" "$work/plain.img" --token-only --verbose)
    echo "opened through the vault" | dd of="$work/plain.img" conv=notrunc status=none
    "$vd" close "$work/plain.img"
    bao write -f "transit/keys/demo-disk/rotate" >/dev/null
    "$vd" vault rewrap "$work/vault.img"
    "$vd" test-key "$work/vault.img" --recovery-key < "$work/recovery.txt"
    kill "$VAULTDISK_BAO_PID"
else
    step "vault: skipped (bao not installed; scripts/vault-dev.sh installs it from PyPI)"
fi

step "done: formatted, opened, used through ext4, closed, reopened and verified"
