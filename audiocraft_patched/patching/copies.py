"""Turn our HF conditioner into one self-contained module for upstream's `audiocraft/modules/`.

The transformers repository keeps shared code in one place and marks each copy `# Copied from`
(its `make fix-copies`); this is that idea as a source transform. The input is our module
`audiocraft_patched.modules.conditioners.hf_encoder` as it is *now* (another file may be added
to it tomorrow), and an upstream source tree. Each name a module imports from our package is
resolved by one rule:

- upstream's counterpart module (e.g. `audiocraft/modules/conditioners.py` for anything in our
  `modules/conditioners/` package) defines it: import it from there (`from .conditioners import
  TextConditioner`), so the copy subclasses upstream's own base classes;
- it is our registry (`register_encoder`, ...): dropped; upstream's builders dispatch by hand;
- otherwise it is ours: the module defining it is copied in too, ahead of its users.

A top-level class or function that upstream's counterpart already defines (our `T5Conditioner`
re-implements upstream's) is left out: upstream keeps its own. Imports are regrouped (future,
standard library, third party, upstream) and those no longer used are dropped, so the copy
passes upstream's flake8 (120 columns) as long as our sources do.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path

from .pysource import (MAX_LINE, Import, blank_lines, bound_names, import_block, is_docstring, module_path,
                       relative_level, relative_to, source_text, top_level_definitions, used_names)

OUR_PACKAGE = "audiocraft_patched"
UPSTREAM_PACKAGE = "audiocraft"
SOURCE_MODULE = "audiocraft_patched.modules.conditioners.hf_encoder"
TARGET_MODULE = "audiocraft.modules.hf_conditioner"
TARGET_PATH = "audiocraft/modules/hf_conditioner.py"
REGISTRY_NAMES = frozenset({"register_encoder", "ENCODERS", "build_conditioner"})
COPY_MARK = "# Copied from "


class CopyError(RuntimeError):
    """Our sources use a construct the copy cannot express in upstream; says which and where."""


@dataclass
class _Module:
    name: str
    path: Path
    lines: list[str]
    tree: ast.Module
    chunks: list[tuple[ast.stmt, str]] = field(default_factory=list)  # kept statements and their text


class UpstreamCopier:
    """Builds the upstream copy of `source_module`; see the module docstring for the rules.

    Args:
        upstream: root of an upstream source tree (the folder holding `audiocraft/`).
        ours: root of our package folder (`audiocraft_patched/`); default: this installation.
    """

    def __init__(self, upstream: Path, ours: Path | None = None):
        self.upstream = Path(upstream) / UPSTREAM_PACKAGE
        if not (self.upstream / "__init__.py").is_file():
            raise CopyError(f"{upstream} is not an upstream audiocraft source tree (no audiocraft/__init__.py)")
        self.ours = Path(ours) if ours is not None else Path(__file__).resolve().parents[1]
        self.main = SOURCE_MODULE
        self.modules: dict[str, _Module] = {}
        self.order: list[str] = []  # modules in output order (dependencies first)
        self.in_progress: list[str] = []
        self.imports: list[Import] = []
        self.futures: list[str] = []
        self.defined: dict[str, str] = {}  # top-level name -> module that defines it in the copy
        self.shadowed: dict[str, str] = {}  # our definitions left out -> upstream module with its own
        self._upstream_defs: dict[Path, set[str]] = {}

    # -- resolving names -------------------------------------------------------------------------
    def counterpart(self, module: str) -> tuple[str, Path] | None:
        """Upstream module matching our `module`: the longest prefix of its path that exists upstream."""
        parts = [UPSTREAM_PACKAGE] + module.split(".")[1:]
        while len(parts) > 1:
            path = module_path(".".join(parts), self.upstream, UPSTREAM_PACKAGE)
            if path is not None:
                return ".".join(parts), path
            parts.pop()
        return None

    def upstream_defines(self, module: str, name: str) -> str | None:
        """The upstream module defining `name`, if the counterpart of our `module` does."""
        found = self.counterpart(module)
        if found is None:
            return None
        up_module, path = found
        if path not in self._upstream_defs:
            self._upstream_defs[path] = top_level_definitions(path)
        return up_module if name in self._upstream_defs[path] else None

    def absolute(self, module: _Module, node: ast.ImportFrom) -> str:
        if node.level == 0:
            return node.module or ""
        package = module.name.split(".")
        if module.path.name != "__init__.py":
            package = package[:-1]
        if node.level - 1 >= len(package):
            raise CopyError(f"{module.path}:{node.lineno}: relative import beyond the package")
        base = package[:len(package) - (node.level - 1)]
        return ".".join(base + ([node.module] if node.module else []))

    def defining_module(self, module: str, name: str, seen: frozenset[str] = frozenset()) -> str:
        """Our module that defines `name`, following re-exports (`from .x import name`)."""
        path = module_path(module, self.ours, OUR_PACKAGE)
        if path is None:
            raise CopyError(f"cannot find our module {module} (importing {name!r})")
        if module in seen:
            raise CopyError(f"re-export cycle for {name!r} through {sorted(seen)}")
        tree = ast.parse(path.read_text(encoding="utf-8"))
        if name in top_level_definitions(path):
            return module
        holder = _Module(module, path, [], tree)
        for node in tree.body:
            if isinstance(node, ast.ImportFrom):
                for alias in node.names:
                    if (alias.asname or alias.name) == name:
                        source = self.absolute(holder, node)
                        if alias.name != name:
                            raise CopyError(f"{path}:{node.lineno}: renamed re-export of {alias.name!r}")
                        if source.split(".")[0] != OUR_PACKAGE:
                            raise CopyError(f"{path}: {name!r} comes from {source}, outside {OUR_PACKAGE}")
                        if module_path(f"{source}.{name}", self.ours, OUR_PACKAGE) is not None:
                            raise CopyError(f"{path}:{node.lineno}: {name!r} is a module; import names from it")
                        return self.defining_module(source, name, seen | {module})
        raise CopyError(f"{name!r} is neither defined nor re-exported by {module} ({path})")

    def resolve(self, module: _Module, node: ast.ImportFrom) -> list[tuple[ast.alias, Import | None]]:
        """For each name of an import from our package: its upstream import, or None if dropped/copied."""
        source = self.absolute(module, node)
        out = []
        for alias in node.names:
            if alias.name == "*":
                raise CopyError(f"{module.path}:{node.lineno}: star import from {source}")
            if alias.name in REGISTRY_NAMES:
                out.append((alias, None))
                continue
            up_module = self.upstream_defines(source, alias.name)
            if up_module is None:
                # `from . import hf_encoder`-style imports are handled by defining_module's error.
                up_module = self.upstream_defines(self.defining_module(source, alias.name), alias.name)
            if up_module is not None:
                out.append((alias, Import(relative_to(up_module, TARGET_MODULE), alias.name, alias.asname,
                                          level=relative_level(up_module, TARGET_MODULE))))
                continue
            if alias.asname and alias.asname != alias.name:
                raise CopyError(f"{module.path}:{node.lineno}: `{alias.name} as {alias.asname}` from our package "
                                "cannot be copied in under another name; import it under its own name")
            self.load(self.defining_module(source, alias.name))
            out.append((alias, None))
        return out

    # -- reading modules ---------------------------------------------------------------------------
    def load(self, name: str) -> None:
        """Read our module `name`, its dependencies first, and queue its kept statements."""
        if name in self.order:
            return
        if name in self.in_progress:
            raise CopyError(f"circular imports between {' -> '.join(self.in_progress + [name])}; the copy needs an "
                            "order in which each module only uses modules defined before it")
        path = module_path(name, self.ours, OUR_PACKAGE)
        if path is None:
            raise CopyError(f"cannot find our module {name} under {self.ours}")
        text = path.read_text(encoding="utf-8")
        module = _Module(name, path, text.splitlines(), ast.parse(text, filename=str(path)))
        self.in_progress.append(name)
        self._read(module)
        self.in_progress.pop()
        self.modules[name] = module
        self.order.append(name)

    def _read(self, module: _Module) -> None:
        body = module.tree.body
        edits: dict[int, list[str] | None] = {}  # 1-based line -> replacement (None: delete)
        previous_end = 0
        is_main = module.name == self.main
        for index, node in enumerate(body):
            start, previous_end = previous_end + 1, node.end_lineno
            if index == 0 and is_docstring(node):
                if is_main:
                    module.chunks.append((node, source_text(module.lines, node.lineno, node.end_lineno, edits)))
                continue
            if isinstance(node, ast.ImportFrom) and node.module == "__future__":
                self.futures += [a.name for a in node.names if a.name not in self.futures]
                continue
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                self._top_level_import(module, node)
                continue
            if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                up_module = self.upstream_defines(module.name, node.name)
                if up_module is not None:
                    self.shadowed[node.name] = up_module  # upstream has its own (e.g. T5Conditioner)
                    continue
                for dec in node.decorator_list:
                    if is_registry_decorator(dec):
                        for line in range(dec.lineno, dec.end_lineno + 1):
                            edits[line] = None
            if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__"
                                                    for t in node.targets):
                continue
            names = bound_names(node)
            if names and all(self._defined_alike(name, module, node) for name in names):
                continue  # `logger = logging.getLogger(__name__)` again: one is enough
            self._nested_imports(module, node, edits)
            for name in names:
                owner = self.defined.setdefault(name, module.name)
                if owner != module.name:
                    raise CopyError(f"{name!r} is defined by both {owner} and {module.name}; rename one of them")
            too_long = [n for n in range(start, node.end_lineno + 1)
                        if n not in edits and len(module.lines[n - 1]) > MAX_LINE]
            if too_long:
                raise CopyError(f"{module.path}:{too_long[0]}: line longer than {MAX_LINE} columns, which upstream's "
                                "flake8 rejects; shorten it there, then regenerate")
            module.chunks.append((node, source_text(module.lines, start, node.end_lineno, edits)))

    def _defined_alike(self, name: str, module: _Module, node: ast.stmt) -> bool:
        """Whether another copied module already has this very statement (an identical assignment)."""
        owner = self.modules.get(self.defined.get(name, module.name))
        if owner is None or owner is module or not isinstance(node, ast.Assign):
            return False
        return any(ast.dump(other) == ast.dump(node) for other, _ in owner.chunks)

    def _top_level_import(self, module: _Module, node: ast.Import | ast.ImportFrom) -> None:
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == OUR_PACKAGE:
                    raise CopyError(f"{module.path}:{node.lineno}: `import {alias.name}`; use `from ... import name`")
                self._add_import(Import(None, alias.name, alias.asname))
            return
        if node.level == 0 and (node.module or "").split(".")[0] != OUR_PACKAGE:
            for alias in node.names:
                self._add_import(Import(node.module, alias.name, alias.asname))
            return
        for _, imp in self.resolve(module, node):
            if imp is not None:
                self._add_import(imp)

    def _nested_imports(self, module: _Module, node: ast.stmt, edits: dict[int, list[str] | None]) -> None:
        """Imports inside functions (or `if` blocks) from our package: point them upstream, or drop them."""
        for inner in ast.walk(node):
            if not isinstance(inner, ast.ImportFrom) or inner is node:
                continue
            if inner.level == 0 and (inner.module or "").split(".")[0] != OUR_PACKAGE:
                continue
            indent = " " * inner.col_offset
            kept = [imp.render() for _, imp in self.resolve(module, inner) if imp is not None]
            for line in range(inner.lineno, inner.end_lineno + 1):
                edits[line] = None
            edits[inner.lineno] = [indent + line for line in kept] if kept else None

    def _add_import(self, imp: Import) -> None:
        if not any(i.render() == imp.render() for i in self.imports):
            self.imports.append(imp)

    # -- writing -----------------------------------------------------------------------------------
    def render(self, source_module: str = SOURCE_MODULE) -> str:
        """The copy's text: mark, docstring, imports, then each module's statements."""
        self.main = source_module
        self.load(source_module)
        used = set()
        for name in self.order:
            for node, _ in self.modules[name].chunks:
                used |= used_names(node, is_registry_decorator)
        for name in REGISTRY_NAMES & used:
            raise CopyError(f"{name!r} (our encoder registry) is used beyond a class decorator; upstream has no "
                            "registry, so the copy cannot contain that code")
        for name in sorted(used & set(self.shadowed) - set(self.defined)):
            up_module = self.shadowed[name]
            self._add_import(Import(relative_to(up_module, TARGET_MODULE), name, None,
                                    level=relative_level(up_module, TARGET_MODULE)))
        main = self.modules[source_module]
        out = [f"{COPY_MARK}{source_module}: generated by",
               "# `python -m audiocraft_patched.patching regenerate`. Edit the original, then regenerate."]
        chunks = list(main.chunks)
        if chunks and is_docstring(chunks[0][0]):
            out.append(chunks.pop(0)[1])
        if self.futures:
            out.append(f"from __future__ import {', '.join(self.futures)}")
        out += import_block([i for i in self.imports if i.bound in used])
        previous: ast.stmt | None = None
        for name in self.order:
            module_chunks = chunks if name == source_module else self.modules[name].chunks
            if name != source_module and module_chunks:
                out += ["", "", f"{COPY_MARK}{name}"]
                previous = None
            for node, text in module_chunks:
                out += [""] * blank_lines(previous, node)
                out.append(text)
                previous = node
        text = "\n".join(out).rstrip("\n") + "\n"
        too_long = [i + 1 for i, line in enumerate(text.splitlines()) if len(line) > MAX_LINE]
        if too_long:  # only generated import lines can get here
            raise CopyError(f"the copy has lines over {MAX_LINE} columns (lines {too_long} of {TARGET_PATH})")
        compile(text, TARGET_PATH, "exec")
        return text


def make_upstream_copy(upstream: Path, source_module: str = SOURCE_MODULE, ours: Path | None = None) -> str:
    """Text of `audiocraft/modules/hf_conditioner.py` for the upstream tree at `upstream`."""
    return UpstreamCopier(upstream, ours).render(source_module)


def is_registry_decorator(dec: ast.expr) -> bool:
    target = dec.func if isinstance(dec, ast.Call) else dec
    return isinstance(target, ast.Name) and target.id in REGISTRY_NAMES
