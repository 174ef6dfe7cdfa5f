"""Registry benchmark: `list`, `show`, `log`, `audit verify` at 1,000 and 10,000 versions,
and start-up time of registry-only commands against `python -c pass`.

Also checks that registry commands never import torch / transformers / peft (the CLI must
start fast without them). This script itself never imports torch.

    python scripts/bench_registry.py            # full: 1,000 and 10,000 versions, 5 rounds
    python scripts/bench_registry.py --quick    # tiny sizes, for the test suite
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_common as bc  # noqa: E402

HEAVY = ("torch", "transformers", "peft", "accelerate", "safetensors.torch")
FINGERPRINT = "sha256:" + "b" * 64
# A sidecar as ops/train.py writes it (ForgetConfig.to_dict() and before/after metrics), so that
# listing and showing pay for realistic metadata, not a toy dict.
HYPERPARAMETERS = {
    "method": "npo", "rank": 8, "alpha": 16.0, "dropout": 0.0, "target_modules": "all-linear", "lr": 2e-4,
    "steps": 40, "epochs": None, "batch_size": 4, "grad_accum": 1, "max_length": 256, "max_grad_norm": 1.0,
    "seed": 0, "device": "auto", "dtype": "auto", "gradient_checkpointing": False, "retain_weight": 1.0,
    "kl_weight": 0.0, "npo_beta": 0.1, "simnpo_beta": 4.5, "simnpo_gamma": 0.0, "idk_answers": None,
    "rmu_layer": None, "rmu_steering_coeff": 6.5, "rmu_alpha": 100.0, "forget_nll_target": None,
    "extraction_target": None, "retain_nll_max_increase": 0.5, "check_every": None, "schema": 1,
}
METRICS = {f"{s}_{m}": 0.5 for s in ("forget", "retain", "holdout") for m in ("nll", "answer_prob", "rougeL_recall", "kl")}
LIST_TARGET_S = 0.5


# ---------------------------------------------------------------------------- child arm


def populate(params: dict, section: bc.Section) -> dict:
    """Fill a workspace with n fake adapter versions through the public Registry API."""
    import numpy as np
    from safetensors.numpy import save_file

    from forgetctl.registry import Registry

    home, n = Path(params["home"]), params["n"]
    base = home.parent / "fake-base"
    base.mkdir(parents=True, exist_ok=True)
    (base / "config.json").write_text(json.dumps({"model_type": "llama"}))
    reg = Registry.init(home, "fake-base", base, FINGERPRINT, actor="bench")
    scratch = Path(tempfile.mkdtemp(prefix="fake-adapter-", dir=home.parent))
    adapter_config = {
        "peft_type": "LORA", "r": 2, "lora_alpha": 4, "target_modules": ["q_proj"],
        "base_model_name_or_path": str(base), "task_type": "CAUSAL_LM",
    }
    key = "base_model.model.model.layers.0.self_attn.q_proj"
    composed = []
    with section:
        for i in range(n):
            folder = scratch / f"a{i}"
            folder.mkdir()
            # distinct bytes per version: the store is content-addressed
            a = np.full((2, 8), float(i), dtype=np.float32)
            save_file({f"{key}.lora_A.weight": a, f"{key}.lora_B.weight": np.zeros((8, 2), np.float32)},
                      str(folder / "adapter_model.safetensors"))
            (folder / "adapter_config.json").write_text(json.dumps(adapter_config))
            meta = {
                "schema": 1, "request_id": f"req-{i:06d}", "reason": "gdpr", "subject": f"person {i}",
                "method": "npo", "hyperparameters": HYPERPARAMETERS, "base_fingerprint": FINGERPRINT,
                "parent_composition": reg.head().id, "metrics_before": METRICS, "metrics_after": METRICS,
                "stop_reason": "target_met", "steps": 10, "device": "cpu", "dtype": "float32",
                "started_at": "2026-12-03T20:00:00Z", "finished_at": "2026-12-03T20:01:00Z",
                "versions": {"forgetctl": "0.1.0", "torch": "2.13.0", "transformers": "5.25.0", "peft": "0.21.2"},
                "data_sha256": {"forget": "f" * 64, "retain": "e" * 64},
            }
            version = reg.register_adapter(folder, meta, None, actor="bench")
            shutil.rmtree(folder)
            # a realistic history: every 50th request is merged into a new HEAD (the last 8 kept)
            composed.append(version.id)
            if (i + 1) % 50 == 0 or i == n - 1:
                comp = reg.compose(composed[-8:], parent=reg.head().id, note=f"batch {i // 50}", actor="bench")
                reg.move_pointer("HEAD", comp.id, actor="bench")
    shutil.rmtree(scratch, ignore_errors=True)
    return {"n": n, "per_version_ms": section.seconds / n * 1000, "versions": len(reg.adapters())}


ARMS = {"populate": populate}


# ---------------------------------------------------------------------------- parent


def forgetctl_argv() -> list[str]:
    exe = Path(sys.executable).with_name("forgetctl")
    return [str(exe)] if exe.is_file() else [sys.executable, "-m", "forgetctl.cli"]


_WRAPPER = (
    "import atexit, json, os, sys\n"
    "def _dump():\n"
    "    heavy = [m for m in {heavy!r} if m in sys.modules]\n"
    "    open(os.environ['BENCH_MODULES'], 'w').write(json.dumps(heavy))\n"
    "atexit.register(_dump)\n"
    "sys.argv = ['forgetctl'] + sys.argv[1:]\n"
    "from forgetctl.cli import main\n"
    "main()\n"
).format(heavy=HEAVY)


def heavy_imports(args: list[str], home: Path) -> tuple[list[str], int]:
    """Which heavy modules a CLI command loads (checked in sys.modules at interpreter exit)."""
    with tempfile.TemporaryDirectory() as tmp:
        marker = Path(tmp) / "modules.json"
        run = bc.run_command(
            [sys.executable, "-c", _WRAPPER, "--home", str(home), *args],
            env=bc.child_env({"BENCH_MODULES": str(marker)}),
        )
        loaded = json.loads(marker.read_text()) if marker.is_file() else ["<no report>"]
    return loaded, run.returncode


def commands(n: int) -> list[tuple[str, list[str]]]:
    mid = max(1, n // 2)
    return [
        ("list", ["list"]),  # the newest 50 as a table, and a line counting the rest
        ("list --all", ["list", "--all"]),
        ("list --json", ["list", "--json"]),
        (f"show v{mid}", ["show", f"v{mid}"]),
        ("log", ["log"]),
        ("log --limit 20", ["log", "--limit", "20"]),
        ("audit verify", ["audit", "verify"]),
    ]


def time_commands(homes: dict[int, Path], repeats: int) -> dict[str, list[bc.Run]]:
    """Interleave: every round runs each start-up probe and each command at each size once."""
    probes = [
        ("python -c pass", [sys.executable, "-c", "pass"]),
        ("import forgetctl.registry", [sys.executable, "-c", "import forgetctl.registry"]),
        ("forgetctl --help", forgetctl_argv() + ["--help"]),
        ("forgetctl --version", forgetctl_argv() + ["--version"]),
    ]
    for n, home in homes.items():
        probes += [(f"{label} @ {n:,}", forgetctl_argv() + ["--home", str(home), *args]) for label, args in commands(n)]
    runs: dict[str, list[bc.Run]] = {label: [] for label, _ in probes}
    for r in range(repeats):
        k = r % len(probes)
        for label, argv in probes[k:] + probes[:k]:
            run = bc.run_command(argv, env=bc.child_env())
            if run.returncode != 0:
                raise RuntimeError(f"`{label}` failed (exit {run.returncode}): {run.stderr.strip()[-500:]}")
            runs[label].append(run)
    return runs


def main() -> int:
    parser = bc.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=None, help="comma-separated version counts (default 1000,10000)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else ([20, 100] if args.quick else [1000, 10000])
    repeats = args.repeats or (2 if args.quick else 5)
    with bc.scratch_dir(args, "bench-registry-") as work:
        homes, populate_rows = {}, []
        for n in sizes:
            home, marker = work / f"home-{n}", work / f"home-{n}.populated.json"
            homes[n] = home
            if args.workdir and marker.is_file():  # reuse a workspace filled by an earlier run
                bc.log(f"reusing the {n:,}-version workspace in {home}")
                populate_rows.append(json.loads(marker.read_text()))
                continue
            if home.exists():
                shutil.rmtree(home)
            bc.log(f"populating {n:,} versions")
            run = bc.run_arm(__file__, "populate", {"home": str(home), "n": n})
            row = {"n": n, "seconds": run.result["section_s"], "per_version_ms": run.result["per_version_ms"],
                   "peak_rss_mb": run.peak_rss_mb}
            marker.write_text(json.dumps(row))
            populate_rows.append(row)
        bc.log(f"timing commands, {repeats} interleaved rounds")
        runs = time_commands(homes, repeats)
        floor = bc.median(r.wall_s for r in runs["python -c pass"])

        heavy = {}
        for n, home in homes.items():
            for label, cmd in commands(n):
                loaded, rc = heavy_imports(cmd, home)
                heavy[f"{label} @ {n:,}"] = {"heavy_modules": loaded, "returncode": rc}
        heavy["forgetctl --help"] = {"heavy_modules": heavy_imports(["--help"], work)[0], "returncode": 0}

        columns = ["command", "median s", "min s", "spread", "vs python -c pass", "peak RSS MB", "imports torch?"]
        rows, records = [], []
        for label, rs in runs.items():
            walls = [r.wall_s for r in rs]
            loaded = heavy.get(label, {}).get("heavy_modules")
            rows.append([
                label, bc.fmt(bc.median(walls)), bc.fmt(min(walls)), bc.fmt(bc.spread(walls)),
                bc.ratio(bc.median(walls), floor), bc.fmt(bc.median(r.peak_rss_mb for r in rs), digits=3),
                "-" if loaded is None else ("YES: " + ",".join(loaded) if loaded else "no"),
            ])
            records.append({"command": label, "median_s": bc.median(walls), "min_s": min(walls), "walls_s": walls,
                            "peak_rss_mb": bc.median(r.peak_rss_mb for r in rs), "heavy_modules": loaded})
        info = bc.machine_info()
        bc.print_table("forgetctl registry: command wall time (fresh process each run)", columns, rows,
                       caption=bc.machine_line(info))
        bc.print_table("populate (Registry API, register_adapter + compose every 50)",
                       ["versions", "total s", "ms / version", "peak RSS MB"],
                       [[f"{p['n']:,}", bc.fmt(p["seconds"]), bc.fmt(p["per_version_ms"]), bc.fmt(p["peak_rss_mb"])]
                        for p in populate_rows])

        largest = max(sizes)
        list_s = bc.median(r.wall_s for r in runs[f"list @ {largest:,}"])
        any_heavy = sorted({m for h in heavy.values() for m in h["heavy_modules"]})
        targets = {
            f"list at {largest:,} versions < {LIST_TARGET_S} s": {"value_s": list_s, "met": list_s < LIST_TARGET_S},
            "registry commands never import torch/transformers/peft": {"heavy_seen": any_heavy, "met": not any_heavy},
        }
        for name, t in targets.items():
            print(f"target: {name}: {bc.verdict(t['met'])}  ({t})")
        path = bc.save_results("registry-quick" if args.quick else "registry",
                               {"sizes": sizes, "repeats": repeats, "populate": populate_rows,
                                "commands": records, "heavy_imports": heavy, "targets": targets,
                                "markdown": bc.markdown_table(columns, rows)}, args.out)
        print(f"results: {path}")
        return 0


if __name__ == "__main__":
    if bc.is_child():
        bc.child_main(ARMS)
    else:
        sys.exit(main())
