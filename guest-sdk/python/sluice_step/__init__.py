"""The Sluice step SDK for Python.

A step is a plain function that takes a :class:`Ctx`; the :func:`step`
decorator makes it the component's entry point::

    from sluice_step import Ctx, step

    @step
    def run(ctx: Ctx) -> None:
        line = ctx.param("line", default="")
        with ctx.input("in") as src, ctx.output("out", "text/plain") as out:
            out.write(src.read())
            out.write(line.encode() + b"\\n")
        ctx.metric("bytes", out.tell())

Inputs are binary file-like objects (``read``, ``readinto``, ``seek``,
``tell``, iteration by line) over the artifacts wired in the pipeline spec;
:meth:`Ctx.text` and :meth:`Ctx.csv` wrap one for text and CSV rows.
Outputs are writable binary file-likes; leaving their ``with`` block (or
:meth:`Output.finish`) seals them into the store. Every declared output
must be written before the function returns.

An exception ends the step as a failure of class ``step``: its traceback
goes to the step's log (stderr) and its last line is the message. The
sandbox has no host files, network or environment; ``time`` and
``random`` are the engine's virtual, seeded ones, so a step replays
bit-identically.
"""

import csv
import io
import sys
import traceback
from typing import Callable, Dict, Iterator, List, Optional, TypeVar

import wit_world
from componentize_py_types import Err
from wit_world.imports import artifacts, metrics, params

__all__ = ["Ctx", "Input", "Output", "StepError", "step"]

# What one host read asks for (the host caps a chunk at 1 MiB).
_CHUNK = 1 << 20

T = TypeVar("T")


class StepError(Exception):
    """A host call refused: no such input, output or param, a quota, ..."""


def _host_error(e: Exception) -> Exception:
    """The WIT error variant of a failed host call, as a StepError."""
    value = getattr(e, "value", None)
    if value is not None and hasattr(value, "value"):
        kind = type(value).__name__.split("_", 1)[-1].lower()
        return StepError(f"{kind}: {value.value}")
    return e


class Input(io.RawIOBase):
    """A wired input artifact, read in chunks from the host; seekable."""

    def __init__(self, name: str, reader: "artifacts.Reader", size: int):
        super().__init__()
        self.name = name
        self.size = size
        self._reader = reader
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        want = min(len(buf), _CHUNK)
        if want == 0:
            return 0
        try:
            chunk = self._reader.read(want)
        except Err as e:
            raise _host_error(e) from None
        n = len(chunk)
        buf[:n] = chunk
        self._pos += n
        return n

    def readall(self) -> bytes:
        parts = []
        while True:
            try:
                chunk = self._reader.read(_CHUNK)
            except Err as e:
                raise _host_error(e) from None
            if not chunk:
                return b"".join(parts)
            self._pos += len(chunk)
            parts.append(chunk)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        target = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.size}[whence] + offset
        if target < 0:
            raise ValueError(f"input `{self.name}`: seek before the start")
        try:
            self._reader.seek(target)
        except Err as e:
            raise _host_error(e) from None
        self._pos = target
        return target

    def tell(self) -> int:
        return self._pos


class Output(io.RawIOBase):
    """A declared output, written through to the host; sealed on close."""

    def __init__(self, name: str, writer: "artifacts.Writer"):
        super().__init__()
        self.name = name
        self._writer = writer
        self._written = 0
        self.digest: Optional[str] = None

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        data = bytes(data)
        try:
            self._writer.write(data)
        except Err as e:
            raise _host_error(e) from None
        self._written += len(data)
        return len(data)

    def tell(self) -> int:
        return self._written

    def finish(self) -> str:
        """Seals the output into the store; returns its digest."""
        if self.digest is None:
            try:
                self.digest = self._writer.finish().digest
            except Err as e:
                raise _host_error(e) from None
        return self.digest

    def close(self) -> None:
        if not self.closed:
            self.finish()
        super().close()

    def __exit__(self, exc_type, exc, tb):
        # A failing block does not finish the output: the exception fails
        # the step, so nothing it wrote is recorded.
        if exc_type is None:
            self.close()
        else:
            super().close()
        return None


