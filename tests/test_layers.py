"""The package's two layers: the core (`vgg/*.py`: nets, data, training, evaluation) never imports
the suite (`vgg/suite/`: experiment plans, runners, launchers, results, reports), which
orchestrates it. Only the command line (`vgg/cli.py`, `vgg/__main__.py`) stands above both. And
both stay readable: no module over 400 lines, no function over 60 (the argparse table aside)."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "vgg"
COMMAND_LINE = {"cli.py", "__main__.py"}


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


def is_suite(module: str) -> bool:
    return module == "vgg.suite" or module.startswith("vgg.suite.")


def test_the_core_never_imports_the_suite():
    core = [path for path in PACKAGE.glob("*.py") if path.name not in COMMAND_LINE]
    offenders = [f"vgg/{path.name}:{line} imports {module}" for path in core for module, line in imported_modules(path.read_text()) if is_suite(module)]
    assert offenders == []


def test_the_rule_is_checked_on_both_layers():
    """Not vacuous: both layers exist, the suite builds on the core, and the check sees local imports."""
    suite = list((PACKAGE / "suite").glob("*.py"))
    assert len(suite) >= 8 and len(list(PACKAGE.glob("*.py"))) >= 20
    assert any(module.startswith("vgg.") and not is_suite(module) for path in suite for module, _ in imported_modules(path.read_text()))
    source = "def f():\n    from vgg.suite.runner import ExperimentRunner\n"
    assert [module for module, _ in imported_modules(source) if is_suite(module)] == ["vgg.suite.runner", "vgg.suite.runner.ExperimentRunner"]



MAX_MODULE_LINES, MAX_FUNCTION_LINES = 400, 60
LONG_BY_NATURE = {("cli.py", "build_parser")}
"""The argparse table: one add_argument per option, read top to bottom."""


def test_modules_and_functions_stay_small():
    modules = [*PACKAGE.glob("*.py"), *PACKAGE.glob("suite/*.py")]
    long_modules = [f"{path.name}: {n} lines" for path in modules if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES]
    long_functions = [
        f"{path.name}:{node.lineno} {node.name}: {node.end_lineno - node.lineno + 1} lines"
        for path in modules for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
        and (path.name, node.name) not in LONG_BY_NATURE
    ]
    assert long_modules == [] and long_functions == []
