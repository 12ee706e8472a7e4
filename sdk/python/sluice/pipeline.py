"""Pipelines as Python objects, written out as the spec the engine validates.

>>> import sluice
>>> p = sluice.Pipeline("tabular", description="penguins")
>>> label = p.param("label", "species")
>>> raw = p.source("raw", "../data/penguins.csv")
>>> ingest = p.step("ingest", "../steps/ingest", inputs={"csv": raw},
...                 params={"label": label}, outputs=["train", "eval"])
>>> train = p.step("train", "../steps/train", inputs={"train": ingest.outputs.train},
...                outputs=["model"], limits=sluice.Limits(memory_mib=256))
>>> print(p.to_toml().splitlines()[0])
name = "tabular"

Every object remembers the Python line that made it, so an error the engine
reports at a position of the generated spec is raised as a
:class:`~sluice.errors.SpecError` naming that line too.

References are objects, never strings you have to get right: a
:class:`Source` wires as ``sources.NAME``, ``step.outputs.NAME`` (or
``step["NAME"]``) as ``STEP.NAME``, ``step.every("NAME")`` as the swept
collection ``STEP[*].NAME``, and a :class:`Param` inside a param value as
``${params.NAME}`` (also inside f-strings: ``f"{label}-v2"``).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import Iterable, Mapping

from . import _toml
from .errors import SpecError

#: Exit handlers: when a step with ``on=...`` runs, after the rest.
ALWAYS = "always"
ON_FAILURE = "failure"
ON_SUCCESS = "success"

EXECUTORS = ("local", "process", "ray", "kubernetes")


def _caller(depth: int = 2) -> tuple[str, int]:
    """The file and line of the user's code that called into the SDK."""
    frame = sys._getframe(depth)
    here = os.path.dirname(__file__)
    while frame is not None and os.path.dirname(frame.f_code.co_filename) == here:
        frame = frame.f_back
    if frame is None:
        return ("<unknown>", 0)
    return (frame.f_code.co_filename, frame.f_lineno)


@dataclass(frozen=True)
class Limits:
    """A step's sandbox limits (any left ``None`` takes the engine default)."""

    memory_mib: int | None = None
    fuel: int | None = None
    timeout_s: int | None = None
    output_mib: int | None = None
    log_kib: int | None = None

    def to_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass(frozen=True)
class Gpu:
    """A step's gpu grant: which worker kind runs its jobs (a name, or a
    :class:`Param`) and how many."""

    worker: object
    max_jobs: int | None = None
    min_free_memory_mib: int | None = None

    def to_dict(self) -> dict:
        d = {k: v for k, v in self.__dict__.items() if v is not None}
        d["worker"] = str(self.worker)
        return d


@dataclass(frozen=True)
class Param:
    """A pipeline param; inside a step's param value it reads as
    ``${params.NAME}``. A path param (:meth:`Pipeline.path_param`) holds a
    path relative to ``base_dir``, rebased with the sources."""

    name: str
    default: object
    defined_at: tuple[str, int] = field(compare=False, repr=False)
    is_path: bool = False

    def __str__(self) -> str:
        return "${params." + self.name + "}"

    def __format__(self, spec: str) -> str:
        return str(self)


@dataclass(frozen=True)
class Source:
    """A file the pipeline reads from outside the engine."""

    name: str
    path: str
    defined_at: tuple[str, int] = field(compare=False, repr=False)

    @property
    def ref(self) -> str:
        return f"sources.{self.name}"


@dataclass(frozen=True)
class Output:
    """One output of a step (``STEP.NAME``, or ``STEP[*].NAME`` for every
    copy of a swept step)."""

    step: str
    name: str
    every: bool = False

    @property
    def ref(self) -> str:
        return f"{self.step}{'[*]' if self.every else ''}.{self.name}"


class _Outputs:
    def __init__(self, step: "Step") -> None:
        self._step = step

    def __getattr__(self, name: str) -> Output:
        if name.startswith("_"):
            raise AttributeError(name)
        return self._step[name]

    def __iter__(self):
        return (self._step[n] for n in self._step.output_names)


class Step:
    """A step of a :class:`Pipeline` (made by :meth:`Pipeline.step`)."""

    def __init__(self, pipeline: "Pipeline", name: str, fields: dict, defined_at) -> None:
        self.pipeline = pipeline
        self.name = name
        self.fields = fields
        self.defined_at = defined_at
        self.outputs = _Outputs(self)

    @property
    def output_names(self) -> list[str]:
        return list(self.fields.get("outputs", []))

    def __getitem__(self, output: str) -> Output:
        if output not in self.output_names:
            raise SpecError(
                [f"step `{self.name}` declares no output `{output}` "
                 f"(it declares: {', '.join(self.output_names) or 'none'})"],
                locations=[self.defined_at],
            )
        return Output(self.name, output)

    def every(self, output: str) -> Output:
        """Every swept copy's ``output``, as one collection input."""
        return Output(self[output].step, output, every=True)

    def __repr__(self) -> str:
        return f"Step({self.name!r})"


