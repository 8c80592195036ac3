"""The README's commands, read as a newcomer would run them on a fresh clone (issue 31).

Every command line of the README's fenced blocks is checked: the safe ones run (`make help`,
`python -m vgg ... --help`, `params`, `describe`, `recipe`); every other `python -m vgg` line must
name a command that exists and use only options (and option values) that command accepts, read
from `vgg.cli.build_parser()` without running it; every `make` line must name targets of the
Makefile and set only variables the Makefile uses. `make` and `python -m vgg` in the prose's inline
code are checked the same way. Optional parts written in brackets (`[--seeds N]`) are checked
as if given. The checker itself is tested on copies of the text with a planted mistake."""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from vgg.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
MAKEFILE = ROOT / "Makefile"

FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"`([^`]+)`")
SAFE_VGG_COMMANDS = {"params", "describe", "recipe"}  # print and exit: seconds, no files written


@dataclass(frozen=True)
class Command:
    line: str  # as the README writes it
    kind: str  # "vgg" or "make"
    argv: tuple[str, ...]  # what follows `-m vgg` or `make`, brackets of optional parts removed
    fenced: bool


def _words(line: str) -> list[str]:
    """The shell words of a line without its comment; the brackets around optional parts dropped."""
    try:
        words = shlex.split(line, comments=True)
    except ValueError:  # an unbalanced quote: good enough for finding options
        words = line.split(" #")[0].split()
    for i, word in enumerate(words):
        if word in ("&&", "||", ";", "|"):  # the first command of `make venv && . .venv/bin/activate`
            words = words[:i]
            break
    return [w for w in (w.strip("[]") for w in words) if w]


def _command(line: str, fenced: bool) -> Command | None:
    words = _words(line)
    for i in range(len(words) - 1):
        if words[i] == "-m" and words[i + 1] == "vgg":  # python, .venv/bin/python, torchrun, srun ...
            return Command(line, "vgg", tuple(words[i + 2 :]), fenced)
    if words and words[0] == "make":
        return Command(line, "make", tuple(words[1:]), fenced)
    return None


def readme_commands(text: str) -> list[Command]:
    """Every `python -m vgg` and `make` command of the text: each line of its fenced blocks, and
    each inline code span of the prose (joined across line breaks)."""
    found = []
    for block in FENCE.findall(text):
        found += [c for c in (_command(line, True) for line in block.splitlines()) if c is not None]
    prose = FENCE.sub("", text)
    spans = (" ".join(span.split()) for span in INLINE_CODE.findall(prose))
    found += [c for c in (_command(span, False) for span in spans) if c is not None]
    return found


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def vgg_problems(argv: tuple[str, ...], parser: argparse.ArgumentParser) -> list[str]:
    """What in `python -m vgg ARGV` the command line would not accept: an unknown command, an
    unknown option, an option value outside its choices, a positional outside its choices."""
    if not argv or argv[0].startswith("<"):  # `python -m vgg <command>`: a placeholder
        return []
    if argv[0] in ("-h", "--help"):
        return []
    args = list(argv)
    while (commands := _subcommands(parser)) and args and not args[0].startswith("-"):
        name = args.pop(0)
        if name not in commands:
            return [f"unknown command {name!r} (known: {', '.join(commands)})"]
        parser = commands[name]
    if _subcommands(parser):
        return [f"{argv[0]} needs one of its commands: {', '.join(_subcommands(parser))}"]
    options = {s: a for a in parser._actions for s in a.option_strings}
    positional_choices = [a.choices for a in parser._actions if not a.option_strings and a.choices]
    problems = []
    i = 0
    while i < len(args):
        word = args[i]
        i += 1
        if word.startswith("-") and not re.fullmatch(r"-\d[\d.]*", word):
            name, _, value = word.partition("=")
            action = options.get(name)
            if action is None:
                problems.append(f"{argv[0]}: unknown option {name}")
                continue
            if action.nargs == 0 or value:  # a flag, or --option=value
                values = [value] if value else []
            else:
                values = args[i : i + 1]
                i += 1
            if action.choices is not None and values and values[0] not in action.choices:
                problems.append(f"{argv[0]}: {name} {values[0]} is not one of {', '.join(map(str, action.choices))}")
        elif positional_choices and word not in positional_choices[0] and word != "...":
            problems.append(f"{argv[0]}: {word!r} is not one of {', '.join(positional_choices[0])}")
    return problems


def makefile_targets_and_variables(text: str) -> tuple[set[str], set[str]]:
    targets = set(re.findall(r"^([A-Za-z0-9][\w.-]*)\s*:(?!=)", text, re.MULTILINE))
    variables = set(re.findall(r"\$\((\w+)\)", text)) | set(re.findall(r"^(\w+)\s*[?:+]?=", text, re.MULTILINE))
    return targets, variables


def make_problems(argv: tuple[str, ...], targets: set[str], variables: set[str]) -> list[str]:
    problems = []
    for word in argv:
        if (assignment := re.match(r"(\w+)=", word)) is not None:
            if assignment.group(1) not in variables:
                problems.append(f"the Makefile uses no variable {assignment.group(1)}")
        elif word.startswith("-") or word == "...":
            continue
        elif word not in targets:
            problems.append(f"no make target {word!r}")
    return problems


