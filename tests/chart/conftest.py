"""Fixtures of the chart's unit tests: helm (from $HELM, which tools/chart-test.sh sets, else
its cache, else PATH) and render(), which runs helm template and parses what it prints."""
import glob
import os
import pathlib
import shutil
import subprocess

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "superweight"
RELEASE = "rel"
NAMESPACE = "ns"
FULLNAME = "rel-superweight"
# Explicit: a helm built by go install (without the release's linker flags) assumes an old one.
KUBE_VERSION = os.environ.get("CHART_KUBE_VERSION", "1.27.0")


def _find_helm():
    if os.environ.get("HELM"):
        return os.environ["HELM"]
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    cached = sorted(glob.glob(os.path.join(cache, "superweight", "helm-v*", "helm")), reverse=True)
    return cached[0] if cached else shutil.which("helm")


class Rendered:
    """helm template's manifests, by kind and name."""

    def __init__(self, text):
        self.text = text
        self.docs = [d for d in yaml.safe_load_all(text) if d]

    def kinds(self):
        return sorted(d["kind"] for d in self.docs)

    def all(self, kind):
        return [d for d in self.docs if d["kind"] == kind]

    def get(self, kind, name=None):
        found = [d for d in self.all(kind) if name is None or d["metadata"]["name"] == name]
        assert len(found) == 1, f"{len(found)} {kind} named {name}: {self.kinds()}"
        return found[0]

    def has(self, kind):
        return bool(self.all(kind))

    @property
    def deployment(self):
        return self.get("Deployment")

    @property
    def pod_spec(self):
        return self.deployment["spec"]["template"]["spec"]

    @property
    def container(self):
        (c,) = [c for c in self.pod_spec["containers"] if c["name"] == "superweightd"]
        return c

    def env(self):
        return {e["name"]: e for e in self.container.get("env", [])}

    def mounts(self):
        return {m["name"]: m for m in self.container.get("volumeMounts", [])}

    def volumes(self):
        return {v["name"]: v for v in self.pod_spec.get("volumes", [])}

    def args(self):
        return self.container.get("args", [])


class RenderError(Exception):
    pass


@pytest.fixture(scope="session")
def helm():
    path = _find_helm()
    if not path:
        pytest.fail("no helm: run tools/chart-test.sh (make chart-test), which installs it")
    return path


def _run(helm, cmd, values, sets, files, set_strings):
    args = [helm, *cmd]
    for f in files:
        args += ["-f", str(f)]
    for k, v in {"models.existingClaim": "models", **(values or {})}.items():
        if v is not ...:  # Ellipsis: leave the chart's default
            args += ["--set", f"{k}={v}"]
    for s in sets:
        args += ["--set", s]
    for s in set_strings:
        args += ["--set-string", s]
    return subprocess.run(args, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="session")
def render(helm):
    """render({"key": value, ...}, sets=[...], files=[...]): Rendered, or RenderError with
    helm's stderr. models.existingClaim is "models" unless given (... leaves it unset)."""

    def do(values=None, sets=(), files=(), set_strings=()):
        cmd = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE,
               "--kube-version", KUBE_VERSION]
        p = _run(helm, cmd, values, sets, files, set_strings)
        if p.returncode != 0:
            raise RenderError(p.stderr)
        return Rendered(p.stdout)

    return do


@pytest.fixture(scope="session")
def render_error(render):
    """The stderr of a helm template that must fail."""

    def do(*args, **kwargs):
        with pytest.raises(RenderError) as e:
            render(*args, **kwargs)
        return str(e.value)

    return do
