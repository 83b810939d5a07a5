"""The layout's promises, checked on the source of ``nsp`` and ``nsp_lightning``.

- Every documented public name imports from its documented path: the ``__all__`` of the
  public packages, the seed's API (``nsp.activations.Activations``, ...) and every import
  the README's code shows.
- The modules form no import cycle, counting imports inside functions, and use no private
  name of another module or of a dependency.
- ``nsp`` and ``nsp_lightning`` import where ``fcntl`` does not exist (Windows).
- No block of six or more lines is written twice.
- No module is longer than 600 lines unless its docstring says why.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import io
import re
import subprocess
import sys
import tokenize
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("nsp", "nsp_lightning")


def _module_files() -> dict[str, Path]:
    files = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return files


MODULES = _module_files()


def _moved() -> dict[str, str]:
    import nsp
    import nsp_lightning

    return {**nsp.MOVED_MODULES, **nsp_lightning.MOVED_MODULES}


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


# ---------------------------------------------------------------------------------------
# Documented names import from their documented paths.

PUBLIC_PACKAGES = ["nsp", "nsp_lightning", "nsp_lightning.analyses", "nsp.attribution", "nsp.optvis"]

# The seed's API (shared/seeds/nsp-API.txt): its module paths, classes and methods.
SEED_API = {
    "nsp.activations": {"Activations": ["to_activations", "to_vector"]},
    "nsp.nngraph": {"NNGraph": ["get_transformer", "node_id", "transform"]},
    "nsp.outputLoader": {"OutputLoader": ["load", "save"]},
    "nsp.transformer": {"Transformer": ["get_fourier_matrix", "get_inv_fourier_matrix", "get_laplacian"]},
    "nsp.visualizer": {"Visualizer": ["visualize_pattern"]},
}


@pytest.mark.parametrize("package", PUBLIC_PACKAGES)
def test_every_name_in_all_imports_from_its_package(package):
    module = importlib.import_module(package)
    assert module.__all__, f"{package}.__all__ is empty"
    failed = []
    for name in module.__all__:
        try:
            exec(f"from {package} import {name}", {})
        except Exception as err:  # noqa: BLE001 - every failure is listed, whatever it is
            failed.append(f"from {package} import {name}: {type(err).__name__}: {err}")
    assert not failed, "\n".join(failed)


@pytest.mark.parametrize("path", sorted(SEED_API))
def test_the_seed_api_imports_from_the_seed_paths(path):
    module = importlib.import_module(path)
    for cls, methods in SEED_API[path].items():
        obj = getattr(module, cls)
        assert isinstance(obj, type), f"{path}.{cls} is not a class"
        missing = [m for m in methods if not callable(getattr(obj, m, None))]
        assert not missing, f"{path}.{cls} lacks the seed's {missing}"


def _readme_imports() -> list[tuple[str, list[str]]]:
    """``(module, names)`` of every nsp/nsp_lightning import in the README's Python blocks."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"^```python\n(.*?)^```", text, flags=re.M | re.S)
    assert blocks, "README.md shows no ```python block"
    found = []
    for block in blocks:
        for node in ast.walk(ast.parse(block)):
            if isinstance(node, ast.Import):
                found += [(alias.name, []) for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                found.append((node.module, [alias.name for alias in node.names]))
    # Third-party imports in the examples are the reader's environment, not this layout.
    return sorted({(m, tuple(n)) for m, n in found if m.split(".")[0] in PACKAGES})


README_IMPORTS = _readme_imports()


@pytest.mark.parametrize(
    ("module", "names"),
    README_IMPORTS,
    ids=[f"from {m} import {', '.join(n)}" if n else f"import {m}" for m, n in README_IMPORTS],
)
def test_every_import_the_readme_shows_works(module, names):
    if names:
        exec(f"from {module} import {', '.join(names)}", {})
    else:
        importlib.import_module(module)


# ---------------------------------------------------------------------------------------
# Imports between modules: no cycle, no private name.


def _runtime_nodes(tree: ast.Module, is_package: bool):
    """Every node that runs, at import time or later in a function.

    Left out: ``if TYPE_CHECKING:`` blocks, which never run, and the body of a package's
    module-level ``__getattr__``: it imports a submodule lazily when an attribute is first
    read, after the package has finished importing, so it cannot close a cycle (that is what
    it is for: matplotlib and Lightning load only when used).
    """
    stack = [n for n in tree.body if not (is_package and isinstance(n, ast.FunctionDef) and n.name == "__getattr__")]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            stack.extend(node.orelse)
            continue
        yield node
        stack.extend(ast.iter_child_nodes(node))


class _Imports:
    """The imports of one module, resolved to absolute module paths."""

    def __init__(self, name: str, path: Path, moved: dict[str, str]) -> None:
        self.name, self.path, self.moved = name, path, moved
        self.is_package = path.name == "__init__.py"
        self.tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        self.nodes = list(_runtime_nodes(self.tree, self.is_package))

    def absolute(self, node: ast.ImportFrom) -> str:
        if not node.level:
            return node.module
        base = self.name.split(".")
        base = base[: len(base) - node.level + (1 if self.is_package else 0)]
        return ".".join(base + ([node.module] if node.module else []))

    def ours(self, name: str) -> str | None:
        """The nsp/nsp_lightning module that importing ``name`` runs, or None."""
        name = self.moved.get(name, name)
        while name and name not in MODULES:
            name = name.rpartition(".")[0]
        return name or None

    def edges(self):
        """``(imported module, line)`` for every import of one of our modules."""
        for node in self.nodes:
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = self.absolute(node)
                sub = [f"{base}.{a.name}" for a in node.names]
                targets = [s for s in sub if self.moved.get(s, s) in MODULES] or [base]
            elif (
                isinstance(node, ast.Call)
                and ast.unparse(node.func) in ("importlib.import_module", "import_module")
                and node.args
                and isinstance(node.args[0], ast.Constant)
            ):
                targets = [node.args[0].value]
            else:
                continue
            for target in targets:
                module = self.ours(target)
                if module and module != self.name:
                    yield module, node.lineno


def _all_imports() -> list[_Imports]:
    moved = _moved()
    return [_Imports(name, path, moved) for name, path in MODULES.items()]


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index, low, on_stack, stack, found, counter = {}, {}, set(), [], [], [0]
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter[0]
                    counter[0] += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_cycle_search_finds_every_cycle_and_nothing_else():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a", "e"}, "e": {"d"}, "f": {"a"}}
    assert sorted(_cycles(graph)) == [["a", "b", "c"], ["d", "e"]]


def test_no_import_cycle_among_the_modules_counting_imports_inside_functions():
    imports = _all_imports()
    graph: dict[str, set[str]] = defaultdict(set)
    where: dict[tuple[str, str], list[str]] = defaultdict(list)
    for mod in imports:
        graph[mod.name]
        for target, line in mod.edges():
            graph[mod.name].add(target)
            where[mod.name, target].append(f"{_rel(mod.path)}:{line}")
    report = []
    for component in _cycles(graph):
        members = set(component)
        report.append("cycle: " + ", ".join(component))
        for a in component:
            for b in sorted(graph[a] & members):
                report.append(f"  {a} -> {b}  ({', '.join(where[a, b])})")
    assert not report, "\n".join(report)


# Private names of dependencies used where no public API does the job: (module, name), each
# allowed in that one module only, with the reason.
PRIVATE_ALLOWED: dict[tuple[str, str], str] = {
    # No public context manager turns __torch_function__ dispatch off; PyTorch's own
    # "Extending torch" notes use torch._C.DisableTorchFunctionSubclass the same way.
    ("nsp.graph.dataflow", "torch._C.DisableTorchFunction"): "reads a version counter unrecorded",
    # No public function reads the innermost torch-function mode; the recorder steps off the
    # stack (its own __exit__/__enter__) inside a module it records whole only when it is that mode.
    ("nsp.graph.dataflow", "torch.overrides._get_current_function_mode"): "steps off only from the top",
    # torch's handle of a forward hook common to all modules, registered with kwargs, leaves
    # its entry in this table when removed; the tracer removes it (one per capture would pile up).
    ("nsp.common.tracer", "torch.nn.modules.module._global_forward_hooks_with_kwargs"): "removes what torch leaves",
    # The op object a functional ReLU6 reaches a TorchFunctionMode as; an op is recognised
    # by identity, so the object itself is needed.
    ("nsp.common.tracer", "torch._C._nn.relu6"): "recognises a functional ReLU6 by its op",
    # torch has no public pytree module (torch.utils.pytree does not exist in 2.13; torch.func
    # uses this one). The tracer wraps it once (tensors_in, map_leaves) for every other module.
    ("nsp.common.tracer", "torch.utils._pytree"): "walks nested call arguments as torch does",
}


def _module_bindings(mod: _Imports) -> dict[str, str]:
    """Local name -> dotted path, for every name an import binds in the module."""
    bound = {}
    for node in mod.nodes:
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    bound[alias.asname] = alias.name
                else:
                    bound[alias.name.split(".")[0]] = alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom):
            base = mod.absolute(node)
            for alias in node.names:
                bound[alias.asname or alias.name] = f"{base}.{alias.name}"
    return bound


