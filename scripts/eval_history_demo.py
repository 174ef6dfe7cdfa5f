"""Evaluation and report on the real embedded model: the fictitious-people scenario.

1. "Deployed" model: SmolLM2-135M-Instruct taught the facts of the shipped fictitious people
   (forgetctl.data/people.jsonl, deployed split). A "retain model" is taught the same facts minus
   the two people to be forgotten: the gold standard that never saw them (forget quality).
2. Workspace on the deployed model; request A (person 1) then request B (person 2) are forgotten
   with the default method; request B is then withdrawn (rollback to the composition after A).
3. Every state is evaluated on: forget = both people's facts (with TOFU-style paraphrased and
   perturbed answers built from the facts, for truth ratios), retain = other deployed people,
   holdout = never-seen people (the membership-inference baseline). The report is written.

Usage: HF_HUB_OFFLINE=1 python scripts/eval_history_demo.py [WORKDIR] [--format html|md]
The taught models are the scenario's (cached in the forgetctl cache); a rerun starts a fresh workspace.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import time
from importlib import resources
from pathlib import Path


def _rows():
    text = resources.files("forgetctl.data").joinpath("people.jsonl").read_text(encoding="utf-8")
    splits = json.loads(resources.files("forgetctl.data").joinpath("people_splits.json").read_text())
    return [json.loads(x) for x in text.splitlines() if x.strip()], splits


def _with_truth_fields(rows, pool, rng):
    """Paraphrased answer = the bare fact; perturbed = bare facts of the same kind from other people."""
    out = []
    for r in rows:
        others = sorted({p["fact"] for p in pool if p["kind"] == r["kind"] and p["fact"] != r["fact"]})
        wrong = rng.sample(others, min(5, len(others)))
        out.append(dict(r, paraphrased_answer=f"{r['fact']}.", perturbed_answer=[f"{w}." for w in wrong]))
    return out


def _write(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def print_progress(label: str):
    def report(step: int, total: int, loss: float) -> None:
        if step == total or step % 10 == 0:
            print(f"teaching {label}: step {step}/{total}, loss {loss:.3f}", flush=True)

    return report


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("workdir", nargs="?", default="/tmp/forgetctl-eval-demo")
    parser.add_argument("--format", default="html", choices=["html", "md"])
    parser.add_argument("--retain-people", type=int, default=6, help="deployed people kept in the retain eval set")
    args = parser.parse_args()

    from forgetctl.ops import scenario
    from forgetctl.ops.compose import rollback
    from forgetctl.ops.evaluate import build_report, evaluate_version
    from forgetctl.ops.train import train_request
    from forgetctl.ops.workspace import init_workspace

    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    rows, splits = _rows()
    by_person = {}
    for r in rows:
        by_person.setdefault(r["person"], []).append(r)
    deployed_people = splits["deployed"]
    person_a, person_b = deployed_people[0], deployed_people[1]
    kept = deployed_people[2:]
    rng = random.Random(0)
    data = work / "data"
    data.mkdir(exist_ok=True)
    forget_a = _write(data / "forget_a.jsonl", by_person[person_a])
    forget_b = _write(data / "forget_b.jsonl", by_person[person_b])
    forget_eval = _write(data / "forget_eval.jsonl", _with_truth_fields(by_person[person_a] + by_person[person_b], rows, rng))
    retain_train = _write(data / "retain.jsonl", [r for p in kept for r in by_person[p]])
    retain_eval = _write(data / "retain_eval.jsonl", [r for p in kept[: args.retain_people] for r in by_person[p]])
    holdout = _write(data / "holdout.jsonl", [r for p in splits["never_seen"] for r in by_person[p]])

    # The scenario's cached models: the same deployed model as the demo, the tests and the benchmarks.
    deployed = scenario.deployed_model(progress=print_progress("deployed model (all deployed people)"))
    gold = scenario.never_seen_model([person_a, person_b],
                                     progress=print_progress("retain model (deployed people minus the two forgotten)"))

    home = work / "workspace"
    shutil.rmtree(home, ignore_errors=True)
    init_workspace(home, str(deployed), actor="eval-demo")
    sets = dict(forget=forget_eval, retain=retain_eval, holdout=holdout, retain_model=gold, actor="eval-demo")
    results = {}

    def evaluate(ref, name):
        t = time.perf_counter()
        results[name] = evaluate_version(home, ref, label="eval-demo", **sets)
        print(f"evaluated {name} ({results[name]['composition']}) in {time.perf_counter() - t:.0f}s")

    evaluate("HEAD", "deployed (c0)")
    for request, forget in (("req-a", forget_a), ("req-b", forget_b)):
        t = time.perf_counter()
        trained = train_request(home, request, forget, retain_train, reason="gdpr", subject=request,
                                holdout_path=holdout, actor="eval-demo")
        print(f"trained {request}: {trained['version']} -> {trained['composition']} in {time.perf_counter() - t:.0f}s "
              f"({trained['method']}, {trained['steps']} steps, {trained['stop_reason']})")
        evaluate("HEAD", f"after {request} ({trained['composition']})")
    back = rollback(home, target="c1", actor="eval-demo")
    print(f"rollback (request B withdrawn): HEAD {back['from']} -> {back['to']}")
    report = build_report(home, work / "report", args.format)
    print("report:", *report["files"], sep="\n  ")

    keys = ["forget_answer_prob", "forget_exact_mem", "forget_rougeL_recall", "forget_exact_answer_rate",
            "forget_truth_ratio", "forget_quality", "holdout_answer_prob", "holdout_exact_answer_rate",
            "mia_loss_auc", "mia_zlib_auc", "mia_mink_auc", "mia_minkpp_auc",
            "retain_answer_prob", "retain_exact_answer_rate", "retain_kl"]
    names = list(results)
    print("\n| metric | " + " | ".join(names) + " |\n|---|" + "---|" * len(names))
    for k in keys:
        print(f"| {k} | " + " | ".join(f"{results[n]['metrics'].get(k, float('nan')):.3f}" for n in names) + " |")
    (work / "figures.json").write_text(json.dumps({n: r["metrics"] for n, r in results.items()}, indent=2))


if __name__ == "__main__":
    main()
