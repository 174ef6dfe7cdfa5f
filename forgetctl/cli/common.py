"""Shared CLI plumbing: workspace option, --json output, one-line errors."""

from __future__ import annotations

import functools
import json
import sys

import click

from forgetctl.errors import ForgetctlError

json_option = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")


def home_of(ctx: click.Context):
    """The --home given to the top-level group (None: FORGETCTL_HOME, then the default)."""
    return ctx.find_root().obj.get("home")


def emit(data, as_json: bool, render=None) -> None:
    """Print `data` as JSON, or through `render(data)` for people (default: JSON too)."""
    if as_json or render is None:
        click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))
    else:
        render(data)


def one_line_errors(fn):
    """Turn ForgetctlError into 'error: ...' on stderr with its exit code, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ForgetctlError as exc:
            message = " ".join(str(exc).split())
            click.echo(f"error: {message}", err=True)
            sys.exit(exc.exit_code)

    return wrapper
