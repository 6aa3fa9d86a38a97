"""The architecture holds: each module imports only the layers below it (docs/design.md), the
Faiss package imports no torch, and commands that do not train never load the trainer."""

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "cl_toolkit"

# The layers, lowest first; written once. A module may import modules of the layers before its
# own and the other modules of its own package; nothing of its own layer or above.
LAYERS = [
    ["io"],
    ["index"],                                  # Faiss and numpy only
    ["runtime", "dist"],
    ["data", "recdata"],
    ["augment", "augment_features"],
    ["encoders"],
    ["losses", "collapse"],
    ["tasks"],
    ["methods"],
    ["optim", "gradcache"],
    ["config"],
    ["train"],
    ["embed"],
    ["eval", "receval", "recbaselines"],
    ["tag", "match", "mine", "finetune", "report", "recommend"],     # apps
    ["pipeline"],
    ["cli"],
    ["__main__"],
]
LEVEL = {name: i for i, names in enumerate(LAYERS) for name in names}


def _top(module: Path, root: Path = PKG) -> str:
    """The layer a file belongs to: its top-level module or package under cl_toolkit."""
    return module.relative_to(root).parts[0].removesuffix(".py")


def _imported(path: Path, root: Path = PKG) -> set[str]:
    """Top-level cl_toolkit modules a file imports (anywhere in it, lazy imports included)."""
    package = list(path.relative_to(root).parts[:-1])
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:   # relative: resolve against the file's package
                base = package[: len(package) - (node.level - 1)] if node.level > 1 else package
                parts = base + (node.module.split(".") if node.module else [])
                if parts:
                    found.add(parts[0])
                else:   # ``from . import x`` at the package root: x is a module, or an attribute of __init__
                    found.update(a.name for a in node.names if (root / a.name).is_dir()
                                 or (root / f"{a.name}.py").is_file())
            elif node.module and node.module.startswith("cl_toolkit."):
                found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("cl_toolkit."))
    return found


def test_every_module_is_in_a_layer():
    tops = {_top(p) for p in PKG.rglob("*.py")} - {"__init__"}
    assert tops <= set(LEVEL), sorted(tops - set(LEVEL))


def _violations(path: Path, root: Path = PKG) -> list[str]:
    top = _top(path, root)
    if top == "__init__":
        return sorted(_imported(path, root))       # the package root stays import-free
    return sorted(m for m in _imported(path, root) - {top} if LEVEL.get(m, len(LAYERS)) >= LEVEL[top])


@pytest.mark.parametrize("path", sorted(PKG.rglob("*.py")), ids=lambda p: str(p.relative_to(PKG)))
def test_no_module_imports_its_own_layer_or_above(path):
    bad = _violations(path)
    assert not bad, f"{path.relative_to(PKG)} (layer {LEVEL.get(_top(path))}) imports {bad}"


def test_the_checker_finds_lazy_relative_and_absolute_imports_of_a_higher_layer(tmp_path):
    root = tmp_path / "cl_toolkit"
    (root / "index").mkdir(parents=True)
    probe = root / "index" / "probe.py"
    probe.write_text("from . import choose\nfrom ..io import InputError\n\ndef f():\n    from ..train import Trainer\n"
                     "    import cl_toolkit.embed\n")
    assert _imported(probe, root) == {"index", "io", "train", "embed"}
    assert _violations(probe, root) == ["embed", "train"]


def _modules_after(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", code + "\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_the_faiss_package_imports_no_torch():
    mods = _modules_after("import cl_toolkit.index")
    assert "torch" not in mods and "faiss" in mods


@pytest.mark.parametrize("argv", [["tag", "--help"], ["encoders"], ["eval", "knn", "--help"], ["--help"]])
def test_commands_that_do_not_train_do_not_load_the_trainer(argv):
    code = (f"import sys\nfrom cl_toolkit.cli import main\nsys.argv = ['cltk', *{argv!r}]\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\nsys.stdout.write('\\n')")
    mods = _modules_after(code)
    assert "cl_toolkit.train" not in mods and "cl_toolkit.methods" not in mods, sorted(
        m for m in mods if m.startswith("cl_toolkit"))
    if "--help" in argv:
        assert "torch" not in mods    # help text needs no library at all
