#!/usr/bin/env bash
# The README's main job, end to end: format a 64 MiB volume, open it, put ext4 on PLAIN through
# a loop device, write and read files, close, reopen and check them. Run as root on Debian 12.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

step() { printf '\n== %s\n' "$*"; }
die() { echo "demo.sh: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root (loop devices and mount need it)"

step "1. install what the demo needs (only if missing)"
need=()
command -v fusermount3 >/dev/null || need+=(fuse3)
command -v mkfs.ext4   >/dev/null || need+=(e2fsprogs)
command -v losetup     >/dev/null || need+=(util-linux)
command -v mount       >/dev/null || need+=(mount)
if [ "${#need[@]}" -gt 0 ]; then
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${need[@]}"
else
    echo "fuse3, e2fsprogs, util-linux present"
fi
modprobe loop 2>/dev/null || true
modprobe fuse 2>/dev/null || true
[ -e /dev/fuse ] || die "/dev/fuse is missing"

step "2. build vaultdisk (release)"
cargo build --release --quiet
VD="$PWD/target/release/vaultdisk"
echo "$VD"

WORK="$(mktemp -d /tmp/vaultdisk-demo.XXXXXX)"
BACKING="$WORK/disk.img"; PLAIN="$WORK/plain"; MNT="$WORK/mnt"; KEY="$WORK/passphrase"
LOOP=""
cleanup() {
    set +e
    mountpoint -q "$MNT" 2>/dev/null && umount "$MNT"
    [ -n "$LOOP" ] && losetup "$LOOP" >/dev/null 2>&1 && losetup -d "$LOOP"
    if mountpoint -q "$PLAIN" 2>/dev/null; then
        "$VD" close "$PLAIN" || fusermount3 -u -z "$PLAIN"
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
echo "working in $WORK"

step "3. format a 64 MiB volume (passphrase from a key file)"
# A key file is used byte for byte: printf, not echo, so no newline joins the passphrase.
printf 'demo passphrase' > "$KEY"
chmod 600 "$KEY"
# Cheap PBKDF2 keeps the demo fast; without --pbkdf flags vaultdisk calibrates Argon2id to ~2 s
# as cryptsetup does, which is what a real volume should use.
"$VD" format "$BACKING" --size 64M --key-file "$KEY" --pbkdf pbkdf2 --pbkdf-force-iterations 1000 --label demo
ls -ls "$BACKING"
"$VD" dump "$BACKING"

step "4. open it: PLAIN is one regular file with the decrypted 64 MiB"
"$VD" -v open "$BACKING" "$PLAIN" --key-file "$KEY"
ls -l "$PLAIN"
[ "$(stat -c %s "$PLAIN")" -eq $((64 << 20)) ] || die "PLAIN is not 64 MiB"

step "5. ext4 on PLAIN through a loop device"
LOOP="$(losetup -f --show "$PLAIN")"
echo "loop device: $LOOP"
mkfs.ext4 -q -L vaultdemo "$LOOP"
mkdir -p "$MNT"
mount "$LOOP" "$MNT"

step "6. write files"
head -c 5M /dev/urandom > "$MNT/random.bin"
printf 'hello from vaultdisk\n' > "$MNT/hello.txt"
mkdir "$MNT/dir" && seq 1 100000 > "$MNT/dir/numbers.txt"
(cd "$MNT" && find . -type f | sort | xargs sha256sum) > "$WORK/sums"
cat "$WORK/sums"
sync

step "7. read them back"
(cd "$MNT" && sha256sum -c --quiet "$WORK/sums") && echo "all files read back correctly"

step "8. close is refused while the filesystem is mounted (exit 5)"
set +e; "$VD" close "$PLAIN"; rc=$?; set -e
[ "$rc" -eq 5 ] || die "close while mounted returned $rc, expected 5"
echo "close refused with exit $rc, as documented"

step "9. unmount, detach, close"
umount "$MNT"
losetup -d "$LOOP"; LOOP=""
"$VD" close "$PLAIN"
mountpoint -q "$PLAIN" 2>/dev/null && die "PLAIN still mounted after close"
echo "closed; the plaintext exists only inside $BACKING now"
if grep -q "hello from vaultdisk" "$BACKING"; then die "plaintext found in the backing file"; fi
echo "the backing file holds no plaintext (grep finds nothing)"

step "10. reopen and check the files"
"$VD" open "$BACKING" "$PLAIN" --key-file "$KEY"
LOOP="$(losetup -f --show "$PLAIN")"
e2fsck -f -n "$LOOP" >/dev/null && echo "e2fsck: clean"
mount "$LOOP" "$MNT"
(cd "$MNT" && sha256sum -c --quiet "$WORK/sums") && echo "all files intact after reopen"
cat "$MNT/hello.txt"
umount "$MNT"
losetup -d "$LOOP"; LOOP=""
"$VD" close "$PLAIN"

step "done: format, open, ext4, write, read, close, reopen, verify all succeeded"
