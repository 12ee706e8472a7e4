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
:meth:`Ctx.text` and :meth:`Ctx.csv` wrap one for text and CSV rows, and
:meth:`Ctx.artifact` gives an input's :class:`Artifact` (digest, size,
media type) without reading it. Outputs are writable binary file-likes;
leaving their ``with`` block (or :meth:`Output.finish`) seals them into the
store. Every declared output must be written before the function returns.

Heavy work goes to a native worker as a GPU job (the step needs a ``gpu``
grant in the spec, e.g. ``gpu = { worker = "cpu" }``). The component never
sees the bytes: the worker reads inputs from the store by digest, and
:meth:`Ctx.publish` makes a job's output a step output::

    @step
    def train(ctx: Ctx) -> None:
        job = ctx.gpu.submit(
            worker="cpu",
            op="train-mlp",
            params={"epochs": 20, "learning_rate": 0.01},
            inputs={"train": ctx.artifact("train")},
            gpus=0,
            seed=42,
        )
        result = job.wait().check()  # raises unless the job succeeded
        ctx.metric("final_loss", result.metrics["final_loss"])
        ctx.publish("model", result.output("model"))

An exception ends the step as a failure of class ``step``: its traceback
goes to the step's log (stderr) and its last line is the message. The
sandbox has no host files, network or environment. ``time`` reads the
engine's virtual clocks (the wall clock starts at 2020-01-01T00:00:00Z and
advances 1 µs per read; sleeps advance it without waiting), and
``random``, ``os.urandom`` and everything built on them draw from the
engine's random, seeded from the run's seed and the step's name, so a step
replays bit-identically. ``hash()`` of ``str``/``bytes`` (and so the
iteration order of sets of strings) is fixed when the component is built:
stable across runs, seeds and homes for one build, but not across rebuilds;
use ``hashlib`` for anything that must survive a rebuild.
"""

import csv
import io
import json
import re
import sys
import traceback
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, TypeVar, Union

import wit_world
from componentize_py_types import Err
from wit_world.imports import artifacts, gpu, metrics, params, types

__all__ = [
    "Artifact",
    "Ctx",
    "Gpu",
    "GpuUsage",
    "Input",
    "Job",
    "JobResult",
    "Output",
    "StepError",
    "step",
]

# What one host read asks for (the host caps a chunk at 1 MiB).
_CHUNK = 1 << 20

_U32_MAX = (1 << 32) - 1
_U64_MAX = (1 << 64) - 1

T = TypeVar("T")


class StepError(Exception):
    """A host call refused: no such input, output or param, a quota, ...

    ``kind`` is the WIT error case (``not-found``, ``denied``, ``quota``,
    ``invalid``, ``io``) when the host refused, else ``None``; the message
    starts with it.
    """

    def __init__(self, message: str, kind: Optional[str] = None):
        super().__init__(message)
        self.kind = kind


def _host_error(e: Exception) -> Exception:
    """The WIT error variant of a failed host call, as a StepError."""
    value = getattr(e, "value", None)
    if value is not None and hasattr(value, "value"):
        # `Error_NotFound` -> `not-found`: the WIT case name.
        case = type(value).__name__.split("_", 1)[-1]
        kind = re.sub(r"(?<!^)(?=[A-Z])", "-", case).lower()
        return StepError(f"{kind}: {value.value}", kind)
    return e


@dataclass(frozen=True)
class Artifact:
    """An immutable blob in the engine's content-addressed store.

    What :meth:`Ctx.artifact` says of an input, :meth:`Output.finish` of an
    output and :meth:`Job.wait` of a GPU job's outputs. Usable as a job
    input (``inputs={"train": artifact}``) and, for a succeeded job's
    output, with :meth:`Ctx.publish`.
    """

    #: The logical name: an input name, a declared output or a job output.
    name: str
    #: ``"sha256:"`` followed by 64 lowercase hex digits.
    digest: str
    #: The size in bytes.
    size: int
    #: The media type recorded when the artifact was written, e.g. ``text/csv``.
    media_type: str

    @classmethod
    def _from_wit(cls, a: "types.Artifact") -> "Artifact":
        return cls(name=a.name, digest=a.digest, size=a.size, media_type=a.media_type)

    def _to_wit(self) -> "types.Artifact":
        return types.Artifact(name=self.name, digest=self.digest, size=self.size, media_type=self.media_type)


class Input(io.RawIOBase):
    """A wired input artifact, read in chunks from the host; seekable.

    ``artifact`` is its :class:`Artifact`; ``digest`` and ``size`` are
    shortcuts to it.
    """

    def __init__(self, name: str, reader: "artifacts.Reader", artifact: Optional[Artifact]):
        super().__init__()
        self.name = name
        self.artifact = artifact
        self.size = artifact.size if artifact else 0
        self._reader = reader
        self._pos = 0

    @property
    def digest(self) -> Optional[str]:
        """The input's digest (``sha256:...``)."""
        return self.artifact.digest if self.artifact else None

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
    """A declared output, written through to the host; sealed on close.

    After :meth:`finish` (or the ``with`` block), ``digest`` is its digest
    and ``artifact`` its :class:`Artifact`.
    """

    def __init__(self, name: str, writer: "artifacts.Writer"):
        super().__init__()
        self.name = name
        self._writer = writer
        self._written = 0
        self.digest: Optional[str] = None
        self.artifact: Optional[Artifact] = None

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
                self.artifact = Artifact._from_wit(self._writer.finish())
            except Err as e:
                raise _host_error(e) from None
            self.digest = self.artifact.digest
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


