"""Peak memory of `merge_export` on the real base, relative to the model's size, measured in child processes.

Side by side in one run: the streaming export versus the naive route (load the whole model, fold the
adapters in, save_pretrained). Each runs in its own fresh child; peak RSS is the child's ru_maxrss,
and "import baseline" is the RSS after importing torch/transformers/forgetctl, before any weights.

    HF_HUB_OFFLINE=1 python scripts/measure_merge_memory.py [--base smollm2] [--adapters 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
def rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
import torch, transformers, peft, safetensors
from forgetctl.adapters import compose
base, out, mode = sys.argv[1], sys.argv[2], sys.argv[3]
adapters = json.loads(sys.argv[4])
baseline = rss_mb()
started = time.monotonic()
if mode == "streaming":
    compose.merge_export(base, adapters, out, card="measure")
else:
    model, tokenizer = compose.load_merged(base, adapters, device="cpu")
    model.save_pretrained(out)
print(json.dumps({"baseline_mb": baseline, "peak_mb": rss_mb(), "seconds": time.monotonic() - started}))
"""


def make_random_adapters(base_dir: Path, root: Path, count: int, rank: int = 8) -> list[Path]:
    """LoRA adapters (all linear layers, random factors) written straight from the base's header: no model load."""
    import torch
    from peft import LoraConfig
    from safetensors.torch import save_file

    from forgetctl.adapters.safetensors_stream import read_layout

    linear = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    shapes = {}
    for shard in sorted(base_dir.glob("*.safetensors")):
        for t in read_layout(shard).tensors:
            if t.name.endswith(".weight") and t.name.rsplit(".", 2)[-2] in linear:
                shapes[t.name[: -len(".weight")]] = t.shape
    dirs = []
    for i in range(count):
        gen = torch.Generator().manual_seed(i)
        tensors = {}
        for module, (out_f, in_f) in shapes.items():
            tensors[f"base_model.model.{module}.lora_A.weight"] = torch.randn(rank, in_f, generator=gen) * 0.01
            tensors[f"base_model.model.{module}.lora_B.weight"] = torch.randn(out_f, rank, generator=gen) * 0.01
        d = root / f"adapter{i}"
        d.mkdir()
        LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=list(linear), task_type="CAUSAL_LM").save_pretrained(str(d))
        save_file(tensors, str(d / "adapter_model.safetensors"), metadata={"format": "pt"})
        dirs.append(d)
    return dirs


def _run_child(base: Path, out: Path, mode: str, adapters: list[Path]) -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(base), str(out), mode, json.dumps([str(a) for a in adapters])],
        env=env, capture_output=True, text=True, check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{mode} child failed: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure(base_spec: str | None = None, adapters: int = 3, workdir: str | None = None) -> dict:
    """Return model size, peak RSS of the streaming and the naive merge, and their ratios to the model size."""
    from forgetctl.adapters.base_model import resolve_base

    base = resolve_base(base_spec)
    model_mb = sum(p.stat().st_size for p in base.glob("*.safetensors")) / 2**20
    with tempfile.TemporaryDirectory(prefix="forgetctl-merge-mem-", dir=workdir) as tmp:
        root = Path(tmp)
        dirs = make_random_adapters(base, root, adapters)
        result = {"base": str(base), "model_mb": round(model_mb, 1), "adapters": adapters}
        for mode in ("streaming", "naive"):
            r = _run_child(base, root / f"out-{mode}", mode, dirs)
            result[mode] = {
                "peak_rss_mb": round(r["peak_mb"], 1),
                "import_baseline_mb": round(r["baseline_mb"], 1),
                "peak_over_model": round(r["peak_mb"] / model_mb, 3),
                "above_baseline_over_model": round((r["peak_mb"] - r["baseline_mb"]) / model_mb, 3),
                "seconds": round(r["seconds"], 2),
            }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default=None, help="base spec (default: smollm2)")
    parser.add_argument("--adapters", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    r = measure(args.base, args.adapters)
    if args.json:
        print(json.dumps(r, indent=2))
        return
    print(f"base {r['base']}: {r['model_mb']} MB of weights, {r['adapters']} adapter(s) folded in")
    for mode in ("streaming", "naive"):
        m = r[mode]
        print(
            f"  {mode:9s} peak RSS {m['peak_rss_mb']:7.1f} MB = {m['peak_over_model']:.2f}x model "
            f"(import baseline {m['import_baseline_mb']:.0f} MB; above it {m['above_baseline_over_model']:.2f}x model), {m['seconds']:.1f} s"
        )


if __name__ == "__main__":
    main()
