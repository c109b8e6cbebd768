#!/usr/bin/env python3
"""Rows of realistic random text for postgres.sh's `docs` table, as COPY text on stdout.

    pg_docs.py docs ROWS [SEED]          id <TAB> body for ids 1..ROWS
    pg_docs.py update ROWS COUNT [SEED]  COUNT ids drawn uniformly from 1..ROWS (no repeats),
                                         each with a new body, in random order

A body is words of a fixed vocabulary of 4096 pseudo-words (2 to 4 syllables of letters,
made from the seed), drawn with Zipf-like frequencies (weight 1/rank, as words in real text),
with a full stop and a capital now and then; its length is uniform in 200..1800 characters
(1000 on average).  Such text compresses about 2-3x with zstd -3, like prose; pgbench's
blank filler compresses ~100x and would flatter every tool.  The same seed gives the same
rows.
"""
import itertools
import random
import sys

VOCABULARY = 4096
MIN_LEN, MAX_LEN = 200, 1800
ONSETS = ["", "b", "c", "d", "f", "g", "h", "j", "k", "l", "m", "n", "p", "r", "s", "t",
          "v", "w", "z", "br", "ch", "cl", "dr", "fl", "gr", "pl", "pr", "sh", "st", "th", "tr"]
VOWELS = ["a", "e", "i", "o", "u", "ai", "ea", "ee", "ie", "ou", "y"]
CODAS = ["", "", "", "n", "r", "s", "t", "l", "m", "nd", "ng", "st", "ck", "rt"]


def vocabulary(rng):
    words, seen = [], set()
    while len(words) < VOCABULARY:
        w = "".join(rng.choice(ONSETS) + rng.choice(VOWELS) + rng.choice(CODAS)
                    for _ in range(rng.choice((1, 2, 2, 3, 3, 4))))
        if w not in seen:
            seen.add(w)
            words.append(w)
    # The most frequent words are the short ones, as in real text (rank 1 = shortest).
    words.sort(key=len)
    return words


class Bodies:
    def __init__(self, seed):
        self.rng = random.Random(seed)
        self.words = vocabulary(self.rng)
        self.cum = list(itertools.accumulate(1.0 / r for r in range(1, VOCABULARY + 1)))

    def body(self):
        rng = self.rng
        target = rng.randint(MIN_LEN, MAX_LEN)
        # ~7 characters a word with its space (the frequent words are short): draw enough, cut.
        picks = rng.choices(self.words, cum_weights=self.cum, k=target // 4)
        out, n, since = [], 0, 0
        cap = True
        for w in picks:
            if cap:
                w = w.capitalize()
                cap = False
            since += 1
            if since > 6 and rng.random() < 0.08:
                w += "."
                cap, since = True, 0
            out.append(w)
            n += len(w) + 1
            if n >= target:
                break
        text = " ".join(out)[:target].rstrip()
        return text if text.endswith(".") else text + "."


def main():
    mode, rows = sys.argv[1], int(sys.argv[2])
    out = sys.stdout
    if mode == "docs":
        seed = int(sys.argv[3]) if len(sys.argv) > 3 else 1
        gen = Bodies(seed)
        buf = []
        for i in range(1, rows + 1):
            buf.append(f"{i}\t{gen.body()}\n")
            if len(buf) == 2000:
                out.write("".join(buf))
                buf.clear()
        out.write("".join(buf))
    elif mode == "update":
        count = int(sys.argv[3])
        seed = int(sys.argv[4]) if len(sys.argv) > 4 else 2
        gen = Bodies(seed)
        ids = random.Random(seed + 1).sample(range(1, rows + 1), count)
        out.write("".join(f"{i}\t{gen.body()}\n" for i in ids))
    else:
        sys.exit(f"unknown mode {mode!r}: docs or update")


if __name__ == "__main__":
    main()
