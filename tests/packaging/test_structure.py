"""The package's structure rules, read from its source (docs/architecture.md, "Rules the code
keeps"): no import cycles (imports inside functions count), no ``_private`` name imported from
another module, modules <= 500 lines, functions <= 100 lines, nothing that points outside the
repository."""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path

from helpers.paths import ROOT

PKG = ROOT / "conv_pipeline"


def _modules() -> dict[str, Path]:
    mods = {}
    for path in sorted(PKG.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        mods[name] = path
    return mods


MODS = _modules()


def _imports(name: str, path: Path) -> list[tuple[str, list[str], int]]:
    """``(module imported, names taken from it, line)`` for every package import in ``path``."""
    is_pkg = path.name == "__init__.py"
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_pkg else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("conv_pipeline"):
                out.append((target, [a.name for a in node.names], node.lineno))
        elif isinstance(node, ast.Import):
            out += [(a.name, [], node.lineno) for a in node.names if a.name.startswith("conv_pipeline.")]
    return out


def _edges() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {m: set() for m in MODS}
    for name, path in MODS.items():
        for target, names, _ in _imports(name, path):
            targets = [f"{target}.{n}" for n in names if f"{target}.{n}" in MODS]
            if target in MODS and len(targets) < len(names) or not names:
                targets.append(target)
            for t in targets:
                own_package = name.startswith(t + ".") and MODS.get(t, Path()).name == "__init__.py"
                if t in MODS and t != name and not own_package:
                    edges[name].add(t)
    return edges


def test_no_import_cycles():
    edges, state, cycles = _edges(), {}, []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(edges[node]):
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for mod in MODS:
        if mod not in state:
            visit(mod, [mod])
    assert not cycles, " ; ".join(" -> ".join(c) for c in cycles)


def test_no_private_names_across_modules():
    found = []
    for name, path in MODS.items():
        for target, names, line in _imports(name, path):
            found += [f"{path.relative_to(ROOT)}:{line} {n}" for n in names
                      if n.startswith("_") and not n.startswith("__") and f"{target}.{n}" not in MODS]
    assert not found, ", ".join(found)


def test_module_and_function_sizes():
    too_long = []
    for path in MODS.values():
        text = path.read_text(encoding="utf-8")
        if text.count("\n") + 1 > 500:
            too_long.append(f"{path.relative_to(ROOT)}: {text.count(chr(10)) + 1} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > 100:
                too_long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}")
    assert not too_long, ", ".join(too_long)


def test_nothing_refers_outside_the_repository():
    proc = subprocess.run(["git", "grep", "-n", "-E", r"\.\./shared|shared/(design|seed|tools|hooks)", "--", ".", ":!tests"],
                          cwd=str(ROOT), capture_output=True, text=True)
    assert proc.stdout.strip() == "", proc.stdout
