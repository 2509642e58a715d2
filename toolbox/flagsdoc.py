"""docs/flags.md from the entry points' parsers, so the reference page cannot drift from ``--help``.

    python -m toolbox.flagsdoc > docs/flags.md

``tests/test_args.py`` checks that docs/flags.md equals this module's output.
"""
from __future__ import annotations

import argparse

SCRIPTS = {"commander.py": "train, resume and test", "predict.py": "annotate or score new recordings",
           "driver.py": "write PhysioNet Challenge 2020/2021 outputs"}


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _flag(action: argparse.Action) -> str:
    if not action.option_strings:
        return f"`{action.metavar or action.dest}`"
    names = ", ".join(f"`{s}`" for s in action.option_strings)
    if action.nargs == 0:
        return names
    value = action.metavar or (f"{{{','.join(map(str, action.choices))}}}" if action.choices else action.dest.upper())
    return f"{names} `{value}`"


def _default(action: argparse.Action) -> str:
    if action.nargs == 0 or action.default in (None, argparse.SUPPRESS) or action.required:
        return ""
    return f"`{action.default}`" if action.default != [] else ""


def parser_markdown(script: str, parser: argparse.ArgumentParser) -> str:
    """One section: the usage line's description and, per argument group, a table of flag, default and help."""
    lines = [f"## `{script}`: {SCRIPTS[script]}", "", _cell(parser.description or ""), ""]
    for group in parser._action_groups:
        actions = [a for a in group._group_actions if not isinstance(a, argparse._HelpAction)]
        if not actions:
            continue
        lines += [f"### {group.title}", "", "| flag | default | what it does |", "|---|---|---|"]
        for a in actions:
            help_text = (a.help or "") % {**vars(a), "prog": parser.prog}  # as argparse expands it
            lines.append(f"| {_flag(a)} | {_default(a)} | {_cell(help_text)} |")
        lines.append("")
    return "\n".join(lines)


def markdown() -> str:
    """The whole page."""
    import args
    import driver
    import predict

    parsers = {"commander.py": args.get_args_parser(), "predict.py": predict.get_args_parser(),
               "driver.py": driver.get_args_parser()}
    head = ["# Flags", "", "Generated from the parsers by `python -m toolbox.flagsdoc > docs/flags.md`; a test checks "
            "that this page matches them. `python SCRIPT --help` prints the same.", ""]
    return "\n".join(head + [parser_markdown(s, p) for s, p in parsers.items()]).rstrip() + "\n"


if __name__ == "__main__":
    print(markdown(), end="")
