"""Imports run one way: the CAM methods own their engine protocol and import no runtime,
no job and no front end (runtimes, jobs and the CLI import the methods, never back)."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "unioncam_rt"
UPSTREAM = ("runtime", "cache", "cli", "explainer", "serve", "distributed", "export", "evaluate")


def _imported(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            names.add("." * node.level + (node.module or ""))
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_the_method_package_imports_nothing_above_it():
    for path in sorted((PACKAGE / "method").glob("*.py")):
        for name in _imported(path):
            if name.startswith(".."):  # a sibling package of method/
                top = name[2:].split(".")[0]
            elif name.startswith("unioncam_rt."):
                top = name.split(".")[1]
            else:
                continue
            assert top not in UPSTREAM, f"method/{path.name} imports {name}"


def test_the_engine_protocol_lives_in_the_method_package():
    from unioncam_rt.method.engine import CamEngine, FeatureBatch  # noqa: F401

    assert not (PACKAGE / "runtime" / "base.py").exists()
