"""Python source helpers for the upstream copy: module lookup, statement text, imports, blank lines."""
from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

MAX_LINE = 120  # upstream's flake8 setting (setup.cfg)


@dataclass
class Import:
    """One imported name, as the copy will import it."""

    module: str | None  # None for `import x`; "" never (relative imports are resolved first)
    name: str  # imported name (or module for `import x`)
    asname: str | None
    level: int = 0  # > 0: relative to the target package (an upstream import)

    @property
    def bound(self) -> str:
        return self.asname or self.name.split(".")[0]

    def render(self) -> str:
        alias = f" as {self.asname}" if self.asname else ""
        if self.module is None:
            return f"import {self.name}{alias}"
        return f"from {'.' * self.level}{self.module} import {self.name}{alias}"


def module_path(module: str, root: Path, package: str) -> Path | None:
    """File of `module` (dotted, under `package`) in the tree whose package folder is `root`."""
    parts = module.split(".")
    if parts[0] != package:
        return None
    base = root.joinpath(*parts[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def top_level_definitions(path: Path) -> set[str]:
    """Names a module defines itself (classes, functions, assignments), not the ones it imports."""
    names: set[str] = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
    return names


def relative_level(module: str, target: str) -> int:
    """Dots of the relative import of `module` from the module `target` (1: same package)."""
    common = common_prefix(module.split("."), target.split(".")[:-1])
    return len(target.split(".")[:-1]) - common + 1


def relative_to(module: str, target: str) -> str:
    """`module` as written after those dots (empty: the package itself)."""
    common = common_prefix(module.split("."), target.split(".")[:-1])
    return ".".join(module.split(".")[common:])


def common_prefix(a: list[str], b: list[str]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def is_docstring(node: ast.stmt) -> bool:
    return isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)


def source_text(lines: list[str], start: int, end: int, edits: dict[int, list[str] | None]) -> str:
    """Source lines start..end (1-based) with edits applied, blank lines around trimmed."""
    out: list[str] = []
    for number in range(start, end + 1):
        if number in edits:
            out += edits[number] or []
        else:
            out.append(lines[number - 1])
    while out and not out[0].strip():
        out.pop(0)
    return "\n".join(out).rstrip()


def bound_names(node: ast.stmt) -> list[str]:
    if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
        return [node.name]
    if isinstance(node, ast.Assign):
        return [t.id for t in node.targets if isinstance(t, ast.Name)]
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
        return [node.target.id]
    return []


def used_names(node: ast.AST, dropped_decorator=lambda dec: False) -> set[str]:
    """Names the statement reads or binds, except inside decorators the copy drops."""
    names = set()
    skip = set()
    for inner in ast.walk(node):
        if isinstance(inner, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            skip |= {id(d) for d in inner.decorator_list if dropped_decorator(d)}
    for inner in walk_except(node, skip):
        if isinstance(inner, ast.Name):
            names.add(inner.id)
        elif isinstance(inner, ast.Constant) and isinstance(inner.value, str) and inner.value.isidentifier():
            names.add(inner.value)  # string annotations such as "HFEncoderConditioner"
    return names


def walk_except(node: ast.AST, skip: set[int]):
    """ast.walk that does not enter the nodes whose id() is in `skip`."""
    todo = [node]
    while todo:
        current = todo.pop()
        if id(current) in skip:
            continue
        yield current
        todo.extend(ast.iter_child_nodes(current))


def import_block(imports: list[Import]) -> list[str]:
    """Standard library / third party / upstream groups, one blank line apart, sorted as isort does."""
    groups: dict[str, list[Import]] = {"std": [], "third": [], "local": []}
    for imp in imports:
        root = (imp.module if imp.module is not None else imp.name).split(".")[0]
        group = "local" if imp.level else "std" if root in sys.stdlib_module_names else "third"
        groups[group].append(imp)
    out: list[str] = []
    for group in groups.values():
        plain = sorted({imp.render() for imp in group if imp.module is None}, key=str.lower)
        merged: dict[str, list[str]] = {}  # `from X import a, b`: one line per X
        for imp in group:
            if imp.module is not None:
                names = merged.setdefault("." * imp.level + imp.module, [])
                names.append(f"{imp.name} as {imp.asname}" if imp.asname else imp.name)
        lines = list(plain)
        for module in sorted(merged, key=str.lower):
            names = sorted(set(merged[module]), key=str.lower)
            line = f"from {module} import {', '.join(names)}"
            if len(line) > MAX_LINE:
                line = f"from {module} import (\n" + "".join(f"    {n},\n" for n in names) + ")"
            lines.append(line)
        if lines:
            out += [""] + lines
    return out


def blank_lines(previous: ast.stmt | None, node: ast.stmt) -> int:
    """pycodestyle's rule: two blank lines around top-level definitions, one otherwise."""
    if previous is None:
        return 2 if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) else 1
    defs = (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    return 2 if isinstance(previous, defs) or isinstance(node, defs) else 1
