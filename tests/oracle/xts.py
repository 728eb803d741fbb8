#!/usr/bin/env python3
"""Independent aes-xts-plain64 sector oracle for vaultdisk tests (docs/format.md §7, §10).

Built on Python `cryptography` (OpenSSL), sharing no code with vaultdisk. The IV of the sector
that starts b bytes after the region start is first_iv + b/512 (512-byte units whatever the
sector size, as LUKS2 and LUKS1 do); the tweak is that number as a little-endian u64 padded with
eight zero bytes. Keys whose halves are equal fall back to an ECB-built XTS, because OpenSSL refuses them.

Usage:
  xts.py decrypt|encrypt --key-hex HEX --in FILE --offset BYTES --length BYTES
         [--sector-size 512|4096] [--first-iv N] --out FILE
      Reads LENGTH bytes of FILE at OFFSET, transforms them sector by sector, writes them to OUT.
  xts.py encrypt-into --key-hex HEX --plain FILE --target FILE --offset BYTES
         [--sector-size N] [--first-iv N]
      Encrypts all of FILE PLAIN and writes the ciphertext into TARGET at OFFSET in place.
  xts.py selftest
      Checks IEEE 1619 vectors 1, 2, 4, 10 (docs/format.md §10).
"""
import argparse
import sys

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes


def _xts_ecb(key, tweak, data, decrypt):
    """XTS built on AES-ECB, for keys with equal halves (OpenSSL refuses those)."""
    half = len(key) // 2
    k1, k2 = key[:half], key[half:]
    enc_t = Cipher(algorithms.AES(k2), modes.ECB()).encryptor()
    t = int.from_bytes(enc_t.update(tweak), "little")
    c1 = Cipher(algorithms.AES(k1), modes.ECB())
    op = c1.decryptor() if decrypt else c1.encryptor()
    out = bytearray()
    for i in range(0, len(data), 16):
        tb = t.to_bytes(16, "little")
        x = bytes(a ^ b for a, b in zip(data[i:i + 16], tb))
        y = op.update(x)
        out += bytes(a ^ b for a, b in zip(y, tb))
        t <<= 1
        if t >> 128:
            t = (t & ((1 << 128) - 1)) ^ 0x87
    return bytes(out)


def transform(key, data, sector_size=512, first_iv=0, decrypt=True):
    """aes-xts-plain64 over whole sectors; IV = first_iv + (byte offset) / 512."""
    if len(data) % sector_size:
        raise ValueError("data is not a whole number of sectors")
    if len(key) not in (32, 64):
        raise ValueError("key must be 32 or 64 bytes")
    step = sector_size // 512
    equal_halves = key[: len(key) // 2] == key[len(key) // 2:]
    out = bytearray()
    for n in range(len(data) // sector_size):
        tweak = (first_iv + n * step).to_bytes(8, "little") + bytes(8)
        chunk = data[n * sector_size:(n + 1) * sector_size]
        if equal_halves:
            out += _xts_ecb(key, tweak, chunk, decrypt)
        else:
            c = Cipher(algorithms.AES(key), modes.XTS(tweak))
            op = c.decryptor() if decrypt else c.encryptor()
            out += op.update(chunk) + op.finalize()
    return bytes(out)


def selftest():
    h = bytes.fromhex
    pt256 = bytes(range(256)) * 2
    cases = [
        (bytes(32), 0, bytes(32), "917cf69ebd68b2ec9b9fe9a3eadda692cd43d2f59598ed858c02c2652fbf922e", None),
        (h("11" * 16 + "22" * 16), 0x3333333333, h("44" * 32),
         "c454185e6a16936e39334038acef838bfb186fff7480adc4289382ecd6d394f0", None),
        (h("27182818284590452353602874713526" "31415926535897932384626433832795"), 0, pt256,
         "27a7479befa1d476489f308cd4cfa6e2", "0a282df920147beabe421ee5319d0568"),
        (h("2718281828459045235360287471352662497757247093699959574966967627"
           "3141592653589793238462643383279502884197169399375105820974944592"), 0xFF, pt256,
         "1c3b3a102f770386e4836c99e370cf9bea00803f5e482357a4ae12d414a3e63b", "c4f36ffda9fcea70b9c6e693e148c151"),
    ]
    for key, dusn, pt, head, tail in cases:
        tweak = dusn.to_bytes(8, "little") + bytes(8)
        if key[:len(key) // 2] == key[len(key) // 2:]:
            ct = _xts_ecb(key, tweak, pt, False)
        else:
            op = Cipher(algorithms.AES(key), modes.XTS(tweak)).encryptor()
            ct = op.update(pt) + op.finalize()
        assert ct.hex().startswith(head), (key.hex(), ct.hex())
        assert tail is None or ct.hex().endswith(tail), (key.hex(), ct.hex())
        # the sector API must agree with the raw construction when the DUSN is the first IV
        if len(pt) == 512:
            assert transform(key, pt, 512, dusn, decrypt=False) == ct
            assert transform(key, ct, 512, dusn, decrypt=True) == pt
    # a 4096-byte sector is one data unit with IV 8*k, not eight 512-byte units
    key = bytes(range(64))
    data = bytes(8192)
    ct = transform(key, data, 4096, 0, decrypt=False)
    op = Cipher(algorithms.AES(key), modes.XTS((8).to_bytes(8, "little") + bytes(8))).encryptor()
    assert ct[4096:] == op.update(data[4096:]) + op.finalize()
    print("xts oracle selftest ok")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("cmd", choices=["decrypt", "encrypt", "encrypt-into", "selftest"])
    p.add_argument("--key-hex")
    p.add_argument("--in", dest="inp")
    p.add_argument("--out")
    p.add_argument("--plain")
    p.add_argument("--target")
    p.add_argument("--offset", type=int, default=0)
    p.add_argument("--length", type=int)
    p.add_argument("--sector-size", type=int, default=512)
    p.add_argument("--first-iv", type=int, default=0)
    a = p.parse_args()
    if a.cmd == "selftest":
        selftest()
        return 0
    key = bytes.fromhex(a.key_hex)
    if a.cmd == "encrypt-into":
        with open(a.plain, "rb") as f:
            plain = f.read()
        ct = transform(key, plain, a.sector_size, a.first_iv, decrypt=False)
        with open(a.target, "r+b") as f:
            f.seek(a.offset)
            f.write(ct)
        return 0
    with open(a.inp, "rb") as f:
        f.seek(a.offset)
        data = f.read(a.length)
    if len(data) != a.length:
        sys.exit("xts.py: short read: %d of %d bytes" % (len(data), a.length))
    out = transform(key, data, a.sector_size, a.first_iv, decrypt=(a.cmd == "decrypt"))
    with open(a.out, "wb") as f:
        f.write(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