def _private_uses(mod: _Imports):
    """``(dotted private name, line)`` for each private name ``mod`` takes from another module."""
    bound = _module_bindings(mod)

    def dotted(expr: ast.expr) -> str | None:
        if isinstance(expr, ast.Name):
            return bound.get(expr.id)
        if isinstance(expr, ast.Attribute):
            head = dotted(expr.value)
            return f"{head}.{expr.attr}" if head else None
        return None

    # Only whole chains: ``torch._C._nn.relu6`` is one use, not three.
    inner = {id(n.value) for n in mod.nodes if isinstance(n, ast.Attribute)}
    for node in mod.nodes:
        if isinstance(node, ast.Import):
            for alias in node.names:
                if any(_is_private(part) for part in alias.name.split(".")):
                    yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = mod.absolute(node)
            if any(_is_private(part) for part in base.split(".")):
                yield base, node.lineno
            for alias in node.names:
                if _is_private(alias.name):
                    yield f"{base}.{alias.name}", node.lineno
        elif isinstance(node, ast.Attribute) and id(node) not in inner:
            name, chain = dotted(node), node
            while name and isinstance(chain, ast.Attribute):
                if _is_private(chain.attr):
                    yield name, node.lineno
                    break
                chain = chain.value


def test_no_private_name_is_taken_from_another_module_or_a_dependency():
    found, allowed = [], set()
    for mod in _all_imports():
        for name, line in _private_uses(mod):
            if (mod.name, name) in PRIVATE_ALLOWED:
                allowed.add((mod.name, name))
            else:
                found.append(f"{_rel(mod.path)}:{line}: {name}")
    assert not found, "private names used across modules:\n" + "\n".join(found)
    assert allowed == set(PRIVATE_ALLOWED), f"allowed but no longer used: {set(PRIVATE_ALLOWED) - allowed}"


