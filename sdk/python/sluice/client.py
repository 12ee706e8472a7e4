"""A client for ``sluice serve``: submit, list, follow, cancel, fetch.

>>> c = sluice.Client("http://127.0.0.1:7878")          # token from SLUICE_TOKEN
>>> run = c.submit(pipeline, params={"epochs": "20"})    # a Pipeline, TOML text, or
>>> run.wait(progress=True)                              # a spec path on the server
>>> run.metrics()["train"]["loss"]
>>> run.download("train", "model", "model.bin")          # verified against its digest

The token comes from the ``token`` argument, else ``$SLUICE_TOKEN``, else
the ``token`` line of ``~/.config/sluice/client.toml``; it is sent only as a
bearer header and never appears in ``repr``, messages or exceptions.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import tomllib
import urllib.error
import urllib.parse
import urllib.request
from typing import Iterator

from . import errors
from .pipeline import Pipeline

DEFAULT_URL = "http://127.0.0.1:7878"
CONFIG_FILE = os.path.join("~", ".config", "sluice", "client.toml")
TERMINAL = ("succeeded", "failed", "cancelled")
EVENT_RECONNECTS_MAX = 5
_POSITION = re.compile(r":(\d+):(\d+): ")


def _token(explicit: str | None) -> str | None:
    if explicit:
        return explicit
    if os.environ.get("SLUICE_TOKEN"):
        return os.environ["SLUICE_TOKEN"]
    path = os.path.expanduser(CONFIG_FILE)
    try:
        with open(path, "rb") as f:
            return tomllib.load(f).get("token")
    except FileNotFoundError:
        return None


class Client:
    """One service. ``url`` defaults to ``$SLUICE_URL`` or the local default."""

    def __init__(self, url: str | None = None, *, token: str | None = None, timeout: float = 30.0) -> None:
        self.url = (url or os.environ.get("SLUICE_URL") or DEFAULT_URL).rstrip("/")
        self._token = _token(token)
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"Client({self.url!r}, token={'set' if self._token else 'none'})"

    # -- HTTP -------------------------------------------------------------

    def _request(self, method: str, path: str, *, body=None, content_type=None, stream=False, headers=None, locate=None):
        data = None
        h = {"accept": "application/json"}
        if self._token:
            h["authorization"] = f"Bearer {self._token}"
        if body is not None:
            if isinstance(body, (bytes, bytearray)):
                data = bytes(body)
                h["content-type"] = content_type or "application/octet-stream"
            else:
                data = json.dumps(body).encode()
                h["content-type"] = "application/json"
        h.update(headers or {})
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=h)
        try:
            resp = urllib.request.urlopen(req, timeout=None if stream else self.timeout)
        except urllib.error.HTTPError as e:
            raise errors.from_response(e.code, e.read(), dict(e.headers.items()), locate) from None
        except urllib.error.URLError as e:
            raise errors.SluiceError(f"cannot reach {self.url}: {e.reason}") from None
        return resp

    def _json(self, method: str, path: str, **kw):
        with self._request(method, path, **kw) as resp:
            return json.loads(resp.read())

    # -- runs -------------------------------------------------------------

    def submit(self, spec, *, params: dict | None = None, root: str | os.PathLike | None = None) -> "Run":
        """Starts a run of ``spec``: a :class:`Pipeline` (sent as TOML, its
        relative paths rebased onto ``root`` — the service's ``[server]
        root`` as seen from here — when given), TOML text, or the path of a
        spec on the server (``pipeline=``, relative to its root).

        An invalid spec raises :class:`~sluice.errors.InvalidSpec` whose
        ``locations`` name the Python lines behind each error.
        """
        locate = None
        body: dict = {"params": {k: str(v) for k, v in (params or {}).items()}}
        if isinstance(spec, Pipeline):
            text, lines = spec._toml(root)
            body["spec"] = text

            def locate(message: str, lines=lines):
                m = _POSITION.search(message)
                return lines.get(int(m.group(1))) if m else None

        elif isinstance(spec, str) and "\n" in spec:
            body["spec"] = spec
        else:
            body["pipeline"] = os.fspath(spec)
        made = self._json("POST", "/v1/runs", body=body, locate=locate)
        return Run(self, made["id"])

    def runs(self, *, status: str | None = None, pipeline: str | None = None, limit: int = 50) -> list[dict]:
        """This tenant's runs, newest first (``status``, ``pipeline`` filter)."""
        q = {"limit": str(limit)}
        if status:
            q["status"] = status
        if pipeline:
            q["pipeline"] = pipeline
        return self._json("GET", "/v1/runs?" + urllib.parse.urlencode(q))["runs"]

    def run(self, run_id: str) -> "Run":
        """A handle on run ``run_id`` (no request is made)."""
        return Run(self, run_id)

    def upload_component(self, path: str | os.PathLike) -> str:
        """Uploads a ``.wasm`` component; returns its digest (a spec may then
        name it as ``component = "sha256:..."``)."""
        with open(path, "rb") as f:
            data = f.read()
        return self._json("PUT", "/v1/components", body=data, content_type="application/wasm")["digest"]

    # -- artifacts ----------------------------------------------------------

    def artifact(self, digest: str) -> bytes:
        """An artifact's bytes, checked against ``digest``."""
        with self._request("GET", f"/v1/artifacts/{digest}") as resp:
            data = resp.read()
        _check(digest, hashlib.sha256(data).hexdigest())
        return data

    def download(self, digest: str, path: str | os.PathLike) -> str:
        """Streams an artifact to ``path`` (via a temp file), checked against
        ``digest`` before it is moved into place."""
        path = os.fspath(path)
        tmp = f"{path}.part-{os.getpid()}"
        h = hashlib.sha256()
        try:
            with self._request("GET", f"/v1/artifacts/{digest}") as resp, open(tmp, "wb") as out:
                while chunk := resp.read(1 << 20):
                    h.update(chunk)
                    out.write(chunk)
            _check(digest, h.hexdigest())
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        return path

    def lineage(self, digest: str) -> dict:
        """An artifact's lineage among this tenant's runs (see
        ``GET /v1/artifacts/{digest}/lineage``)."""
        return self._json("GET", f"/v1/artifacts/{digest}/lineage")

    def whoami(self) -> dict:
        return self._json("GET", "/v1/whoami")


