"""MkDocs hook: the CLI reference, rendered from the typer app at build time so it cannot drift.

`docs/reference/cli.md` holds a marker; this hook replaces it with one section per command, walked from
`typer.main.get_command(synth.cli.app)`: the command's help, its usage line and its arguments and options
as `synth COMMAND --help` prints them (defaults and ranges included).
"""

from __future__ import annotations

import html
import inspect
from typing import Any

import typer

MARKER = "<!-- synth-cli-reference -->"


def walk(command: Any, ctx: typer.Context) -> list[tuple[Any, typer.Context]]:
    """Every command under `command` (itself first), depth first, in the order `--help` lists them."""
    found = [(command, ctx)]
    for name in getattr(command, "list_commands", lambda _: [])(ctx):
        sub = command.get_command(ctx, name)
        if sub is not None and not sub.hidden:
            found += walk(sub, typer.Context(sub, info_name=name, parent=ctx))
    return found


def commands() -> list[tuple[Any, typer.Context]]:
    """The `synth` app and all its commands, each with the context `--help` would render it in."""
    from synth.cli import app

    root = typer.main.get_command(app)
    return walk(root, typer.Context(root, info_name="synth"))


def anchor(ctx: typer.Context) -> str:
    """The heading id of a command's section: `synth personas from-text` -> `synth-personas-from-text`."""
    return ctx.command_path.replace(" ", "-")


def _text(value: str) -> str:
    """Help text as Markdown text: no HTML, emphasis or links (`*`, `_`, `[`) outside backticks, which stay code."""
    pieces = " ".join(value.split()).split("`")
    for i in range(0, len(pieces), 2):  # the even pieces are outside code spans
        plain = html.escape(pieces[i], quote=False)
        pieces[i] = plain.replace("*", r"\*").replace("_", r"\_").replace("[", r"\[")
    return "`".join(pieces)


def render(command: Any, ctx: typer.Context) -> str:
    """One command's section: heading, help, usage, arguments, options."""
    depth = ctx.command_path.count(" ") + 2  # synth: h2, synth dedup: h3, synth personas expand: h4
    lines = [f"{'#' * min(depth, 4)} `{ctx.command_path}` {{#{anchor(ctx)}}}", ""]
    if command.help:
        paragraphs = inspect.cleandoc(command.help).replace("\b\n", "").split("\n\n")
        lines += ["\n\n".join(_text(paragraph) for paragraph in paragraphs), ""]
    lines += ["```text", f"{ctx.command_path} {' '.join(command.collect_usage_pieces(ctx))}", "```", ""]
    records = [(p.param_type_name, p.get_help_record(ctx)) for p in command.get_params(ctx)]
    for kind, title in (("argument", "Arguments"), ("option", "Options")):
        rows = [record for param_kind, record in records if param_kind == kind and record]
        if rows:
            lines += [f"**{title}**", "", f"| {title[:-1].lower()} | help |", "|---|---|"]
            lines += [f"| `{name}` | {_text(help_).replace('|', '&#124;')} |" for name, help_ in rows]
            lines.append("")
    if getattr(command, "commands", None):
        lines += ["**Commands**", ""]
        for name in command.list_commands(ctx):
            path = f"{ctx.command_path} {name}"
            help_ = command.get_command(ctx, name).get_short_help_str(limit=100)
            lines.append(f"- [`{path}`](#{path.replace(' ', '-')}): {_text(help_)}")
        lines.append("")
    return "\n".join(lines)


def reference() -> str:
    """The whole CLI reference as Markdown."""
    return "\n".join(render(command, ctx) for command, ctx in commands())


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """MkDocs event: fill the CLI reference page's marker."""
    if MARKER in markdown:
        return markdown.replace(MARKER, reference())
    return markdown
