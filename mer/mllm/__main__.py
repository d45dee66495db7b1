"""``python -m mer.mllm`` — the multimodal chat model's tools.

    python -m mer.mllm serve-demo [--port 8000] [--fail-first N] [--error-every K] [--garble-every K]
        a local OpenAI-format server that answers from the request content (the demo corpus's
        subtitles), for trying track=mllm and features/mllm=chat offline
    python -m mer.mllm rescore RESULTS_DIR [--sentiment five|binary] [--csv OUT.csv]
        GPT-4V-emotion's released predictions (its results/ folder) scored by mer beside the
        paper's figures. Those files carry their datasets' test labels: nothing of mer reads them
        unless you run this.

The zero-shot track itself: ``python -m mer.run track=mllm mllm.endpoint=http://127.0.0.1:8000/v1
mllm.model=demo``.
"""
from __future__ import annotations

import argparse
import sys

import pandas as pd

from feature_extractors.mllm.demo_server import DemoSettings, make_server
from mer.core.env import configure_environment
from mer.evaluation.zeroshot import rescore_folder


def main(argv: list[str] | None = None) -> int:
    configure_environment()
    ap = argparse.ArgumentParser(prog="python -m mer.mllm", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve-demo", help="a local OpenAI-format demo server")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--fail-first", type=int, default=0, help="answer HTTP 429 to the first N requests")
    s.add_argument("--error-every", type=int, default=0, help="answer HTTP 500 to every K-th request")
    s.add_argument("--garble-every", type=int, default=0, help="an answer with no label for about 1 item in K")
    s.add_argument("--drop-every", type=int, default=0, help="leave one record out of every K-th batched answer")
    s.add_argument("--require-key", default=None, help="answer 401 unless this bearer key is sent")
    r = sub.add_parser("rescore", help="GPT-4V-emotion's released predictions scored by mer")
    r.add_argument("results_dir")
    r.add_argument("--sentiment", choices=("five", "binary"), default="five",
                   help="CMU-MOSI / CH-SIMS: the five sentiment classes, or negative vs positive")
    r.add_argument("--csv", help="also write the table here")
    args = ap.parse_args(argv)

    if args.command == "serve-demo":
        server = make_server(args.host, args.port, DemoSettings(args.fail_first, args.error_every, args.garble_every,
                                                                args.drop_every, args.require_key))
        host, port = str(server.server_address[0]), int(server.server_address[1])
        print(f"demo MLLM server at http://{host}:{port}/v1 (model name: any); Ctrl-C stops it", flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()
        return 0
    try:
        rows = rescore_folder(args.results_dir, args.sentiment)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    table = pd.DataFrame(rows)
    print(table.to_string(index=False))
    if args.csv:
        table.to_csv(args.csv, index=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
