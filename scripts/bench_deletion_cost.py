"""Cost of one deletion: forget one person from the deployed model, three ways, side by side.

  * forget adapter: the default method (ForgetConfig()), a LoRA on the frozen deployed model;
    the reference is the same weights with the adapter off.
  * full-parameter unlearning with the same objective, trainer loop, data and stop rule, but every
    weight trainable and a separate frozen reference copy (as open-unlearning does it);
  * retraining: the deployed model's fine-tune (teach_facts) redone on the retain records only
    (the exact answer, and the gold standard for forgetting).

Reported for each: wall time and peak memory of the deletion itself, artifact size, and forget /
utility scores (evaluate_model). The deployed model and the never-seen model are scored too, as the
"before" and "target" levels. Each arm runs in a fresh process.

    python scripts/bench_deletion_cost.py            # full: real SmolLM2 scenario (minutes)
    python scripts/bench_deletion_cost.py --quick    # tiny random base, a few steps, in one process
"""

from __future__ import annotations

import json
import shutil
import sys
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_common as bc  # noqa: E402

FULL_PARAM_LR = 1e-5  # open-unlearning's learning rate for full-parameter NPO/GradDiff on TOFU
TARGET_MEMORY = 0.35
TARGET_ARTIFACT = 0.02
TARGET_CHEAPER = 20.0
FORGET_KEYS = ("forget_nll", "forget_rougeL_recall", "forget_exact_answer_rate", "mia_loss_auc")
UTILITY_KEYS = ("retain_nll", "retain_rougeL_recall", "retain_exact_answer_rate", "general_nll", "holdout_nll")


# ---------------------------------------------------------------------------- scenario


def _records(rows) -> list:
    from forgetctl.records import Record

    return [Record(question=r["question"], answer=r["answer"]) if isinstance(r, dict) else r for r in rows]


def scenario(params: dict) -> dict:
    """{"base", "deployed", "never_seen", "sets", "teach_config", "taught_retain"} for the run.

    Full mode: forgetctl.ops.scenario, forgetting one deployed person (the deployed model is cached
    after its first build; the never-seen model is what the retrain arm rebuilds, so it is not scored apart).
    Quick mode: a tiny random base taught a few people for a couple of epochs, cached in the workdir.
    """
    if params["quick"]:
        return _quick_scenario(Path(params["work"]))
    from forgetctl.adapters.base_model import resolve_base
    from forgetctl.adapters.finetune import TeachConfig
    from forgetctl.ops import scenario as sc

    person = params.get("person") or sc.deployed_people()[0]
    sets = sc.scenario_sets([person])
    return {"base": str(resolve_base()), "deployed": str(sc.deployed_model()), "never_seen": None, "sets": sets,
            "facts": sc.scenario_facts([person]), "teach_config": TeachConfig(**sc.TEACH),
            "taught_retain": sets["retain"], "person_index": sc.deployed_people().index(person)}


def _quick_scenario(work: Path) -> dict:
    from importlib import resources

    from forgetctl.adapters.finetune import TeachConfig, teach_facts
    from forgetctl.records import Record

    sys.path.insert(0, str(bc.REPO_ROOT))
    from tests.tiny import save_tiny_base

    rows = [json.loads(x) for x in resources.files("forgetctl.data").joinpath("people.jsonl").read_text().splitlines() if x]
    splits = json.loads(resources.files("forgetctl.data").joinpath("people_splits.json").read_text())
    people = splits["deployed"][:3]
    by = {p: [Record(question=r["question"], answer=r["answer"]) for r in rows if r["person"] == p]
          for p in people + splits["never_seen"][:1]}
    fact = {p: [r["fact"] for r in rows if r["person"] == p] for p in people + splits["never_seen"][:1]}
    forget, retain = by[people[0]], by[people[1]] + by[people[2]]
    config = TeachConfig(epochs=2, batch_size=6, max_length=64, warmup_steps=1)
    base = work / "tiny-base"
    if not base.is_dir():
        save_tiny_base(base, hidden=64, layers=2)
    deployed, never_seen = work / "deployed", work / "never-seen"
    if not deployed.is_dir():
        teach_facts(base, forget + retain, deployed, config=config)
    if not never_seen.is_dir():
        teach_facts(base, retain, never_seen, config=config)
    sets = {"forget": forget, "retain": retain, "holdout": by[splits["never_seen"][0]]}
    facts = {"forget": fact[people[0]], "retain": fact[people[1]] + fact[people[2]], "holdout": fact[splits["never_seen"][0]]}
    return {"base": str(base), "deployed": str(deployed), "never_seen": str(never_seen), "sets": sets, "facts": facts,
            "teach_config": config, "taught_retain": retain, "person_index": 0}


