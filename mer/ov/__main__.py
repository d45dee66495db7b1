"""``python -m mer.ov`` — score, validate and compare open-vocabulary (MER-OV) files.

    python -m mer.ov score --pred P.csv --gold G.csv [--grouper offline|official_cache|exact|llm]
                           [--metric mer2024|wheel] [--empty-gt skip|error]
                           [--groupings openset-synonym.zip] [--wheel-dir DIR | --no-wheel]
                           [--base-url URL --model NAME --api-key-env VAR --cache F.jsonl]
    python -m mer.ov validate FILE [--names NAMES.csv] [--no-empty]
    python -m mer.ov agreement --pred P.csv --gold G.csv --groupings openset-synonym.zip

The emotion-wheel folder defaults to ``../shared/data/emotion-wheel`` beside the repository when
it exists (``--no-wheel``: the offline grouper uses its built-in tables only). Every printed score
names its grouper.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mer.core.env import configure_environment
from mer.ov.agreement import grouper_agreement
from mer.ov.groupers import build_grouper
from mer.ov.io import parse_openset_wheel, read_openset_csv, validate_openset_file
from mer.ov.metric import mer2024_ov_score, wheel_ov_score
from mer.ov.wheel import load_wheel_assets
from submissions.validate import read_names

REPO = Path(__file__).resolve().parents[2]
DEFAULT_WHEEL = REPO.parent / "shared" / "data" / "emotion-wheel"


def _grouper(args):
    if args.grouper == "official_cache":
        if not args.groupings:
            raise SystemExit("--grouper official_cache needs --groupings openset-synonym.zip")
        return build_grouper("official_cache", path=args.groupings)
    if args.grouper == "offline":
        wheel = None if args.no_wheel else (args.wheel_dir or (DEFAULT_WHEEL if DEFAULT_WHEEL.is_dir() else None))
        return build_grouper("offline", wheel_dir=wheel)
    if args.grouper == "llm":
        if not (args.base_url and args.model):
            raise SystemExit("--grouper llm needs --base-url and --model (key from --api-key-env)")
        return build_grouper("llm", base_url=args.base_url, model=args.model,
                             api_key_env=args.api_key_env,
                             cache_path=args.cache or Path(args.pred).with_suffix(".groups.jsonl"))
    return build_grouper(args.grouper)


def main(argv=None) -> int:
    configure_environment()
    ap = argparse.ArgumentParser(prog="python -m mer.ov", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    for name in ("score", "agreement"):
        p = sub.add_parser(name)
        p.add_argument("--pred", required=True)
        p.add_argument("--gold", required=True)
        p.add_argument("--groupings", help="official openset-synonym.zip (or its folder)")
        p.add_argument("--wheel-dir")
        p.add_argument("--no-wheel", action="store_true")
    score = sub.choices["score"]
    score.add_argument("--grouper", default="offline", choices=["offline", "official_cache", "exact", "llm"])
    score.add_argument("--metric", default="mer2024", choices=["mer2024", "wheel"])
    score.add_argument("--empty-gt", default="skip", choices=["skip", "error"])
    score.add_argument("--base-url")
    score.add_argument("--model")
    score.add_argument("--api-key-env", default="OPENAI_API_KEY")
    score.add_argument("--cache", help="LLM answers cache (JSONL); default beside --pred")
    val = sub.add_parser("validate")
    val.add_argument("file")
    val.add_argument("--names", help="expected names: a CSV with a name column or one per line")
    val.add_argument("--no-empty", action="store_true", help="also report empty predictions")
    args = ap.parse_args(argv)

    try:
        if args.command == "validate":
            names = read_names(args.names) if args.names else None
            problems = validate_openset_file(args.file, names, allow_empty=not args.no_empty)
            if problems:
                print(f"INVALID: {args.file}: {len(problems)} problem(s)")
                for p in problems:
                    print(f"  - {p}")
                return 1
            print(f"OK: {args.file} is a valid name,openset file"
                  + (f"; names match the {len(names)} expected" if names else ""))
            return 0
        if args.command == "score" and args.metric == "wheel":
            wheel = args.wheel_dir or DEFAULT_WHEEL
            gold = read_openset_csv(args.gold, parse_openset_wheel)
            pred = read_openset_csv(args.pred, parse_openset_wheel)
            print(wheel_ov_score(gold, pred, load_wheel_assets(wheel)))
            return 0
        gold, pred = read_openset_csv(args.gold), read_openset_csv(args.pred)
        if args.command == "score":
            grouper = _grouper(args)
            result = mer2024_ov_score(gold, pred, grouper, args.empty_gt)
            print(f"{result}\n  grouper: {grouper.describe()}")
            return 0

        if not args.groupings:
            raise SystemExit("agreement needs --groupings openset-synonym.zip (the reference)")
        reference = build_grouper("official_cache", path=args.groupings)
        args.grouper = "offline"
        print(grouper_agreement(gold, pred, _grouper(args), reference, reference.samples()))
        return 0
    except (OSError, ValueError, KeyError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    from mer.core.errors import run_cli

    run_cli(main)
