"""eval, compare, report: thin wrappers over forgetctl.ops.evaluate (torch loads lazily)."""

from __future__ import annotations

import click

from forgetctl.cli.common import emit, home_of, json_option, one_line_errors

SETS = ("forget", "retain", "holdout", "general")
ROWS = [
    ("nll", "mean NLL"),
    ("answer_prob", "answer probability"),
    ("exact_mem", "exact memorisation"),
    ("rougeL_recall", "ROUGE-L recall (greedy)"),
    ("exact_answer_rate", "exact-answer rate (greedy)"),
    ("ppl", "perplexity"),
    ("kl", "KL from base"),
    ("truth_ratio", "truth ratio"),
    ("quality", "forget quality (KS p)"),
    ("count", "records"),
    ("truncated", "truncated"),
]
MIA = [("loss", "LOSS"), ("zlib", "ZLib"), ("mink", "Min-K%"), ("minkpp", "Min-K%++")]


def _console():
    from rich.console import Console

    return Console()


def _fmt(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.0f}" if value.is_integer() and abs(value) < 1e6 else f"{value:.4g}"
    return str(value)


def _render_eval(r: dict) -> None:
    from rich.table import Table

    m = r["metrics"]
    sets = [s for s in SETS if f"{s}_count" in m]
    table = Table(title=f"{r['composition']} ({', '.join(r['adapters']) or 'pristine base'}) · evaluation #{r['evaluation']}")
    table.add_column("metric")
    for s in sets:
        table.add_column(s, justify="right")
    for key, name in ROWS:
        if any(f"{s}_{key}" in m for s in sets):
            table.add_row(name, *[_fmt(m.get(f"{s}_{key}")) for s in sets])
    console = _console()
    console.print(table)
    if any(f"mia_{a}_auc" in m for a, _ in MIA):
        mia = Table(title="membership inference, forget vs holdout (0.5 = cannot tell)")
        for _, name in MIA:
            mia.add_column(name, justify="right")
        mia.add_row(*[_fmt(m.get(f"mia_{a}_auc")) for a, _ in MIA])
        console.print(mia)
    for note in r["notes"]:
        console.print(f"[yellow]note:[/yellow] {note}")


def _render_compare(r: dict) -> None:
    from rich.table import Table

    left, right = r["left"]["label"], r["right"]["label"]
    table = Table(title=f"{left} vs {right}")
    for name in ("metric", left, right, "delta"):
        table.add_column(name, justify="left" if name == "metric" else "right")
    for row in r["metrics"]:
        delta = row["delta"]
        shown = "–" if delta is None else f"{delta:+.4g}"
        table.add_row(row["metric"], _fmt(row["left"]), _fmt(row["right"]), shown)
    _console().print(table)


def _render_report(r: dict) -> None:
    click.echo(
        f"report ({r['format']}) of {r['compositions']} composition(s), {r['evaluated']} evaluated, "
        f"{r['adapters']} adapter(s), {r['pointer_moves']} pointer move(s):"
    )
    for path in r["files"]:
        click.echo(f"  {path}")


data_file = click.Path(dir_okay=False)


@click.command("eval")
@click.option("--version", "ref", default="HEAD", show_default=True, help="Composition to evaluate (HEAD, alias, c3, ...).")
@click.option("--forget", required=True, type=data_file, help="Forget set (.jsonl/.json/.txt); TOFU *_perturbed fields enable truth ratios.")
@click.option("--retain", type=data_file, default=None, help="Retain set: knowledge that must stay.")
@click.option("--holdout", type=data_file, default=None, help="Data the model never saw: the membership-inference baseline.")
@click.option("--general", type=data_file, default=None, help="General text for perplexity.")
@click.option("--retain-model", type=click.Path(file_okay=False), default=None,
              help="A model never trained on the forget set (transformers folder): enables forget quality.")
@click.option("--max-length", type=click.IntRange(min=8), default=256, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True)
@click.option("--max-new-tokens", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--no-generate", is_flag=True, help="Skip greedy generation (no ROUGE-L / exact-answer rate).")
@click.option("--device", default=None, help="cpu, cuda, ... (default: automatic).")
@click.option("--label", default="eval", show_default=True, help="Label stored with the evaluation.")
@click.option("--actor", default=None, help="Who is acting (recorded in the audit log).")
@json_option
@click.pass_context
@one_line_errors
def eval_cmd(ctx, ref, forget, retain, holdout, general, retain_model, max_length, batch_size, max_new_tokens,
             no_generate, device, label, actor, as_json):
    """Measure forgetting, leakage and utility of a composition; store the numbers with it."""
    from forgetctl.ops.evaluate import evaluate_version

    result = evaluate_version(
        home_of(ctx), ref=ref, forget=forget, retain=retain, holdout=holdout, general=general,
        retain_model=retain_model, actor=actor, max_length=max_length, batch_size=batch_size,
        generate=not no_generate, max_new_tokens=max_new_tokens, device=device, label=label,
    )
    emit(result, as_json, _render_eval)


@click.command("compare")
@click.argument("ref_a")
@click.argument("ref_b")
@json_option
@click.pass_context
@one_line_errors
def compare_cmd(ctx, ref_a, ref_b, as_json):
    """Stored metrics of two compositions (or adapter versions) side by side."""
    from forgetctl.ops.evaluate import compare

    emit(compare(home_of(ctx), ref_a, ref_b), as_json, _render_compare)


@click.command("report")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--format", "fmt", type=click.Choice(["html", "md"]), default="html", show_default=True)
@json_option
@click.pass_context
@one_line_errors
def report_cmd(ctx, out_dir, fmt, as_json):
    """Write the history report: forget and utility scores of every composition, rollbacks marked."""
    from forgetctl.ops.evaluate import build_report

    emit(build_report(home_of(ctx), out_dir, fmt), as_json, _render_report)


COMMANDS = [eval_cmd, compare_cmd, report_cmd]