# GPU jobs ------------------------------------------------------------

# WIT `job-state` cases by the componentize-py enum's member name.
_STATES = {
    "QUEUED": "queued",
    "RUNNING": "running",
    "SUCCEEDED": "succeeded",
    "FAILED": "failed",
    "CANCELLED": "cancelled",
    "TIMED_OUT": "timed-out",
}


def _state(s: "gpu.JobState") -> str:
    return _STATES[s.name]


@dataclass(frozen=True)
class GpuUsage:
    """GPU telemetry summarised over a job (absent without NVML)."""

    #: Number of telemetry samples taken.
    samples: int
    #: Mean GPU utilisation, percent.
    util_mean: float
    #: Mean memory-controller utilisation, percent.
    mem_util_mean: float
    #: Peak framebuffer memory in use, bytes.
    fb_used_max_bytes: int
    #: Energy consumed, millijoules, where the device reports it.
    energy_mj: Optional[int]
    #: Mean SM activity (Hopper GPM), percent, where supported.
    sm_active_mean: Optional[float]


@dataclass(frozen=True)
class JobResult:
    """The outcome of a GPU job (see :meth:`Job.wait`)."""

    #: The job's id, unique within the run (``j1``, ``j2``, ...).
    id: str
    #: The final state: ``succeeded``, ``failed``, ``cancelled`` or ``timed-out``.
    state: str
    #: Output artifacts, verified and already in the store; publish one
    #: as a step output with :meth:`Ctx.publish`.
    outputs: List[Artifact]
    #: The metrics the worker reported (parsed from the host's JSON object).
    metrics: Dict[str, Any]
    #: GPU telemetry, ``None`` when none is available.
    usage: Optional[GpuUsage]
    #: Wall time of the job, milliseconds.
    wall_ms: int
    #: Why the job did not succeed, if it did not.
    message: Optional[str]

    @property
    def ok(self) -> bool:
        """Whether the job succeeded."""
        return self.state == "succeeded"

    def check(self) -> "JobResult":
        """Returns the result if the job succeeded, else raises a
        :class:`StepError` naming the job, its state and its message."""
        if not self.ok:
            raise StepError(f"gpu job {self.id} {self.state}: {self.message or 'no message'}")
        return self

    def output(self, name: str) -> Artifact:
        """The output `name`; a :class:`StepError` naming the outputs there are if none."""
        for a in self.outputs:
            if a.name == name:
                return a
        have = ", ".join(a.name for a in self.outputs) or "none"
        raise StepError(f"gpu job {self.id} ({self.state}) has no output `{name}`; outputs: {have}")


