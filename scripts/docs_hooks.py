"""mkdocs hooks of the documentation site (mkdocs.yml): the command line's flag tables.

A page holding ``<!-- flags: explain -->`` (or ``beam``, ``evaluate``, ``weights``) gets that
command's flags as tables, one per argument group, made from the parser the command itself
uses, so the page cannot drift from ``--help``. Building the parsers loads no TensorFlow.
"""
import argparse
import importlib
import os
import re
import sys

MARKER = re.compile(r"<!--\s*flags:\s*(\w+)\s*-->")
COMMANDS = ("explain", "beam", "evaluate", "weights")


def on_config(config, **kwargs):
    root = os.path.dirname(os.path.abspath(config.config_file_path))
    if root not in sys.path:
        sys.path.insert(0, root)  # the clone's ggcam, also without `pip install -e .`
    return config


def on_page_markdown(markdown, page, config, files, **kwargs):
    return MARKER.sub(lambda m: flag_tables(m.group(1), page.file.src_uri), markdown)


def flag_tables(command: str, where: str) -> str:
    if command not in COMMANDS:
        raise ValueError("%s: <!-- flags: %s -->: no such command (%s)" % (where, command, ", ".join(COMMANDS)))
    parser = importlib.import_module("ggcam.cli." + command).build_parser()
    formatter = parser._get_formatter()
    out = []
    for group in parser._action_groups:
        rows = [a for a in group._group_actions if a.help is not argparse.SUPPRESS and a.option_strings
                and "-h" not in a.option_strings]
        if not rows:
            continue
        title = "general" if group.title in ("options", "optional arguments") else group.title
        out += ["", "**%s**" % title, "", "| flag | default | meaning |", "|---|---|---|"]
        for action in rows:
            out.append("| %s | %s | %s |" % (_flag(action), _default(action),
                                            _cell(formatter._expand_help(action))))
    return "\n".join(out) + "\n"


def _flag(action: argparse.Action) -> str:
    name = max(action.option_strings, key=len)
    if action.nargs == 0:
        return "`%s`" % name
    if action.choices:
        return "`%s={%s}`" % (name, ",".join(map(str, action.choices)))
    return "`%s=%s`" % (name, action.metavar or action.dest.upper())


def _default(action: argparse.Action) -> str:
    if action.default in (None, False, argparse.SUPPRESS) or action.nargs == 0:
        return ""
    if isinstance(action.default, (list, tuple)):
        return ", ".join("`%s`" % d for d in action.default) if action.default else ""
    return "`%s`" % (action.default,)


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")
