"""make dist's products as a user installs them (tools/dist.sh): the Debian package unpacked in a
scratch prefix runs --version and serves a call, the wheel installs in a fresh environment and
talks to it, the sdist carries what it builds from, and every checksum holds."""
import os
import subprocess
import tarfile
import time

import pytest

from conftest import ROOT, VERSION, free_port, python_package_build



@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    with python_package_build(tmp_path_factory):
        run = subprocess.run([os.path.join(ROOT, "tools", "dist.sh"), str(out)],
                             capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    return out


def test_every_product_is_there_with_its_checksum(dist):
    names = sorted(p.name for p in dist.iterdir())
    assert names == sorted(["SHA256SUMS", f"superweight_{VERSION}_amd64.deb",
                            f"superweight-{VERSION}-py3-none-any.whl",
                            f"superweight-{VERSION}.tar.gz",
                            f"superweight-{VERSION}-source.tar.gz"]), names
    check = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=dist, capture_output=True,
                           text=True)
    assert check.returncode == 0 and check.stdout.count(": OK") == 4, check.stdout
    with tarfile.open(dist / f"superweight-{VERSION}.tar.gz") as sdist:
        members = set(sdist.getnames())
    base = f"superweight-{VERSION}"
    for path in ("proto/superweight/v1/superweight.proto", "CMakeLists.txt", "LICENSE",
                 "superweight/client.py", "setup.py"):
        assert f"{base}/{path}" in members, path
    with tarfile.open(dist / f"superweight-{VERSION}-source.tar.gz") as source:
        assert f"{base}/CMakeLists.txt" in source.getnames()


def test_deb_and_wheel_installed_in_a_scratch_prefix_run(dist, model_root, tmp_path):
    deb = dist / f"superweight_{VERSION}_amd64.deb"
    fields = subprocess.run(["dpkg-deb", "-f", str(deb), "Package", "Version", "Depends"],
                            capture_output=True, text=True, check=True).stdout
    assert f"Version: {VERSION}" in fields and "libgrpc++" in fields, fields
    prefix = tmp_path / "root"
    subprocess.run(["dpkg-deb", "-x", str(deb), str(prefix)], check=True)
    bin_dir = prefix / "usr" / "bin"
    for binary in ("superweightd", "superweight", "superweight-engine"):
        line = subprocess.run([str(bin_dir / binary), "--version"], capture_output=True,
                              text=True, check=True).stdout
        assert line.startswith(f"{binary} {VERSION} (git "), line
    assert (prefix / "usr" / "share" / "superweight" / "eval" / "piqa").is_dir()
    assert (prefix / "usr" / "share" / "doc" / "superweight" / "LICENSE").is_file()

    port = free_port()
    server = subprocess.Popen([str(bin_dir / "superweightd"), f"--listen=127.0.0.1:{port}",
                               f"--model_root={model_root}"], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT)
    try:
        client = [str(bin_dir / "superweight"), f"--server=127.0.0.1:{port}"]
        for _ in range(100):
            if subprocess.run(client + ["health"], capture_output=True).returncode == 0:
                break
            time.sleep(0.1)
        # Ablate reads the evaluation sets the package installed beside the binary.
        ablate = subprocess.run(client + ["ablate", "--model=stories260K/stories260K.bin",
                                          "--super_weights=0,1,2", "--settings=prune",
                                          "--tasks=piqa", "--max_examples=2"],
                                capture_output=True, text=True)
        assert ablate.returncode == 0 and "prune SW" in ablate.stdout, ablate.stderr

        venv = tmp_path / "venv"
        subprocess.run(["/usr/bin/python3", "-m", "venv", str(venv)], check=True)
        wheel = dist / f"superweight-{VERSION}-py3-none-any.whl"
        pip = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q",
                              "--disable-pip-version-check", str(wheel)], capture_output=True,
                             text=True)
        assert pip.returncode == 0, pip.stdout + pip.stderr
        info = subprocess.run([str(venv / "bin" / "python"), "-c",
                               "import sys, superweight as s; "
                               "print(s.__version__, s.Client(sys.argv[1]).info().version)",
                               f"127.0.0.1:{port}"], capture_output=True, text=True)
        assert info.stdout.split() == [VERSION, VERSION], info.stdout + info.stderr
    finally:
        server.terminate()
        server.wait(timeout=30)