def readme_problems(text: str) -> list[str]:
    """Every command of `text` that names something the command line or the Makefile lacks."""
    parser = build_parser()
    targets, variables = makefile_targets_and_variables(MAKEFILE.read_text())
    problems = []
    for command in readme_commands(text):
        if command.kind == "vgg":
            found = vgg_problems(command.argv, parser)
        else:
            found = make_problems(command.argv, targets, variables)
        problems += [f"{command.line.strip()}: {p}" for p in found]
    return problems


def _safe_to_run(command: Command) -> bool:
    if not command.fenced:
        return False
    if command.kind == "make":
        return command.argv == ("help",)
    argv = command.argv
    return bool(argv) and ("--help" in argv or "-h" in argv or argv[0] in SAFE_VGG_COMMANDS)


@pytest.fixture(scope="module")
def readme() -> str:
    return README.read_text()


def test_the_readme_names_only_commands_options_targets_and_variables_that_exist(readme):
    commands = readme_commands(readme)
    assert sum(c.kind == "vgg" for c in commands) >= 20 and sum(c.kind == "make" for c in commands) >= 10
    assert readme_problems(readme) == []


RUN_ALL = """
import contextlib, io, json, sys
from vgg.cli import main
results = []
for argv in json.loads(sys.argv[1]):
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            code = main(argv)
    except SystemExit as exit:  # argparse's --help
        code = exit.code or 0
    results.append([argv, code, out.getvalue()])
print(json.dumps(results))
"""
"""`python -m vgg ARGS` for each ARGS in one process (vgg.cli.main, what `python -m vgg` calls): one
start-up of torch instead of one per command."""


def test_the_readmes_safe_commands_run_as_written(readme):
    """make help, the --help forms and the commands that only print, run as the README writes
    them (optional parts included): each ends with status 0 and prints something."""
    vgg_argvs, make_argvs = [], []
    for command in readme_commands(readme):
        if _safe_to_run(command):
            target = make_argvs if command.kind == "make" else vgg_argvs
            if list(command.argv) not in target:
                target.append(list(command.argv))
    assert ["help"] in make_argvs and ["--help"] in vgg_argvs and any(argv[0] == "recipe" for argv in vgg_argvs)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    make = subprocess.Popen(["make", "help"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) if shutil.which("make") else None
    vgg = subprocess.run([sys.executable, "-c", RUN_ALL, json.dumps(vgg_argvs)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert vgg.returncode == 0, vgg.stderr
    for argv, code, out in json.loads(vgg.stdout):
        assert code == 0, f"python -m vgg {' '.join(argv)} exited {code}"
        assert out.strip(), f"python -m vgg {' '.join(argv)} printed nothing"
    if make is not None:
        out, err = make.communicate(timeout=60)
        assert make.returncode == 0 and "make table3" in out, err


PLANTED = """
```
python -m vgg run table3 --profil smoke
python -m vgg trian --config A --train-scale 256 --out runs/smoke/A-256
python -m vgg evaluate --checkpoint runs/smoke/A-256 --method densest
python -m vgg report table99
python -m vgg data synthesize --out data/synthetic
make tabel3
make table3 PROFIL=paper
```

Inline: `make reprot` and `python -m vgg status --profile smoke --seed 3`.
"""


def test_the_checker_finds_each_planted_mistake(readme):
    problems = readme_problems(readme + PLANTED)
    expected = [
        "unknown option --profil",
        "unknown command 'trian'",
        "--method densest is not one of",
        "'table99' is not one of",
        "unknown command 'synthesize'",
        "no make target 'tabel3'",
        "no variable PROFIL",
        "no make target 'reprot'",
        "unknown option --seed",  # status takes --seeds
    ]
    assert len(problems) == len(expected), problems
    for problem, words in zip(problems, expected):
        assert words in problem, (problem, words)


def test_the_checker_finds_a_wrong_option_or_target_planted_in_the_readmes_own_lines(readme):
    """One option of a README line misspelt, one target, one variable: each is caught."""
    option_line = next(line for line in readme.splitlines() if " -m vgg run " in line and "--seeds" in line)
    wrong_option = readme.replace(option_line, option_line.replace("--seeds", "--seed-count", 1), 1)
    assert any("unknown option --seed-count" in p for p in readme_problems(wrong_option))
    make_line = next(line for line in readme.splitlines() if line.startswith("make table3 PROFILE=paper"))
    wrong_target = readme.replace(make_line, make_line.replace("make table3", "make table33", 1), 1)
    assert any("no make target 'table33'" in p for p in readme_problems(wrong_target))
    wrong_variable = readme.replace(make_line, make_line.replace("GPUS=", "GPU=", 1), 1)
    assert any("no variable GPU" in p for p in readme_problems(wrong_variable))


def test_the_first_screen_has_the_two_commands_what_they_make_and_the_verdicts_plot(readme):
    first_screen = "\n".join(readme.splitlines()[:50])
    for needed in ("make table3", "make test", "results/table3.csv", "reports/table3.md", "make all-ablations",
                   "](reports/ablations.png)", "](results/README.md)", "make status", "TB=1", "minutes"):
        assert needed in first_screen, needed


@pytest.mark.parametrize("name", ["README.md", "results/README.md"])
def test_every_relative_link_and_image_exists(name):
    page = ROOT / name
    links = re.findall(r"\]\(([^)#\s]+)", page.read_text())
    relative = [link for link in links if not re.match(r"[a-z]+:", link)]
    assert relative
    assert [link for link in relative if not (page.parent / link).exists()] == []
