"""``python -m mer.cache``: list, verify and garbage-collect every cache entry, of every kind.

    python -m mer.cache list                       # every entry: kind, dataset, condition, counts, size
    python -m mer.cache list --dataset demo-1a2b3c4d --kind faces --json
    python -m mer.cache verify                     # checksums of every part, generation and item
    python -m mer.cache verify --repair            # drop corrupt data; the next run redoes those samples
    python -m mer.cache gc --dry-run               # what gc would delete, with sizes
    python -m mer.cache gc                         # temp files of dead writers, orphaned generations
    python -m mer.cache gc --unused-days 30        # ... and entries no run has used for 30 days
    python -m mer.cache retry --reason timeout     # forget failures so the next fill retries them

Kinds: ``features`` (:mod:`mer.cache.store`), and the artifact entries of
:mod:`mer.core.artifacts`: ``faces`` (face crops), ``asr`` (transcripts), ``corrupted`` (the
corrupted copies of datasets the pipeline keeps in ``<root>/../corrupted/``).
The root is ``--root``, else ``$MER_CACHE_DIR/features``, else ``~/.cache/mer/features``.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import time
from collections import Counter
from pathlib import Path

from mer.core.artifacts import ArtifactEntry, find_artifacts
from mer.core.artifacts import last_used as last_artifact_use

from .store import FeatureStore, last_used


def artifact_entries(root: Path) -> list[ArtifactEntry]:
    """The artifact entries under a feature cache root: face crops and transcripts in it, and
    the corrupted copies of datasets beside it (``<root>/../corrupted/<dataset>/<condition>/``,
    where the pipeline writes them)."""
    import feature_extractors.asr.cache  # noqa: F401 - registers the "asr" kind
    import feature_extractors.visual.faces  # noqa: F401 - registers the "faces" kind

    return find_artifacts(root) + find_artifacts(Path(root).parent / "corrupted", "*/*")


def _place(root: Path, path: Path) -> tuple[str, str]:
    """(dataset, condition) of an entry folder under ``root`` (or a corrupted copy beside it)."""
    for base, depth in ((root, 3), (Path(root).parent / "corrupted", 2)):
        try:
            rel = path.relative_to(base).parts
        except ValueError:
            continue
        if len(rel) >= depth:
            return rel[0], rel[1]
    return "?", "?"


def default_root() -> Path:
    base = os.environ.get("MER_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "mer")
    return Path(base) / "features"


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def _rows(store: FeatureStore, dataset: str | None, extractor: str | None, kind: str | None = None) -> list[dict]:
    rows = []
    for e in store.entries() if kind in (None, "features") else []:
        ds, cond = e.path.parent.parent.name, e.path.parent.name
        if dataset and ds != dataset:
            continue
        if extractor and e.identity.get("extractor") != extractor:
            continue
        row = {"kind": "features", "dataset": ds, "condition": cond, "extractor": e.identity.get("extractor"),
               "key": e.path.name.rsplit("-", 1)[-1], "path": str(e.path), "problem": None}
        try:
            meta = e._meta() or {}
            row.update(level=e.level, dim=e.dim(), features=meta.get("count", 0), parts=len(e._parts()),
                       failures=len(e.failures()), problem=meta.get("broken"))
        except Exception as err:  # noqa: BLE001 - one broken entry must not hide the others
            row.update(level="?", dim=None, features=0, parts=0, failures=0,
                       problem=f"cannot be read ({type(err).__name__}: {err})")
        row.update(items=row["features"], size=e.size_bytes(),
                   last_used=time.strftime("%Y-%m-%d %H:%M", time.localtime(last_used(e.path))))
        rows.append(row)
    if extractor:
        return rows
    for a in artifact_entries(store.root):
        ds, cond = _place(store.root, a.path)
        if (dataset and ds != dataset) or (kind and a.kind.name != kind):
            continue
        try:
            summary = a.summary()
        except Exception as err:  # noqa: BLE001 - one broken entry must not hide the others
            summary = {"items": 0, "failures": 0, "dropped": 0, "damaged_lines": 0, "size": 0, "last_used": 0.0,
                       "problem": f"cannot be read ({type(err).__name__}: {err})"}
        rows.append({"kind": a.kind.name, "dataset": ds, "condition": cond, "extractor": None, "key": a.path.name,
                     "path": str(a.path), "level": None, "dim": None, "features": None, "items": summary["items"],
                     "parts": None, "failures": summary["failures"], "dropped": summary["dropped"],
                     "damaged_lines": summary["damaged_lines"], "size": summary["size"],
                     "last_used": time.strftime("%Y-%m-%d %H:%M", time.localtime(summary["last_used"])),
                     "problem": summary["problem"]})
    return rows


def cmd_list(args) -> int:
    store = FeatureStore(args.root)
    rows = _rows(store, args.dataset, args.extractor, args.kind)
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    if not rows:
        print(f"no cache entries under {args.root}")
        return 0
    cols = ["kind", "dataset", "condition", "extractor", "key", "level", "dim", "items", "parts", "failures",
            "size", "last_used"]
    table = [[_human(r[c]) if c == "size" else "-" if r[c] is None else str(r[c]) for c in cols] for r in rows]
    widths = [max(len(c), *(len(t[i]) for t in table)) for i, c in enumerate(cols)]
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths)))
    for t in table:
        print("  ".join(v.ljust(w) for v, w in zip(t, widths)))
    kinds = ", ".join(f"{n} {k}" for k, n in sorted(Counter(r["kind"] for r in rows).items()))
    print(f"{len(rows)} entries ({kinds}), {_human(sum(r['size'] for r in rows))} under {args.root}")
    broken = [r for r in rows if r["problem"]]
    for r in broken:
        print(f"BROKEN {r['path']}: {r['problem']}")
    if broken:
        print(f"{len(broken)} entries are broken; `python -m mer.cache verify` says what --repair does about each")
    return 0


def cmd_verify(args) -> int:
    store = FeatureStore(args.root)
    bad = 0
    for e in store.entries():
        if args.dataset and e.path.parent.parent.name != args.dataset:
            continue
        try:
            problems = e.verify(repair=args.repair)
        except Exception as err:  # noqa: BLE001 - report it and check the other entries
            problems = [f"cannot be checked ({type(err).__name__}: {err}); remove the folder to rebuild it"]
        bad += _report(e.path, problems, args.repair)
    for a in artifact_entries(store.root):
        if args.dataset and _place(store.root, a.path)[0] != args.dataset:
            continue
        try:
            problems = a.verify(repair=args.repair)
        except Exception as err:  # noqa: BLE001 - report it and check the other entries
            problems = [f"cannot be checked ({type(err).__name__}: {err}); remove the folder to make it again"]
        bad += _report(a.path, problems, args.repair)
    if bad and not args.repair:
        print(f"{bad} entries have problems; `python -m mer.cache verify --repair` drops the corrupt data "
              "and the next run re-extracts exactly those samples")
    return 1 if bad and not args.repair else 0


def _report(path: Path, problems: list[str], repair: bool) -> bool:
    status = "ok" if not problems else ("repaired" if repair else "CORRUPT")
    print(f"{status:9s} {path}")
    for p in problems:
        print(f"          - {p}")
    return bool(problems)


def gc_candidates(root: Path, unused_days: float | None = None, tmp_age_s: float = 3600.0
                  ) -> list[tuple[Path, str]]:
    """What gc would remove: ``(path, why)``. Never anything a live entry points to."""
    out: list[tuple[Path, str]] = []
    now = time.time()
    if not root.is_dir():
        return out
    store = FeatureStore(root)
    for e in store.entries():
        try:
            meta = e._meta() or {}
        except Exception:  # noqa: BLE001 - unreadable metadata: keep every generation
            continue
        gen = meta.get("generation")
        if meta.get("broken") and gen is None:
            continue          # nothing is known to be live; `verify --repair` decides
        for g in e.path.glob("gen-*"):
            if g.name != f"gen-{gen}":
                out.append((g, "generation no longer referenced by meta.json"))
        if unused_days is not None and now - last_used(e.path) > unused_days * 86400:
            out.append((e.path, f"not used for more than {unused_days:g} days"))
    for tmp in root.rglob(".*.tmp"):
        try:
            if now - tmp.stat().st_mtime > tmp_age_s:
                out.append((tmp, "temporary file left by a writer that died"))
        except FileNotFoundError:
            continue
    for a in artifact_entries(root):
        if a.identity is None and a.kind.owns_folder and not a.records():
            out.append((a.path, f"{a.kind.name} folder of an older layout that nothing reads any more"))
        elif unused_days is not None and now - last_artifact_use(a.path) > unused_days * 86400:
            out.append((a.path, f"{a.kind.name} entry not used for more than {unused_days:g} days"))
    # Nested candidates are covered by their parent.
    paths = {p for p, _ in out}
    return [(p, why) for p, why in out if not any(q in p.parents for q in paths)]


def _size(p: Path) -> int:
    try:
        if p.is_file():
            return p.stat().st_size
        total = 0
        for f in p.rglob("*"):
            with contextlib.suppress(OSError):
                if f.is_file():
                    total += f.stat().st_size
        return total
    except OSError:
        return 0


def cmd_gc(args) -> int:
    cands = gc_candidates(Path(args.root), args.unused_days)
    total = 0
    for p, why in cands:
        size = _size(p)
        total += size
        print(f"{'would remove' if args.dry_run else 'removing'} {p} ({_human(size)}): {why}")
        if not args.dry_run:
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
    print(f"{'would free' if args.dry_run else 'freed'} {_human(total)} ({len(cands)} items)")
    return 0


def cmd_retry(args) -> int:
    store = FeatureStore(args.root)
    n = 0
    for e in store.entries():
        if args.dataset and e.path.parent.parent.name != args.dataset:
            continue
        if args.extractor and e.identity.get("extractor") != args.extractor:
            continue
        k = e.clear_failures(args.reason or None)
        if k:
            print(f"{e.path}: {k} failures forgotten")
        n += k
    for a in [] if args.extractor else artifact_entries(store.root):
        if args.dataset and _place(store.root, a.path)[0] != args.dataset:
            continue
        k = a.clear_failures(args.reason or None)
        if k:
            print(f"{a.path}: {k} failures forgotten")
        n += k
    print(f"{n} samples will be retried by the next run")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mer.cache", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--root", type=Path, default=None, help="cache root (default: $MER_CACHE_DIR/features)")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("list", help="list entries")
    p.add_argument("--dataset")
    p.add_argument("--extractor")
    p.add_argument("--kind", help="only entries of this kind (features, faces, asr, corrupted)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_list)
    p = sub.add_parser("verify", help="check checksums")
    p.add_argument("--dataset")
    p.add_argument("--repair", action="store_true")
    p.set_defaults(func=cmd_verify)
    p = sub.add_parser("gc", help="remove garbage")
    p.add_argument("--unused-days", type=float, default=None)
    p.add_argument("--dry-run", action="store_true")
    p.set_defaults(func=cmd_gc)
    p = sub.add_parser("retry", help="forget recorded failures so they are retried")
    p.add_argument("--reason", action="append", help="only failures with this reason (repeatable)")
    p.add_argument("--dataset")
    p.add_argument("--extractor")
    p.set_defaults(func=cmd_retry)
    args = parser.parse_args(argv)
    if args.root is None:
        args.root = default_root()
    return args.func(args)


if __name__ == "__main__":
    from mer.core.errors import run_cli

    run_cli(main)
