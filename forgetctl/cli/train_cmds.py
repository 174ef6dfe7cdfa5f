"""`forgetctl train` (one deletion request -> one registered forget adapter) and `forgetctl methods`.

torch is imported only inside the commands, through forgetctl.ops / forgetctl.adapters.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from forgetctl.cli.common import emit, home_of, json_option, one_line_errors
from forgetctl.errors import InputError

REASONS = ("gdpr", "copyright", "toxicity", "other")  # kept equal to forgetctl.registry.REASONS (tested)

# CLI option -> ForgetConfig field; only options actually given override the config.
_OVERRIDES = {
    "method": "method", "rank": "rank", "alpha": "alpha", "dropout": "dropout", "lr": "lr", "steps": "steps",
    "epochs": "epochs", "batch_size": "batch_size", "grad_accum": "grad_accum", "max_length": "max_length",
    "seed": "seed", "device": "device", "gradient_checkpointing": "gradient_checkpointing",
    "retain_weight": "retain_weight", "kl_weight": "kl_weight", "forget_nll_target": "forget_nll_target",
    "extraction_target": "extraction_target",
}
_SHOWN_TERMS = ("loss", "npo", "simnpo", "forget_nll", "retain_nll", "idk_nll", "rmu_forget", "rmu_retain", "retain_kl")


def build_config(config_file, options: dict):
    """ForgetConfig from an optional JSON file, then the options given on the command line."""
    from forgetctl.adapters.config import ForgetConfig

    data = {}
    if config_file:
        try:
            data = json.loads(Path(config_file).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot read config {Path(config_file).name}: {exc}") from None
        if not isinstance(data, dict):
            raise InputError(f"config {Path(config_file).name} must be a JSON object")
    given = {field: options[opt] for opt, field in _OVERRIDES.items() if options.get(opt) is not None}
    if "epochs" in given and "steps" not in given:
        given["steps"] = None  # epochs replace the default step budget
    if "steps" in given and "epochs" not in given:
        given["epochs"] = None
    return ForgetConfig.from_dict({**data, **given})


def _progress_bar(console):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(
        TextColumn("[bold]training"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
        TextColumn("{task.fields[terms]}"), console=console, transient=False,
    )


def _terms_text(entry: dict) -> str:
    return "  ".join(f"{k}={entry[k]:.3f}" for k in _SHOWN_TERMS if k in entry)


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)


def _render_summary(console, result: dict) -> None:
    from rich.table import Table

    head = Table(title=f"request {result['request_id']} -> {result['version']} · HEAD {result['parent']} -> {result['composition']}",
                 title_justify="left", show_header=False)
    for key in ("method", "steps", "stop_reason", "seconds", "device", "dtype", "adapter_id"):
        head.add_row(key, _fmt(result[key]))
    console.print(head)
    before, after = result["metrics_before"], result["metrics_after"]
    if before or after:
        table = Table(title="evaluation before -> after", title_justify="left")
        for column in ("metric", "before", "after", "change"):
            table.add_column(column, justify="left" if column == "metric" else "right")
        for key in sorted(set(before) | set(after)):
            b, a = before.get(key), after.get(key)
            change = f"{a - b:+.4g}" if a is not None and b is not None else "-"
            table.add_row(key, _fmt(b), _fmt(a), change)
        console.print(table)
    for warning in result["warnings"]:
        console.print(f"[yellow]warning:[/yellow] {warning}")


@click.command("train")
@click.option("--request", "request_id", required=True, help="Deletion request id (becomes the version's name).")
@click.option("--forget", "forget_path", required=True, type=click.Path(dir_okay=False), help="Records to forget (.jsonl/.json/.txt).")
@click.option("--retain", "retain_path", type=click.Path(dir_okay=False), help="Records to keep (retain loss and bound).")
@click.option("--holdout", "holdout_path", type=click.Path(dir_okay=False),
              help="Never-seen records like the forget ones: stop when forgetting reaches their level; MIA AUC.")
@click.option("--method", help="Unlearning method (see `forgetctl methods`).")
@click.option("--reason", type=click.Choice(REASONS), default="other", show_default=True)
@click.option("--subject", help="Short label of the data subject or work (stored in the registry).")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="JSON file of ForgetConfig fields.")
@click.option("--rank", type=int)
@click.option("--alpha", type=float)
@click.option("--dropout", type=float)
@click.option("--lr", type=float)
@click.option("--steps", type=int, help="Optimizer steps (default 40).")
@click.option("--epochs", type=float, help="Passes over the forget set (instead of --steps).")
@click.option("--batch-size", type=int)
@click.option("--grad-accum", type=int)
@click.option("--max-length", type=int)
@click.option("--seed", type=int)
@click.option("--device", help="auto (default), cpu, cuda, cuda:1...")
@click.option("--gradient-checkpointing/--no-gradient-checkpointing", default=None)
@click.option("--retain-weight", type=float)
@click.option("--kl-weight", type=float, help="Add KL(reference || model) on the retain set to any method.")
@click.option("--forget-nll-target", type=float, help="Stop early once the forget NLL reaches this.")
@click.option("--extraction-target", type=float, help="Stop early once at most this share of forget answers is reproduced.")
@click.option("--no-eval", is_flag=True, help="Skip the before/after evaluation.")
@json_option
@click.pass_context
@one_line_errors
def train_cmd(ctx, request_id, forget_path, retain_path, holdout_path, reason, subject, config_file, no_eval, as_json, **options):
    """Train a forget adapter for one deletion request on top of HEAD, register it and move HEAD."""
    from rich.console import Console

    from forgetctl.ops.train import train_request

    config = build_config(config_file, options)
    console = Console(stderr=True)
    bar = None if as_json else _progress_bar(console)
    task = None

    def progress(step, total, entry):
        nonlocal task
        if task is None:  # started on the first step, so input errors print nothing but their line
            bar.start()
            task = bar.add_task("train", total=total, terms="")
        bar.update(task, completed=step, terms=_terms_text(entry))

    try:
        result = train_request(
            home_of(ctx), request_id, forget_path, retain_path, config=config, reason=reason, subject=subject,
            holdout_path=holdout_path, progress=progress if bar else None, evaluate=not no_eval,
        )
    finally:
        if task is not None:
            bar.stop()
    emit(result, as_json, lambda r: _render_summary(Console(), r))


@click.command("methods")
@json_option
@one_line_errors
def methods_cmd(as_json):
    """List the unlearning methods and what each needs."""
    from forgetctl.adapters.config import DEFAULT_METHOD
    from forgetctl.adapters.objectives import OBJECTIVES

    rows = [{"name": o.name, "default": o.name == DEFAULT_METHOD, "needs": sorted(o.needs), "summary": o.summary}
            for o in OBJECTIVES.values()]

    def render(items):
        from rich.console import Console
        from rich.table import Table

        table = Table(title="unlearning methods (--method)", title_justify="left")
        for column in ("method", "needs", "what it does"):
            table.add_column(column)
        for r in items:
            table.add_row(r["name"] + (" (default)" if r["default"] else ""), ", ".join(r["needs"]) or "-", r["summary"])
        Console().print(table)

    emit(rows, as_json, render)


COMMANDS = [train_cmd, methods_cmd]
