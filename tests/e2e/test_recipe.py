"""Recipe through the real server and client: the llama-quantize command line for a file type,
run as printed with llama.cpp's own llama-quantize (built by tools/setup-bench.sh), makes a file
that keeps the super weights, as Check then says (and passes with Check's defaults for Q4_K_M); where the bound asks for it, the recipe's override is in the file
llama-quantize writes; bad requests are refused."""
import os
import shutil
import subprocess

import pytest
from fast_gguf import GGUFReader

from conftest import ROOT, SMOLLM2, TOKEN, Server

pytestmark = pytest.mark.llama_cpp  # needs llama.cpp's build (make llama-cpp-test)

LLAMA_CPP_TOOLS = os.path.join(ROOT, ".llama-cpp-tools")
SMALL = ["--window=128", "--max_windows=2"]


@pytest.fixture(scope="module")
def recipes(tmp_path_factory):
    """A server of its own, whose model root the recipes' files are written under."""
    root = tmp_path_factory.mktemp("recipe_models")
    shutil.copy(SMOLLM2, root / "smollm2.gguf")
    (root / "made").mkdir()
    state = tmp_path_factory.mktemp("recipe_state")
    token_file = state / "token"
    token_file.write_text(TOKEN + "\n")
    s = Server(root, state / "jobs", token_file).start()
    yield s, root
    s.stop()


def _run_as_printed(command, cwd):
    env = dict(os.environ, PATH=LLAMA_CPP_TOOLS + os.pathsep + os.environ["PATH"])
    run = subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True,
                         text=True)
    assert run.returncode == 0, (command, (run.stdout + run.stderr)[-3000:])
    return run.stdout + run.stderr


def test_q2_k_recipe_run_as_printed_passes_check(recipes, tmp_path):
    server, root = recipes
    out = root / "made" / "smol.Q2_K.gguf"
    r = server.call("recipe", "--model=smollm2.gguf", "--file_type=Q2_K",
                    "--super_weights=11,507,1229", f"--output={out}", *SMALL)["result"]
    assert r["file_type"] == "Q2_K"
    [t] = r["tensors"]
    assert t["name"] == "blk.11.ffn_down.weight"
    # The Q2_K mix gives SmolLM2's ffn_down Q3_K, which stores the super weight within 1%: no
    # override is needed, and the recipe is the plain command.
    assert t["mix_type"] == "Q3_K" and t["chosen_type"] == "Q3_K" and not t.get("overridden")
    assert [c["written"] for c in t["candidates"]][:2] == ["Q2_K", "Q3_K"]
    assert "tensor_type_overrides" not in r or not r["tensor_type_overrides"]
    assert r["command"].startswith("llama-quantize --allow-requantize ")
    assert r["command"].endswith(f"{out} Q2_K")
    assert r["plain"] == r["recipe"] and r["recipe"]["super_weights_kept"]
    assert r["recipe"]["super_weight_max_relative_error"] < 0.01
    assert r["recipe"]["super_activation_min_ratio"] > 0.9
    # What Check will say of the file: the super weights kept, the perplexity Q2_K's own (above
    # Check's default 1.1 on SmolLM2, which no override of one tensor changes).
    assert r["recipe"]["perplexity_ratio"] > 1.1 and not r["recipe"]["passed"]
    _run_as_printed(r["command"], tmp_path)
    # The file llama-quantize made is the size the service's own emulation of it measured.
    assert abs(out.stat().st_size - int(r["plain"]["bytes"])) < 4096
    check = server.client("check", "--model=made/smol.Q2_K.gguf", "--reference=smollm2.gguf",
                          "--super_weights=11,507,1229", "--max_ppl_ratio=1.5", *SMALL)
    assert "keeps the super weights of smollm2.gguf (request): yes" in check.stdout, check.stdout
    ratio = float(check.stdout.split("(x")[1].split(")")[0])
    assert ratio == pytest.approx(r["recipe"]["perplexity_ratio"], rel=0.02)


