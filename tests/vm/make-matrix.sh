#!/usr/bin/env bash
# Builds issue 14's fixture matrix in OUT, rootless, with real tools only (sgdisk, sfdisk,
# mkfs.*, cryptsetup on files, the Python XTS oracle through tests/vm/ade_encrypt.py): one small
# disk image per row, each the shape one cryptsetup default or one Azure Disk Encryption step
# left (ade-facts.md §1.2, §1.3, §1.7). The plaintext of every row is an ext4 image with files,
# its SHA-256 taken before encryption; the data is encrypted by the oracle with the volume key
# from `cryptsetup luksDump --dump-volume-key`, never by vaultdisk.
#
#   luks1-sha1.img      MBR p1: LUKS1, PBKDF2-sha1, 256-bit key (AES-128-XTS; cryptsetup 1.6)
#   luks1-sha256.img    GPT p1: LUKS1, PBKDF2-sha256, 256-bit key (cryptsetup 1.7 - 2.0)
#   luks2-argon2i.img   GPT OS disk: p1 root with no header (data at 0), LUKS2 argon2i, 512-byte
#                       sectors, header in p2's ext2 /boot/luks/osluksheader; all-zero 64 KiB
#                       blocks skipped as ADE's `dd conv=sparse` left them (cryptsetup 2.1 - 2.3)
#   luks2-argon2id.img  GPT p1: LUKS2 argon2id, 4096-byte sectors, 8 MiB offset (the online
#                       `reencrypt --encrypt --reduce-device-size 32768S` shape; cryptsetup >= 2.4)
#   rotated.img         GPT p1: LUKS2, the BEK in keyslot 1 after a rotation (slot 0 killed)
#   cleartext.img       GPT p1: LUKS2, the BEK in keyslot 0 and ADE's `disable` cleartext key
#                       (128 raw bytes, `dd if=/dev/urandom bs=128 count=1`) in keyslot 1
#   reencrypt.img       GPT p1: LUKS2 left by `reencrypt --encrypt --init-only` (not finished)
#   cvm-token.img       GPT p1: LUKS2 with the confidential-VM token (id 5, Azure_Disk_Encryption,
#                       keyslots []) imported by `cryptsetup token import`
#   xfs-boot.img        GPT OS disk like luks2-argon2i but /boot is xfs (RHEL): mkfs.xfs -p
#   *.bek, cleartext.key, osluksheader-*   keys and the detached headers
#   matrix.json         per row: start, data_offset, sha256 (plaintext), zero_extents
#
# KDFs are cheap (pbkdf2 1000 iterations, argon2 4 passes of 32 MiB); the layouts are not.
# Usage: tests/vm/make-matrix.sh OUT
set -euo pipefail
out=${1:?usage: make-matrix.sh OUT}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out"
cd "$out"
MIB=1048576
cheap_argon=(--pbkdf-memory 32768 --pbkdf-force-iterations 4 --pbkdf-parallel 1)
cheap_pbkdf2=(--pbkdf pbkdf2 --pbkdf-force-iterations 1000)
export PATH=$PATH:/usr/sbin:/sbin

head -c127 /dev/urandom | base64 -w0 > os.bek
head -c 64 /dev/urandom > old.key
# ADE's cleartext key is 128 raw bytes; this one ends in a newline and holds a NUL, so a reader
# that trimmed or stopped at either would fail every time, not once in 256 runs.
{ head -c 100 /dev/urandom; printf '\000'; head -c 26 /dev/urandom; printf '\n'; } > cleartext.key
chmod 600 os.bek old.key cleartext.key
[ "$(stat -c %s cleartext.key)" = 128 ]

# A plaintext ext4 image of BYTES holding some files (with all-zero blocks between them).
mkfs_with_files() { # IMG BYTES LABEL
  local img=$1 bytes=$2 label=$3 d
  d=$(mktemp -d "$out/tree.XXXXXX")
  mkdir -p "$d/etc" "$d/home/azureuser" "$d/.azure_ade_backup_mount_info"
  echo "$label" > "$d/etc/hostname"
  head -c 1500000 /dev/urandom > "$d/home/azureuser/data.bin"
  seq 1 5000 > "$d/home/azureuser/numbers.txt"
  echo "$label /dev/disk/azure/scsi1/lun0-part1 /mnt/azure_bek_disk/LinuxPassPhraseFileName luks,nofail" \
    > "$d/.azure_ade_backup_mount_info/crypttab_line"
  rm -f "$img"
  truncate -s "$bytes" "$img"
  mkfs.ext4 -q -F -L "$label" -d "$d" "$img"
  rm -rf "$d"
}