def _check(digest: str, hexdigest: str) -> None:
    if digest != f"sha256:{hexdigest}":
        raise errors.DigestMismatch(f"artifact {digest}: the bytes received hash to sha256:{hexdigest}")


class Run:
    """One run on the service."""

    def __init__(self, client: Client, run_id: str) -> None:
        self.client = client
        self.id = run_id

    def __repr__(self) -> str:
        return f"Run({self.id!r})"

    def get(self) -> dict:
        """The run now: status, counts, params and every step with its report."""
        return self.client._json("GET", f"/v1/runs/{self.id}")

    @property
    def status(self) -> str:
        return self.get()["status"]

    def events(self, *, since: int | None = None) -> Iterator[tuple[str, dict]]:
        """The run's live events from the start (or after event ``since``),
        as ``(kind, data)``: ``run``, ``step``, ``log``, ``metric``,
        ``dropped``, then ``end``. Reconnects after a dropped connection
        from the last event seen."""
        last = since
        quiet = 0
        while True:
            before = last
            headers = {"accept": "text/event-stream"}
            if last is not None:
                headers["last-event-id"] = str(last)
            ended = False
            with self.client._request("GET", f"/v1/runs/{self.id}/events", stream=True, headers=headers) as resp:
                for event_id, kind, data in _sse(resp):
                    if event_id is not None:
                        last = event_id
                    yield kind, data
                    if kind == "end":
                        ended = True
                        break
            if ended:
                return
            # A stream that keeps closing without news is a broken server,
            # not a run in progress.
            quiet = quiet + 1 if last == before else 0
            if quiet >= EVENT_RECONNECTS_MAX:
                raise errors.SluiceError(
                    f"run {self.id}: the event stream closed {quiet} times in a row without an event"
                )

    def wait(self, *, progress: bool | None = None, raise_on_failure: bool = False) -> dict:
        """Follows the run to its end (a progress line on a terminal, a live
        table in Jupyter when ``progress``); returns :meth:`get`."""
        show = _Progress.make(self.id, progress)
        for kind, data in self.events():
            show.event(kind, data)
        show.close()
        final = self.get()
        if raise_on_failure and final["status"] != "succeeded":
            raise errors.RunFailed(final)
        return final

    def cancel(self) -> dict:
        return self.client._json("POST", f"/v1/runs/{self.id}/cancel")

    def logs(self, step: str, stream: str = "stdout") -> str:
        """A step's captured ``stdout`` or ``stderr``."""
        with self.client._request("GET", f"/v1/runs/{self.id}/logs/{step}?stream={stream}") as resp:
            return resp.read().decode("utf-8", "replace")

    def steps(self) -> dict[str, dict]:
        """Each step's report by name (status, outputs, metrics, ...)."""
        return {s["name"]: s.get("report") or {"status": s["status"]} for s in self.get()["steps"]}

    def metrics(self) -> dict[str, dict[str, float]]:
        """Final metrics by step."""
        return {name: dict(r.get("metrics") or {}) for name, r in self.steps().items()}

    def metrics_frame(self):
        """The metrics as a pandas DataFrame (one row per step and metric);
        needs pandas."""
        import pandas as pd

        rows = [
            {"run": self.id, "step": step, "metric": k, "value": v}
            for step, m in self.metrics().items()
            for k, v in m.items()
        ]
        return pd.DataFrame(rows, columns=["run", "step", "metric", "value"])

    def output(self, step: str, name: str) -> dict:
        """An output's ``{digest, size, media_type}``."""
        outs = self.steps()[step].get("outputs") or {}
        if name not in outs:
            raise errors.SluiceError(f"run {self.id}: step `{step}` has no output `{name}` (it has: {', '.join(outs) or 'none'})")
        return outs[name]

    def artifact(self, step: str, name: str) -> bytes:
        """An output's bytes, verified."""
        return self.client.artifact(self.output(step, name)["digest"])

    def download(self, step: str, name: str, path: str | os.PathLike) -> str:
        """An output, streamed to ``path`` and verified."""
        return self.client.download(self.output(step, name)["digest"], path)

    def verify(self) -> dict:
        """The service's verification of the run's record, seal and log."""
        return self.client._json("GET", f"/v1/runs/{self.id}/verify")

    def provenance(self) -> dict:
        """The run's signed provenance (a DSSE envelope)."""
        return self.client._json("GET", f"/v1/runs/{self.id}/provenance")

    def replay(self) -> dict:
        """Replays the run on the service and returns its verdict."""
        return self.client._json("POST", f"/v1/runs/{self.id}/replay")

    def compare(self, other: "Run") -> dict[str, dict]:
        """Per step: metrics that differ and outputs whose digests differ,
        between this run and ``other``."""
        a, b = self.steps(), other.steps()
        out: dict[str, dict] = {}
        for step in sorted(set(a) | set(b)):
            ra, rb = a.get(step, {}), b.get(step, {})
            ma, mb = ra.get("metrics") or {}, rb.get("metrics") or {}
            metrics = {k: (ma.get(k), mb.get(k)) for k in sorted(set(ma) | set(mb)) if ma.get(k) != mb.get(k)}
            oa, ob = ra.get("outputs") or {}, rb.get("outputs") or {}
            outputs = sorted(k for k in set(oa) | set(ob) if (oa.get(k) or {}).get("digest") != (ob.get(k) or {}).get("digest"))
            if metrics or outputs or ra.get("status") != rb.get("status"):
                out[step] = {"status": (ra.get("status"), rb.get("status")), "metrics": metrics, "outputs": outputs}
        return out