def test_q4_k_m_recipe_run_as_printed_passes_check_with_its_defaults(recipes, tmp_path):
    server, root = recipes
    out = root / "made" / "smol.Q4_K_M.gguf"
    r = server.call("recipe", "--model=smollm2.gguf", "--file_type=Q4_K_M",
                    "--super_weights=11,507,1229", f"--output={out}", *SMALL)["result"]
    assert r["recipe"]["passed"] and r["recipe"]["super_weights_kept"]
    _run_as_printed(r["command"], tmp_path)
    check = server.client("check", "--model=made/smol.Q4_K_M.gguf", "--reference=smollm2.gguf",
                          "--super_weights=11,507,1229", *SMALL)
    assert "keeps the super weights of smollm2.gguf (request): yes" in check.stdout, check.stdout


def test_a_tighter_bound_gets_an_override_that_llama_quantize_applies(recipes, tmp_path):
    """Q3_K stores this super weight within 5.4e-4 and Q4_K within 2.4e-3: asked for 3e-4, the
    recipe raises the tensor to the smallest type that keeps it without a worse tensor, Q6_K,
    and llama-quantize, run as printed, writes the tensor so."""
    server, root = recipes
    out = root / "made" / "smol.Q2_K.tight.gguf"
    r = server.call("recipe", "--model=smollm2.gguf", "--file_type=Q2_K",
                    "--super_weights=11,507,1229", "--max_rel_error=0.0003", f"--output={out}",
                    *SMALL)["result"]
    [t] = r["tensors"]
    assert t["mix_type"] == "Q3_K" and t["chosen_type"] == "Q6_K" and t["overridden"]
    assert r["tensor_type_overrides"] == [r"^blk\.11\.ffn_down\.weight$=Q6_K"]
    assert r"--tensor-type '^blk\.11\.ffn_down\.weight$=Q6_K'" in r["command"]
    assert r["recipe"]["bytes"] > r["plain"]["bytes"]
    assert r["recipe"]["super_weight_max_relative_error"] < 3e-4
    _run_as_printed(r["command"], tmp_path)
    types = {t.name: t.tensor_type.name for t in GGUFReader(str(out)).tensors}
    assert types["blk.11.ffn_down.weight"] == "Q6_K"
    assert types["blk.10.ffn_down.weight"] == "Q3_K"
    assert abs(out.stat().st_size - int(r["recipe"]["bytes"])) < 4096


def test_recipe_table_printed_for_people(recipes):
    server, _ = recipes
    out = server.client("recipe", "--model=smollm2.gguf", "--file_type=Q4_K_M",
                        "--super_weights=11,507,1229", *SMALL).stdout
    assert "llama-quantize Q4_K_M on smollm2.gguf" in out
    assert "blk.11.ffn_down.weight: the mix gives Q6_K; the recipe Q6_K (kept: no override)" in out
    assert "command:\n  llama-quantize --allow-requantize " in out


@pytest.mark.parametrize("flags,code,message", [
    (["--file_type=IQ2_XXS"], "INVALID_ARGUMENT", "Q4_K_M"),
    (["--file_type=Q4_K_M", "--max_rel_error=2"], "INVALID_ARGUMENT", "max_super_weight_error"),
    (["--file_type=F16"], "INVALID_ARGUMENT", "not quantized"),
    (["--file_type=Q4_K_M", "--super_weights=99,0,0"], "INVALID_ARGUMENT", "layer"),
])
def test_bad_recipes_are_refused(recipes, flags, code, message):
    server, _ = recipes
    out = server.client("recipe", "--model=smollm2.gguf", *flags, check=False)
    assert out.returncode == 1 and code in out.stderr and message in out.stderr, out.stderr


def test_recipe_needs_a_gguf_model(server):
    out = server.client("recipe", "--model=tinystories656k", "--file_type=Q4_K_M",
                        check=False)
    assert out.returncode == 1 and "FAILED_PRECONDITION" in out.stderr, out.stderr
    assert "GGUF" in out.stderr
