"""`forgetctl demo`: the end-to-end story on the embedded model."""

from __future__ import annotations

import click

from forgetctl.cli.common import emit, json_option, one_line_errors


@click.command()
@click.option("--workspace", "home", type=click.Path(file_okay=False), default=None,
              help="Empty folder for the demo workspace (default: a new temporary folder).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Where merged exports go (default: inside the workspace).")
@click.option("--method", default=None, help="Unlearning objective (default: the project default).")
@click.option("--steps", type=int, default=None, help="Training steps per request.")
@json_option
@one_line_errors
def demo(home, out_dir, method, steps, as_json):
    """Forget two fictitious people from a deployed SmolLM2, export, roll one back, verify the audit log."""
    from rich.console import Console

    from forgetctl.ops.demo import run_demo

    console = Console(stderr=as_json)
    summary = run_demo(console, home=home, out_dir=out_dir, steps=steps, method=method)
    if as_json:
        emit(summary, True)


COMMANDS = [demo]
