"""The README and docs/ cannot rot: every command in them parses, the main commands run, every link resolves."""
from __future__ import annotations

import importlib
import re
import shlex
from pathlib import Path

import pytest

from tests.conftest import REPO

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), REPO / "models" / "shipped" / "MODEL_CARD.md"]


def commands(page: Path) -> list[list[str]]:
    """Every ``python ...`` command of the page's fenced bash blocks, as argv lists."""
    return [argv for block in re.findall(r"```bash\n(.*?)```", page.read_text(), flags=re.S)
            for argv in commands_in(block)]


def commands_in(block: str) -> list[list[str]]:
    """The ``python ...`` commands of one bash block (continuations joined, comments and environment
    assignments dropped), without the ``python``."""
    found = []
    for line in block.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):
            words = words[1:]
        parts: list[list[str]] = [[]]
        for word in words:  # "a && b": two commands
            if word == "&&":
                parts.append([])
            else:
                parts[-1].append(word)
        found += [argv[1:] for argv in parts if argv[:1] == ["python"] and len(argv) > 1 and argv[1] != "-m"]
    return found


def parser_of(script: str):
    """What parses ``script``'s flags: the ``args`` module for commander.py, else the script's parser."""
    if script == "commander.py":
        import args

        return args
    module = importlib.import_module(script.removesuffix(".py").replace("/", "."))
    return module.get_args_parser()


def all_commands() -> list[tuple[str, list[str]]]:
    return [(page.name, argv) for page in PAGES for argv in commands(page)]


def test_the_pages_hold_the_main_commands() -> None:
    scripts = {argv[0] for _, argv in all_commands()}
    assert {"commander.py", "predict.py", "driver.py", "benchmarks/quality.py", "benchmarks/ec57.py"} <= scripts


@pytest.mark.parametrize("page,argv", all_commands(), ids=lambda v: " ".join(v) if isinstance(v, list) else v)
def test_every_documented_command_parses(page: str, argv: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Flags of every command in the README and docs/ exist and take the values shown (placeholders aside)."""
    monkeypatch.setenv("ECG_DATA_ROOT", str(REPO))
    argv = [a.replace("$ECG_DATA_ROOT", str(REPO)).strip("[]") for a in argv]  # [--flag value]: optional
    placeholder = any(re.search(r"[<>]|\.\.\.", a) for a in argv)  # such as <run folder>: check the flags only
    argv = [a for a in ("x" if re.search(r"[<>]|\.\.\.", a) else a for a in argv) if a]
    argv = [a for i, a in enumerate(argv) if not (a == "x" and i and argv[i - 1] == "x")]  # "<run folder>"
    if argv[0] == "commander.py" and placeholder:
        import args

        args.get_args_parser().parse_args(argv[1:])  # a placeholder path cannot pass the file checks
    else:
        parser_of(argv[0]).parse_args(argv[1:])  # commander.py: args.parse_args, which validates combinations too


def test_every_local_link_resolves() -> None:
    def slug(heading: str) -> str:
        return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")

    broken, checked = [], 0
    for page in PAGES:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            checked += 1
            if re.match(r"[a-z]+://", target) or target.startswith("mailto:"):
                continue
            path, _, anchor = target.partition("#")
            file = (page.parent / path).resolve() if path else page
            if not file.exists():
                broken.append(f"{page.name}: {target}")
            elif anchor and file.suffix == ".md":
                headings = {slug(h) for h in re.findall(r"^#+ (.+)$", file.read_text(), flags=re.M)}
                if anchor not in headings:
                    broken.append(f"{page.name}: {target}")
    assert checked > 10 and not broken, broken


def test_the_readme_main_commands_run_as_short_runs(tmp_path: Path, data_root: Path) -> None:
    """The README's first commands (train the recipe, then test it) run as written, shortened by --short-run."""
    import commander

    first = re.search(r"```bash\n(.*?)```", (REPO / "README.md").read_text(), flags=re.S).group(1)
    runs = [argv for argv in commands_in(first) if argv[0] == "commander.py"]
    assert len(runs) >= 2 and any("--test" in argv for argv in runs)
    for argv in runs:
        assert commander.main([*argv[1:], "--short-run", "--epochs", "1", "--root-dir", str(tmp_path)]) == 0, argv
    assert list((tmp_path / "ecg" / "runs").glob("*/pred/test_*short*"))
