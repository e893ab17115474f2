"""Every example of README.md and docs/ is checked: a block marked `<!-- doctest: run -->` is run (bash blocks with
the `featcache` of this checkout on the PATH, Python blocks in a fresh interpreter, one temporary folder per page,
in order); every other `featcache` command line is parsed against the command line (an unknown command or option,
a missing required option or a stray argument fails) and every other Python block is compiled. `<!-- doctest:
skip -->` marks a block that is neither (an install line for another environment). The site builds with
`mkdocs build --strict`, and every command's --help ends with an example."""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import click
import pytest

from cli import main

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
FENCE = re.compile(r"(?:<!-- doctest: (?P<mark>run|parse|skip) -->\s*\n)?```(?P<lang>[a-z]*)\n(?P<body>.*?)```", re.S)


def blocks(page: Path) -> list[tuple[str, str, str, int]]:
    """(mark, language, body, line) of every fenced block of `page`."""
    text = page.read_text(encoding="utf-8")
    return [(m["mark"] or "", m["lang"], m["body"], text[:m.start()].count("\n") + 1) for m in FENCE.finditer(text)]


def command_lines(body: str) -> list[str]:
    """The `featcache ...` lines of a shell block (continuations joined, comments and prompts dropped)."""
    joined = re.sub(r"\\\n\s*", " ", body)
    out = []
    for line in joined.splitlines():
        line = line.strip().removeprefix("$ ")
        if line.startswith("featcache "):
            out.append(line.split(" # ", 1)[0].split("  #", 1)[0])
    return out


def check_command(line: str) -> None:
    """Parse a command line against the click commands without running it (paths need not exist)."""
    args = shlex.split(re.sub(r"\[(--?[^\]]*)\]", r"\1", line))[1:]  # a synopsis' [--option VALUE]: checked too
    command: click.Command = main
    while isinstance(command, click.Group) and args and not args[0].startswith("-"):
        sub = command.get_command(click.Context(command), args[0])
        assert sub is not None, f"{line}: no command {args[0]!r}"
        command, args = sub, args[1:]
    if args[:1] in (["--help"], ["--version"], ["-h"]):
        return
    if isinstance(command, click.Group):
        raise AssertionError(f"{line}: {command.name} needs a subcommand")
    options = {name: p for p in command.params if isinstance(p, click.Option) for name in p.opts + p.secondary_opts}
    arguments = [p for p in command.params if isinstance(p, click.Argument)]
    given, positional, i = set(), [], 0
    while i < len(args):
        token = args[i]
        if token.startswith("-") and not re.fullmatch(r"-\d+(\.\d+)?", token):
            name = token.split("=", 1)[0]
            assert name in options, f"{line}: {command.name} has no option {name}"
            option = options[name]
            given.add(option.name)
            if not option.is_flag and not option.count and "=" not in token:
                i += 1
        else:
            positional.append(token)
        i += 1
    unlimited = any(a.nargs == -1 for a in arguments)
    assert unlimited or len(positional) <= len(arguments), f"{line}: stray argument(s) {positional[len(arguments):]}"
    for p in command.params:
        if isinstance(p, click.Option) and p.required:
            assert p.name in given, f"{line}: {command.name} needs {p.opts[0]}"
    required_args = [a for a in arguments if a.required]
    assert len(positional) >= len(required_args), f"{line}: {command.name} needs {[a.name for a in required_args]}"


CASES = [(page, mark, lang, body, line) for page in PAGES for mark, lang, body, line in blocks(page)]


@pytest.mark.parametrize("page,mark,lang,body,line", [c for c in CASES if c[1] != "run"],
                         ids=[f"{c[0].relative_to(ROOT)}:{c[4]}" for c in CASES if c[1] != "run"])
def test_every_example_parses(page, mark, lang, body, line):
    if mark == "skip":
        return
    if lang == "python":
        compile(body, f"{page.name}:{line}", "exec")
    elif lang in ("bash", "console", "sh", ""):
        for command in command_lines(body):
            check_command(command)


RUN_PAGES = sorted({c[0] for c in CASES if c[1] == "run"})


@pytest.mark.parametrize("page", RUN_PAGES, ids=[str(p.relative_to(ROOT)) for p in RUN_PAGES])
def test_the_examples_marked_run_run(page, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": str(ROOT), "XDG_CACHE_HOME": os.environ.get("XDG_CACHE_HOME", str(tmp_path / "xdg"))}
    for mark, lang, body, line in blocks(page):
        if mark != "run":
            continue
        cmd = ["bash", "-euo", "pipefail", "-c", body] if lang in ("bash", "sh") else [sys.executable, "-c", body]
        r = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, f"{page.relative_to(ROOT)}:{line} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
        assert "Traceback" not in r.stderr, r.stderr[-3000:]


def test_the_site_builds_strictly(tmp_path):
    pytest.importorskip("mkdocs", reason="the docs extra is not installed (pip install -e '.[docs]')")
    r = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert (tmp_path / "site" / "reference" / "cli" / "index.html").read_text().count("featcache sweep") >= 1


def _commands(group: click.Group, prefix: str = "featcache"):
    for name in group.list_commands(click.Context(group)):
        command = group.get_command(click.Context(group), name)
        if isinstance(command, click.Group):
            yield from _commands(command, f"{prefix} {name}")
        else:
            yield f"{prefix} {name}", command


@pytest.mark.parametrize("name,command", list(_commands(main)), ids=[n for n, _ in _commands(main)])
def test_every_command_help_ends_with_an_example(name, command):
    epilog = command.epilog or ""
    assert name in epilog, f"`{name} --help` has no example (click epilog)"
    for example in command_lines("\n".join(line.strip() for line in epilog.splitlines())):
        check_command(example)


def test_the_readme_is_short():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 150


def test_a_broken_example_is_caught():
    with pytest.raises(AssertionError, match="no option --no-such-option"):
        check_command("featcache sweep c.h5 --no-such-option 1 --out r")
    with pytest.raises(AssertionError, match="no command"):
        check_command("featcache sweeep c.h5")
    with pytest.raises(AssertionError, match="needs --out"):
        check_command("featcache sweep c.h5")
