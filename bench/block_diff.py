#!/usr/bin/env python3
"""Find the DuckDB blocks of one version of a database file that the previous one lacks.

    block_diff.py BEFORE.duckdb AFTER.duckdb NEW_BLOCKS.bin

Both files must be checkpointed (no .wal). A DuckDB file is a 12 KiB header (a main header
and two database headers), then blocks of block_alloc_size bytes (the u64 at offset 40 of a
database header; 262,144 by default). AFTER is cut the same way Lifeboat cuts it (the
header, then one piece per block) and every piece whose bytes occur nowhere among BEFORE's
pieces is written to NEW_BLOCKS.bin. Compressing that file gives the floor for any
block-level incremental backup of this change: what must be stored, however it is stored.

Prints one line: "new N moved M total T blocks, block_size B, header_changed 0|1", where
"new" are blocks of AFTER found nowhere in BEFORE, "moved" are blocks found in BEFORE at
another offset (deduplicated all the same), and "total" counts AFTER's blocks.
"""
import hashlib
import sys

HEADER = 12288


def block_size(path):
    with open(path, "rb") as f:
        hdr = f.read(HEADER)
    if len(hdr) < HEADER or hdr[8:12] != b"DUCK":
        sys.exit(f"{path}: not a DuckDB database")
    sizes = {int.from_bytes(hdr[off + 40:off + 48], "little") for off in (4096, 8192)}
    sizes.discard(0)
    if len(sizes) != 1:
        sys.exit(f"{path}: cannot tell the block size from the headers ({sorted(sizes)})")
    return sizes.pop()


def pieces(path, bs):
    """(offset, bytes) of the header and each block, in file order."""
    with open(path, "rb") as f:
        yield 0, f.read(HEADER)
        off = HEADER
        while True:
            b = f.read(bs)
            if not b:
                return
            yield off, b
            off += len(b)


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    before, after, out = sys.argv[1:]
    bs = block_size(after)
    if block_size(before) != bs:
        sys.exit("block sizes differ")
    seen = {}
    for off, b in pieces(before, bs):
        seen.setdefault(hashlib.blake2b(b, digest_size=16).digest(), off)
    new = moved = total = 0
    header_changed = 0
    with open(out, "wb") as fo:
        for off, b in pieces(after, bs):
            at = seen.get(hashlib.blake2b(b, digest_size=16).digest())
            if off == 0:
                header_changed = int(at is None)
                if at is None:
                    fo.write(b)
                continue
            total += 1
            if at is None:
                new += 1
                fo.write(b)
            elif at != off:
                moved += 1
    print(f"new {new} moved {moved} total {total} blocks, block_size {bs}, header_changed {header_changed}")


if __name__ == "__main__":
    main()
