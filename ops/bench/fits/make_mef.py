"""Writes a multi-extension FITS file like an OmegaCAM frame: an empty primary HDU and N
IMAGE extensions of 16-bit pixels (EXTNAME CCD_1 … CCD_N), each with CHECKSUM and DATASUM
cards. Standard library only, so the benchmark needs no astropy.

Usage: python3 make_mef.py OUT CCDS WIDTH HEIGHT
"""

import random
import struct
import sys

BLOCK = 2880


def ones_sum(data: bytes) -> int:
    total = sum(struct.unpack(f">{len(data) // 4}I", data))
    while total >> 32:
        total = (total & 0xFFFFFFFF) + (total >> 32)
    return total


def encode(value: int) -> str:
    excluded = set(range(0x3A, 0x41)) | set(range(0x5B, 0x61))
    out = [0] * 16
    for i, byte in enumerate(value.to_bytes(4, "big")):
        q, r = byte // 4 + 0x30, byte % 4
        chars = [q + r, q, q, q]
        while True:
            changed = False
            for j in (0, 2):
                if chars[j] in excluded or chars[j + 1] in excluded:
                    chars[j] += 1
                    chars[j + 1] -= 1
                    changed = True
            if not changed:
                break
        for k, c in enumerate(chars):
            out[4 * k + i] = c
    return bytes(out[-1:] + out[:-1]).decode()


def hdu(cards: list[str], data: bytes) -> bytes:
    data += b"\0" * (-len(data) % BLOCK)
    data_sum = ones_sum(data)
    cards = cards + [f"DATASUM = '{data_sum}'", "CHECKSUM= '0000000000000000'", "END"]
    header = "".join(f"{card:<80}" for card in cards).encode()
    header += b" " * (-len(header) % BLOCK)
    total = ones_sum(header) + data_sum
    while total >> 32:
        total = (total & 0xFFFFFFFF) + (total >> 32)
    at = (len(cards) - 2) * 80 + 11
    header = header[:at] + encode(~total & 0xFFFFFFFF).encode() + header[at + 16 :]
    return header + data


def main() -> None:
    out, ccds, width, height = sys.argv[1], *map(int, sys.argv[2:5])
    rng = random.Random(32)
    with open(out, "wb") as file:
        file.write(hdu(["SIMPLE  =                    T", "BITPIX  =                    8",
                        "NAXIS   =                    0", "EXTEND  =                    T"], b""))
        for ccd in range(1, ccds + 1):
            pixels = rng.randbytes(width * height * 2)
            file.write(hdu([
                "XTENSION= 'IMAGE   '", "BITPIX  =                   16", "NAXIS   =                    2",
                f"NAXIS1  = {width:>20}", f"NAXIS2  = {height:>20}", "PCOUNT  =                    0",
                "GCOUNT  =                    1", f"EXTNAME = 'CCD_{ccd}'",
            ], pixels))


main()