@pytest.mark.slow
def test_nsp_and_nsp_lightning_import_without_fcntl():
    # Windows has no fcntl; every module, not only the packages, must import without it.
    code = (
        "import sys; sys.modules['fcntl'] = None; import nsp, nsp_lightning\n"
        "import importlib\n"
        "for name in sys.argv[1:]:\n"
        "    importlib.import_module(name)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, *MODULES], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]


# ---------------------------------------------------------------------------------------
# No block written twice; no long module without a reason.

WINDOW = 6
# Lines too common to make two blocks the same code.
TRIVIAL = {"else:", "try:", "finally:", "pass", "return", "return None", "break", "continue", "raise", "@property"}


def _code_lines(path: Path) -> list[tuple[int, str]]:
    """``(line, text)`` of the lines that are code: comments, docstrings, imports, function
    signatures, blank and punctuation-only lines left out, each line's tokens joined by
    single spaces."""
    source = path.read_text(encoding="utf-8")
    skip = set()
    for node in ast.walk(ast.parse(source)):
        is_string = isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)
        if is_string or isinstance(node, (ast.Import, ast.ImportFrom)):
            skip.update(range(node.lineno, node.end_lineno + 1))
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            # Functions that take the same options share their parameter lists; that is
            # an interface, not logic written twice (pylint's ignore-signatures).
            skip.update(range(node.lineno, node.body[0].lineno))
    text: dict[int, list[str]] = defaultdict(list)
    ignore = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENCODING, tokenize.ENDMARKER}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type not in ignore and tok.start[0] not in skip:
            text[tok.start[0]].append(tok.string)
    lines = []
    for number in sorted(text):
        line = " ".join(text[number])
        if re.search(r"\w", line) and line not in TRIVIAL:
            lines.append((number, line))
    return lines


