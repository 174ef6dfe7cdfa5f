"""push / pull: thin wrappers over forgetctl.registry.hub. The token comes from HF_TOKEN or a saved
`hf auth login`, never from the command line (it would end up in shell history and `ps`)."""

from __future__ import annotations

import click

from forgetctl.cli.common import emit, home_of, json_option, one_line_errors

endpoint_option = click.option(
    "--endpoint", default=None, metavar="URL", help="Hub endpoint (default: $HF_ENDPOINT, then https://huggingface.co)."
)
actor_option = click.option("--actor", default=None, help="Who is acting (recorded in the audit log).")


def _render_push(r: dict) -> None:
    if not r["changed"]:
        click.echo(f"{r['version']} is already on {r['repo']} at {r['revision']} ({r['commit'][:12]}); nothing pushed")
        return
    alias = f" and {r['alias_tag']}" if r.get("alias_tag") else ""
    click.echo(f"pushed {r['kind']} {r['version']} to {r['endpoint']}/{r['repo']} "
               f"({'private' if r['private'] else 'public'})")
    click.echo(f"  commit {r['commit']}, tagged {r['revision']}{alias}")
    for name, digest in sorted(r["files"].items()):
        click.echo(f"  {name}  sha256:{digest}")


def _render_pull(r: dict) -> None:
    source = f" (was {r['source_version']} upstream)" if r.get("source_version") else ""
    click.echo(f"pulled {r['repo']}@{r['revision']} ({r['commit'][:12]}) as {r['version']} {r['id'][:12]}{source}")
    click.echo(f"  {len(r['files'])} file(s) match the pushed sha256 manifest; base fingerprint matches; "
               f"audit #{r['audit_seq']}")


@click.command("push")
@click.argument("version")
@click.option("--repo", "repo_id", required=True, metavar="NS/NAME", help="Hub model repo to push to.")
@click.option("--private", is_flag=True, help="Create the repo private (an existing repo keeps its visibility).")
@click.option("--merged", is_flag=True, help="Push the merged checkpoint of a composition (HEAD, c3, alias) instead.")
@click.option("--base-model", default=None, metavar="NS/NAME", help="Hub id of the base to name in the card.")
@endpoint_option
@actor_option
@json_option
@click.pass_context
@one_line_errors
def push_cmd(ctx, version, repo_id, private, merged, base_model, endpoint, actor, as_json):
    """Upload a registry version to the Hugging Face Hub as a PEFT repo with a model card, tagged by version."""
    from forgetctl.registry.hub import push_version

    result = push_version(home_of(ctx), version, repo_id, private=private, merged=merged, endpoint=endpoint,
                          actor=actor, base_model=base_model)
    emit(result, as_json, _render_push)


@click.command("pull")
@click.argument("spec", metavar="NS/NAME[@REVISION]")
@endpoint_option
@actor_option
@json_option
@click.pass_context
@one_line_errors
def pull_cmd(ctx, spec, endpoint, actor, as_json):
    """Download a pushed forget adapter, check its hashes and base, and register it."""
    from forgetctl.registry.hub import pull

    emit(pull(home_of(ctx), spec, endpoint=endpoint, actor=actor), as_json, _render_pull)


COMMANDS = [push_cmd, pull_cmd]
