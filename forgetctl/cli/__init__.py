"""The `forgetctl` command: a thin click layer over forgetctl.ops and forgetctl.registry.

Command modules import nothing heavy at module level so registry commands start fast.
"""

from __future__ import annotations

import click

from forgetctl import __version__
from forgetctl.cli import compose_cmds, demo_cmds, eval_cmds, hub_cmds, registry_cmds, train_cmds


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--home",
    type=click.Path(file_okay=False),
    default=None,
    help="Workspace folder (default: $FORGETCTL_HOME, then ~/.local/share/forgetctl).",
)
@click.version_option(__version__, prog_name="forgetctl")
@click.pass_context
def cli(ctx: click.Context, home):
    """forgetctl: make a language model forget, auditably."""
    ctx.ensure_object(dict)
    ctx.obj["home"] = home


for _module in (registry_cmds, train_cmds, compose_cmds, eval_cmds, hub_cmds, demo_cmds):
    for _command in _module.COMMANDS:
        cli.add_command(_command)


def main() -> None:
    cli(obj={})
