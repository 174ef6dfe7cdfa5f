"""Which unlearning method to ship as the default: every method on the same deletion, side by side.

The fictitious-people scenario on the real embedded model (see forgetctl.ops.scenario): the
deployed SmolLM2 has memorised 14 people's records; one person is forgotten with each method,
same LoRA, budget, data and stop rule. Reported per method, next to the deployed model (before)
and the never-seen model (the same fine-tune without that person: the level to aim at):

  * the forgotten person's answer probability and exact-answer rate (greedy answer names the fact);
  * the kept people's answer probability and exact-answer rate (utility on neighbouring knowledge);
  * the gap between the forget-set NLL and the never-seen model's NLL on the same records
    (0 = indistinguishable from never seen; negative = still remembered; positive = overshoot);
  * the LOSS membership-inference AUC of the forgotten records against never-seen people (0.5 = cannot tell).

The trade-off score ranks methods: kept exact-answer rate, minus forgotten exact-answer rate (leaks
in what the model says), minus the MIA AUC's distance from 0.5 and a tenth of the absolute NLL gap
in nats (both "still remembered" and "forgotten past never-seen" are visible to an attacker).

    python scripts/compare_methods.py              # full: real SmolLM2 scenario (~10 min on 2 cores)
    python scripts/compare_methods.py --quick      # tiny random base, a few steps (smoke test)
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_common as bc  # noqa: E402
import bench_deletion_cost as cost  # noqa: E402  (the shared scenario builder)

METHODS = ("grad_ascent", "grad_diff", "npo", "simnpo", "idk", "rmu")
COLUMNS = ["model", "steps", "train s", "forgot: answer p", "forgot: exact", "kept: answer p", "kept: exact",
           "NLL gap to never-seen", "MIA AUC", "trade-off"]
GAP_WEIGHT = 0.1


def _never_seen(params: dict, s: dict) -> str:
    if s.get("never_seen"):
        return s["never_seen"]
    from forgetctl.ops import scenario as sc

    person = params.get("person") or sc.deployed_people()[0]
    return str(sc.never_seen_model([person]))


def _scores(model, tokenizer, s: dict, quick: bool) -> dict:
    return cost._evaluate(model, tokenizer, s, quick)


def _row(label: str, scores: dict, never_seen_nll: float, steps="-", seconds=None) -> tuple[list, float]:
    gap = scores["forget_nll"] - never_seen_nll
    mia = abs(scores.get("mia_loss_auc", 0.5) - 0.5)
    trade = scores["retain_exact_answer_rate"] - scores["forget_exact_answer_rate"] - mia - GAP_WEIGHT * abs(gap)
    return [label, steps, bc.fmt(seconds), bc.fmt(scores["forget_answer_prob"]), bc.fmt(scores["forget_exact_answer_rate"]),
            bc.fmt(scores["retain_answer_prob"]), bc.fmt(scores["retain_exact_answer_rate"]), f"{gap:+.2f}",
            bc.fmt(scores.get("mia_loss_auc")), f"{trade:.3f}"], trade


def main() -> int:
    parser = bc.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated methods to compare")
    parser.add_argument("--person", default=None, help="deployed person to forget (default: the first one)")
    parser.add_argument("--steps", type=int, default=None, help="step budget per method (default: ForgetConfig's)")
    args = parser.parse_args()
    if args.quick:
        bc.quick_mode_threads()
    from forgetctl.adapters.base_model import load_base, load_tokenizer
    from forgetctl.adapters.compose import load_stacked
    from forgetctl.adapters.config import DEFAULT_METHOD
    from forgetctl.adapters.train import train_forget_adapter

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    with bc.scratch_dir(args, "compare-methods-") as work:
        params = {"quick": args.quick, "work": str(work), "person": args.person}
        bc.log("preparing the scenario (deployed and never-seen models)")
        s = cost.scenario(params)
        refs = {}
        for label, path in (("deployed (before)", s["deployed"]), ("never-seen (target)", _never_seen(params, s))):
            model, tok = load_base(path, device="cpu")
            refs[label] = _scores(model, tok, s, args.quick)
            del model
        never_seen_nll = refs["never-seen (target)"]["forget_nll"]
        rows = [_row(label, sc, never_seen_nll)[0] for label, sc in refs.items()]
        results, trades = {}, {}
        tokenizer = load_tokenizer(s["deployed"])
        for method in methods:
            config = cost._forget_config(params).replace(method=method)
            if args.steps:
                config = config.replace(steps=args.steps)
            bc.log(f"training {method} ({config.steps} steps)")
            out = work / f"adapter-{method}"
            t0 = time.perf_counter()
            result = train_forget_adapter(s["deployed"], [], s["sets"]["forget"], s["sets"]["retain"], config, out,
                                          holdout=s["sets"]["holdout"])
            seconds = time.perf_counter() - t0
            scores = _scores(load_stacked(s["deployed"], [out], device="cpu"), tokenizer, s, args.quick)
            row, trades[method] = _row(method + (" (default)" if method == DEFAULT_METHOD else ""), scores,
                                       never_seen_nll, f"{result.steps} ({result.stop_reason})", seconds)
            rows.append(row)
            results[method] = {"scores": scores, "steps": result.steps, "stop_reason": result.stop_reason,
                               "seconds": seconds, "config": config.to_dict(), "trade_off": trades[method]}
        best = max(trades, key=trades.get)
        info = bc.machine_info()
        bc.print_table(f"one deletion, every method ({ {k: len(v) for k, v in s['sets'].items()} } records)",
                       COLUMNS, rows, caption=bc.machine_line(info))
        print(f"best trade-off: {best} ({trades[best]:.3f}); project default: {DEFAULT_METHOD}"
              f" ({trades.get(DEFAULT_METHOD, float('nan')):.3f})")
        path = bc.save_results("compare_methods-quick" if args.quick else "compare_methods",
                               {"references": refs, "methods": results, "best": best, "default": DEFAULT_METHOD,
                                "markdown": bc.markdown_table(COLUMNS, rows)}, args.out)
        print(f"results: {path}")
        return 0


if __name__ == "__main__":
    sys.exit(main())
