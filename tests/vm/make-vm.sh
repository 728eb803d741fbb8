#!/usr/bin/env bash
# Builds a restored Azure-Disk-Encryption-shaped Linux VM in OUT, rootless, with real tools
# only (sgdisk, sfdisk, mkfs.*, cryptsetup on files, qemu-img, the Python XTS oracle):
#
#   os.vhd     fixed VHD (qemu-img convert -O vpc -o subformat=fixed,force_size), GPT:
#              p1 root: no signature, data at offset 0, encrypted with the detached header below
#                 (LUKS2 argon2i, 512-byte sectors, AES-256-XTS) by tests/vm/ade_encrypt.py with
#                 all-zero 64 KiB blocks skipped, as ADE's `dd conv=sparse` copy left them
#              p2 /boot: ext2 by `mkfs.ext2 -d` holding luks/osluksheader (a 32 MiB zeroed file
#                 that `cryptsetup luksFormat --header` wrote)
#              p14 BIOS boot (random bytes, as grub's core.img), p15 EFI System (mkfs.vfat)
#   data1.img  raw, GPT p1: LUKS2 attached, the 8 MiB-offset shape (--offset 16384), argon2id,
#              4096-byte sectors; the BEK in keyslot 1 after a rotation (slot 0 killed)
#   data2.img  raw, MBR p1: LUKS1, PBKDF2-sha1, 256-bit key (AES-128-XTS), 2 MiB offset
#   os.bek     the key: 172 base64 characters of 127 random bytes (ADE's LinuxPassPhraseFileName)
#   other.bek, other.hdr   another disk's key and detached header (a bad input)
#   osluksheader           a copy of the header in /boot (for the two-headers bad input)
#   boot-empty.img         an ext2 /boot without luks/ (spliced over p2 for "no header")
#   oracle.json            SHA-256 of each plaintext image (taken before encryption), zero
#                          extents, where each partition is and a byte inside a file's data
#
# Keyslot KDFs are made cheap (pbkdf2 1000 iterations, argon2 4 passes of 32 MiB) so tests stay
# fast; the layouts are the ones ADE's cryptsetup defaults gave (ade-facts.md §1.2).
# Usage: tests/vm/make-vm.sh OUT
set -euo pipefail
out=${1:?usage: make-vm.sh OUT}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out"
cd "$out"
MIB=1048576
cheap_argon=(--pbkdf-memory 32768 --pbkdf-force-iterations 4 --pbkdf-parallel 1)
export PATH=$PATH:/usr/sbin:/sbin

head -c127 /dev/urandom | base64 -w0 > os.bek
head -c127 /dev/urandom | base64 -w0 > other.bek
head -c 64 /dev/urandom > old.key
chmod 600 os.bek other.bek old.key

# A plaintext ext4 image of SIZE MiB (or bytes with B suffix) holding some files.
mkfs_with_files() { # IMG BYTES LABEL
  local img=$1 bytes=$2 label=$3 d
  d=$(mktemp -d "$out/tree.XXXXXX")
  mkdir -p "$d/etc" "$d/home/azureuser" "$d/.azure_ade_backup_mount_info"
  echo "$label" > "$d/etc/hostname"
  head -c 3000000 /dev/urandom > "$d/home/azureuser/data.bin"
  seq 1 20000 > "$d/home/azureuser/numbers.txt"
  echo "osencrypt UUID=x none luks" > "$d/.azure_ade_backup_mount_info/crypttab_line"
  rm -f "$img"
  truncate -s "$bytes" "$img"
  mkfs.ext4 -q -F -L "$label" -d "$d" "$img"
  rm -rf "$d"
}

# Plaintext byte offset of the first data block of /home/azureuser/data.bin in IMG.
file_offset() { # IMG
  local blk bs
  bs=$(dumpe2fs -h "$1" 2>/dev/null | awk -F: '/^Block size/ {gsub(/ /,"",$2); print $2}')
  blk=$(debugfs -R "bmap /home/azureuser/data.bin 10" "$1" 2>/dev/null | tail -n1)
  echo $((blk * bs))
}

mkdump() { # HEADER KEY OUT
  cryptsetup luksDump --dump-volume-key -q --key-file "$2" "$1" > "$3"
}

# ---- OS disk ----
root_size=$((40 * MIB)) boot_size=$((36 * MIB))
sgdisk_args=(-o
  -n 1:2048:+$((root_size / 512)) -t 1:8300 -c 1:cloudimg-rootfs
  -n 2:0:+$((boot_size / 512)) -t 2:8300 -c 2:boot
  -n 14:0:+2048 -t 14:ef02
  -n 15:0:+$((8 * MIB / 512)) -t 15:ef00 -c 15:UEFI)
truncate -s $((88 * MIB)) os.raw
sgdisk "${sgdisk_args[@]}" os.raw > /dev/null
start_of() { sgdisk -i "$2" "$1" | awk '/^First sector/ {print $3 * 512}'; }
p1=$(start_of os.raw 1) p2=$(start_of os.raw 2) p14=$(start_of os.raw 14) p15=$(start_of os.raw 15)

mkfs_with_files root.plain "$root_size" cloudimg-rootfs
root_sha=$(sha256sum root.plain | cut -d' ' -f1)
root_file=$(file_offset root.plain)
truncate -s 32M osluksheader
truncate -s "$root_size" root.ct
cryptsetup luksFormat -q --type luks2 --header osluksheader --sector-size 512 \
  --pbkdf argon2i "${cheap_argon[@]}" -d os.bek root.ct
