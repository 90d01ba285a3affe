"""A local superweightd for tests: a context manager, and a pytest fixture (this module is a
pytest plugin once the package is installed).

    from superweight.testing import local_server
    with local_server(model_root="models") as server:
        print(server.client().info().version)

The binary is `superweightd=` or $SUPERWEIGHTD, else superweightd on PATH; the fixture
`superweight_server` reads the model root from $SUPERWEIGHT_MODEL_ROOT.
"""
from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from typing import Iterator, Optional, Sequence

from superweight.client import Client

try:
    import pytest
except ImportError:  # the context manager needs no pytest
    pytest = None


class LocalServer:
    """A running superweightd on a free loopback port: `address`, `token`, client()."""

    def __init__(self, process: subprocess.Popen, address: str, token: str, log_path: str,
                 ca_cert: Optional[str] = None):
        self.process = process
        self.address = address
        self.token = token
        self.log_path = log_path
        self.ca_cert = ca_cert

    def client(self, **kw) -> Client:
        """A client with this server's token (and its certificate as the CA, over TLS)."""
        kw.setdefault("ca_cert", self.ca_cert)
        return Client(self.address, token=self.token, **kw)

    def log(self) -> str:
        with open(self.log_path, errors="replace") as f:
            return f.read()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def local_server(model_root: str, superweightd: Optional[str] = None,
                 args: Sequence[str] = (), tls_cert: Optional[str] = None,
                 tls_key: Optional[str] = None,
                 startup_timeout: float = 60.0) -> Iterator[LocalServer]:
    """Starts superweightd on 127.0.0.1 with a fresh token and state directory (over TLS given a
    self-signed tls_cert for 127.0.0.1 and its tls_key), with `args` as further flags; stops it
    (SIGTERM, then SIGKILL) on leaving."""
    binary = superweightd or os.environ.get("SUPERWEIGHTD") or shutil.which("superweightd")
    if not binary:
        raise FileNotFoundError("no superweightd: pass superweightd=, set $SUPERWEIGHTD or put it "
                                "on PATH")
    with tempfile.TemporaryDirectory(prefix="superweight-test-") as scratch:
        token = secrets.token_hex(16)
        token_file = os.path.join(scratch, "token")
        with open(token_file, "w") as f:
            f.write(token)
        os.chmod(token_file, 0o600)
        address = f"127.0.0.1:{_free_port()}"
        log_path = os.path.join(scratch, "superweightd.log")
        with open(log_path, "w") as log:
            process = subprocess.Popen(
                [binary, f"--listen={address}", f"--model_root={model_root}",
                 f"--token_file={token_file}", f"--state_dir={os.path.join(scratch, 'state')}",
                 *([f"--tls_cert={tls_cert}", f"--tls_key={tls_key}"] if tls_cert else []),
                 *args], stdout=log, stderr=subprocess.STDOUT)
        server = LocalServer(process, address, token, log_path, tls_cert)
        try:
            probe = Client(address, ca_cert=tls_cert, timeout=2)
            deadline = time.monotonic() + startup_timeout
            while not probe.health():
                if process.poll() is not None:
                    raise RuntimeError(f"superweightd exited {process.returncode}:\n{server.log()}")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"superweightd not serving after {startup_timeout} s")
                time.sleep(0.1)
            probe.close()
            yield server
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


if pytest is not None:
    @pytest.fixture(scope="session")
    def superweight_server() -> Iterator[LocalServer]:
        """A superweightd for the test session, over $SUPERWEIGHT_MODEL_ROOT."""
        root = os.environ.get("SUPERWEIGHT_MODEL_ROOT")
        if not root:
            pytest.fail("superweight_server: set SUPERWEIGHT_MODEL_ROOT to the models to serve")
        with local_server(root) as server:
            yield server