class Job:
    """A submitted GPU job (see :meth:`Gpu.submit`).

    Dropping the last reference to an unfinished job (or leaving its
    ``with`` block, or :meth:`close`) cancels it, so keep it until
    :meth:`wait` returns.
    """

    def __init__(self, handle: "gpu.Job"):
        self._handle: Optional["gpu.Job"] = handle
        self._id = handle.id()
        self._result: Optional[JobResult] = None

    @property
    def id(self) -> str:
        """The job's id, unique within the run (``j1``, ``j2``, ...)."""
        return self._id

    @property
    def state(self) -> str:
        """The current state without blocking: ``queued``, ``running``,
        ``succeeded``, ``failed``, ``cancelled`` or ``timed-out``."""
        if self._result is not None:
            return self._result.state
        return _state(self._live().state())

    def wait(self) -> JobResult:
        """Blocks until the job ends; returns its :class:`JobResult`
        (the same one on every call). A failed job is a result, not an
        exception: see :meth:`JobResult.check`."""
        if self._result is None:
            r = self._live().wait()
            usage = None
            if r.usage is not None:
                u = r.usage
                usage = GpuUsage(
                    samples=u.samples,
                    util_mean=u.util_mean,
                    mem_util_mean=u.mem_util_mean,
                    fb_used_max_bytes=u.fb_used_max_bytes,
                    energy_mj=u.energy_mj,
                    sm_active_mean=u.sm_active_mean,
                )
            self._result = JobResult(
                id=self._id,
                state=_state(r.state),
                outputs=[Artifact._from_wit(a) for a in r.outputs],
                metrics=json.loads(r.metrics_json) if r.metrics_json.strip() else {},
                usage=usage,
                wall_ms=r.wall_ms,
                message=r.message,
            )
        return self._result

    def cancel(self) -> None:
        """Asks the worker to stop the job; :meth:`wait` then returns its
        final state (``cancelled``, or another if it had already ended)."""
        if self._result is None:
            self._live().cancel()

    def close(self) -> None:
        """Releases the job's handle, cancelling the job if it has not ended."""
        if self._handle is not None:
            handle, self._handle = self._handle, None
            handle.__exit__(None, None, None)

    def __enter__(self) -> "Job":
        return self

    def __exit__(self, exc_type, exc, tb):
        self.close()
        return None

    def __repr__(self) -> str:
        return f"Job({self._id!r})"

    def _live(self) -> "gpu.Job":
        if self._handle is None:
            raise StepError(f"gpu job {self._id}: its handle was closed", "invalid")
        return self._handle