def _duplicate_blocks(files: dict[str, Path]) -> list[str]:
    """One row ``a.py:10-24 ~ b.py:40-54`` per block of ``WINDOW`` or more code lines that
    stands twice among ``files`` (name -> path)."""
    lines = {name: _code_lines(path) for name, path in files.items()}
    seen: dict[tuple[str, ...], list[tuple[str, int]]] = defaultdict(list)
    for name, code in lines.items():
        for i in range(len(code) - WINDOW + 1):
            seen[tuple(t for _, t in code[i : i + WINDOW])].append((name, i))
    pairs = set()
    for places in seen.values():
        for j, (a, i) in enumerate(places):
            for b, k in places[j + 1 :]:
                if a != b or abs(i - k) >= WINDOW:
                    pairs.add((a, i, b, k))
    report = []
    # One row per maximal run: a pair whose predecessor is also a pair continues a run.
    for a, i, b, k in sorted(pairs):
        if (a, i - 1, b, k - 1) in pairs:
            continue
        n = 0
        while (a, i + n + 1, b, k + n + 1) in pairs:
            n += 1
        first = lambda m, x: lines[m][x][0]  # noqa: E731
        report.append(f"{a}:{first(a, i)}-{first(a, i + n + WINDOW - 1)} ~ {b}:{first(b, k)}-{first(b, k + n + WINDOW - 1)}")
    return report


def test_the_duplicate_check_finds_a_block_written_twice_and_only_that(tmp_path):
    body = [f"    total = total + {i} * value" for i in range(6)]
    a = ['"""Module a."""', "import os", "", "", "def f(value, total=0):", '    """Doc."""', *body, "    return total"]
    b = ["def g(value, total=0, other=1):", "    # the same lines, other comments", *body, "    return total  # why"]
    short = ["def h(value, total=0):", *body[:5], "    return total"]
    spread = ["def k(value, total=0):", *body[:3], "    total = -total", *body[3:], "    return total"]
    for name, text in {"a.py": a, "b.py": b, "short.py": short, "spread.py": spread}.items():
        (tmp_path / name).write_text("\n".join(text) + "\n", encoding="utf-8")
    files = {name: tmp_path / name for name in ("a.py", "b.py", "short.py", "spread.py")}
    assert _duplicate_blocks(files) == ["a.py:7-13 ~ b.py:3-9"]


def test_no_block_of_six_lines_is_written_twice():
    report = _duplicate_blocks({_rel(path): path for path in MODULES.values()})
    assert not report, f"blocks of {WINDOW} or more code lines written twice:\n" + "\n".join(report)


MAX_LINES = 600


def test_no_module_over_600_lines_unless_its_docstring_says_why():
    # The reason is a sentence of the module docstring that mentions "600 lines".
    long = []
    for path in MODULES.values():
        source = path.read_text(encoding="utf-8")
        count = len(source.splitlines())
        doc = ast.get_docstring(ast.parse(source)) or ""
        if count > MAX_LINES and f"{MAX_LINES} lines" not in doc:
            long.append(f"{_rel(path)}: {count} lines")
    assert not long, f"modules over {MAX_LINES} lines whose docstring does not say why:\n" + "\n".join(long)