def _sse(resp) -> Iterator[tuple[int | None, str, dict]]:
    """Server-sent events from a response: (id, event, JSON data)."""
    event_id, kind, data = None, "message", []
    for raw in resp:
        line = raw.decode("utf-8").rstrip("\r\n")
        if not line:
            if data:
                yield event_id, kind, json.loads("\n".join(data))
            event_id, kind, data = None, "message", []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "id":
            event_id = int(value) if value.isdigit() else None
        elif name == "event":
            kind = value
        elif name == "data":
            data.append(value)


class _Progress:
    """Shows a run's progress: a rewritten line on a terminal, an updating
    table in Jupyter, nothing otherwise."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.steps: dict[str, str] = {}
        self.status = "queued"

    @staticmethod
    def make(run_id: str, progress: bool | None) -> "_Progress":
        if progress is False:
            return _Progress(run_id)
        if "ipykernel" in sys.modules:
            return _Notebook(run_id)
        if progress or sys.stderr.isatty():
            return _Terminal(run_id)
        return _Progress(run_id)

    def event(self, kind: str, data: dict) -> None:
        if kind == "run":
            self.status = data.get("status", self.status)
        elif kind == "step":
            self.steps[data["name"]] = data["status"]
        elif kind == "end":
            self.status = data.get("status", self.status)
        self.show()

    def show(self) -> None:
        pass

    def close(self) -> None:
        pass

    def line(self) -> str:
        done = sum(1 for s in self.steps.values() if s not in ("pending", "running"))
        failed = sum(1 for s in self.steps.values() if s == "failed")
        return f"run {self.run_id}: {self.status}, {done} step(s) done" + (f", {failed} failed" if failed else "")


class _Terminal(_Progress):
    def show(self) -> None:
        sys.stderr.write("\r\x1b[2K" + self.line())
        sys.stderr.flush()

    def close(self) -> None:
        sys.stderr.write("\n")


class _Notebook(_Progress):
    def __init__(self, run_id: str) -> None:
        super().__init__(run_id)
        from IPython.display import display

        self.handle = display(self._html(), display_id=True)

    def _html(self):
        import html

        from IPython.display import HTML

        rows = "".join(
            f"<tr><td>{html.escape(n)}</td><td>{html.escape(s)}</td></tr>" for n, s in self.steps.items()
        )
        return HTML(f"<b>{html.escape(self.line())}</b><table><tr><th>step</th><th>status</th></tr>{rows}</table>")

    def show(self) -> None:
        self.handle.update(self._html())