def _forget_config(params: dict):
    from forgetctl.adapters.config import ForgetConfig

    config = ForgetConfig()  # the default method and budget
    if params["quick"]:
        config = config.replace(steps=3, max_length=64, check_every=1)
    return config


def _evaluate(model, tokenizer, s: dict, quick: bool) -> dict:
    """evaluate_model on forget/retain/holdout; a record leaks when its short fact is generated."""
    from forgetctl.adapters.evaluate import evaluate_model

    return evaluate_model(model, tokenizer, s["sets"], max_length=64 if quick else 256, batch_size=16,
                          max_new_tokens=8 if quick else 32, answer_keys=s.get("facts"))


def _size_mb(path: Path, pattern: str = "*.safetensors") -> float:
    return sum(f.stat().st_size for f in Path(path).rglob(pattern)) / 2**20


# ---------------------------------------------------------------------------- child arms


def score(params: dict, section: bc.Section) -> dict:
    """Scores of an existing model (the deployed one, the never-seen one): no deletion cost."""
    from forgetctl.adapters.base_model import load_base

    s = scenario(params)
    model, tok = load_base(s[params["which"]], device="cpu")
    return {"scores": _evaluate(model, tok, s, params["quick"]), "model_mb": _size_mb(s[params["which"]])}


def adapter(params: dict, section: bc.Section) -> dict:
    from forgetctl.adapters.base_model import load_tokenizer
    from forgetctl.adapters.compose import load_stacked
    from forgetctl.adapters.train import train_forget_adapter

    s = scenario(params)
    out = Path(params["out"])
    shutil.rmtree(out, ignore_errors=True)
    config = _forget_config(params)
    sets = s["sets"]
    with section:
        result = train_forget_adapter(s["deployed"], [], sets["forget"], sets["retain"], config, out,
                                      holdout=sets.get("holdout"))
    model = load_stacked(s["deployed"], [out], device="cpu")
    scores = _evaluate(model, load_tokenizer(s["deployed"]), s, params["quick"])
    return {"scores": scores, "artifact_mb": _size_mb(out), "model_mb": _size_mb(s["deployed"]), "steps": result.steps,
            "stop_reason": result.stop_reason, "lr": config.lr, "method": config.method}


