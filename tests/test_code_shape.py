"""The package's shape a maintainer relies on (issue 39; docs/architecture.md): short
modules and functions, and no module reaching into another's private names. Read from
the source with ``ast``, so these run in milliseconds."""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "avrsp"
MODULES = sorted(SRC.rglob("*.py"))
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 62


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _target(path: Path, node: ast.ImportFrom) -> str | None:
    """The absolute name of the module an ``import from`` reads, if it is one of ours."""
    if node.level == 0:
        return node.module if node.module and node.module.split(".")[0] == "avrsp" else None
    package = _module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    base = package[:len(package) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def private_uses(path: Path) -> list[str]:
    """Private names of another avrsp module that ``path`` imports or reads as an attribute
    of a module it imported."""
    me = _module_name(path)
    found, aliases = [], {}
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.ImportFrom):
            target = _target(path, node)
            if target is None or target == me:
                continue
            for a in node.names:
                if _private(a.name):
                    found.append(f"{target}.{a.name}")
                aliases[a.asname or a.name] = f"{target}.{a.name}"
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == "avrsp":
                    aliases[a.asname or a.name] = a.name
    for node in ast.walk(_tree(path)):
        if (isinstance(node, ast.Attribute) and _private(node.attr) and isinstance(node.value, ast.Name)
                and node.value.id in aliases and aliases[node.value.id] != me):
            found.append(f"{aliases[node.value.id]}.{node.attr}")
    return found


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(SRC)))
def test_modules_and_functions_are_short_and_keep_to_their_own_names(path):
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_MODULE_LINES, f"{path.name}: {lines} lines; split it by job (docs/architecture.md)"
    long = [f"{n.name} ({n.end_lineno - n.lineno + 1} lines)" for n in ast.walk(_tree(path))
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.end_lineno - n.lineno + 1 > MAX_FUNCTION_LINES]
    assert not long, f"{path.name}: {', '.join(long)}"
    assert not private_uses(path), f"{path.name} uses another module's private names: {private_uses(path)}"


def test_the_checks_see_what_they_are_meant_to_catch(tmp_path, monkeypatch):
    """Each check fails on the code it forbids: a private import by relative and by absolute
    path, a private attribute of an imported module; a module's own private names pass."""
    pkg = tmp_path / "avrsp"
    (pkg / "data").mkdir(parents=True)
    monkeypatch.setattr(__import__(__name__), "SRC", pkg)
    (pkg / "data" / "x.py").write_text("from ..media import _open\nfrom avrsp.predict import _replace\n"
                                       "from .. import predict\npredict._video_rows\nfrom . import x\n"
                                       "def _own():\n    pass\n_own()\n")
    assert private_uses(pkg / "data" / "x.py") == ["avrsp.media._open", "avrsp.predict._replace",
                                                   "avrsp.predict._video_rows"]
    (pkg / "data" / "y.py").write_text("from .x import _own\n")
    assert private_uses(pkg / "data" / "y.py") == ["avrsp.data.x._own"]
    (pkg / "data" / "z.py").write_text("from .z import _mine\nimport avrsp.media as m\nm._cause\n")
    assert private_uses(pkg / "data" / "z.py") == ["avrsp.media._cause"]
