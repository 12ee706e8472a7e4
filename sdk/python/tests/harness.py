"""What the SDK's tests share: the repository, the `sluice` binary, and a
real `sluice serve` on loopback with two tenants."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
sys.path.insert(0, os.path.join(REPO, "examples", "python"))
try:
    import sluice  # noqa: F401  (installed: `pip install ./sdk/python`, as CI does)
except ImportError:
    sys.path.insert(0, os.path.join(REPO, "sdk", "python"))


# The compile cache the Rust end-to-end tests fill (entries are keyed by
# component digest and engine, so sharing is safe): the components are
# compiled once, not once per home.
COMPILE_CACHE = os.path.join(REPO, "target", "sluice-test-compile-cache")
os.environ.setdefault("SLUICE_COMPILE_CACHE", COMPILE_CACHE)


def sluice_bin() -> str:
    """$SLUICE_BIN, else the debug build CI made."""
    path = os.environ.get("SLUICE_BIN") or os.path.join(REPO, "target", "debug", "sluice")
    if not os.access(path, os.X_OK):
        raise RuntimeError(f"no sluice binary at {path}: build it (cargo build) or set SLUICE_BIN")
    return path


class Service:
    """`sluice serve` with a temp home, root = the repository, specs and
    components allowed under examples/, and three tokens: ALICE (tenant a,
    runner), BOB (tenant a, viewer), CAROL (tenant b, runner)."""

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="sluice-sdk-test-")
        self.tokens = {n: f"{n.lower()}-{secrets.token_hex(12)}" for n in ("ALICE", "BOB", "CAROL")}
        config = os.path.join(self.dir, "config.toml")
        with open(config, "w") as f:
            f.write(f'[server]\nroot = "{REPO}"\nallow_paths = ["examples"]\n')
            for name, tenant, role in (("ALICE", "a", "runner"), ("BOB", "a", "viewer"), ("CAROL", "b", "runner")):
                f.write(f'[[tokens]]\ntoken_env = "SDK_TEST_{name}"\ntenant = "{tenant}"\nrole = "{role}"\n')
        env = dict(os.environ)
        env.update({f"SDK_TEST_{n}": t for n, t in self.tokens.items()})
        env.pop("SLUICE_TOKEN", None)
        self.home = os.path.join(self.dir, "home")
        self.stderr = open(os.path.join(self.dir, "stderr"), "wb")
        self.proc = subprocess.Popen(
            [sluice_bin(), "serve", "--home", self.home, "--config", config, "--listen", "127.0.0.1:0"],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
        )
        first = self.proc.stdout.readline().decode().strip()
        if not first.startswith("listening on http://127.0.0.1:"):
            self.close()
            raise RuntimeError(f"sluice serve did not start: {first!r}\n{self.log()}")
        self.url = first.removeprefix("listening on ")
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()

    def log(self) -> str:
        with open(os.path.join(self.dir, "stderr"), "rb") as f:
            return f.read().decode("utf-8", "replace")[-4000:]

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.stderr.close()
        shutil.rmtree(self.dir, ignore_errors=True)