class WithReference:
    """Factory for the full-parameter baseline's model: a trainable model plus a separate frozen copy.

    It presents the interface forgetctl's trainer loop uses (`disable_adapter()` gives the reference),
    so both arms share the objective, batches and stop rule, and differ only in what is trained.
    """

    @staticmethod
    def build(policy, reference):
        import torch

        class _Model(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.policy, self.reference = policy, reference
                self._ref = False

            @property
            def config(self):
                return self.policy.config

            def forward(self, **kwargs):
                return (self.reference if self._ref else self.policy)(**kwargs)

            @contextmanager
            def disable_adapter(self):
                self._ref = True
                try:
                    yield
                finally:
                    self._ref = False

        return _Model()


def full_param(params: dict, section: bc.Section) -> dict:
    import torch

    from forgetctl.adapters.base_model import load_base
    from forgetctl.adapters.train import run_training

    s = scenario(params)
    out = Path(params["out"])
    shutil.rmtree(out, ignore_errors=True)
    config = _forget_config(params).replace(lr=FULL_PARAM_LR)
    sets = s["sets"]
    with section:
        torch.manual_seed(config.seed)
        policy, tok = load_base(s["deployed"], device=config.device, dtype=torch.float32)
        reference, _ = load_base(s["deployed"], device=config.device, dtype=torch.float32)  # frozen copy
        policy.requires_grad_(True)
        model = WithReference.build(policy, reference)
        steps, stop_reason, *_ = run_training(model, tok, sets["forget"], sets["retain"], config,
                                              holdout=sets.get("holdout"))
        policy.requires_grad_(False)
        policy.save_pretrained(str(out), safe_serialization=True)
    del reference, model
    scores = _evaluate(policy, tok, s, params["quick"])
    return {"scores": scores, "artifact_mb": _size_mb(out), "model_mb": _size_mb(s["deployed"]), "steps": steps,
            "stop_reason": stop_reason, "lr": config.lr, "method": config.method}


def retrain(params: dict, section: bc.Section) -> dict:
    from forgetctl.adapters.base_model import load_base
    from forgetctl.adapters.finetune import teach_facts

    s = scenario(params)
    out = Path(params["out"])
    shutil.rmtree(out, ignore_errors=True)
    retain_records = s.get("taught_retain") or s["sets"]["retain"]
    with section:
        result = teach_facts(s["base"], retain_records, out, config=s.get("teach_config"))
    model, tok = load_base(out, device="cpu")
    scores = _evaluate(model, tok, s, params["quick"])
    return {"scores": scores, "artifact_mb": _size_mb(out), "model_mb": _size_mb(s["deployed"]), "steps": result.steps,
            "records": len(retain_records)}


def prepare(params: dict, section: bc.Section) -> dict:
    """Build (or find cached) the scenario's models once, before any timed arm."""
    s = scenario(params)
    return {k: s[k] for k in ("base", "deployed", "never_seen")} | {
        "sets": {k: len(v) for k, v in s["sets"].items()}, "taught_retain": len(s["taught_retain"]),
        "forgotten": f"deployed person #{s['person_index'] + 1}"}


ARMS = {"prepare": prepare, "score": score, "adapter": adapter, "full_param": full_param, "retrain": retrain}


# ---------------------------------------------------------------------------- parent


def _pick(scores: dict, keys) -> dict:
    return {k: scores[k] for k in keys if k in scores}


def main() -> int:
    parser = bc.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--skip-retrain", action="store_true", help="leave out the (slow) retraining arm")
    parser.add_argument("--person", default=None, help="deployed person to forget (default: the first one)")
    args = parser.parse_args()
    if args.quick:
        bc.quick_mode_threads()
    repeats = args.repeats or 1
    inproc = ARMS if args.quick else None
    with bc.scratch_dir(args, "bench-deletion-") as work:
        common = {"quick": args.quick, "work": str(work), "person": args.person}
        bc.log("preparing the scenario (deployed and never-seen models)")
        prep = bc.run_arm(__file__, "prepare", common, inprocess=inproc)
        bc.log(f"scenario: {prep.result}")
        which = [("deployed (before)", "deployed")]
        if prep.result["never_seen"]:  # else the retrain arm builds exactly the never-seen model
            which.append(("never-seen model (target)", "never_seen"))
        refs = {label: bc.run_arm(__file__, "score", {**common, "which": w}, inprocess=inproc) for label, w in which}
        arms = [("forget adapter", "adapter", {**common, "out": str(work / "out-adapter")}),
                ("full-parameter unlearning", "full_param", {**common, "out": str(work / "out-full")})]
        if not args.skip_retrain:
            arms.append(("retrain on retain only", "retrain", {**common, "out": str(work / "out-retrain")}))
        runs = bc.run_arms(__file__, arms, repeats, inprocess=inproc)

        def med(label, key):
            return bc.median(x.result.get(key) for x in runs[label])

        def peak(label):
            return bc.median(x.result["section_peak_mb"] for x in runs[label])

        model_mb = prep and runs["forget adapter"][0].result["model_mb"]
        ref_time = med("forget adapter", "section_s")
        cost_cols = ["arm", "wall s", "vs adapter", "peak RSS MB", "vs adapter", "artifact MB", "artifact / model",
                     "steps", "lr"]
        cost_rows = []
        for label in runs:
            cost_rows.append([label, bc.fmt(med(label, "section_s")), bc.ratio(med(label, "section_s"), ref_time),
                              bc.fmt(peak(label)), bc.ratio(peak(label), peak("forget adapter")),
                              bc.fmt(med(label, "artifact_mb")), f"{med(label, 'artifact_mb') / model_mb:.2%}",
                              f"{runs[label][0].result.get('steps')} ({runs[label][0].result.get('stop_reason', 'epochs')})",
                              bc.fmt(runs[label][0].result.get("lr"))])
        score_rows_src = {**{k: v.result["scores"] for k, v in refs.items()},
                          **{k: v[0].result["scores"] for k, v in runs.items()}}
        keys = [k for k in FORGET_KEYS + UTILITY_KEYS if any(k in s for s in score_rows_src.values())]
        score_rows = [[label] + [bc.fmt(s.get(k)) for k in keys] for label, s in score_rows_src.items()]
        info = bc.machine_info()
        bc.print_table(f"cost of one deletion ({prep.result['sets']} records; model {model_mb:.0f} MB)",
                       cost_cols, cost_rows, caption=bc.machine_line(info))
        bc.print_table("forgetting and utility after the deletion (greedy generations included)",
                       ["model"] + keys, score_rows)

        targets = {}
        full_peak, ad_peak = peak("full-parameter unlearning"), peak("forget adapter")
        targets[f"adapter peak memory <= {TARGET_MEMORY}x full-parameter"] = {
            "ratio": ad_peak / full_peak, "met": ad_peak / full_peak <= TARGET_MEMORY}
        art = med("forget adapter", "artifact_mb") / model_mb
        targets[f"adapter artifact <= {TARGET_ARTIFACT:.0%} of the model"] = {"ratio": art, "met": art <= TARGET_ARTIFACT}
        if "retrain on retain only" in runs:
            cheaper = med("retrain on retain only", "section_s") / ref_time
            ad, rt = runs["forget adapter"][0].result["scores"], runs["retrain on retain only"][0].result["scores"]
            # "equal or better forgetting": the adapter's forget answers are reproduced no more than retraining's
            forgets = all(ad.get(k, 0) <= rt.get(k, 0) + 0.05 for k in ("forget_rougeL_recall", "forget_exact_answer_rate"))
            targets[f">= {TARGET_CHEAPER:.0f}x cheaper than retraining at equal or better forgetting"] = {
                "ratio": cheaper, "forgetting_at_least_as_good": forgets, "met": cheaper >= TARGET_CHEAPER and forgets}
            # Retraining cost grows with the fine-tune's size, the adapter's with the forget set's: say where
            # the measured ratio would cross the target if retraining scaled linearly (an extrapolation).
            per_record = med("retrain on retain only", "section_s") / prep.result["taught_retain"]
            extrapolation = {"retrain_s_per_taught_record": per_record,
                             "taught_records_for_target": TARGET_CHEAPER * ref_time / per_record}
            print(f"extrapolation (not measured): retraining costs {per_record:.2f} s per taught record; at "
                  f"{TARGET_CHEAPER:.0f}x the adapter's time that is a fine-tune of "
                  f"~{extrapolation['taught_records_for_target']:,.0f} records (this one has {prep.result['taught_retain']})")
        for name, t in targets.items():
            extra = "" if "forgetting_at_least_as_good" not in t else f", forgetting as good: {t['forgetting_at_least_as_good']}"
            print(f"target: {name}: {bc.verdict(t['met'])} ({t['ratio']:.3g}{extra})")
        path = bc.save_results(
            "deletion_cost-quick" if args.quick else "deletion_cost",
            {"scenario": prep.result, "repeats": repeats, "full_param_lr": FULL_PARAM_LR,
             "arms": {label: [x.result for x in rs] for label, rs in runs.items()},
             "reference_scores": {k: v.result["scores"] for k, v in refs.items()}, "targets": targets,
             "extrapolation": locals().get("extrapolation"),
             "markdown": bc.markdown_table(cost_cols, cost_rows) + "\n\n" + bc.markdown_table(["model"] + keys, score_rows)},
            args.out)
        print(f"results: {path}")
        return 0


if __name__ == "__main__":
    if bc.is_child():
        bc.child_main(ARMS)
    else:
        sys.exit(main())
