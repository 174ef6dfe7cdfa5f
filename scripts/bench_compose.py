"""Compose benchmark: merge/export time and peak memory for compositions of 1, 4, 16 and 64
adapters, against a plain safetensors load-and-save of the base (the I/O floor).

Adapters are r=8, all-linear, with random weights, made with peft on the real base
(SmolLM2-135M via resolve_base()). Each arm runs in a fresh process; arms are interleaved.

    python scripts/bench_compose.py            # full: real base, 1/4/16/64 adapters, 3 rounds
    python scripts/bench_compose.py --quick    # tiny random base, 1/4 adapters
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_common as bc  # noqa: E402

TARGET_RATIO_16 = 1.5


# ---------------------------------------------------------------------------- child arms


def make_adapters(params: dict, section: bc.Section) -> dict:
    """Save `n` distinct random LoRA adapters (r, all-linear) for the base, in peft's format."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base, out, n, r = params["base"], Path(params["out"]), params["n"], params.get("r", 8)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    config = LoraConfig(r=r, lora_alpha=2 * r, target_modules="all-linear", lora_dropout=0.0, task_type="CAUSAL_LM")
    model = get_peft_model(model, config)
    lora = [(name, p) for name, p in model.named_parameters() if "lora_" in name]
    with section, torch.no_grad():
        for i in range(n):
            gen = torch.Generator().manual_seed(1000 + i)
            for name, p in lora:
                # small deltas of the size a short unlearning run produces; B != 0 so every adapter counts
                std = 0.02 if "lora_A" in name else 0.002
                p.copy_(torch.randn(p.shape, generator=gen) * std)
            model.save_pretrained(str(out / f"adapter-{i:03d}"))
    return {"n": n, "adapter_mb": _dir_mb(out / "adapter-000")}


def floor(params: dict, section: bc.Section) -> dict:
    """The I/O floor: load every base tensor with safetensors and save them again (+ small files)."""
    from safetensors.torch import load_file, save_file

    base, out = Path(params["base"]), Path(params["out"])
    out.mkdir(parents=True)
    with section:
        for src in sorted(base.iterdir()):
            if src.suffix == ".safetensors":
                tensors = load_file(str(src))
                save_file(tensors, str(out / src.name), metadata={"format": "pt"})
                del tensors
            elif src.is_file():
                shutil.copy2(src, out / src.name)
    size = _dir_mb(out)
    shutil.rmtree(out)
    return {"export_mb": size}


def merge(params: dict, section: bc.Section) -> dict:
    from forgetctl.adapters.compose import merge_export

    out = Path(params["out"])
    adapters = [str(Path(params["adapters"]) / f"adapter-{i:03d}") for i in range(params["n"])]
    with section:
        info = merge_export(params["base"], adapters, out, card="benchmark export")
    size = _dir_mb(out)
    shutil.rmtree(out)
    return {"export_mb": size, "info_keys": sorted(info) if isinstance(info, dict) else None}


