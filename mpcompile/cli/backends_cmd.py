"""``mpcompile backends``: what is installed, what runs here, and how to get the rest."""

from __future__ import annotations

import json

import click

from mpcompile.backends.registry import discover


@click.command("backends")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON instead of a table.")
def backends_command(as_json: bool) -> None:
    """List installed backends: version, availability (or why not and how to fix it), capabilities.

    Backends are plugins registered under the `mpcompile.backends` entry-point group;
    third-party packages appear here as soon as they are pip-installed.
    """
    entries = discover()
    if as_json:
        click.echo(json.dumps([e.to_dict() for e in entries], indent=2))
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="mpcompile backends", show_lines=False)
    for col in ("name", "status", "version", "capabilities / reason"):
        table.add_column(col, overflow="fold")
    for e in entries:
        info = e.to_dict()
        if e.available:
            table.add_row(e.name, "[green]available[/]", escape(str(info["version"])), escape(info["capabilities"] or ""))
        else:
            hint = f"\n→ {e.install_hint}" if e.install_hint and e.install_hint not in e.reason else ""
            table.add_row(e.name, "[red]unavailable[/]", "-", escape(e.reason + hint))
    Console(width=max(100, Console().width)).print(table)
