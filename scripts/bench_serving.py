"""Serving benchmark: greedy generation latency and tokens/s for the base, the merged export,
4 and 16 stacked adapters (PEFT, unmerged), and the squashed adapter (16 folded into one LoRA).

Every arm generates exactly the same number of new tokens (min_new_tokens = max_new_tokens) from
the same chat prompts, batch 1, after one warm-up generation; each arm runs in a fresh process and
the arms are interleaved. The merged, stacked-16 and squashed arms hold the same composition, so
their greedy tokens should agree: the table says whether they do.

    python scripts/bench_serving.py            # full: real SmolLM2 base, 64 new tokens, 3 rounds
    python scripts/bench_serving.py --quick    # tiny random base, 4 adapters
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_common as bc  # noqa: E402
from bench_compose import _dir_mb  # noqa: E402
from bench_compose import setup as compose_setup  # noqa: E402

PROMPTS = [
    "Write two sentences about the history of the bicycle.",
    "What is the capital of France, and why is it famous?",
    "Explain in simple words how a rainbow forms.",
]
TARGET_MERGED = 1.05
TARGET_STACKED4 = 1.3


# ---------------------------------------------------------------------------- child arms


def prepare(params: dict, section: bc.Section) -> dict:
    """Base, `n` random adapters, their merged export and squashed adapter (made once, untimed)."""
    from forgetctl.adapters.compose import merge_export, squash

    made = compose_setup(params, bc.Section())
    work = Path(params["work"])
    adapters = [str(work / "adapters" / f"adapter-{i:03d}") for i in range(params["n"])]
    merge_export(made["base"], adapters, work / "merged", card="benchmark export")
    report = squash(adapters, work / "squashed", mode="exact")
    return {"base": made["base"], "squash_rank": report.get("rank"), "squashed_mb": _dir_mb(work / "squashed")}


def generate(params: dict, section: bc.Section) -> dict:
    import torch

    from forgetctl.adapters.base_model import load_base, load_tokenizer

    kind, base = params["kind"], params["base"]
    if kind in ("base", "merged"):
        model, _ = load_base(params["model"], device="cpu")
    else:
        from forgetctl.adapters.compose import load_stacked

        model = load_stacked(base, params["adapter_dirs"], device="cpu")
    tokenizer = load_tokenizer(base)
    new = params["new_tokens"]
    inputs = []
    for prompt in PROMPTS:
        text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)
        inputs.append(tokenizer(text, return_tensors="pt", add_special_tokens=False))

    def run(enc):
        return model.generate(**enc, max_new_tokens=new, min_new_tokens=new, do_sample=False,
                              pad_token_id=tokenizer.pad_token_id)

    import time

    with torch.inference_mode():
        run(inputs[0])  # warm-up: first-call allocations and kernel selection
        latencies, tokens = [], []
        with section:
            for _ in range(params["gens"]):
                for enc in inputs:
                    t0 = time.perf_counter()
                    out = run(enc)
                    latencies.append(time.perf_counter() - t0)
                    tokens.append(out[0, enc["input_ids"].shape[1]:].tolist())
    n_new = sum(len(t) for t in tokens)
    digest = hashlib.sha256(repr(tokens[: len(inputs)]).encode()).hexdigest()[:12]
    return {"latency_s": sorted(latencies)[len(latencies) // 2], "tokens_per_s": n_new / sum(latencies),
            "new_tokens": n_new, "tokens_digest": digest}


ARMS = {"prepare": prepare, "generate": generate}


# ---------------------------------------------------------------------------- parent


def main() -> int:
    parser = bc.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--base", default=None, help="base spec (default: the embedded SmolLM2)")
    parser.add_argument("--new-tokens", type=int, default=None)
    args = parser.parse_args()
    if args.quick:
        bc.quick_mode_threads()
    repeats = args.repeats or (1 if args.quick else 3)
    big = 4 if args.quick else 16
    new_tokens = args.new_tokens or (8 if args.quick else 64)
    gens, prompts = (1, 1) if args.quick else (2, len(PROMPTS))
    with bc.scratch_dir(args, "bench-serving-") as work:
        inproc = ARMS if args.quick else None  # --quick: one process (smoke test); full: a fresh process per arm
        bc.log(f"making {big} random r=8 all-linear adapters, their merged export and squashed adapter")
        prep = bc.run_arm(__file__, "prepare", {"quick": args.quick, "base_spec": args.base, "work": str(work), "n": big},
                          inprocess=inproc)
        base, adapters, merged, squashed = prep.result["base"], work / "adapters", work / "merged", work / "squashed"
        dirs = [str(adapters / f"adapter-{i:03d}") for i in range(big)]
        common = {"base": str(base), "new_tokens": new_tokens, "gens": gens, "prompts": prompts}
        arms = [
            ("base", {**common, "kind": "base", "model": str(base)}),
            (f"merged export (x{big})", {**common, "kind": "merged", "model": str(merged)}),
            ("stacked x4", {**common, "kind": "stacked", "adapter_dirs": dirs[:4]}),
        ]
        if big > 4:
            arms.append((f"stacked x{big}", {**common, "kind": "stacked", "adapter_dirs": dirs}))
        arms.append((f"squashed x{big} (r={prep.result['squash_rank']})", {**common, "kind": "stacked",
                                                                           "adapter_dirs": [str(squashed)]}))
        runs = bc.run_arms(__file__, [(label, "generate", p) for label, p in arms], repeats, inprocess=inproc)

        base_lat = bc.median(x.result["latency_s"] for x in runs["base"])
        stacked_big = f"stacked x{big}"
        ref_digest = runs[stacked_big][0].result["tokens_digest"]
        columns = ["arm", "median latency s", "spread", "vs base", "tokens/s", "peak RSS MB", f"same tokens as {stacked_big}"]
        rows, records = [], []
        for name, rs in runs.items():
            lat = bc.median(x.result["latency_s"] for x in rs)
            tps = bc.median(x.result["tokens_per_s"] for x in rs)
            same = None if name == "base" else rs[0].result["tokens_digest"] == ref_digest
            rows.append([name, bc.fmt(lat), bc.fmt(bc.spread([x.result["latency_s"] for x in rs])), bc.ratio(lat, base_lat),
                         bc.fmt(tps), bc.fmt(bc.median(x.peak_rss_mb for x in rs)), bc.fmt(same)])
            records.append({"arm": name, "median_latency_s": lat, "latencies_s": [x.result["latency_s"] for x in rs],
                            "tokens_per_s": tps, "peak_rss_mb": bc.median(x.peak_rss_mb for x in rs),
                            "tokens_digest": rs[0].result["tokens_digest"]})
        info = bc.machine_info()
        bc.print_table(f"generation, batch 1, {new_tokens} new tokens, greedy ({prompts} prompts x {gens})",
                       columns, rows, caption=bc.machine_line(info))
        merged_lat = bc.median(x.result["latency_s"] for x in runs[arms[1][0]])
        s4_lat = bc.median(x.result["latency_s"] for x in runs["stacked x4"])
        targets = {
            f"merged within {TARGET_MERGED}x of base": {"ratio": merged_lat / base_lat, "met": merged_lat / base_lat <= TARGET_MERGED},
            f"4 stacked within {TARGET_STACKED4}x of base": {"ratio": s4_lat / base_lat, "met": s4_lat / base_lat <= TARGET_STACKED4},
        }
        for name, t in targets.items():
            print(f"target: {name}: {bc.verdict(t['met'])} ({t['ratio']:.2f}x)")
        path = bc.save_results("serving-quick" if args.quick else "serving",
                               {"base": str(base), "new_tokens": new_tokens, "repeats": repeats, "arms": records,
                                "squashed_mb": prep.result["squashed_mb"], "targets": targets,
                                "markdown": bc.markdown_table(columns, rows)}, args.out)
        print(f"results: {path}")
        return 0


if __name__ == "__main__":
    if bc.is_child():
        bc.child_main(ARMS)
    else:
        sys.exit(main())
