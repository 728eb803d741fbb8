#!/usr/bin/env python3
"""Independent aes-xts-plain64 oracle (luks-format.md §10), built on python `cryptography`.

usage: xts.py decrypt|encrypt KEY_HEX FILE OFFSET LENGTH SECTOR_SIZE FIRST_IV
Reads LENGTH bytes of FILE at OFFSET, processes them as sectors of SECTOR_SIZE bytes whose
plain64 IVs are FIRST_IV + k * (SECTOR_SIZE / 512), and writes the result to stdout.
"""
import sys

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes


def xts(key, data, sector_size, first_iv, decrypt):
    step = sector_size // 512
    out = bytearray()
    for n in range(len(data) // sector_size):
        tweak = (first_iv + n * step).to_bytes(8, "little") + bytes(8)
        c = Cipher(algorithms.AES(key), modes.XTS(tweak))
        op = c.decryptor() if decrypt else c.encryptor()
        out += op.update(data[n * sector_size:(n + 1) * sector_size]) + op.finalize()
    return bytes(out)


def main():
    mode, key_hex, path, offset, length, sector_size, first_iv = sys.argv[1:8]
    with open(path, "rb") as f:
        f.seek(int(offset))
        data = f.read(int(length))
    out = xts(bytes.fromhex(key_hex), data, int(sector_size), int(first_iv), mode == "decrypt")
    sys.stdout.buffer.write(out)


if __name__ == "__main__":
    main()
