"""Side-by-side speed of two builds of cnnfast (e.g. before and after a
refactor), row by row of `python -m cnnfast.bench`'s conv and pooling tables.

    python scripts/compare_builds.py OLD_TREE NEW_TREE [--rounds 3] [--threads 1]

Each tree must hold an in-place build (python setup.py build_ext --inplace).
The two builds run alternately, OLD NEW OLD NEW ..., each round a fresh
process per build with the same bench options, and each row keeps its fastest
time over the rounds, so a burst of load on a shared machine hits both sides
alike. Prints new/old time per row and the rows more than --tolerance slower.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile


def run_bench(tree, threads, only, algorithms, python):
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        out = f.name
    env = dict(os.environ, PYTHONPATH=os.path.abspath(tree))
    cmd = [python, "-m", "cnnfast.bench", "--quick", "--no-reference", "--only", only,
           "--threads", str(threads), "--json", out]
    if only == "conv":
        cmd += ["--algorithms", algorithms]
    subprocess.run(cmd, cwd=tree, env=env, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    with open(out) as f:
        data = json.load(f)
    os.unlink(out)
    rows = {}
    for run in data["runs"]:
        for row in run.get("rows", []) + run.get("pool_rows", []):
            rows[(row["shape"], row["algorithm"], row["passage"])] = row["ms"]
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("old")
    p.add_argument("new")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--algorithms", default="auto,direct,im2col,1x1")
    p.add_argument("--tolerance", type=float, default=0.05)
    p.add_argument("--python", default=sys.executable)
    args = p.parse_args(argv)
    best = {"old": {}, "new": {}}
    for r in range(args.rounds):
        for side in ("old", "new"):
            for only in ("conv", "pool"):
                rows = run_bench(getattr(args, side), args.threads, only, args.algorithms,
                                 args.python)
                for key, ms in rows.items():
                    best[side][key] = min(ms, best[side].get(key, float("inf")))
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    keys = [k for k in best["old"] if k in best["new"]]
    slower = []
    print(f"{'shape':<52} {'algorithm':<9} {'pass':<8} {'old ms':>8} {'new ms':>8} {'new/old':>8}")
    for key in keys:
        old, new = best["old"][key], best["new"][key]
        ratio = new / old
        print(f"{key[0]:<52} {key[1]:<9} {key[2]:<8} {old:8.3f} {new:8.3f} {ratio:8.3f}")
        if ratio > 1 + args.tolerance:
            slower.append((key, ratio))
    print(f"\n{len(keys)} rows, threads={args.threads}, best of {args.rounds} alternating rounds; "
          f"{len(slower)} slower than {1 + args.tolerance:.2f}x:")
    for key, ratio in slower:
        print(f"  {key}: {ratio:.3f}")


if __name__ == "__main__":
    main()