class Ctx:
    """What a step sees: its params, inputs, outputs and metrics."""

    def __init__(self) -> None:
        self._params: Dict[str, str] = dict(params.all())
        self._inputs = {a.name: a for a in artifacts.inputs()}
        self._outputs: List[str] = list(artifacts.outputs())

    # Params ----------------------------------------------------------
    @property
    def params(self) -> Dict[str, str]:
        """Every param, as the strings the spec resolved."""
        return dict(self._params)

    def param(self, name: str, default: Optional[T] = None, type: Callable[[str], T] = str) -> T:
        """The param `name` converted by `type` (``int``, ``float``, ...).

        Without a default a missing param is an error naming it.
        """
        if name not in self._params:
            if default is None:
                raise StepError(f"missing param `{name}`; params: {', '.join(sorted(self._params)) or 'none'}")
            return default
        raw = self._params[name]
        if type is bool:
            if raw in ("true", "false"):
                return raw == "true"  # type: ignore[return-value]
            raise StepError(f"param `{name}` = {raw!r} is not true or false")
        try:
            return type(raw)
        except ValueError as e:
            raise StepError(f"param `{name}` = {raw!r}: {e}") from None

    # Artifacts -------------------------------------------------------
    @property
    def inputs(self) -> List[str]:
        """The wired input names, sorted."""
        return sorted(self._inputs)

    @property
    def outputs(self) -> List[str]:
        """The declared output names, sorted."""
        return list(self._outputs)

    def input(self, name: str) -> Input:
        """Opens input `name` (a fresh reader at offset 0 each call)."""
        try:
            reader = artifacts.open(name)
        except Err as e:
            raise _host_error(e) from None
        meta = self._inputs.get(name)
        return Input(name, reader, meta.size if meta else 0)

    def text(self, name: str, encoding: str = "utf-8") -> io.TextIOWrapper:
        """Input `name` as text."""
        return io.TextIOWrapper(io.BufferedReader(self.input(name), _CHUNK), encoding=encoding, newline="")

    def csv(self, name: str) -> Iterator[Dict[str, str]]:
        """Rows of CSV input `name` as dicts keyed by its header."""
        with self.text(name) as f:
            yield from csv.DictReader(f)

    def output(self, name: str, media_type: str = "application/octet-stream") -> Output:
        """Creates declared output `name`."""
        try:
            writer = artifacts.create(name, media_type)
        except Err as e:
            raise _host_error(e) from None
        return Output(name, writer)

    # Metrics ---------------------------------------------------------
    def metric(self, name: str, value: float, step: Optional[int] = None) -> None:
        """Records a scalar, or one point of a series when `step` is given."""
        try:
            metrics.scalar(name, float(value), step)
        except Err as e:
            raise _host_error(e) from None

    def tag(self, key: str, value: str) -> None:
        """Attaches a string tag to the step's record."""
        try:
            metrics.tag(key, value)
        except Err as e:
            raise _host_error(e) from None


_entry: Optional[Callable[[Ctx], None]] = None


class _World(wit_world.WitWorld):
    def run(self) -> None:
        if _entry is None:
            raise Err("no function is decorated with @sluice_step.step")
        try:
            _entry(Ctx())
        except Err:
            raise
        except BaseException as e:  # noqa: BLE001 - every failure is the step's
            traceback.print_exc(file=sys.stderr)
            sys.stderr.flush()
            raise Err(f"{type(e).__name__}: {e}") from None
        finally:
            sys.stdout.flush()


def step(fn: Callable[[Ctx], None]) -> Callable[[Ctx], None]:
    """Makes `fn(ctx)` the step's entry point (one per component)."""
    global _entry
    if _entry is not None and _entry is not fn:
        raise RuntimeError(f"two @step functions: {_entry.__name__} and {fn.__name__}")
    _entry = fn
    # componentize-py looks for the world's class in the app module.
    sys.modules[fn.__module__].WitWorld = _World  # type: ignore[attr-defined]
    return fn
