#!/usr/bin/env python3
"""Encrypts a plaintext filesystem image into a partition of a disk image the way Azure Disk
Encryption's used-space copy left it (../shared/docs/ade-facts.md §0.4): with --skip-zero BYTES,
every all-zero block of that size is skipped (its ciphertext stays zero, as `dd conv=sparse`
left it); without it, every sector is encrypted (a data disk formatted through dm-crypt).

The cipher is tests/oracle/xts.py (Python `cryptography`, no vaultdisk code). The volume key
comes from `cryptsetup luksDump --dump-volume-key` output (--mk-dump FILE).

Prints one JSON object: {"sha256": plaintext digest, "zero_extents": {"count", "bytes"}}.
Zero extents are maximal runs of skipped blocks, as `vaultdisk verify` counts them.
"""
import argparse
import hashlib
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "oracle"))
from xts import transform  # noqa: E402


def mk_dump_hex(text):
    """The hex of the "MK dump:" lines of luksDump --dump-volume-key."""
    out = []
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("MK dump:"):
            out += line[len("MK dump:"):].split()
            for more in lines[i + 1:]:
                if not more[:1].isspace() or not more.strip():
                    break
                out += more.split()
            break
    if not out:
        sys.exit("ade_encrypt.py: no MK dump found")
    return "".join(out)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--mk-dump", required=True)
    p.add_argument("--plain", required=True)
    p.add_argument("--target", required=True)
    p.add_argument("--offset", type=int, required=True, help="byte offset of the data in TARGET")
    p.add_argument("--sector-size", type=int, default=512)
    p.add_argument("--skip-zero", type=int, default=0)
    a = p.parse_args()
    with open(a.mk_dump) as f:
        key = bytes.fromhex(mk_dump_hex(f.read()))
    block = a.skip_zero or (1 << 20)
    assert block % a.sector_size == 0
    digest = hashlib.sha256()
    count = nbytes = 0
    in_run = False
    with open(a.plain, "rb") as src, open(a.target, "r+b") as dst:
        pos = 0
        while True:
            data = src.read(block)
            if not data:
                break
            digest.update(data)
            if len(data) % a.sector_size:
                sys.exit("ade_encrypt.py: plaintext is not a whole number of sectors")
            if a.skip_zero and data.count(0) == len(data):
                if not in_run:
                    count += 1
                in_run = True
                nbytes += len(data)
            else:
                in_run = False
                ct = transform(key, data, a.sector_size, pos // 512, decrypt=False)
                dst.seek(a.offset + pos)
                dst.write(ct)
            pos += len(data)
    print(json.dumps({"sha256": digest.hexdigest(),
                      "zero_extents": {"count": count, "bytes": nbytes}}))


if __name__ == "__main__":
    main()
