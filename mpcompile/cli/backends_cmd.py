"""``mpcompile backends``: what is installed, what runs here, how to get the rest, and each backend's options."""

from __future__ import annotations

import json

import click

from mpcompile.backends.registry import BackendEntry, discover


@click.command("backends")
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON instead of a table.")
def backends_command(name: str | None, as_json: bool) -> None:
    """List installed backends: version, availability (or why not and how to fix it), capabilities.

    With NAME, show that backend in full: its capabilities and every option it takes
    (type, default, help), to pass as --backend-option NAME.KEY=VALUE.

    Backends are plugins registered under the `mpcompile.backends` entry-point group;
    third-party packages appear here as soon as they are pip-installed.

    \b
    Examples:
      mpcompile backends
      mpcompile backends tflite
      mpcompile backends tensorrt --json
    """
    entries = discover()
    if name is not None:
        _show_one(_find(entries, name), as_json)
        return
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
    click.echo("Options of one backend: mpcompile backends NAME")


def _find(entries: list[BackendEntry], name: str) -> BackendEntry:
    from mpcompile.errors import BackendError

    for entry in entries:
        if entry.name == name:
            return entry
    known = ", ".join(e.name for e in entries) or "none"
    raise BackendError(f"unknown backend {name!r}; installed backends: {known}")


def _show_one(entry: BackendEntry, as_json: bool) -> None:
    info = entry.to_dict(options=True)
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    status = "available" if entry.available else f"unavailable: {entry.reason}"
    click.echo(f"{entry.name}: {info.get('description', '')}")
    click.echo(f"  status: {status}")
    if entry.available:
        click.echo(f"  version: {info['version']}")
    if info.get("capabilities"):
        click.echo(f"  capabilities: {info['capabilities']}")
    options = info.get("options") or []
    if not options:
        click.echo("  options: none")
        return
    click.echo(f"  options (--backend-option {entry.name}.KEY=VALUE):")
    for row in options:
        click.echo(f"    {row['name']} ({row['type']}, default {row['default']!r})")
        if row["help"]:
            click.echo(f"        {row['help']}")
