"""The import graph of mer's packages, in figures: modules, lines, the largest files, cycles between
modules (counting imports inside functions too), imports that go up the layers, and imports inside
function bodies (internal ones, and the heavy optional ones they defer).

    python -m bench.import_graph [--root .] [--top 8]

The layers are the ones ``.importlinter`` enforces (lowest first); a module outside every layer
(``mer/__init__.py``) is not judged.
"""
from __future__ import annotations

import argparse
import ast
import collections
import pathlib
import sys

PACKAGES = ("mer", "feature_extractors", "fusion", "submissions")
LAYERS: tuple[tuple[str, ...], ...] = (
    ("mer.core",),
    ("feature_extractors", "fusion", "submissions", "mer.evaluation"),
    ("mer.data",),
    ("mer.cache", "mer.demo"),
    ("mer.training", "mer.ov", "mer.pll", "mer.pretraining"),
    ("mer.tracks",),
    ("mer.features", "mer.datasets", "mer.config_check", "mer.tracking", "mer.no_input"),
    ("mer.runs",),
    ("mer.pipeline",),
    ("mer.tuning",),
    ("mer.run", "mer.extract", "mer.tune", "mer.report", "mer.ui", "mer.doctor", "mer.corrupt", "mer.pretrain",
     "mer.cli"),
)
ENTRY_POINTS = ("__main__",)


def modules(root: pathlib.Path) -> dict[str, pathlib.Path]:
    out = {}
    for pkg in PACKAGES:
        for p in sorted((root / pkg).rglob("*.py")):
            if "conf" in p.relative_to(root).parts:
                continue
            name = ".".join(p.relative_to(root).with_suffix("").parts)
            out[name[: -len(".__init__")] if name.endswith(".__init__") else name] = p
    return out


def _resolve(mod: str, is_pkg: bool, node: ast.AST) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    base = node.module or ""
    if node.level:
        parts = mod.split(".") if is_pkg else mod.split(".")[:-1]
        parts = parts[: len(parts) - (node.level - 1)]
        base = ".".join(parts + ([base] if base else []))
    return [f"{base}.{a.name}" for a in node.names] + [base]


def graph(root: pathlib.Path):
    mods = modules(root)

    def target(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    edges: dict[str, set[str]] = collections.defaultdict(set)
    inner_internal = inner_external = 0
    for m, p in mods.items():
        tree = ast.parse(p.read_text(encoding="utf-8"))

        def walk(node, in_function: bool) -> None:
            nonlocal inner_internal, inner_external
            for child in ast.iter_child_nodes(node):
                if isinstance(child, (ast.Import, ast.ImportFrom)):
                    hits = {t for t in (target(n) for n in _resolve(m, p.name == "__init__.py", child)) if t}
                    hits.discard(m)
                    edges[m] |= hits
                    if in_function:
                        if hits:
                            inner_internal += 1
                        else:
                            inner_external += 1
                walk(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)))

        walk(tree, False)
    return mods, edges, inner_internal, inner_external


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]
    sys.setrecursionlimit(10_000)

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in list(edges):
        if v not in index:
            visit(v)
    return out


def layer_of(mod: str) -> int | None:
    best, depth = None, -1
    for i, layer in enumerate(LAYERS):
        for prefix in layer:
            if (mod == prefix or mod.startswith(prefix + ".")) and prefix.count(".") > depth:
                best, depth = i, prefix.count(".")
    return best


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default=".")
    ap.add_argument("--top", type=int, default=8)
    args = ap.parse_args(argv)
    root = pathlib.Path(args.root).resolve()
    mods, edges, inner_internal, inner_external = graph(root)
    sizes = {m: len(p.read_text(encoding="utf-8").splitlines()) for m, p in mods.items()}
    cyc = cycles(edges)
    up = [(a, b) for a, bs in edges.items() for b in bs
          if layer_of(a) is not None and layer_of(b) is not None and layer_of(b) > layer_of(a)
          and a.rpartition(".")[2] not in ENTRY_POINTS]
    print(f"modules {len(mods)}, lines {sum(sizes.values())}")
    print(f"module cycles (imports anywhere): {len(cyc)}" + "".join(f"\n  {' <-> '.join(c)}" for c in cyc))
    print(f"imports up the layers: {len(up)}" + "".join(f"\n  {a} -> {b}" for a, b in sorted(up)))
    print(f"imports inside functions: {inner_internal + inner_external} "
          f"({inner_internal} of mer's own modules, {inner_external} of other packages)")
    print("largest files:")
    for m, n in sorted(sizes.items(), key=lambda kv: -kv[1])[: args.top]:
        print(f"  {n:5d}  {mods[m].relative_to(root)}")


if __name__ == "__main__":
    main()
