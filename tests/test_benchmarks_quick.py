"""Smoke tests for the benchmark scripts: each --quick mode runs, exits 0, prints its table and
its target lines, and writes its results JSON. The figures themselves are not asserted: timing
belongs to the benchmarks, never to unit tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = REPO / "scripts"


def run_quick(script: str, tmp_path: Path) -> tuple[str, dict]:
    out = tmp_path / f"{script}.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, str(SCRIPTS / f"{script}.py"), "--quick", "--out", str(out), "--workdir", str(tmp_path / "work")],
        capture_output=True, text=True, timeout=300, env=env, cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert out.is_file(), "no results JSON written"
    return proc.stdout, json.loads(out.read_text())


def check_common(stdout: str, data: dict, title: str) -> None:
    assert title in stdout
    assert "target:" in stdout
    assert data["machine"]["cpu_count"] >= 1
    assert data["targets"], "no targets evaluated"
    assert all(isinstance(t["met"], bool) for t in data["targets"].values())
    assert data["markdown"].startswith("| ")


def test_bench_registry_quick(tmp_path):
    stdout, data = run_quick("bench_registry", tmp_path)
    check_common(stdout, data, "forgetctl registry")
    labels = {c["command"] for c in data["commands"]}
    assert {"python -c pass", "list @ 100", "audit verify @ 100"} <= labels
    assert all(c["heavy_modules"] is not None for c in data["commands"] if "@" in c["command"])


def test_bench_compose_quick(tmp_path):
    stdout, data = run_quick("bench_compose", tmp_path)
    check_common(stdout, data, "merge/export vs safetensors")
    assert [a["arm"] for a in data["arms"]] == ["floor", "merge x1", "merge x4"]
    # a merged export has exactly the base's tensors: the same size as the floor's copy (to the byte, near enough)
    sizes = {a["arm"]: a["export_mb"] for a in data["arms"]}
    assert sizes["merge x4"] == pytest.approx(sizes["floor"], rel=0.01)


def test_bench_serving_quick(tmp_path):
    stdout, data = run_quick("bench_serving", tmp_path)
    check_common(stdout, data, "generation, batch 1")
    arms = {a["arm"]: a for a in data["arms"]}
    assert {"base", "merged export (x4)", "stacked x4"} <= set(arms)
    assert all(a["tokens_per_s"] > 0 for a in arms.values())
    # the merged export and the stacked adapters are the same function: same greedy tokens
    assert arms["merged export (x4)"]["tokens_digest"] == arms["stacked x4"]["tokens_digest"]


def test_bench_deletion_cost_quick(tmp_path):
    stdout, data = run_quick("bench_deletion_cost", tmp_path)
    check_common(stdout, data, "cost of one deletion")
    assert set(data["arms"]) == {"forget adapter", "full-parameter unlearning", "retrain on retain only"}
    for runs in data["arms"].values():
        assert "forget_nll" in runs[0]["scores"] and runs[0]["artifact_mb"] > 0
    # the adapter is a small fraction of the full-model artifacts the other two write
    assert data["arms"]["forget adapter"][0]["artifact_mb"] < data["arms"]["full-parameter unlearning"][0]["artifact_mb"]


def test_compare_methods_quick(tmp_path):
    stdout, data = run_quick("compare_methods", tmp_path)
    assert "one deletion, every method" in stdout and "best trade-off:" in stdout
    assert set(data["methods"]) == {"grad_ascent", "grad_diff", "npo", "simnpo", "idk", "rmu"}
    assert data["best"] in data["methods"] and data["default"] in data["methods"]
    for row in data["methods"].values():
        assert row["steps"] >= 1 and "forget_exact_answer_rate" in row["scores"]
    assert set(data["references"]) == {"deployed (before)", "never-seen (target)"}
