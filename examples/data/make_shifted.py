#!/usr/bin/env python3
"""Derives penguins-shifted.csv from penguins.csv: the same penguins and
species, measured as if by a drifted instrument and a relabelled survey.

- body_mass_g is multiplied by 1.15 and rounded half up to a whole gram;
- flipper_length_mm has 8 added;
- every third Torgersen row (the 1st, 4th, 7th, ... in file order) is
  relabelled Dream;
- every other field, the header, row order and NA values are unchanged.

No randomness: the output is a pure function of the input. Python 3
standard library only. Run from anywhere:

    python3 examples/data/make_shifted.py          # (re)write the file
    python3 examples/data/make_shifted.py --check  # exit 1 if it is stale
"""

import csv
import io
import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
SOURCE = HERE / "penguins.csv"
TARGET = HERE / "penguins-shifted.csv"


def shifted_mass(grams: str) -> str:
    # Integer arithmetic: round(x * 1.15) in floating point would round
    # 4312.5 to even and 1.15 is not exact in binary.
    return str((int(grams) * 115 + 50) // 100)


def shift(text: str) -> str:
    rows = list(csv.reader(io.StringIO(text)))
    header, body = rows[0], rows[1:]
    island = header.index("island")
    flipper = header.index("flipper_length_mm")
    mass = header.index("body_mass_g")
    torgersen_seen = 0
    for row in body:
        if row[island] == "Torgersen":
            if torgersen_seen % 3 == 0:
                row[island] = "Dream"
            torgersen_seen += 1
        if row[flipper] != "NA":
            row[flipper] = str(int(row[flipper]) + 8)
        if row[mass] != "NA":
            row[mass] = shifted_mass(row[mass])
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows([header] + body)
    return out.getvalue()


def main() -> int:
    shifted = shift(SOURCE.read_text(encoding="utf-8"))
    if sys.argv[1:] == ["--check"]:
        if TARGET.read_text(encoding="utf-8") != shifted:
            print(f"{TARGET.name} is stale: rerun {pathlib.Path(__file__).name}", file=sys.stderr)
            return 1
        return 0
    if sys.argv[1:]:
        print("usage: make_shifted.py [--check]", file=sys.stderr)
        return 2
    TARGET.write_text(shifted, encoding="utf-8", newline="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
