"""The package's layers. The core is the paper, one package per stage, in the order data flows:
`vgg/recipe/` (the settings), `vgg/nets/`, `vgg/data/`, `vgg/training/`, `vgg/evaluation/`, on
`vgg/runtime/` (files, processes, arithmetic, signals). It never imports the suite
(`vgg/suite/`: experiment plans, runners, launchers, results, reports), which orchestrates it, and
the nets never import training. Only the command line (`vgg/cli.py` and its `data` commands in
`vgg/cli_data.py`, `vgg/__main__.py`) stands
above all. And every module stays readable: none over 400 lines, no function over 60 (the
argparse table aside)."""

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "vgg"
COMMAND_LINE = {"cli.py", "cli_data.py", "__main__.py"}
CORE_STAGES = ("recipe", "nets", "data", "training", "evaluation", "runtime")


def modules_of(folder: str) -> list[Path]:
    return sorted((PACKAGE / folder).glob("*.py"))


def core_modules() -> list[Path]:
    return [path for path in PACKAGE.glob("*.py") if path.name not in COMMAND_LINE] + [path for stage in CORE_STAGES for path in modules_of(stage)]


def offenders(paths: list[Path], forbidden: str) -> list[str]:
    """`path:line imports module` for every import of the package `vgg.<forbidden>` (or of a module in it)."""
    return [f"{path.relative_to(PACKAGE.parent) if path.is_relative_to(PACKAGE.parent) else path}:{line} imports {module}" for path in paths for module, line in imported_modules(path.read_text())
            if module == f"vgg.{forbidden}" or module.startswith(f"vgg.{forbidden}.")]


def imported_modules(source: str) -> list[tuple[str, int]]:
    """Every module a source file imports, with the line: at the top and inside functions alike."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.append((node.module, node.lineno))
            found += [(f"{node.module}.{alias.name}", node.lineno) for alias in node.names]  # from vgg import suite
    return found


def test_the_core_never_imports_the_suite():
    assert offenders(core_modules(), "suite") == []


def test_the_nets_never_import_training():
    assert offenders(modules_of("nets"), "training") == []


LOADED = "import importlib, sys\nfor name in sys.argv[1:]: importlib.import_module(name)\nprint(' '.join(m for m in sys.modules if m.startswith('vgg.')))"
"""Import the modules named on the command line; print every vgg module loaded, directly or not."""


def loaded_by(paths: list[Path]) -> list[str]:
    names = [".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts) for path in paths]
    result = subprocess.run([sys.executable, "-c", LOADED, *names], cwd=PACKAGE.parent, capture_output=True, text=True, check=True)
    return result.stdout.split()


def test_what_loads_keeps_the_layers_too():
    """The rules hold for what an import loads in the end, not only for the import lines: loading
    every nets module loads no training module, loading the whole core no suite module."""
    assert [name for name in loaded_by(modules_of("nets")) if name.startswith("vgg.training")] == []
    assert [name for name in loaded_by(core_modules()) if name.startswith("vgg.suite")] == []


def test_the_rules_are_checked_on_every_layer(tmp_path):
    """Not vacuous: every stage and the suite exist, the suite builds on the core, training builds on
    the nets, and the check catches a planted local import and `from vgg import <package>`."""
    assert all(len(modules_of(stage)) >= 2 for stage in CORE_STAGES) and len(modules_of("suite")) >= 8
    assert len(core_modules()) >= 35
    assert any(module.startswith("vgg.") and not module.startswith("vgg.suite") for path in modules_of("suite") for module, _ in imported_modules(path.read_text()))
    assert any(module.startswith("vgg.nets.") for path in modules_of("training") for module, _ in imported_modules(path.read_text()))
    planted = tmp_path / "models.py"
    planted.write_text("import torch\n\n\ndef f():\n    from vgg.suite.runner import ExperimentRunner\n    from vgg import training\n")
    assert offenders([planted], "suite") == [f"{planted}:5 imports vgg.suite.runner", f"{planted}:5 imports vgg.suite.runner.ExperimentRunner"]
    assert offenders([planted], "training") == [f"{planted}:6 imports vgg.training"]


def test_no_module_is_left_outside_a_stage():
    """The core's modules live in its stage packages: only the package's front (`__init__`) and the
    command line stay at the top."""
    assert sorted(path.name for path in PACKAGE.glob("*.py")) == ["__init__.py", "__main__.py", "cli.py", "cli_data.py"]


MAX_MODULE_LINES, MAX_FUNCTION_LINES = 400, 60
LONG_BY_NATURE = {("cli.py", "build_parser")}
"""The argparse table: one add_argument per option, read top to bottom."""


def test_modules_and_functions_stay_small():
    modules = sorted(PACKAGE.rglob("*.py"))
    long_modules = [f"{path.name}: {n} lines" for path in modules if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES]
    long_functions = [
        f"{path.name}:{node.lineno} {node.name}: {node.end_lineno - node.lineno + 1} lines"
        for path in modules for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
        and (path.name, node.name) not in LONG_BY_NATURE
    ]
    assert long_modules == [] and long_functions == []
