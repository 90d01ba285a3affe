"""Shared fixtures of the oracle tests: the engine CLI, the models, and transformers loaders."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests"))
import gguf  # noqa: E402
from fast_gguf import GGUFReader  # noqa: E402

# transformers' GGUF loading (models and tokenizers, here and in tools/lmeval_oracle.py) reads
# through gguf.GGUFReader when called: the same reader over a plain array, 2.5x faster.
gguf.GGUFReader = GGUFReader
ENGINE = os.path.join(ROOT, "build", "bin", "superweight-engine")
TESTDATA = os.path.join(ROOT, "testdata")
SMOLLM2 = os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
# Threads for the oracles (torch, llama.cpp): the share OMP_NUM_THREADS gives each of make's
# parallel test workers (one), else every core.
THREADS = int(os.environ.get("OMP_NUM_THREADS") or 0) or os.cpu_count() or 1
TINYSTORIES = os.path.join(TESTDATA, "hf_tinystories_656k")
STORIES260K = os.path.join(TESTDATA, "stories260K", "stories260K.bin")
WIKITEXT = os.path.join(TESTDATA, "text", "wiki.test.raw")
TINYSTORIES_TEXT = os.path.join(TESTDATA, "text", "tinystories_validation_head.txt")

# llama.cpp built from source by tools/setup-bench.sh (make test runs it): the Python binding's
# environment and its command-line tools.
BENCH_PY = os.path.join(ROOT, ".venv-bench", "bin", "python")
LLAMA_CPP_TOOLS = os.path.join(ROOT, ".llama-cpp-tools")
LLAMA_CPP_MARKER = ("llama_cpp: needs llama.cpp's native build or its converter "
                    "(tools/setup-bench.sh): make llama-cpp-test runs these, make oracle-test and "
                    "e2e-test the others")

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


@pytest.fixture(scope="session")
def smollm2_f32(tmp_path_factory):
    """SmolLM2 with every tensor llama-quantize would quantize written in F32 by the engine
    (`requantize --file_type=F32`, llama.cpp's ALL_F32): the source llama.cpp's tools and the
    engine both start from when their outputs are compared, so that no dequantization of the
    shipped Q4_1 file stands between them and, in llama.cpp, no quantized matmul."""
    out = str(tmp_path_factory.mktemp("f32") / "SmolLM2-135M-Instruct.F32.gguf")
    subprocess.run([ENGINE, "requantize", SMOLLM2, "--file_type=F32", f"--out={out}"],
                   check=True, capture_output=True)
    yield out
    os.remove(out)


def engine(verb, model, *args, **flags):
    """Runs the engine CLI and returns its JSON answer."""
    cmd = [ENGINE, verb, model] + [f"--{k}={v}" for k, v in flags.items()] + list(args)
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed: {out.stderr}")
    return json.loads(out.stdout)


def engine_logits(model, ids, tmp_path, bf16=False):
    path = os.path.join(str(tmp_path), "logits.f32")
    args = ["--bf16"] if bf16 else []
    info = engine("logits", model, *args, ids=",".join(map(str, ids)), out=path)
    return np.fromfile(path, dtype=np.float32).reshape(info["tokens"], info["vocab"])


def relative_error(got, want):
    """max |got - want| over max |want|: the scale-aware distance the issue's bounds use."""
    return float(np.max(np.abs(got - want)) / np.max(np.abs(want)))


@pytest.fixture(scope="session")
def torch():
    import torch as t
    t.set_num_threads(THREADS)
    return t


def _load_hf(path, torch):
    from transformers import AutoModelForCausalLM
    if path.endswith(".gguf"):
        model = AutoModelForCausalLM.from_pretrained(
            os.path.dirname(path), gguf_file=os.path.basename(path), torch_dtype=torch.float32)
        # transformers 4.46 leaves lm_head random when a GGUF stores no output.weight (tied
        # embeddings, as SmolLM2's): tie it as llama.cpp does.
        model.lm_head.weight = model.model.embed_tokens.weight
    else:
        model = AutoModelForCausalLM.from_pretrained(path, torch_dtype=torch.float32)
    return model.eval()


@pytest.fixture(scope="session")
def stories260k_hf(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("stories260k_hf"))
    subprocess.run([sys.executable, os.path.join(ROOT, "tools", "convert_llama2c_to_hf.py"),
                    STORIES260K, os.path.join(TESTDATA, "stories260K", "tok512.model"), out],
                   check=True)
    return out


@pytest.fixture(scope="session")
def hf_models(torch, stories260k_hf):
    """Lazily loaded transformers models, keyed by the engine's path of the same weights."""
    cache = {}

    def get(engine_path):
        if engine_path not in cache:
            hf_path = stories260k_hf if engine_path == STORIES260K else engine_path
            cache[engine_path] = _load_hf(hf_path, torch)
        return cache[engine_path]
    return get


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "lmeval: compares with lm-evaluation-harness (.venv-lmeval); run at full ISA only")
    config.addinivalue_line(
        "markers", "formats: file-format bytes from code with no CPU-class dispatch (GGML's "
        "reference quantizers, the GGUF writer); run at full ISA only")
    config.addinivalue_line(
        "markers", "isa: exercises code that dispatches on the CPU class (the matmuls, attention, "
        "dequantization); make lesser-cpu-test runs these again at each class below this machine's")
    config.addinivalue_line("markers", LLAMA_CPP_MARKER)


def family_models(tmp_path_factory, plants):
    """Each family of `plants` (family -> the plant make_test_model takes) as a clean and a
    planted model, each a Hugging Face directory and an F32 GGUF by llama.cpp's converter:
    {(family, "clean" | "planted"): (directory, gguf)}."""
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    import make_test_model as mtm
    root = tmp_path_factory.mktemp("families")
    out, jobs = {}, []
    for family, plant in plants.items():
        for variant, planted in (("clean", None), ("planted", plant)):
            hf = root / f"{family}-{variant}"
            mtm.make(family, str(hf), plant=planted)
            jobs.append((str(hf), str(root / f"{family}-{variant}.gguf"), "f32"))
            out[family, variant] = (str(hf), str(root / f"{family}-{variant}.gguf"))
    mtm.to_gguf_many(jobs)
    return out


def llama_cpp_logits(path, ids, tmp_path):
    """llama.cpp's logits of every position (tools/llama_cpp_eval.py, f32 KV cache)."""
    out = os.path.join(str(tmp_path), "llama_cpp_logits.npy")
    run = subprocess.run([os.path.join(ROOT, ".venv-bench", "bin", "python"),
                          os.path.join(ROOT, "tools", "llama_cpp_eval.py"), "logits", path,
                          ",".join(map(str, ids)), out, "--kv=f32"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    return np.load(out)