def _u(name: str, value: Any, top: int) -> int:
    """`value` as a WIT unsigned integer no larger than `top`."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= top:
        raise ValueError(f"gpu job: `{name}` must be an integer within 0..={top}, got {value!r}")
    return value


class Gpu:
    """GPU jobs: heavy work handed to a native worker through the host
    (``ctx.gpu``). The component never touches a GPU."""

    def submit(
        self,
        worker: str,
        op: str,
        *,
        params: Optional[Mapping[str, Any]] = None,
        inputs: Optional[Mapping[str, Union[str, Artifact]]] = None,
        gpus: int = 1,
        min_free_memory_mib: int = 0,
        timeout_ms: Optional[int] = None,
        seed: int = 0,
        deterministic: bool = True,
    ) -> Job:
        """Submits job `op` to a worker of kind `worker` (``cpu``, ``torch``).

        - `params`: the operation's parameters, sent as a JSON object with
          sorted keys (so equal params give an equal job spec digest).
        - `inputs`: input name -> digest (``sha256:...``) or
          :class:`Artifact` (e.g. ``ctx.artifact("train")``, or a previous
          job's output); the worker reads them from the store. Sent sorted
          by name.
        - `gpus`: GPUs asked for (0 for a CPU worker).
        - `min_free_memory_mib`: schedule only on a GPU with this much free.
        - `timeout_ms`: the job's deadline; ``None`` for the engine's.
        - `seed`: handed to the worker's random number generators.
        - `deterministic`: ask the worker for deterministic kernels; with
          the same seed, inputs and worker fingerprint the outputs are
          bitwise identical.

        Without a ``gpu`` grant for `worker` in the spec this raises a
        :class:`StepError` of kind ``denied``; beyond the grant's
        ``max_jobs`` of kind ``quota``; a malformed spec is ``invalid``.
        """
        if params is None:
            params = {}
        if not isinstance(params, Mapping):
            raise TypeError(f"gpu job `{op}`: params must be a mapping, got {type(params).__name__}")
        params_json = json.dumps(dict(params), sort_keys=True, separators=(",", ":"), allow_nan=False)
        pairs = []
        for name, value in sorted((inputs or {}).items()):
            digest = value.digest if isinstance(value, Artifact) else value
            if not isinstance(digest, str):
                raise TypeError(f"gpu job `{op}`: input `{name}` must be a digest or an Artifact, got {type(value).__name__}")
            pairs.append((name, digest))
        if timeout_ms is not None:
            timeout_ms = _u("timeout_ms", timeout_ms, _U64_MAX)
        spec = gpu.JobSpec(
            worker=worker,
            op=op,
            params_json=params_json,
            inputs=pairs,
            gpus=_u("gpus", gpus, _U32_MAX),
            min_free_memory_mib=_u("min_free_memory_mib", min_free_memory_mib, _U64_MAX),
            timeout_ms=timeout_ms,
            seed=_u("seed", seed, _U64_MAX),
            deterministic=bool(deterministic),
        )
        try:
            return Job(gpu.submit(spec))
        except Err as e:
            raise _host_error(e) from None

    def devices(self) -> List[str]:
        """The GPUs visible to the engine, one line each (name, uuid,
        memory); empty when there is none."""
        return list(gpu.devices())


class Ctx:
    """What a step sees: its params, inputs, outputs, metrics and GPU jobs."""

    def __init__(self) -> None:
        self._params: Dict[str, str] = dict(params.all())
        self._inputs: Dict[str, Artifact] = {a.name: Artifact._from_wit(a) for a in artifacts.inputs()}
        self._outputs: List[str] = list(artifacts.outputs())
        self._gpu = Gpu()

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

    def artifact(self, name: str) -> Artifact:
        """The :class:`Artifact` (digest, size, media type) of input `name`,
        without reading it: e.g. a GPU job's input."""
        try:
            return self._inputs[name]
        except KeyError:
            raise StepError(
                f"not-found: no input `{name}`; inputs: {', '.join(self.inputs) or 'none'}", "not-found"
            ) from None

    def collection(self, name: str) -> List[Artifact]:
        """The members of a fan-in input (``inputs = { models =
        "train[*].model" }`` arrives as ``models.0``, ``models.1``, ...),
        in combination order."""
        prefix = name + "."
        members = []
        for key, a in self._inputs.items():
            rest = key[len(prefix):] if key.startswith(prefix) else ""
            if rest.isdigit():
                members.append((int(rest), a))
        return [a for _, a in sorted(members, key=lambda m: m[0])]

    def input(self, name: str) -> Input:
        """Opens input `name` (a fresh reader at offset 0 each call)."""
        try:
            reader = artifacts.open(name)
        except Err as e:
            raise _host_error(e) from None
        return Input(name, reader, self._inputs.get(name))

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

    def publish(self, name: str, artifact: Artifact) -> Artifact:
        """Declares output `name` to be `artifact`, an output of a GPU job
        this attempt submitted and that succeeded (see
        :meth:`JobResult.output`); the bytes are already in the store and
        none cross the sandbox. Returns the published output under its new
        name. `name` must be declared and not yet written (``invalid``);
        any other artifact is ``denied``."""
        try:
            return Artifact._from_wit(artifacts.publish(name, artifact._to_wit()))
        except Err as e:
            raise _host_error(e) from None

    # GPU -------------------------------------------------------------
    @property
    def gpu(self) -> Gpu:
        """GPU jobs: :meth:`Gpu.submit`, :meth:`Gpu.devices`."""
        return self._gpu

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
