"""Copies input `in` to output `out`, then appends the `line` param.

For the failure tests: `fail = "true"` raises; `mode = "spin"` loops
forever; `mode = "hoard"` allocates until memory runs out.
"""

import random
import time

from sluice_step import Ctx, step


@step
def run(ctx: Ctx) -> None:
    if ctx.param("fail", default=False, type=bool):
        raise ValueError("asked to fail")
    mode = ctx.param("mode", default="append")
    if mode == "spin":
        while True:
            pass
    if mode == "hoard":
        hoard = []
        while True:
            hoard.append(bytearray(1 << 20))
    line = ctx.param("line", default="")
    with ctx.input("in") as src, ctx.output("out", "text/plain") as out:
        for chunk in iter(lambda: src.read(65536), b""):
            out.write(chunk)
        out.write(line.encode() + b"\n")
    ctx.metric("bytes_copied", out.tell())
    # The engine's seeded random and virtual clock: the same every replay.
    ctx.tag("random", str(random.random()))
    ctx.tag("time", str(time.time()))
    ctx.tag("hash", str(hash("sluice")))
    print("py-append wrote", out.tell(), "bytes")