def peft_merge(params: dict, section: bc.Section) -> dict:
    """The obvious way, for context: load base + adapters with peft, merge_and_unload, save_pretrained."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    out = Path(params["out"])
    adapters = [str(Path(params["adapters"]) / f"adapter-{i:03d}") for i in range(params["n"])]
    with section:
        model = AutoModelForCausalLM.from_pretrained(params["base"], dtype=torch.float32)
        model = PeftModel.from_pretrained(model, adapters[0], adapter_name="a0")
        for i, d in enumerate(adapters[1:], start=1):
            model.load_adapter(d, adapter_name=f"a{i}")
        model.base_model.set_adapter([f"a{i}" for i in range(len(adapters))])
        merged = model.merge_and_unload()
        merged.save_pretrained(str(out), safe_serialization=True)
    size = _dir_mb(out)
    shutil.rmtree(out)
    return {"export_mb": size}


def setup(params: dict, section: bc.Section) -> dict:
    """The base (tiny random one for --quick, else resolve_base) and the random adapters."""
    work = Path(params["work"])
    if params["quick"]:
        sys.path.insert(0, str(bc.REPO_ROOT))
        from tests.tiny import save_tiny_base

        base = save_tiny_base(work / "tiny-base", hidden=64, layers=4)
    else:
        from forgetctl.adapters.base_model import resolve_base

        base = resolve_base(params.get("base_spec"))
    made = make_adapters({"base": str(base), "out": str(work / "adapters"), "n": params["n"]}, section)
    return {"base": str(base), "base_mb": _weights_mb(base), **made}


ARMS = {"setup": setup, "floor": floor, "merge": merge, "peft_merge": peft_merge}


def _dir_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file()) / 2**20


def _weights_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in Path(path).glob("*.safetensors")) / 2**20


# ---------------------------------------------------------------------------- parent


def main() -> int:
    parser = bc.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--counts", default=None, help="comma-separated adapter counts (default 1,4,16,64)")
    parser.add_argument("--base", default=None, help="base spec (default: the embedded SmolLM2)")
    args = parser.parse_args()
    if args.quick:
        bc.quick_mode_threads()
    counts = [int(c) for c in args.counts.split(",")] if args.counts else ([1, 4] if args.quick else [1, 4, 16, 64])
    # one round by default: merging 64 adapters takes minutes on a 2-core CPU; --repeats N to interleave more
    repeats = args.repeats or 1
    with bc.scratch_dir(args, "bench-compose-") as work:
        # --quick runs every arm inside this process (a smoke test: memory figures then mean little);
        # the full mode keeps torch out of this parent so each child's peak memory is its own.
        inproc = ARMS if args.quick else None
        bc.log(f"making {max(counts)} random r=8 all-linear adapters")
        made = bc.run_arm(__file__, "setup", {"quick": args.quick, "base_spec": args.base, "work": str(work),
                                              "n": max(counts)}, inprocess=inproc)
        base, base_mb = made.result["base"], made.result["base_mb"]
        arms = [("floor", "floor", {"base": base, "out": str(work / "out-floor")})]
        arms += [(f"merge x{n}", "merge", {"base": base, "adapters": str(work / "adapters"), "n": n,
                                          "out": str(work / f"out-{n}")}) for n in counts]
        if not args.quick:
            n = 16 if 16 in counts else max(counts)
            arms.append((f"peft merge_and_unload x{n} (context)", "peft_merge",
                         {"base": base, "adapters": str(work / "adapters"), "n": n, "out": str(work / "out-peft")}))
        runs = bc.run_arms(__file__, arms, repeats, inprocess=inproc)

        f_sec = bc.median(x.result["section_s"] for x in runs["floor"])
        f_peak = bc.median(x.peak_rss_mb for x in runs["floor"])
        columns = ["arm", "median s", "spread", "vs floor", "peak RSS MB", "peak above start MB",
                   "above start / weights", "export MB"]
        rows, records = [], []
        for name, rs in runs.items():
            sec = bc.median(x.result["section_s"] for x in rs)
            above = bc.median(x.result["section_peak_above_start_mb"] for x in rs)
            rows.append([name, bc.fmt(sec), bc.fmt(bc.spread([x.result["section_s"] for x in rs])), bc.ratio(sec, f_sec),
                         bc.fmt(bc.median(x.peak_rss_mb for x in rs)), bc.fmt(above), bc.ratio(above, base_mb),
                         bc.fmt(bc.median(x.result["export_mb"] for x in rs))])
            records.append({"arm": name, "median_s": sec, "runs_s": [x.result["section_s"] for x in rs],
                            "peak_rss_mb": bc.median(x.peak_rss_mb for x in rs), "peak_above_start_mb": above,
                            "export_mb": bc.median(x.result["export_mb"] for x in rs)})
        info = bc.machine_info()
        bc.print_table(f"merge/export vs safetensors load+save of the base ({base_mb:.0f} MB weights, "
                       f"adapters {made.result['adapter_mb']:.1f} MB each)", columns, rows, caption=bc.machine_line(info))

        targets = {}
        ref16 = "merge x16" if "merge x16" in runs else f"merge x{max(counts)}"
        s16 = bc.median(x.result["section_s"] for x in runs[ref16])
        p16 = bc.median(x.peak_rss_mb for x in runs[ref16])
        targets[f"{ref16} within {TARGET_RATIO_16}x of floor time"] = {"ratio": s16 / f_sec, "met": s16 / f_sec <= TARGET_RATIO_16}
        # "near one copy of the model": peak RSS no more than the floor's (which holds one copy) + 25%
        targets[f"{ref16} peak memory near one model copy (<= 1.25x floor peak)"] = {
            "ratio": p16 / f_peak, "met": p16 / f_peak <= 1.25}
        for name, t in targets.items():
            print(f"target: {name}: {bc.verdict(t['met'])} ({t['ratio']:.2f}x)")
        path = bc.save_results("compose-quick" if args.quick else "compose",
                               {"base": str(base), "base_mb": base_mb, "adapter_mb": made.result["adapter_mb"],
                                "counts": counts, "repeats": repeats, "arms": records, "targets": targets,
                                "markdown": bc.markdown_table(columns, rows)}, args.out)
        print(f"results: {path}")
        return 0


if __name__ == "__main__":
    if bc.is_child():
        bc.child_main(ARMS)
    else:
        sys.exit(main())