start_of() { sgdisk -i "$2" "$1" | awk '/^First sector/ {print $3 * 512}'; }

mkdump() { # HEADER KEY OUT
  cryptsetup luksDump --dump-volume-key -q --key-file "$2" "$1" > "$3"
}

rows=()
# Records one row of matrix.json.
row() { # NAME START DATA_OFFSET SHA256 ENCRYPTED_JSON
  rows+=("\"$1\": {\"start\": $2, \"data_offset\": $3, \"sha256\": \"$4\", \"encrypted\": $5}")
}

# An attached-header data disk: TABLE (gpt|mbr), partition of PART bytes at 1 MiB, a
# cryptsetup-made header (luksFormat ARGS..., key KEY), the plaintext behind its data offset.
# SETUP (a shell function name or "") runs on the partition file after luksFormat.
attached() { # NAME TABLE PART KEY SECTOR SETUP ARGS...
  local name=$1 table=$2 part=$3 key=$4 sector=$5 setup=$6
  shift 6
  truncate -s $((part + 2 * MIB)) "$name.img"
  if [ "$table" = gpt ]; then
    sgdisk -o -n 1:2048:+$((part / 512)) -t 1:8300 -c 1:data "$name.img" > /dev/null
  else
    printf 'label: dos\nstart=2048, size=%d, type=83\n' $((part / 512)) | sfdisk -q "$name.img"
  fi
  local start=$MIB
  truncate -s "$part" "$name.part"
  cryptsetup luksFormat -q "$@" -d "$key" "$name.part"
  [ -z "$setup" ] || "$setup" "$name.part"
  local off
  if cryptsetup isLuks --type luks1 "$name.part"; then
    off=$(cryptsetup luksDump "$name.part" | awk '/^Payload offset/ {print $3 * 512}')
  else
    off=$(cryptsetup luksDump --dump-json-metadata "$name.part" \
      | python3 -c 'import json,sys; print(json.load(sys.stdin)["segments"]["0"]["offset"])')
  fi
  mkfs_with_files "$name.plain" $((part - off)) "$name"
  local sha
  sha=$(sha256sum "$name.plain" | cut -d' ' -f1)
  mkdump "$name.part" os.bek "$name.mk"
  dd if="$name.part" of="$name.img" bs=1M seek=1 conv=notrunc status=none
  local enc
  enc=$(python3 "$here/ade_encrypt.py" --mk-dump "$name.mk" --plain "$name.plain" \
    --target "$name.img" --offset $((start + off)) --sector-size "$sector")
  row "$name" "$start" "$off" "$sha" "$enc"
  rm -f "$name.part" "$name.mk" "$name.plain"
}

attached luks1-sha1 mbr $((16 * MIB)) os.bek 512 "" \
  --type luks1 --hash sha1 --key-size 256 --pbkdf-force-iterations 1000
attached luks1-sha256 gpt $((16 * MIB)) os.bek 512 "" \
  --type luks1 --hash sha256 --key-size 256 --pbkdf-force-iterations 1000
attached luks2-argon2id gpt $((24 * MIB)) os.bek 4096 "" \
  --type luks2 --offset 16384 --sector-size 4096 --pbkdf argon2id "${cheap_argon[@]}"

rotate() { # PART: old.key in slot 0 -> the BEK added (slot 1) -> slot 0 killed
  cryptsetup luksAddKey -q "${cheap_pbkdf2[@]}" --key-file old.key "$1" os.bek
  cryptsetup luksKillSlot -q --key-file os.bek "$1" 0
}
attached rotated gpt $((24 * MIB)) old.key 512 rotate \
  --type luks2 --offset 16384 --sector-size 512 "${cheap_pbkdf2[@]}"

add_cleartext() { # PART: ADE's `disable` adds the cleartext key beside the BEK
  cryptsetup luksAddKey -q "${cheap_pbkdf2[@]}" --key-file os.bek "$1" cleartext.key
}
attached cleartext gpt $((24 * MIB)) os.bek 512 add_cleartext \
  --type luks2 --offset 16384 --sector-size 512 "${cheap_pbkdf2[@]}"

cvm_token() { # PART: the confidential-VM token ADE writes (DiskUtil.py; ade-facts.md §1.3)
  cat > cvm-token.json <<'JSON'
{"type": "Azure_Disk_Encryption", "keyslots": [], "version": "1.0",
 "KekVaultResourceId": "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv1",
 "KeyEncryptionKeyURL": "https://kv1.vault.azure.net/keys/cvm-kek/0123456789abcdef0123456789abcdef",
 "KeyVaultResourceId": "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv1",
 "KeyVaultURL": "https://kv1.vault.azure.net/",
 "AttestationURL": "https://sharedeus.eus.attest.azure.net/",
 "PassphraseName": "LUKSPasswordProtector",
 "Passphrase": "c2tyLXdyYXBwZWQtcHJvdGVjdG9yLW5vdC1hLXJlYWwtb25l"}
JSON
  cryptsetup token import -q --token-id 5 --json-file cvm-token.json "$1"
}
attached cvm-token gpt $((24 * MIB)) os.bek 512 cvm_token \
  --type luks2 --offset 16384 --sector-size 512 "${cheap_pbkdf2[@]}"

