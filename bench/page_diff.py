#!/usr/bin/env python3
"""Find the pages that differ between two versions of a SQLite file.

    page_diff.py BEFORE.db AFTER.db CHANGED_PAGES.bin

Both files must already be checkpointed (no pending WAL), so the main files
hold the full state.  Compares AFTER against BEFORE page by page (page size
read from the header, normally 4096) and writes every page of AFTER that
differs from, or does not exist in, BEFORE to CHANGED_PAGES.bin, one after
another.  Compressing that file gives a floor for what any page-level
incremental backup must store for this change: the ideal "ship only what
changed" answer.

Prints one line: "changed C new N total T page_size P".
"""
import sys


def page_size(path):
    with open(path, "rb") as f:
        hdr = f.read(100)
    if hdr[:16] != b"SQLite format 3\x00":
        sys.exit(f"{path}: not a SQLite database")
    ps = int.from_bytes(hdr[16:18], "big")
    return 65536 if ps == 1 else ps


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    before, after, out = sys.argv[1:]
    ps = page_size(after)
    if page_size(before) != ps:
        sys.exit("page sizes differ")
    changed = new = total = 0
    chunk = ps * 256  # read 1 MiB at a time, compare page by page
    with open(before, "rb") as fb, open(after, "rb") as fa, open(out, "wb") as fo:
        while True:
            a = fa.read(chunk)
            if not a:
                break
            b = fb.read(chunk)
            for off in range(0, len(a), ps):
                pa = a[off:off + ps]
                pb = b[off:off + ps]
                total += 1
                if len(pb) < ps:
                    new += 1
                    fo.write(pa)
                elif pa != pb:
                    changed += 1
                    fo.write(pa)
    print(f"changed {changed} new {new} total {total} page_size {ps}")


if __name__ == "__main__":
    main()