mkdump osluksheader os.bek os.mk
root_json=$(python3 "$here/ade_encrypt.py" --mk-dump os.mk --plain root.plain --target os.raw \
  --offset "$p1" --sector-size 512 --skip-zero 65536)
rm -f root.ct os.mk

bootdir=$(mktemp -d "$out/boot.XXXXXX")
mkdir -p "$bootdir/luks" "$bootdir/grub"
cp osluksheader "$bootdir/luks/osluksheader"
echo "set timeout=1" > "$bootdir/grub/grub.cfg"
truncate -s "$boot_size" boot.img
mkfs.ext2 -q -F -L boot -d "$bootdir" boot.img
rm -rf "$bootdir/luks"
truncate -s "$boot_size" boot-empty.img
mkfs.ext2 -q -F -L boot -d "$bootdir" boot-empty.img
rm -rf "$bootdir"
dd if=boot.img of=os.raw bs=1M seek=$((p2 / MIB)) conv=notrunc status=none
head -c $MIB /dev/urandom | dd of=os.raw bs=1M seek=$((p14 / MIB)) conv=notrunc status=none
truncate -s $((8 * MIB)) efi.img
mkfs.vfat -n UEFI efi.img > /dev/null
dd if=efi.img of=os.raw bs=1M seek=$((p15 / MIB)) conv=notrunc status=none
rm -f boot.img efi.img
qemu-img convert -f raw -O vpc -o subformat=fixed,force_size os.raw os.vhd
rm -f os.raw

# Another disk's detached header (opens with other.bek; decrypts no partition here).
truncate -s 32M other.hdr
truncate -s $((16 * MIB)) other.data
cryptsetup luksFormat -q --type luks2 --header other.hdr --pbkdf pbkdf2 \
  --pbkdf-force-iterations 1000 -d other.bek other.data
rm -f other.data

# ---- data disk 1: LUKS2 at 8 MiB offset, argon2id, 4096-byte sectors, keyslot 1 ----
d1_part=$((40 * MIB))
truncate -s $((48 * MIB)) data1.img
sgdisk -o -n 1:2048:+$((d1_part / 512)) -t 1:8300 -c 1:data data1.img > /dev/null
d1=$(start_of data1.img 1)
truncate -s "$d1_part" d1.part
cryptsetup luksFormat -q --type luks2 --offset 16384 --sector-size 4096 --pbkdf argon2id \
  "${cheap_argon[@]}" -d old.key d1.part
cryptsetup luksAddKey -q --pbkdf argon2id "${cheap_argon[@]}" --key-file old.key d1.part os.bek
cryptsetup luksKillSlot -q --key-file os.bek d1.part 0
mkfs_with_files d1.plain $((d1_part - 8 * MIB)) data1
d1_sha=$(sha256sum d1.plain | cut -d' ' -f1)
d1_file=$(file_offset d1.plain)
mkdump d1.part os.bek d1.mk
dd if=d1.part of=data1.img bs=1M seek=$((d1 / MIB)) conv=notrunc status=none
d1_json=$(python3 "$here/ade_encrypt.py" --mk-dump d1.mk --plain d1.plain --target data1.img \
  --offset $((d1 + 8 * MIB)) --sector-size 4096)
rm -f d1.part d1.mk old.key

# ---- data disk 2: MBR, LUKS1 PBKDF2-sha1, 256-bit key ----
d2_part=$((30 * MIB))
truncate -s $((32 * MIB)) data2.img
printf 'label: dos\nstart=2048, size=%d, type=83\n' $((d2_part / 512)) | sfdisk -q data2.img
d2=$((2048 * 512))
truncate -s "$d2_part" d2.part
cryptsetup luksFormat -q --type luks1 --hash sha1 --key-size 256 --pbkdf-force-iterations 1000 \
  -d os.bek d2.part
d2_off=$(cryptsetup luksDump d2.part | awk '/^Payload offset/ {print $3 * 512}')
mkfs_with_files d2.plain $((d2_part - d2_off)) data2
d2_sha=$(sha256sum d2.plain | cut -d' ' -f1)
d2_file=$(file_offset d2.plain)
mkdump d2.part os.bek d2.mk
dd if=d2.part of=data2.img bs=1M seek=$((d2 / MIB)) conv=notrunc status=none
d2_json=$(python3 "$here/ade_encrypt.py" --mk-dump d2.mk --plain d2.plain --target data2.img \
  --offset $((d2 + d2_off)) --sector-size 512)
rm -f d2.part d2.mk root.plain d1.plain d2.plain

cat > oracle.json <<JSON
{
  "os": {"root": {"start": $p1, "size": $root_size, "data_offset": 0, "sha256": "$root_sha",
                  "file_byte": $root_file, "encrypted": $root_json},
         "boot_start": $p2, "bios_start": $p14, "efi_start": $p15},
  "data1": {"start": $d1, "size": $d1_part, "data_offset": $((8 * MIB)), "sha256": "$d1_sha",
            "file_byte": $d1_file, "encrypted": $d1_json},
  "data2": {"start": $d2, "size": $d2_part, "data_offset": $d2_off, "sha256": "$d2_sha",
            "file_byte": $d2_file, "encrypted": $d2_json}
}
JSON