# ---- mid-reencryption: ADE's online data-disk shape, `--init-only` and never resumed ----
part=$((24 * MIB))
truncate -s $((part + 2 * MIB)) reencrypt.img
sgdisk -o -n 1:2048:+$((part / 512)) -t 1:8300 -c 1:data reencrypt.img > /dev/null
mkfs_with_files reencrypt.part $((part - 16 * MIB)) reencrypt
re_sha=$(sha256sum reencrypt.part | cut -d' ' -f1)
truncate -s "$part" reencrypt.part
cryptsetup reencrypt -q --encrypt --init-only --reduce-device-size 32768S --type luks2 \
  "${cheap_pbkdf2[@]}" -d os.bek reencrypt.part
dd if=reencrypt.part of=reencrypt.img bs=1M seek=1 conv=notrunc status=none
rm -f reencrypt.part
row reencrypt "$MIB" $((8 * MIB)) "$re_sha" null

# ---- OS disks: root with a detached header in /boot (ext2, or xfs as on RHEL) ----
os_disk() { # NAME BOOTFS: GPT p1 root (no header), p2 /boot holding luks/osluksheader
  local name=$1 bootfs=$2 root=$((24 * MIB)) boot=$((40 * MIB))
  truncate -s $((root + boot + 2 * MIB)) "$name.img"
  sgdisk -o -n 1:2048:+$((root / 512)) -t 1:8300 -c 1:cloudimg-rootfs \
    -n 2:0:+$((boot / 512)) -t 2:8300 -c 2:boot "$name.img" > /dev/null
  local p1 p2
  p1=$(start_of "$name.img" 1) p2=$(start_of "$name.img" 2)
  mkfs_with_files "$name.plain" "$root" cloudimg-rootfs
  local sha
  sha=$(sha256sum "$name.plain" | cut -d' ' -f1)
  truncate -s 32M "osluksheader-$name"
  truncate -s "$root" "$name.ct"
  cryptsetup luksFormat -q --type luks2 --header "osluksheader-$name" --sector-size 512 \
    --pbkdf argon2i "${cheap_argon[@]}" -d os.bek "$name.ct"
  mkdump "osluksheader-$name" os.bek "$name.mk"
  local enc
  enc=$(python3 "$here/ade_encrypt.py" --mk-dump "$name.mk" --plain "$name.plain" \
    --target "$name.img" --offset "$p1" --sector-size 512 --skip-zero 65536)
  truncate -s "$boot" "$name.boot"
  if [ "$bootfs" = ext2 ]; then
    local d
    d=$(mktemp -d "$out/boot.XXXXXX")
    mkdir -p "$d/luks" "$d/grub"
    cp "osluksheader-$name" "$d/luks/osluksheader"
    echo "set timeout=1" > "$d/grub/grub.cfg"
    mkfs.ext2 -q -F -L boot -d "$d" "$name.boot"
    rm -rf "$d"
  else
    printf 'proto\n0 0\nd--755 0 0\nluks d--755 0 0\nosluksheader ---600 0 0 %s\n$\n$\n' \
      "$out/osluksheader-$name" > "$name.proto"
    # A /boot smaller than mkfs.xfs 6's 300 MB floor: its test-suite variables lift it.
    TEST_DEV=1 TEST_DIR=1 QA_CHECK_FS=1 mkfs.xfs -q -f -L boot -p "$name.proto" "$name.boot"
    rm -f "$name.proto"
  fi
  dd if="$name.boot" of="$name.img" bs=1M seek=$((p2 / MIB)) conv=notrunc status=none
  row "$name" "$p1" 0 "$sha" "$enc"
  rm -f "$name.ct" "$name.mk" "$name.plain" "$name.boot"
}
os_disk luks2-argon2i ext2
if command -v mkfs.xfs > /dev/null; then
  os_disk xfs-boot xfs
fi
rm -f old.key

{
  echo "{"
  for i in "${!rows[@]}"; do
    sep=,
    [ "$i" -eq $((${#rows[@]} - 1)) ] && sep=
    echo "  ${rows[$i]}$sep"
  done
  echo "}"
} > matrix.json
