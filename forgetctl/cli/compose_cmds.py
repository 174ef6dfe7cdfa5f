"""merge, squash, rollback, generate: thin wrappers over forgetctl.ops.compose (torch loads lazily)."""

from __future__ import annotations

import click

from forgetctl.cli.common import emit, home_of, json_option, one_line_errors

actor_option = click.option("--actor", default=None, help="Who is acting (recorded in the audit log).")


def _render_merge(r: dict) -> None:
    click.echo(f"merged {r['composition']} ({len(r['adapters'])} adapter(s): {' '.join(r['adapters']) or 'none'}) into {r['out_dir']}")
    for name, digest in sorted(r["weight_files"].items()):
        click.echo(f"  {name}  sha256:{digest}")
    click.echo(f"  dtypes {', '.join(r['dtypes'])}; {r['tensors_changed']}/{r['tensors']} tensors changed; audit #{r['audit_seq']}")


def _render_squash(r: dict) -> None:
    click.echo(f"squashed {' '.join(r['adapters'])} ({r['mode']}, rank {r['rank']}, {r['modules']} modules) into {r['out_dir']}")
    if r["mode"] == "svd":
        click.echo(f"  relative Frobenius error: overall {r['relative_error']:.3e}, worst module {r['max_module_error']:.3e}")


def _render_rollback(r: dict) -> None:
    if not r["moved"]:
        click.echo(f"HEAD already at {r['to']}; nothing moved")
    else:
        click.echo(f"HEAD {r['from']} -> {r['to']} (adapters: {' '.join(r['adapters']) or 'none: pristine base'})")
    for w in r["warnings"]:
        click.echo(f"warning: {w}", err=True)


@click.command("merge")
@click.option("--version", "ref", default="HEAD", show_default=True, help="Composition to export (HEAD, alias, c3, ...).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output folder (new, empty, or a previous export).")
@actor_option
@json_option
@click.pass_context
@one_line_errors
def merge_cmd(ctx, ref, out_dir, actor, as_json):
    """Fold a composition into the pristine base and write a transformers checkpoint."""
    from forgetctl.ops.compose import merge_version

    emit(merge_version(home_of(ctx), ref=ref, out_dir=out_dir, actor=actor), as_json, _render_merge)


@click.command("squash")
@click.argument("refs", nargs=-1, required=True)
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output adapter folder (new or empty).")
@click.option("--mode", type=click.Choice(["exact", "svd"]), default="exact", show_default=True)
@click.option("--rank", type=click.IntRange(min=1), default=None, help="Target rank for --mode svd.")
@actor_option
@json_option
@click.pass_context
@one_line_errors
def squash_cmd(ctx, refs, out_dir, mode, rank, actor, as_json):
    """Combine adapter versions (or a composition's adapters) into one PEFT adapter."""
    from forgetctl.ops.compose import squash_versions

    emit(squash_versions(home_of(ctx), list(refs), out_dir, mode=mode, rank=rank, actor=actor), as_json, _render_squash)


@click.command("rollback")
@click.argument("target", required=False)
@click.option("--without", default=None, help="Make a new composition: HEAD minus this adapter version.")
@actor_option
@json_option
@click.pass_context
@one_line_errors
def rollback_cmd(ctx, target, without, actor, as_json):
    """Move HEAD back to TARGET, or drop one adapter with --without. Nothing is deleted."""
    from forgetctl.ops.compose import rollback

    emit(rollback(home_of(ctx), target=target, without=without, actor=actor), as_json, _render_rollback)


@click.command("generate")
@click.option("--prompt", required=True, help="Question or prompt (chat template applied when the base has one).")
@click.option("--version", "ref", default="HEAD", show_default=True, help="Composition to use.")
@click.option("--merged", is_flag=True, help="Fold the adapters into the weights instead of stacking them.")
@click.option("--max-new-tokens", type=click.IntRange(1, 2048), default=48, show_default=True)
@click.option("--device", default=None, help="cpu, cuda, ... (default: cuda if present).")
@json_option
@click.pass_context
@one_line_errors
def generate_cmd(ctx, prompt, ref, merged, max_new_tokens, device, as_json):
    """Greedy answer of a composition to one prompt, for inspection."""
    from forgetctl.ops.compose import generate

    result = generate(home_of(ctx), prompt, ref=ref, merged=merged, max_new_tokens=max_new_tokens, device=device)
    emit(result, as_json, lambda r: click.echo(r["answer"]))


COMMANDS = [merge_cmd, squash_cmd, rollback_cmd, generate_cmd]
