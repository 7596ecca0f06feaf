"""Grid expansion and campaign creation of two source trees side by side (e.g. before and after
a change), each measurement in a fresh process, the trees alternating.

    .venv/bin/python benchmarks/grid_compare.py OLD/src NEW/src --size 10000 --create --repeats 2

Prints one JSON line per measurement. Creation with an old tree can be slow at large sizes
(it wrote one exp.json per experiment): --create is for sizes it can bear.
"""

from __future__ import annotations

import argparse
import inspect
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DIMENSIONS = ["batch_size", "n_prompts", "max_output_tokens", "seed", "max_input_tokens"]


def child(src: str, size: int, create: bool) -> dict[str, object]:
    sys.path.insert(0, src)
    import llenergymeasure
    from llenergymeasure.config.grid import load_campaign
    from llenergymeasure.config.settings import UserSettings
    from llenergymeasure.orchestrator.layout import create_campaign

    assert str(Path(llenergymeasure.__file__).resolve()).startswith(str(Path(src).resolve()))
    k = len(str(size)) - 1
    assert size == 10**k and 1 <= k <= len(DIMENSIONS), size
    grid = "".join(f"  {d}: {list(range(1, 11))}\n" for d in DIMENSIONS[:k])
    with tempfile.TemporaryDirectory(prefix="lem-grid-compare-") as tmp:
        path = Path(tmp) / "campaign.yaml"
        path.write_text(f"name: compare\ncycles: 1\nbase: {{}}\ngrid:\n{grid}", encoding="utf-8")
        # the size limit (lifted by --yes) is newer than some trees this compares
        lift = "max_experiments" in inspect.signature(load_campaign).parameters
        t0 = time.perf_counter()
        campaign = load_campaign(path, **({"max_experiments": size} if lift else {}))
        expand_s = time.perf_counter() - t0
        create_s = None
        if create:
            t0 = time.perf_counter()
            create_campaign(campaign, Path(tmp) / "out", settings=UserSettings())
            create_s = time.perf_counter() - t0
    return {"src": src, "size": size, "expand_s": expand_s, "create_s": create_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sources", nargs="+", help="src/ directories to compare")
    parser.add_argument("--size", type=int, default=10_000)
    parser.add_argument("--create", action="store_true", help="time create_campaign too")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.sources[0], args.size, args.create)))
        return
    for _ in range(args.repeats):
        for src in args.sources:
            cmd = [sys.executable, __file__, src, "--size", str(args.size), "--child"]
            cmd += ["--create"] if args.create else []
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                sys.exit(f"{src} failed:\n{proc.stderr}")
            print(proc.stdout.strip(), flush=True)


if __name__ == "__main__":
    main()
