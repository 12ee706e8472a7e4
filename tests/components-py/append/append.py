"""Copies input `in` to output `out`, then appends the `line` param.

For the failure tests: `fail = "true"` raises; `mode = "spin"` loops
forever; `mode = "hoard"` allocates until memory runs out. For the
determinism test, `mode = "determinism"` writes to `out` (and tags) what a
step could draw from outside its inputs: the virtual clocks (before and
after a sleep), `random`, `os.urandom`, `uuid4`, `hash()` of str and
bytes and the iteration order of a set of strings. `mode = "build-probe"`
tags what this module's top level saw of the host when it ran — at build
time, inside componentize-py's pre-initialiser.
"""

import os
import random
import time
import uuid

from sluice_step import Ctx, step


def _probe_host() -> dict:
    """What module-level code sees of the machine that builds it."""
    seen = {}
    for key, read in [
        ("passwd", lambda: open("/etc/passwd").read()[:40]),
        ("root", lambda: " ".join(sorted(os.listdir("/")))),
        ("home", lambda: " ".join(os.listdir(os.path.expanduser("~")))),
    ]:
        try:
            seen[key] = read()
        except Exception as e:  # noqa: BLE001 - the refusal is the answer
            seen[key] = f"refused: {type(e).__name__}"
    seen["environ"] = " ".join(sorted(os.environ))
    return seen


# Runs once, when componentize-py snapshots this module at build time.
_BUILD_PROBE = _probe_host()


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
    if mode == "build-probe":
        for key, value in _BUILD_PROBE.items():
            ctx.tag(key, value)
        with ctx.output("out", "text/plain") as out:
            out.write(b"probed\n")
        return
    if mode == "determinism":
        determinism(ctx)
        return
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


def determinism(ctx: Ctx) -> None:
    # The clocks first: nothing has read them yet in this attempt.
    t0 = time.time()
    m0 = time.monotonic()
    time.sleep(2.5)  # virtual: advances both clocks, waits for nothing
    t1 = time.time()
    m1 = time.monotonic()
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta"]
    deck = list(range(16))
    random.shuffle(deck)
    values = {
        "time": repr(t0),
        "time_after_sleep": repr(t1),
        "monotonic": repr(m0),
        "monotonic_after_sleep": repr(m1),
        "random": repr(random.random()),
        "shuffle": " ".join(map(str, deck)),
        "getrandbits": str(random.getrandbits(64)),
        "urandom": os.urandom(16).hex(),
        "uuid4": str(uuid.uuid4()),
        "hash_str": str(hash("sluice")),
        "hash_bytes": str(hash(b"sluice")),
        "set_order": " ".join(set(words)),
        "dict_of_set_order": " ".join({w: None for w in frozenset(words)}),
    }
    with ctx.output("out", "text/plain") as out:
        for key, value in values.items():
            out.write(f"{key}={value}\n".encode())
            ctx.tag(key, value)
