"""Sluice for pipeline authors and operators: define pipelines in Python,
run them locally or submit them to ``sluice serve``, follow them, fetch
their metrics and artifacts (verified), and ask for lineage, verification,
provenance and replays.

    import sluice

    p = sluice.Pipeline("hello")
    raw = p.source("raw", "data.csv")
    p.step("ingest", "steps/ingest", inputs={"csv": raw}, outputs=["table"])

    sluice.local.run(p)                         # the local engine, no server
    run = sluice.Client().submit(p, root=".")   # or a service
    run.wait(progress=True)
"""

from . import local
from .client import Client, Run
from .errors import (
    ApiError,
    Conflict,
    DigestMismatch,
    Forbidden,
    InvalidSpec,
    NotFound,
    RateLimited,
    RunFailed,
    SluiceError,
    SpecError,
    Unauthorized,
)
from .pipeline import ALWAYS, ON_FAILURE, ON_SUCCESS, Gpu, Limits, Output, Param, Pipeline, Source, Step

__all__ = [
    "ALWAYS",
    "ON_FAILURE",
    "ON_SUCCESS",
    "ApiError",
    "Client",
    "Conflict",
    "DigestMismatch",
    "Forbidden",
    "Gpu",
    "InvalidSpec",
    "Limits",
    "NotFound",
    "Output",
    "Param",
    "Pipeline",
    "RateLimited",
    "Run",
    "RunFailed",
    "SluiceError",
    "Source",
    "SpecError",
    "Step",
    "Unauthorized",
    "local",
]