def _ref(value, what: str) -> str:
    if isinstance(value, (Source, Output)):
        return value.ref
    if isinstance(value, Step):
        names = value.output_names
        if len(names) != 1:
            raise TypeError(
                f"{what}: step `{value.name}` has {len(names)} outputs; name one "
                f"(`{value.name}.outputs.NAME`)"
            )
        return Output(value.name, names[0]).ref
    if isinstance(value, str):
        return value
    raise TypeError(f"{what}: expected a Source, a step output or a reference string, not {value!r}")


def _text(value, what: str):
    """A param value as the spec writes it: a Param becomes its template."""
    if isinstance(value, Param):
        return str(value)
    if isinstance(value, (str, bool, int, float)):
        return value
    raise TypeError(f"{what}: expected text or a number, not {type(value).__name__}")


class Pipeline:
    """A pipeline spec built in Python.

    ``base_dir`` is the directory relative component and source paths are
    written against — by default the directory of the file that creates
    the pipeline, exactly as a TOML spec's paths are relative to the spec.
    """

    def __init__(
        self,
        name: str,
        *,
        description: str | None = None,
        seed: int | None = None,
        executor: str | None = None,
        schedule: str | None = None,
        base_dir: str | os.PathLike | None = None,
    ) -> None:
        self.defined_at = _caller()
        self.name = name
        self.description = description
        self.seed = seed
        self.executor = executor
        self.schedule = schedule
        self.base_dir = os.path.abspath(
            base_dir if base_dir is not None else os.path.dirname(os.path.abspath(self.defined_at[0]))
        )
        self.params: dict[str, Param] = {}
        self.sources: dict[str, Source] = {}
        self.steps: dict[str, Step] = {}
        self.sweep_axes: dict[str, list] = {}
        self._sweep_at: tuple[str, int] | None = None

    # -- building ---------------------------------------------------------

    def param(self, name: str, default) -> Param:
        """Declares a param (overridable per run) and returns it."""
        p = Param(name, _text(default, f"param `{name}`"), _caller())
        self.params[name] = p
        return p

    def path_param(self, name: str, default: str | os.PathLike) -> Param:
        """Declares a param whose value is a file path (relative to
        ``base_dir``, rebased like sources), e.g. a source chosen per run:
        ``p.source("current", p.path_param("current", "data.csv"))``."""
        p = Param(name, os.fspath(default), _caller(), is_path=True)
        self.params[name] = p
        return p

    def source(self, name: str, path: str | os.PathLike | Param) -> Source:
        """Declares a source file (relative to ``base_dir``, or a param's
        value) and returns it."""
        where = str(path) if isinstance(path, Param) else os.fspath(path)
        s = Source(name, where, _caller())
        self.sources[name] = s
        return s

    def step(
        self,
        name: str,
        component: str | os.PathLike,
        *,
        inputs: Mapping[str, object] | None = None,
        params: Mapping[str, object] | None = None,
        outputs: Iterable[str] = (),
        limits: Limits | None = None,
        retries: int | None = None,
        cache: bool | None = None,
        after: Iterable[Step | str] = (),
        when: str | None = None,
        on: str | None = None,
        gpu: Gpu | None = None,
        executor: str | None = None,
        description: str | None = None,
    ) -> Step:
        """Adds a step running ``component`` (a step crate or Python/JS step
        directory, or a ``.wasm`` file, relative to ``base_dir``)."""
        at = _caller()
        if name in self.steps:
            raise SpecError([f"step `{name}` is defined twice"], locations=[at, self.steps[name].defined_at])
        if on is not None and on not in (ALWAYS, ON_FAILURE, ON_SUCCESS):
            raise SpecError([f"step `{name}`: `on` is one of always, failure, success, not {on!r}"], locations=[at])
        if executor is not None and executor not in EXECUTORS:
            raise SpecError(
                [f"step `{name}`: unknown executor {executor!r}; expected one of: {', '.join(EXECUTORS)}"],
                locations=[at],
            )
        f: dict = {"component": os.fspath(component)}
        if description is not None:
            f["description"] = description
        if inputs:
            f["inputs"] = {k: _ref(v, f"step `{name}` input `{k}`") for k, v in inputs.items()}
        if params:
            f["params"] = {k: _text(v, f"step `{name}` param `{k}`") for k, v in params.items()}
        outs = list(outputs)
        if outs:
            f["outputs"] = outs
        if limits is not None and limits.to_dict():
            f["limits"] = limits.to_dict()
        if retries is not None:
            f["retries"] = retries
        if cache is not None:
            f["cache"] = cache
        deps = [a.name if isinstance(a, Step) else a for a in after]
        if deps:
            f["after"] = deps
        if when is not None:
            f["when"] = when
        if on is not None:
            f["on"] = on
        if gpu is not None:
            f["gpu"] = gpu.to_dict()
        if executor is not None:
            f["executor"] = executor
        s = Step(self, name, f, at)
        self.steps[name] = s
        return s

    def sweep(self, **axes: Iterable) -> None:
        """Runs the steps the swept params reach once per combination:
        ``p.sweep(learning_rate=[0.05, 0.5], epochs=[10, 100])``."""
        self._sweep_at = _caller()
        for k, values in axes.items():
            self.sweep_axes[k] = [_text(v, f"sweep `{k}`") for v in values]

    # -- writing ----------------------------------------------------------

    def to_dict(self, *, paths_relative_to: str | os.PathLike | None = None) -> dict:
        """The spec as a plain dict (the JSON form of the TOML schema).

        Paths are written as given; with ``paths_relative_to`` every
        relative path is rebased from ``base_dir`` onto that directory (a
        server's root, a temp dir), absolute paths stay absolute.
        """
        rebase = (lambda p: p) if paths_relative_to is None else self._rebaser(paths_relative_to)
        d: dict = {"name": self.name}
        if self.description is not None:
            d["description"] = self.description
        if self.seed is not None:
            d["seed"] = self.seed
        if self.params:
            d["params"] = {k: rebase(p.default) if p.is_path else p.default for k, p in self.params.items()}
        if self.sweep_axes:
            d["sweep"] = dict(self.sweep_axes)
        if self.schedule is not None:
            d["schedule"] = {"cron": self.schedule}
        if self.executor is not None:
            d["executor"] = {"kind": self.executor}
        if self.sources:
            d["sources"] = {k: rebase(s.path) for k, s in self.sources.items()}
        d["steps"] = {}
        for name, s in self.steps.items():
            fields = dict(s.fields)
            fields["component"] = rebase(fields["component"])
            d["steps"][name] = fields
        return d

    def _rebaser(self, target):
        target = os.path.abspath(target)

        def rebase(path: str) -> str:
            if os.path.isabs(path) or path.startswith("${") or path.startswith("sha256:"):
                return path
            return os.path.relpath(os.path.normpath(os.path.join(self.base_dir, path)), target)

        return rebase

    def to_toml(self, *, paths_relative_to=None) -> str:
        """The spec as TOML text (what ``sluice run`` reads)."""
        return self._toml(paths_relative_to)[0]

    def _toml(self, paths_relative_to=None) -> tuple[str, dict[int, tuple[str, int]]]:
        """The TOML text and, for each of its lines, the Python line that
        made what it says."""
        text, headers = _toml.dumps(
            self.to_dict(paths_relative_to=paths_relative_to),
            inline=lambda path: len(path) == 3 and path[0] == "steps",
        )
        owners: list[tuple[int, tuple[str, int]]] = [(1, self.defined_at)]
        for path, line in headers.items():
            if len(path) == 2 and path[0] == "steps" and path[1] in self.steps:
                owners.append((line, self.steps[path[1]].defined_at))
            elif path == ("sweep",) and self._sweep_at:
                owners.append((line, self._sweep_at))
            else:
                owners.append((line, self.defined_at))
        owners.sort()
        lines: dict[int, tuple[str, int]] = {}
        total = text.count("\n")
        for i, (start, at) in enumerate(owners):
            end = owners[i + 1][0] if i + 1 < len(owners) else total + 1
            for n in range(start, end):
                lines[n] = at
        # A param's or source's own line points at the call that declared it.
        for n, line in enumerate(text.splitlines(), start=1):
            k = line.split("=", 1)[0].strip().strip('"')
            section = self._section_of(n, headers)
            if section == ("params",) and k in self.params:
                lines[n] = self.params[k].defined_at
            elif section == ("sources",) and k in self.sources:
                lines[n] = self.sources[k].defined_at
        return text, lines

    @staticmethod
    def _section_of(line: int, headers: dict[tuple, int]) -> tuple:
        best: tuple = ()
        best_line = 0
        for path, start in headers.items():
            if best_line < start <= line:
                best, best_line = path, start
        return best

    def write(self, path: str | os.PathLike) -> str:
        """Writes the spec as TOML to ``path`` (paths rebased onto its
        directory) and returns the path."""
        path = os.fspath(path)
        text = self.to_toml(paths_relative_to=os.path.dirname(os.path.abspath(path)))
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return path

    def locate(self, line: int) -> tuple[str, int] | None:
        """The Python line behind line ``line`` of :meth:`to_toml`'s text."""
        return self._toml()[1].get(line)
