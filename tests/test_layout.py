"""Imports run one way, bottom to top (README: Layout). The CAM methods own their engine
protocol and import no runtime, job or front end; the jobs live in the library and the CLI
only parses; the backends are one table."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "unioncam_rt"
# each part of the package (a subpackage or a top-level module) and its layer, bottom first:
# a module may import its own layer's parts and the layers below, never a layer above
LAYERS = (
    ("errors", "_version", "progress", "compare", "memory", "fileio", "images", "manifest", "zoo", "data"),
    ("sources",),
    ("method",),
    ("runtime",),
    ("exporting",),
    ("cache", "presets"),
    ("results", "outputs", "metrics", "explainer", "inspection"),
    ("distributed",),
    ("jobs",),
    ("serve",),
    ("cli", "__main__"),
)
LAYER = {part: level for level, parts in enumerate(LAYERS) for part in parts}
PUBLIC_API = "__init__"  # the package root's lazy public API (export, explain, Explainer) may reach up


def _imports(path: Path) -> list[tuple[str, int]]:
    """The parts of the package a module imports (at any depth, lazy imports included), with line numbers."""
    package = list(path.relative_to(PACKAGE).parent.parts)
    parts = []
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                target = base + (node.module.split(".") if node.module else [alias.name for alias in node.names[:1]])
            elif node.module and node.module.split(".")[0] == "unioncam_rt":
                target = node.module.split(".")[1:] or [alias.name for alias in node.names[:1]]
            else:
                continue
            parts.append((target[0], node.lineno))
        elif isinstance(node, ast.Import):
            parts += [(alias.name.split(".")[1], node.lineno) for alias in node.names
                      if alias.name.startswith("unioncam_rt.")]
    return parts


def _part(path: Path) -> str:
    relative = path.relative_to(PACKAGE)
    return relative.parts[0] if len(relative.parts) > 1 else relative.stem


def test_every_part_of_the_package_has_a_layer():
    parts = {_part(path) for path in PACKAGE.rglob("*.py")} - {PUBLIC_API}
    assert parts <= set(LAYER), f"give these a layer in LAYERS: {sorted(parts - set(LAYER))}"


def test_no_module_imports_a_layer_above_its_own():
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        source = _part(path)
        if source == PUBLIC_API:
            continue
        for target, line in _imports(path):
            if target in LAYER and LAYER[target] > LAYER[source]:
                upward.append(f"{path.relative_to(PACKAGE)}:{line} imports {target}")
    assert not upward, "imports that run upward:\n" + "\n".join(upward)


def test_parts_of_one_layer_do_not_import_each_other_in_a_circle():
    edges = {}
    for path in PACKAGE.rglob("*.py"):
        source = _part(path)
        edges.setdefault(source, set()).update(t for t, _ in _imports(path) if t != source and t in LAYER)

    def reaches(start, goal, seen):
        return any(n == goal or (n not in seen and not seen.add(n) and reaches(n, goal, seen))
                   for n in edges.get(start, ()))

    circles = sorted(part for part in edges if part != PUBLIC_API and reaches(part, part, set()))
    assert not circles, f"circular imports between parts: {circles}"


def test_the_layer_check_sees_an_upward_import(tmp_path):
    """The check itself: a runtime module importing a job is found."""
    planted = PACKAGE / "runtime" / "_planted_for_test.py"
    planted.write_text("def f():\n    from ..jobs.explain import ExplainConfig\n")
    try:
        assert [("jobs", 2)] == _imports(planted)
        assert LAYER["jobs"] > LAYER[_part(planted)]
    finally:
        planted.unlink()


def test_the_cli_defines_no_job():
    """`cli.py` parses options and calls one library function per command: no dataclass,
    no loop over images, no engine opened there."""
    tree = ast.parse((PACKAGE / "cli.py").read_text("utf-8"))
    classes = [node.name for node in ast.walk(tree) if isinstance(node, ast.ClassDef)]
    loops = [node.lineno for node in ast.walk(tree) if isinstance(node, (ast.For, ast.While))]
    names = {alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) for alias in node.names}
    assert classes == [] and loops == [], (classes, loops)
    assert not names & {"open_cached_engine", "open_engine", "Explainer", "explain_on_ray", "evaluate_on_ray"}


def test_one_backend_table():
    """Backends and precisions are declared once (runtime/backends.py); nothing else lists them."""
    from unioncam_rt.runtime.backends import BACKENDS

    for path in PACKAGE.rglob("*.py"):
        if path.name == "backends.py":
            continue
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if isinstance(node, (ast.Tuple, ast.List, ast.Set)) and len(node.elts) >= 2:
                values = {e.value for e in node.elts if isinstance(e, ast.Constant)}
                assert len(values & set(BACKENDS)) < 2, f"{path.relative_to(PACKAGE)}:{node.lineno} lists backends"


def test_the_method_package_imports_nothing_above_it():
    for path in sorted((PACKAGE / "method").glob("*.py")):
        for target, line in _imports(path):
            assert LAYER.get(target, 0) <= LAYER["method"], f"method/{path.name}:{line} imports {target}"


def test_the_engine_protocol_lives_in_the_method_package():
    from unioncam_rt.method.engine import CamEngine, FeatureBatch  # noqa: F401

    assert not (PACKAGE / "runtime" / "base.py").exists()
