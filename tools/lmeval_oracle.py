"""lm-evaluation-harness on the engine's evaluation sets: the oracle of the Ablate harness.

Runs lm-eval's own task definitions (its YAMLs included, only the data pointed at local files
written from server/data/eval in the schema each task reads) on transformers' model of the same
weights, and prints, per example, each choice's log-likelihood and greedy flag and lm-eval's
acc and acc_norm. Runs in .venv-lmeval (tools/requirements-lmeval.txt):

    lmeval_oracle.py MODEL TASK[,TASK...] DATA_DIR MAX_EXAMPLES

One JSON line: per task its examples and metrics, and the seconds simple_evaluate took (all the
tasks in one call, the model loaded once before it): bench/ablate_bench.py's intact row.
"""
import json
import os
import sys
import tempfile

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

# task: (lm-eval's YAML under lm_eval/tasks, the split it reads)
TASKS = {"piqa": ("piqa/piqa.yaml", "validation"), "arc_easy": ("arc/arc_easy.yaml", "test"),
         "arc_challenge": ("arc/arc_challenge.yaml", "test"),
         "hellaswag": ("hellaswag/hellaswag.yaml", "validation"),
         "winogrande": ("winogrande/default.yaml", "validation"), "sciq": ("sciq/sciq.yaml", "test"),
         "lambada": ("lambada/lambada_openai.yaml", "test")}


def read_jsonl(path, limit):
    rows = []
    with open(path) as f:
        for line in f:
            if line.strip() and len(rows) < limit:
                rows.append(json.loads(line))
    return rows


def docs(task, data_dir, limit):
    """The task's examples in the schema of lm-eval's Hugging Face dataset."""
    if task == "piqa":
        labels = open(os.path.join(data_dir, "piqa", "valid-labels.lst")).read().split()
        return [dict(d, label=int(labels[i]))
                for i, d in enumerate(read_jsonl(os.path.join(data_dir, "piqa", "valid.jsonl"), limit))]
    if task in ("arc_easy", "arc_challenge"):
        return read_jsonl(os.path.join(data_dir, "arc", f"{task}_test.jsonl"), limit)
    if task == "winogrande":
        return read_jsonl(os.path.join(data_dir, "winogrande", "dev.jsonl"), limit)
    if task == "sciq":  # no support passages in this copy: scored as lm-eval scores an empty one
        return [{"support": "", "question": d["question"], "distractor1": d["distractors"][0],
                 "distractor2": d["distractors"][1], "distractor3": d["distractors"][2],
                 "correct_answer": d["correct_answer"]}
                for d in read_jsonl(os.path.join(data_dir, "sciq", "sciq_test_nosupport.jsonl"), limit)]
    if task == "lambada":
        return read_jsonl(os.path.join(data_dir, "lambada", "lambada_test.jsonl"), limit)
    if task == "hellaswag":
        # llama.cpp's text holds the context as "activity label: context": split back at the
        # first ": ", with ctx_b empty, lm-eval's process_docs rebuilds the same query.
        lines = open(os.path.join(data_dir, "hellaswag", "hellaswag_val_full.txt")).read().split("\n")
        out = []
        for i in range(0, min(len(lines) - 5, 6 * limit), 6):
            label, _, ctx = lines[i].partition(": ")
            out.append({"activity_label": label, "ctx_a": ctx, "ctx_b": "",
                        "endings": lines[i + 2:i + 6], "label": lines[i + 1]})
        return out
    raise SystemExit(f"unknown task {task}")


def main():
    model_path, tasks, data_dir, limit = sys.argv[1], sys.argv[2].split(","), sys.argv[3], int(sys.argv[4])
    import time

    import lm_eval
    import torch
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager
    from transformers import AutoTokenizer
    sys.path.insert(0, os.path.join(ROOT, "tests", "oracle"))
    from conftest import THREADS, _load_hf
    torch.set_num_threads(THREADS)
    tasks_dir = os.path.join(os.path.dirname(lm_eval.__file__), "tasks")
    with tempfile.TemporaryDirectory() as tmp:
        for task in tasks:
            yaml_path, split = TASKS[task]
            data = os.path.join(tmp, f"{task}.jsonl")
            with open(data, "w") as f:
                for d in docs(task, data_dir, limit):
                    f.write(json.dumps(d) + "\n")
            splits = {s: None for s in ("training_split", "validation_split", "test_split",
                                        "fewshot_split")}
            splits["validation_split" if split == "validation" else "test_split"] = split
            config = {"include": os.path.join(tasks_dir, yaml_path), "task": f"sw_{task}",
                      "tag": [], "dataset_path": "json", "dataset_name": None,
                      "dataset_kwargs": {"data_files": {split: data}}, **splits}
            with open(os.path.join(tmp, f"sw_{task}.yaml"), "w") as f:
                json.dump(config, f)  # JSON is YAML
        model = _load_hf(model_path, torch)
        if model_path.endswith(".gguf"):
            tokenizer = AutoTokenizer.from_pretrained(os.path.dirname(model_path),
                                                      gguf_file=os.path.basename(model_path))
        else:
            tokenizer = AutoTokenizer.from_pretrained(model_path)
        lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=16, add_bos_token=False)
        t0 = time.time()
        results = lm_eval.simple_evaluate(model=lm, tasks=[f"sw_{t}" for t in tasks],
                                          num_fewshot=0, log_samples=True,
                                          task_manager=TaskManager(include_path=tmp),
                                          bootstrap_iters=0)
        seconds = time.time() - t0
    out = {"seconds": seconds, "tasks": {}}
    for task in tasks:
        samples = sorted(results["samples"][f"sw_{task}"], key=lambda s: s["doc_id"])
        examples = []
        for s in samples:
            resps = [r[0] for r in s["resps"]]  # (loglikelihood, is_greedy) per choice
            row = {"logprobs": [float(r[0]) for r in resps], "greedy": [bool(r[1]) for r in resps],
                   "acc": s.get("acc")}
            if "acc_norm" in s:
                row["acc_norm"] = s["acc_norm"]
            examples.append(row)
        out["tasks"][task] = {
            "examples": examples,
            "metrics": {k: v for k, v in results["results"][f"sw_{task}"].items()
                        if isinstance(v, (int, float))}}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
