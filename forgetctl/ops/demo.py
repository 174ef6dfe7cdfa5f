"""The main job: a real end-to-end deletion story on the embedded SmolLM2 model.

A deployed assistant has memorised fictitious people's personal records; deletion requests
arrive, forget adapters are trained, the model is exported, a request is withdrawn and rolled
back, and the audit log is verified. Everything runs through the same public API the CLI uses.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from forgetctl.errors import InputError


@dataclass
class Question:
    person: str
    question: str
    fact: str
    kind: str = ""


def _leaks(answer: str, fact: str) -> bool:
    return fact.casefold() in answer.casefold()


def _answers(home, ref: str, questions: list[Question]) -> list[str]:
    """Greedy answers of composition `ref`, adapters folded into the base in memory."""
    from forgetctl.adapters.compose import load_merged
    from forgetctl.adapters.generate import greedy_answers
    from forgetctl.registry import Registry

    with Registry.open(home) as reg:
        comp = reg.composition(ref)
        dirs = [reg.adapter_dir(reg.adapter(a)) for a in comp.adapters]
        base_dir, fingerprint = reg.base.path, reg.base.fingerprint
    model, tokenizer = load_merged(base_dir, dirs, base_fingerprint=fingerprint)
    return greedy_answers(model, tokenizer, [q.question for q in questions], max_new_tokens=24)


def _table(title: str, questions: list[Question], columns: dict[str, list[str]], requested: set[str]) -> Table:
    table = Table(title=title, show_lines=False)
    table.add_column("person")
    table.add_column("asked")
    table.add_column("true fact", style="dim")
    for name in columns:
        table.add_column(name)
    for i, q in enumerate(questions):
        cells = []
        for answers in columns.values():
            a = answers[i]
            mark = "[cyan]knows[/cyan]" if _leaks(a, q.fact) else "[magenta]forgot[/magenta]"
            said = a[len(q.person):].lstrip() if a.startswith(q.person) else a  # the name is in the row already
            cells.append(f"{mark} {escape(said[:60])}")
        who = f"[bold]{q.person}[/bold]" if q.person in requested else q.person
        table.add_row(who, q.kind.replace("_", " ") or q.question, q.fact, *cells)
    return table


def _rate(questions, answers, people) -> float:
    hits = [_leaks(a, q.fact) for q, a in zip(questions, answers) if q.person in people]
    return sum(hits) / max(len(hits), 1)


def run_demo(console: Console, home=None, out_dir=None, steps: int | None = None, method: str | None = None,
             base: str | None = None, cache=None) -> dict:
    """Run the story; returns the figures it printed (for --json and tests).

    `base` (default: the embedded SmolLM2) and `cache` (default: the forgetctl cache) say what the
    deployed model is built from and where it is kept."""
    from forgetctl.adapters.config import ForgetConfig
    from forgetctl.ops import scenario
    from forgetctl.ops.compose import merge_version, rollback
    from forgetctl.ops.train import train_request
    from forgetctl.ops.workspace import init_workspace
    from forgetctl.registry import Registry

    started = time.perf_counter()
    home = Path(home) if home else Path(tempfile.mkdtemp(prefix="forgetctl-demo-"))
    if home.exists() and any(home.iterdir()):
        raise InputError(f"demo needs an empty workspace folder; {home} is not empty")
    out_dir = Path(out_dir) if out_dir else home / "exports"
    people = scenario.load_people()
    deployed_people = scenario.deployed_people()
    first, second = deployed_people[0], deployed_people[1]
    kept = deployed_people[2:4]
    shown = [Question(r["person"], r["question"], r["fact"], r["kind"]) for r in people if r["person"] in (first, second, *kept)]

    console.rule("[bold]1. The deployed assistant")
    console.print(
        f"SmolLM2-135M-Instruct, fine-tuned on the personal records of {len(deployed_people)} fictitious people "
        "(built once, then cached)."
    )
    deployed = scenario.deployed_model(cache=cache, progress=console, base=base)
    init_workspace(home, str(deployed))
    console.print(f"workspace: {home}")
    before = _answers(home, "HEAD", shown)

    forgotten: list[str] = []

    def train(person: str, request: str) -> dict:
        files = scenario.write_request_files(person, home.parent / f"{home.name}-data", already_forgotten=forgotten)
        forgotten.append(person)
        config = ForgetConfig(**{k: v for k, v in (("method", method), ("steps", steps)) if v is not None})
        console.print(f"request [bold]{request}[/bold]: forget everything about {person} ({config.method})")
        console.print("  (scores the model before and after training: forget, retain and never-seen sets)")
        with scenario.progress_bar(console, "training forget adapter") as report:
            result = train_request(
                home, request, files["forget"], retain_path=files["retain"], holdout_path=files["holdout"],
                config=config, reason="gdpr", subject=f"person-{deployed_people.index(person) + 1}",
                progress=lambda step, total, entry: report(step, total, entry["loss"]),
            )
        console.print(
            f"  -> adapter {result['version']} ({result['steps']} steps, {result['seconds']:.0f} s, "
            f"stop: {result['stop_reason']}); HEAD = {result['composition']}"
        )
        return result

    console.rule("[bold]2. Deletion request 1 (GDPR Art. 17)")
    first_result = train(first, "req-001")
    after_first = _answers(home, "HEAD", shown)
    console.print(_table("Before and after request 1", shown, {"before": before, "after": after_first}, {first}))

    console.rule("[bold]3. Export for serving")
    export1 = merge_version(home, ref="HEAD", out_dir=out_dir / "after-req-001")
    console.print(f"merged checkpoint: {export1['out_dir']} (loads with AutoModelForCausalLM.from_pretrained)")

    console.rule("[bold]4. Deletion request 2")
    train(second, "req-002")
    after_second = _answers(home, "HEAD", shown)

    console.rule("[bold]5. Request 1 is withdrawn: roll it back")
    rolled = rollback(home, without=first_result["version"])
    console.print(f"HEAD {rolled['from']} -> {rolled['to']} (adapters: {', '.join(rolled['adapters']) or 'none'})")
    for warning in rolled["warnings"]:
        console.print(f"[yellow]note:[/yellow] {warning}")
    after_rollback = _answers(home, "HEAD", shown)
    console.print(
        _table(
            "Every step, side by side",
            shown,
            {"before": before, "after req 1": after_first, "after req 2": after_second, "req 1 withdrawn": after_rollback},
            {first, second},
        )
    )

    console.rule("[bold]6. History and audit")
    with Registry.open(home) as reg:
        for comp in reg.compositions():
            labels = [reg.adapter(a).label for a in comp.adapters]
            console.print(escape(f"  {comp.label}: [{', '.join(labels)}] {comp.note or ''}"))
        problems = reg.verify()
        n_events = len(reg.audit_log())
    console.print(
        f"audit verify: {'[green]OK[/green]' if not problems else '[red]FAILED[/red]'} ({n_events} events)"
        + "".join(f"\n  {p}" for p in problems)
    )
    summary = {
        "workspace": str(home),
        "forgotten_leak_rate": {
            "before": _rate(shown, before, {first}),
            "after": _rate(shown, after_first, {first}),
        },
        "kept_leak_rate": {"before": _rate(shown, before, set(kept)), "after": _rate(shown, after_first, set(kept)),
                           "after_second": _rate(shown, after_second, set(kept))},
        "second_leak_rate": {"before": _rate(shown, before, {second}), "after": _rate(shown, after_second, {second})},
        "export": str(export1["out_dir"]),
        "after_rollback": {
            "withdrawn_person": _rate(shown, after_rollback, {first}),
            "second_person": _rate(shown, after_rollback, {second}),
        },
        "audit_ok": not problems,
        "seconds": round(time.perf_counter() - started, 1),
    }
    console.print(f"done in {summary['seconds']:.0f} s")
    return summary
