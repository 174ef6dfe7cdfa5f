"""Registry commands: init, list, show, log, audit verify, prove, alias, history.

Nothing here imports torch: only `init` reaches the torch side, lazily, through forgetctl.ops.
"""

from __future__ import annotations

import sys

import click

from forgetctl.cli.common import emit, home_of, json_option, one_line_errors
from forgetctl.errors import InputError, IntegrityError


def _open(ctx):
    from forgetctl.registry import Registry

    return Registry.open(home_of(ctx))


def _console():
    from rich.console import Console

    return Console()


def _table(title: str, *columns: str):
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column)
    return table


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value)


@click.command("init")
@click.option("--base", "base_spec", default=None, metavar="MODEL",
              help="Base model: smollm2 (default), a transformers folder, a .gguf file or a Hub id.")
@json_option
@click.pass_context
@one_line_errors
def init_cmd(ctx, base_spec, as_json):
    """Create a workspace bound to one frozen base model (no-op if it already is)."""
    from forgetctl.ops.workspace import init_workspace

    reg = init_workspace(home_of(ctx), base_spec)
    data = {"home": str(reg.home), "base": reg.base.to_dict(), "head": reg.head().label}

    def render(d):
        click.echo(f"workspace {d['home']}\nbase {d['base']['spec']} ({d['base']['fingerprint']})\nHEAD -> {d['head']}")

    emit(data, as_json, render)


LIST_SHOWN = 50  # table rows by default: the newest versions; --all for every one


@click.command("list")
@click.option("--all", "show_all", is_flag=True, help=f"Every version, not only the newest {LIST_SHOWN} (--json always lists all).")
@json_option
@click.pass_context
@one_line_errors
def list_cmd(ctx, show_all, as_json):
    """List adapter versions (newest last)."""
    with _open(ctx) as reg:
        head = set(reg.head().adapters)
        versions = reg.adapters(with_meta=False)
    data = [{**v.to_dict(), "in_head": v.id in head} for v in versions]
    for row in data:
        del row["meta"]  # the sidecar is `show`'s business

    def render(rows):
        hidden = 0 if show_all else max(0, len(rows) - LIST_SHOWN)
        table = _table("adapter versions", "version", "id", "request", "reason", "subject", "method", "created", "in HEAD")
        for r in rows[hidden:]:
            table.add_row(r["label"], r["id"][:12], r["request_id"], r["reason"], r["subject"], r["method"],
                          r["created_at"][:19], "yes" if r["in_head"] else "")
        _console().print(table if rows else "no adapter versions yet")
        if hidden:
            _console().print(f"{hidden:,} older versions not shown: --all lists every one")

    emit(data, as_json, render)


def _render_metrics(title: str, metrics: dict):
    table = _table(title, "metric", "value")
    for name, value in sorted(metrics.items()):
        table.add_row(name, _fmt(value))
    return table


def _render_adapter(d):
    console = _console()
    console.print(f"[bold]{d['label']}[/bold] {d['id']}")
    for key in ("request_id", "reason", "subject", "method", "base_fingerprint", "created_at", "folder"):
        console.print(f"  {key}: {d.get(key)}")
    lineage = d["lineage"]
    console.print(f"  parent: {lineage['parent_label'] or lineage['parent_composition'] or '-'}")
    used = ", ".join(u["label"] + (f" ({', '.join(u['pointers'])})" if u["pointers"] else "") for u in lineage["used_in"])
    console.print(f"  used in: {used or '-'}")
    if d["commitment"]:
        console.print(f"  commitment: {d['commitment']['count']} records, root {d['commitment']['root'][:16]}")
    meta = d["meta"]
    for key in ("stop_reason", "steps", "device", "dtype", "started_at", "finished_at"):
        if key in meta:
            console.print(f"  {key}: {meta[key]}")
    before, after = d["metrics_before"], d["metrics_after"]
    if before or after:
        table = _table("metrics", "metric", "before", "after")
        for name in sorted(set(before) | set(after)):
            table.add_row(name, _fmt(before.get(name)), _fmt(after.get(name)))
        console.print(table)


def _render_composition(d):
    console = _console()
    pointers = f" ({', '.join(d['pointers'])})" if d["pointers"] else ""
    console.print(f"[bold]{d['label']}[/bold]{pointers} {d['id']}")
    console.print(f"  adapters: {' + '.join(d['adapter_labels']) or 'none (pristine base)'}")
    console.print(f"  note: {d['note'] or '-'}   created: {d['created_at']}")
    console.print(f"  lineage: {' <- '.join(x['label'] or x['composition'][:12] for x in d['lineage']) or '-'}")
    if d["metrics"]:
        console.print(_render_metrics("latest evaluations", d["metrics"]))


def _render_comparison(d):
    left, right = d["left"]["label"], d["right"]["label"]
    table = _table(f"{left} vs {right}", "metric", left, right, "delta")
    for row in d["metrics"]:
        table.add_row(row["metric"], _fmt(row["left"]), _fmt(row["right"]), _fmt(row["delta"]))
    _console().print(table if d["metrics"] else f"no stored metrics for {left} or {right}")


