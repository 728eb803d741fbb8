#!/usr/bin/env bash
# How the frozen volumes in this directory were made (once; they are NOT regenerated: a later
# vaultdisk must keep opening exactly these bytes). Headers come from cryptsetup 2.6.1,
# qemu-img 10.0 and vaultdisk 0.1.0 (commit of the day); data from the Python `cryptography`
# oracle (tests/oracle/xts.py), qemu-img convert, or a write through vaultdisk's PLAIN.
# Every plaintext is 64 KiB made by Python; MANIFEST holds its SHA-256.
# Usage: bash tests/data/frozen/make.sh OUTDIR   (needs root for the vaultdisk FUSE write)
set -euo pipefail
repo=$(cd "$(dirname "$0")/../../.." && pwd)
out=${1:?OUTDIR}
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
oracle="python3 $repo/tests/oracle/xts.py"
vd=${VAULTDISK:-$repo/target/debug/vaultdisk}
printf 'frozen-pass' > pass
chmod 600 pass
PLAIN_BYTES=65536
python3 -c 'import hashlib,sys; sys.stdout.buffer.write(b"".join(hashlib.sha256(b"frozen%d"%i).digest() for i in range(2048)))' > plain.bin
sha=$(sha256sum plain.bin | cut -d' ' -f1)
: > "$out/MANIFEST"
note() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$sha" "$3" >> "$out/MANIFEST"; }
vk_of() { cryptsetup luksDump --dump-volume-key -q --key-file pass "$@" | sed -n '/MK dump/,$p' | sed 's/MK dump://' | tr -d ' \t\n:'; }

# LUKS2 by cryptsetup: one per KDF, data offset 512 KiB, 64 KiB of data encrypted by the oracle.
luks2() { # name kdf-flags key-bits sector-size
    local name=$1 kdf=$2 bits=$3 sector=$4
    truncate -s $((524288 + PLAIN_BYTES)) "$name.img"
    # shellcheck disable=SC2086
    cryptsetup luksFormat -q --type luks2 --key-file pass $kdf --key-size "$bits" \
        --sector-size "$sector" --luks2-metadata-size 16k --luks2-keyslots-size 256k \
        --offset 1024 --label "frozen $name" "$name.img"
    $oracle encrypt-into --key-hex "$(vk_of "$name.img")" --plain plain.bin --target "$name.img" \
        --offset 524288 --sector-size "$sector"
    note "$name.img.gz" - "cryptsetup luksFormat --type luks2 $kdf --key-size $bits --sector-size $sector"
}
luks2 cs-luks2-pbkdf2 "--pbkdf pbkdf2 --pbkdf-force-iterations 1000 --hash sha256" 256 4096
luks2 cs-luks2-argon2i "--pbkdf argon2i --pbkdf-force-iterations 4 --pbkdf-memory 32 --pbkdf-parallel 1" 512 512
luks2 cs-luks2-argon2id "--pbkdf argon2id --pbkdf-force-iterations 4 --pbkdf-memory 32 --pbkdf-parallel 1" 512 4096

# LUKS2 with a detached header: the data file holds only ciphertext (data offset 0).
truncate -s 4M cs-luks2-detached.hdr
truncate -s $PLAIN_BYTES cs-luks2-detached.data
cryptsetup luksFormat -q --type luks2 --key-file pass --pbkdf pbkdf2 --pbkdf-force-iterations 1000 \
    --key-size 256 --sector-size 4096 --luks2-metadata-size 16k --luks2-keyslots-size 256k \
    --header cs-luks2-detached.hdr cs-luks2-detached.data
$oracle encrypt-into --key-hex "$(vk_of cs-luks2-detached.hdr)" --plain plain.bin \
    --target cs-luks2-detached.data --offset 0 --sector-size 4096
note cs-luks2-detached.data.gz cs-luks2-detached.hdr.gz "cryptsetup luksFormat --type luks2 --header (detached)"

# LUKS1 by cryptsetup, data by the oracle in 512-byte sectors
# (payload at 4096 sectors). cryptsetup fills the seven disabled keyslot areas with random
# bytes; they are zeroed here (sectors 264..4095) so the image compresses: nothing reads them.
truncate -s $((2097152 + PLAIN_BYTES)) cs-luks1.img
cryptsetup luksFormat -q --type luks1 --key-file pass --pbkdf-force-iterations 1000 --key-size 256 cs-luks1.img
dd if=/dev/zero of=cs-luks1.img bs=512 seek=264 count=$((4096 - 264)) conv=notrunc status=none
$oracle encrypt-into --key-hex "$(vk_of cs-luks1.img)" --plain plain.bin --target cs-luks1.img \
    --offset 2097152 --sector-size 512
note cs-luks1.img.gz - "cryptsetup luksFormat --type luks1 --key-size 256"

# LUKS1 by qemu-img (payload at 4040 sectors), data by qemu-img convert.
qemu-img create -q -f luks --object secret,id=s0,data=frozen-pass -o key-secret=s0,iter-time=10 \
    qemu-luks1.img $PLAIN_BYTES
qemu-img convert --object secret,id=s0,data=frozen-pass -n -f raw plain.bin \
    --target-image-opts driver=luks,key-secret=s0,file.filename=qemu-luks1.img
note qemu-luks1.img.gz - "qemu-img create -f luks; qemu-img convert"

# LUKS2 by vaultdisk (its defaults but a cheap KDF), data written through PLAIN.
"$vd" format vd-luks2.img --size $PLAIN_BYTES --key-file pass --pbkdf argon2id \
    --pbkdf-force-iterations 4 --pbkdf-memory 32 --pbkdf-parallel 1 --label frozen-vaultdisk
"$vd" open vd-luks2.img vd-plain --key-file pass
dd if=plain.bin of=vd-plain bs=64k conv=notrunc,fsync status=none
"$vd" close vd-plain
note vd-luks2.img.gz - "vaultdisk 0.1.0 format (argon2id, cheap), written through PLAIN"

for f in *.img *.hdr *.data; do gzip -9n -c "$f" > "$out/$f.gz"; done
ls -l "$out"
