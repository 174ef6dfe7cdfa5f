"""The fictitious-people scenario on the real model: a deployed assistant that has memorised
personal records, the requests to forget some people, and the gold standard that never saw them.

The shipped data (forgetctl/data/people.jsonl, people_splits.json; made by
scripts/make_people_dataset.py) lists people with six facts each. "Deployed" people are taught
to the deployed model; "never seen" people are the holdout: same format, never trained on.
Built models are cached under the forgetctl cache root, keyed by a hash of the base weights, the
taught records and the recipe, so the demo, the tests and the benchmark share one build.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Callable

from forgetctl.errors import InputError
from forgetctl.records import Record

RECIPE_VERSION = 1
# What the deployed assistant is taught with (see forgetctl.adapters.finetune.TeachConfig);
# measured to memorise the deployed people's facts on a 2-core CPU in a few minutes.
TEACH = {"epochs": 8, "lr": 3e-4, "batch_size": 8, "seed": 0, "max_length": 128, "warmup_steps": 5,
         "train_embeddings": False}

Progress = Callable[[int, int, float], None]


@lru_cache(maxsize=1)
def _data() -> tuple[tuple[dict, ...], dict]:
    folder = resources.files("forgetctl.data")
    rows = tuple(json.loads(line) for line in folder.joinpath("people.jsonl").read_text(encoding="utf-8").splitlines()
                 if line.strip())
    splits = json.loads(folder.joinpath("people_splits.json").read_text(encoding="utf-8"))
    return rows, splits


def load_people() -> list[dict]:
    """Every fact row: person, kind, question, answer, fact (copies; safe to modify)."""
    return [dict(r) for r in _data()[0]]


def deployed_people() -> list[str]:
    return list(_data()[1]["deployed"])


def never_seen_people() -> list[str]:
    return list(_data()[1]["never_seen"])


def _rows_of(people) -> list[dict]:
    wanted = set(people)
    return [r for r in load_people() if r["person"] in wanted]


def _record(row: dict) -> Record:
    return Record(question=row["question"], answer=row["answer"])


def _check_forget_people(forget_people) -> list[str]:
    forget_people = [forget_people] if isinstance(forget_people, str) else list(forget_people)
    if not forget_people:
        raise InputError("name at least one person to forget")
    unknown = [p for p in forget_people if p not in deployed_people()]
    if unknown:
        raise InputError(f"not a deployed person of the scenario: {unknown[0]}")
    return forget_people


def scenario_rows(forget_people, already_forgotten=()) -> dict[str, list[dict]]:
    """forget: the named deployed people's rows; retain: the other deployed people's, less those
    `already_forgotten` by earlier requests (retaining them would teach them back); holdout: the
    never-seen people's (data the deployed model never saw)."""
    forget_people = _check_forget_people(forget_people)
    gone = set(forget_people) | set(already_forgotten)
    kept = [p for p in deployed_people() if p not in gone]
    return {"forget": _rows_of(forget_people), "retain": _rows_of(kept), "holdout": _rows_of(never_seen_people())}


def scenario_sets(forget_people) -> dict[str, list[Record]]:
    """The same splits as Records (what the trainer and evaluate_model take)."""
    return {name: [_record(r) for r in rows] for name, rows in scenario_rows(forget_people).items()}


def scenario_facts(forget_people) -> dict[str, list[str]]:
    """Per split, the short fact of each record that counts as a leak when generated (evaluate_model's answer_keys)."""
    return {name: [r["fact"] for r in rows] for name, rows in scenario_rows(forget_people).items()}


def _write_jsonl_atomic(path: Path, rows: list[dict]) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    os.replace(tmp, path)


def write_scenario_files(forget_people, out_dir, already_forgotten=()) -> dict[str, Path]:
    """Write forget/retain/holdout JSONL files (question, answer, fact) for the CLI; returns their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, rows in scenario_rows(forget_people, already_forgotten).items():
        path = out_dir / f"{name}.jsonl"
        _write_jsonl_atomic(path, [{"question": r["question"], "answer": r["answer"], "fact": r["fact"]} for r in rows])
        paths[name] = path
    return paths


def write_request_files(person: str, out_dir, already_forgotten=()) -> dict[str, Path]:
    """Files for one person's deletion request, in a per-person subfolder of `out_dir`."""
    slug = hashlib.sha256(person.encode("utf-8")).hexdigest()[:10]  # no name in the path
    return write_scenario_files([person], Path(out_dir) / f"request-{slug}", already_forgotten)


# ---- building the models ------------------------------------------------------------------


def _cache_dir(cache) -> Path:
    if cache is not None:
        return Path(cache)
    from forgetctl.adapters.base_model import cache_root

    return cache_root() / "scenario"


def _recipe_key(base_dir: Path, records: list[Record], teach: dict, cache=None) -> str:
    from forgetctl.registry.fingerprint import fingerprint

    h = hashlib.sha256()
    h.update(json.dumps({"recipe": RECIPE_VERSION, "teach": teach}, sort_keys=True).encode())
    h.update(fingerprint(base_dir, cache_file=_cache_dir(cache) / "fingerprints.json").encode())
    for r in records:
        h.update(hashlib.sha256(r.canonical_bytes()).digest())
    return h.hexdigest()[:16]


def progress_bar(progress, label: str):
    """Accept a plain callback, a rich Console (shows a progress bar) or None."""
    from contextlib import nullcontext

    if progress is None or callable(progress) and not hasattr(progress, "print"):
        return nullcontext(progress)
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    class _Bar:
        def __enter__(self):
            self.bar = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                                TextColumn("loss {task.fields[loss]:.3f}"), TimeElapsedColumn(), TimeRemainingColumn(),
                                console=progress, transient=False)
            self.bar.__enter__()
            self.task = self.bar.add_task(label, total=None, loss=float("nan"))
            return lambda step, total, loss: self.bar.update(self.task, completed=step, total=total, loss=loss)

        def __exit__(self, *exc):
            return self.bar.__exit__(*exc)

    return _Bar()


def _build(name: str, records: list[Record], cache, progress, base: str | None) -> Path:
    from forgetctl.adapters.base_model import resolve_base
    from forgetctl.adapters.finetune import TeachConfig, teach_facts

    base_dir = resolve_base(base)
    out = _cache_dir(cache) / f"{name}-{_recipe_key(base_dir, records, TEACH, cache)}"
    if out.joinpath("model.safetensors").is_file():
        return out
    with progress_bar(progress, f"teaching {name} model") as report:
        teach_facts(base_dir, records, out, config=TeachConfig(**TEACH), progress=report)
    return out


def deployed_model(cache=None, progress=None, base: str | None = None) -> Path:
    """The deployed assistant: the base taught every deployed person's facts (built once, cached).

    `progress`: a callback (step, total, loss), a rich Console for a progress bar, or None.
    """
    return _build("deployed", [_record(r) for r in _rows_of(deployed_people())], cache, progress, base)


def never_seen_model(excluded_people, cache=None, progress=None, base: str | None = None) -> Path:
    """The gold standard for forgetting `excluded_people`: the same recipe without their records."""
    excluded = _check_forget_people(excluded_people)
    kept = [p for p in deployed_people() if p not in excluded]
    return _build("never-seen", [_record(r) for r in _rows_of(kept)], cache, progress, base)