@click.command("show")
@click.argument("refs", nargs=-1, required=True)
@json_option
@click.pass_context
@one_line_errors
def show_cmd(ctx, refs, as_json):
    """Show an adapter version (v3, 3, request id, hash) or a composition (HEAD, alias, c3).
    Two refs: compare their stored metrics side by side."""
    from forgetctl.registry import views

    if len(refs) > 2:
        raise InputError("show takes one ref, or two to compare")
    with _open(ctx) as reg:
        if len(refs) == 2:
            emit(views.compare(reg, *refs), as_json, _render_comparison)
            return
        data = views.describe(reg, refs[0])
    emit(data, as_json, _render_adapter if data["kind"] == "adapter" else _render_composition)


@click.command("log")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Only the last N entries.")
@click.option("--action", default=None, help="Only entries of this action (register, train, rollback...).")
@json_option
@click.pass_context
@one_line_errors
def log_cmd(ctx, limit, action, as_json):
    """Show the audit log (oldest first)."""
    with _open(ctx) as reg:
        entries = [e for e in reg.audit_log() if action is None or e.action == action]
    if limit:
        entries = entries[-limit:]
    data = [e.to_dict() for e in entries]

    def render(rows):
        table = _table("audit log", "seq", "time", "actor", "action", "outputs", "hash")
        for r in rows:
            outputs = ", ".join(
                f"{k}={str(v)[:12]}" for k, v in sorted(r["outputs"].items()) if k not in ("rows", "manifest")
            )
            table.add_row(str(r["seq"]), r["time"][:19], r["actor"], r["action"], outputs, r["hash"][:12])
        _console().print(table)

    emit(data, as_json, render)


@click.group("audit")
def audit_group():
    """Check the audit trail and the stored files."""


@audit_group.command("verify")
@click.option("--record", is_flag=True, help="Append a 'verify' event with the result to the audit log.")
@json_option
@click.pass_context
@one_line_errors
def verify_cmd(ctx, record, as_json):
    """Verify the hash chain, its JSONL mirror, every row and every stored file. Read-only unless
    --record; exits non-zero if anything does not match."""
    with _open(ctx) as reg:
        problems = reg.verify()
        entries = len(reg.audit_log())
        versions = len(reg.adapters())
        if record:
            reg.record_verification(problems)
    data = {"ok": not problems, "problems": problems, "entries": entries, "adapter_versions": versions}

    def render(d):
        if d["ok"]:
            click.echo(f"ok: {d['entries']} audit entries and {d['adapter_versions']} adapter versions verified")
        for problem in d["problems"]:
            click.echo(f"problem: {problem}", err=True)

    emit(data, as_json, render)
    if problems:
        sys.exit(IntegrityError.exit_code)


@click.command("prove")
@click.argument("request")
@click.option("--data", "data_file", required=True, type=click.Path(dir_okay=False),
              help="The records to check (.jsonl, .json or .txt), handed in again.")
@json_option
@click.pass_context
@one_line_errors
def prove_cmd(ctx, request, data_file, as_json):
    """Tell, record by record, whether REQUEST (a request id or version) covered them."""
    from forgetctl.records import load_records

    records = load_records(data_file)
    with _open(ctx) as reg:
        data = reg.prove(request, records)

    def render(d):
        table = _table(f"request {d['request_id']} ({d['version']}, {d['committed']} records committed)", "record", "covered")
        for r in d["records"]:
            table.add_row(str(r["index"]), "yes" if r["covered"] else "no")
        _console().print(table)
        click.echo(f"{d['covered']} of {d['checked']} records covered")

    emit(data, as_json, render)


@click.command("alias")
@click.argument("name")
@click.argument("target")
@json_option
@click.pass_context
@one_line_errors
def alias_cmd(ctx, name, target, as_json):
    """Point alias NAME (e.g. production) at composition TARGET (c3, HEAD, another alias)."""
    with _open(ctx) as reg:
        comp = reg.set_alias(name, target)
    data = {"alias": name, "composition": comp.id, "label": comp.label}
    emit(data, as_json, lambda d: click.echo(f"{d['alias']} -> {d['label']} ({d['composition'][:12]})"))


@click.command("history")
@json_option
@click.pass_context
@one_line_errors
def history_cmd(ctx, as_json):
    """Compositions and every pointer move, oldest first."""
    from forgetctl.registry import views

    with _open(ctx) as reg:
        data = views.history(reg)

    def render(d):
        console = _console()
        comps = _table("compositions", "composition", "adapters", "parent", "note", "created", "pointers")
        at = {}
        for name, p in d["pointers"].items():
            at.setdefault(p["composition"], []).append(name)
        for c in d["compositions"]:
            comps.add_row(c["label"], " + ".join(c["adapter_labels"]) or "(base)", c["parent_label"] or "-",
                          c["note"], c["created_at"][:19], ", ".join(sorted(at.get(c["id"], []))))
        moves = _table("pointer moves", "#", "pointer", "from", "to", "action", "actor", "time")
        for m in d["moves"]:
            moves.add_row(str(m["seq"]), m["name"], m["from_label"] or "-", m["to_label"] or m["to_id"][:12],
                          m["action"], m["actor"], m["time"][:19])
        console.print(comps)
        console.print(moves)

    emit(data, as_json, render)


COMMANDS = [init_cmd, list_cmd, show_cmd, log_cmd, audit_group, prove_cmd, alias_cmd, history_cmd]
