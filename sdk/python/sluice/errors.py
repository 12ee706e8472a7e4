"""Typed errors: what the engine or the service said, with where it came from."""

from __future__ import annotations


class SluiceError(Exception):
    """Anything the SDK raises on purpose."""


class SpecError(SluiceError):
    """The pipeline spec is invalid.

    ``errors`` are the engine's messages (``FILE:LINE:COL: message`` for a
    generated spec); ``locations`` the Python ``(file, line)`` that made
    what each message is about, where known.
    """

    def __init__(self, errors: list[str], locations: list | None = None) -> None:
        self.errors = list(errors)
        self.locations = list(locations or [])
        lines = []
        for i, e in enumerate(self.errors):
            at = self.locations[i] if i < len(self.locations) else None
            lines.append(f"{e} (defined at {at[0]}:{at[1]})" if at else e)
        super().__init__("\n".join(lines))


class ApiError(SluiceError):
    """The service refused a request: ``status`` (HTTP), ``code`` (the
    service's error code, e.g. ``not_found``) and ``message``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        self.status = status
        self.code = code
        self.message = message
        super().__init__(f"{code} ({status}): {message}")


class Unauthorized(ApiError):
    """No token, or one the service does not know."""


class Forbidden(ApiError):
    """The token's role may not do this (or a path is not allowed)."""


class NotFound(ApiError):
    """No such run or artifact for this tenant (another tenant's look the same)."""


class Conflict(ApiError):
    """The run is in a state that does not allow this."""


class InvalidSpec(ApiError, SpecError):
    """The service found the spec invalid; ``errors`` and ``locations`` as
    in :class:`SpecError`."""

    def __init__(self, status: int, code: str, message: str, locations: list | None = None) -> None:
        SpecError.__init__(self, message.splitlines(), locations)
        self.status = status
        self.code = code
        self.message = message


class RateLimited(ApiError):
    """Too many requests; ``retry_after`` seconds, as the service said."""

    def __init__(self, status: int, code: str, message: str, retry_after: float | None) -> None:
        super().__init__(status, code, message)
        self.retry_after = retry_after


class DigestMismatch(SluiceError):
    """Downloaded bytes do not hash to the digest they were asked for."""


class RunFailed(SluiceError):
    """A run ended other than ``succeeded``; ``run`` is its final state."""

    def __init__(self, run: dict) -> None:
        self.run = run
        failed = [s["name"] for s in run.get("steps", []) if s.get("status") == "failed"]
        super().__init__(f"run {run.get('id') or run.get('run_id')} {run.get('status')}: failed steps {failed}")


_BY_CODE = {
    "unauthorized": Unauthorized,
    "forbidden": Forbidden,
    "path_not_allowed": Forbidden,
    "not_found": NotFound,
    "conflict": Conflict,
}


def from_response(status: int, body: bytes, headers=None, locate=None) -> ApiError:
    """The typed error for an error response of the service."""
    import json

    try:
        err = json.loads(body)["error"]
        code, message = str(err["code"]), str(err["message"])
    except (ValueError, KeyError, TypeError):
        code, message = "http_error", body[:500].decode("utf-8", "replace")
    if code == "invalid":
        locations = [locate(line) if locate else None for line in message.splitlines()]
        return InvalidSpec(status, code, message, locations)
    if code in ("rate_limited", "busy"):
        retry = (headers or {}).get("retry-after") if headers else None
        return RateLimited(status, code, message, float(retry) if retry else None)
    return _BY_CODE.get(code, ApiError)(status, code, message)
