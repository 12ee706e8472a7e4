"""A TOML writer for the values a pipeline spec holds.

Strings, booleans, integers, floats, lists of those, and tables of those;
tables nest as ``[a.b]`` headers, small tables inside a table (``inputs``,
``params``, ``limits``, ``gpu``) as inline tables. Strings are basic strings
with every control character escaped, so no value can break out of its
line. Returns the text and, for each top-level header path, the line it
starts at (for mapping the engine's positioned errors back).
"""

from __future__ import annotations

import math
import re

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def key(k: str) -> str:
    """A key, bare when it can be, else quoted."""
    if not isinstance(k, str):
        raise TypeError(f"TOML keys are strings, not {type(k).__name__}: {k!r}")
    return k if _BARE_KEY.match(k) else string(k)


def string(s: str) -> str:
    out = ['"']
    for ch in s:
        code = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\u{code:04X}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def value(v) -> str:
    """An inline value."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v) or math.isinf(v):
            raise ValueError(f"a spec holds no NaN or infinity: {v!r}")
        return repr(v)
    if isinstance(v, str):
        return string(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(value(x) for x in v) + "]"
    if isinstance(v, dict):
        if not v:
            return "{}"
        return "{ " + ", ".join(f"{key(k)} = {value(x)}" for k, x in v.items()) + " }"
    raise TypeError(f"cannot write {type(v).__name__} into a spec: {v!r}")


def dumps(doc: dict, *, inline=lambda path: False) -> tuple[str, dict[tuple, int]]:
    """``doc`` as TOML text, and the 1-based line of each table header.

    A dict value at ``path`` becomes a ``[header]`` table unless
    ``inline(path)`` (then an inline table); scalars and lists come first in
    each table, as TOML requires. A table holding only tables gets no header
    of its own (``[steps.a]`` is enough for ``steps``).
    """
    lines: list[str] = []
    headers: dict[tuple, int] = {}

    def table(path: tuple, t: dict) -> None:
        subtables = []
        for k, v in t.items():
            if isinstance(v, dict) and not inline(path + (k,)):
                subtables.append((k, v))
            else:
                lines.append(f"{key(k)} = {value(v)}")
        for k, v in subtables:
            sub = path + (k,)
            only_tables = bool(v) and all(
                isinstance(x, dict) and not inline(sub + (n,)) for n, x in v.items()
            )
            if not only_tables:
                if lines:
                    lines.append("")
                headers[sub] = len(lines) + 1
                lines.append("[" + ".".join(key(p) for p in sub) + "]")
            table(sub, v)

    table((), doc)
    return "\n".join(lines) + "\n", headers
