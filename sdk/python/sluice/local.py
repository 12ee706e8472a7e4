"""Local mode: the same :class:`~sluice.Pipeline` through a local ``sluice``
binary (``sluice run`` on the generated spec), so a notebook needs no
server. The outputs, digests and cache keys are the ones a service run of
the same spec gives: it is the same engine.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile

from . import errors
from .pipeline import Pipeline


def binary(explicit: str | os.PathLike | None = None) -> str:
    """The ``sluice`` to run: ``explicit``, ``$SLUICE_BIN``, the PATH's, or
    — inside a checkout of the Sluice repository — its release (else debug)
    build."""
    found = explicit or os.environ.get("SLUICE_BIN") or shutil.which("sluice") or _checkout_build()
    if not found:
        raise errors.SluiceError(
            "no `sluice` binary: pass sluice=..., set SLUICE_BIN, put it on PATH "
            "(cargo install --path engine) or build it in this checkout (cargo build --release)"
        )
    return os.fspath(found)


def _checkout_build() -> str | None:
    """`target/{release,debug}/sluice` of the repository the working
    directory is in, if any."""
    here = os.path.abspath(os.getcwd())
    while True:
        if os.path.isfile(os.path.join(here, "engine", "Cargo.toml")):
            for profile in ("release", "debug"):
                exe = os.path.join(here, "target", profile, "sluice")
                if os.access(exe, os.X_OK):
                    return exe
            return None
        parent = os.path.dirname(here)
        if parent == here:
            return None
        here = parent


def run(
    pipeline: Pipeline,
    *,
    params: dict | None = None,
    home: str | os.PathLike | None = None,
    sluice: str | os.PathLike | None = None,
    args: list[str] | tuple = (),
    raise_on_failure: bool = False,
) -> dict:
    """Runs ``pipeline`` with the local engine and returns its result (the
    ``--json`` document: run id, status, every step's report).

    An invalid spec raises :class:`~sluice.errors.SpecError` naming, for
    each error, the generated spec's position and the Python line behind
    it. ``home`` defaults to the engine's (``$SLUICE_HOME`` or ``./.sluice``).
    """
    with tempfile.TemporaryDirectory(prefix="sluice-spec-") as tmp:
        path = os.path.join(tmp, f"{pipeline.name}.toml")
        text, lines = pipeline._toml(paths_relative_to=tmp)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        cmd = [binary(sluice), "run", path, "--json"]
        for k, v in (params or {}).items():
            cmd += ["--param", f"{k}={v}"]
        if home is not None:
            cmd += ["--home", os.fspath(home)]
        cmd += list(args)
        proc = subprocess.run(cmd, capture_output=True, text=True)
    try:
        result = json.loads(proc.stdout)
    except ValueError:
        raise errors.SluiceError(
            f"`sluice run` exited {proc.returncode} without a result: {proc.stderr.strip()[-2000:]}"
        ) from None
    if result.get("status") == "invalid":
        found = result.get("errors", [])
        raise errors.SpecError(
            [f"{pipeline.name}.toml:{e['line']}:{e['column']}: {e['message']}" for e in found],
            locations=[lines.get(e["line"]) for e in found],
        )
    if raise_on_failure and result.get("status") != "succeeded":
        raise errors.RunFailed(result)
    return result
