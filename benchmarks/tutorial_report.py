"""The README's comparison report: the ``tutorial_lts`` preset's multirun, then ``recsys_exp.report``.

    python benchmarks/tutorial_report.py                      # 4 algorithms x 5 seeds, 200k steps each
    python benchmarks/tutorial_report.py --out /tmp/tut --extra stop.timesteps=20000   # a quick look

Runs the 20 jobs of ``python -m recsys_exp -m +experiment=tutorial_lts`` (random, lin_ucb, lin_ts,
slateq x seeds 0-4 on the tutorial's Long-Term Satisfaction, 200k env steps, 500 greedy
evaluation episodes) into ``--out`` (W&B off, no progress lines), then
``python -m recsys_exp.report <out>``, and copies report.md and its PNGs to ``docs/tutorial_lts/``
for the README. Each job is its own ``python -m recsys_exp +experiment=tutorial_lts algo=A seed=S``
in a stable dir, so an interrupted benchmark reruns only the jobs without a summary.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ALGOS = ("random", "lin_ucb", "lin_ts", "slateq")
SEEDS = (0, 1, 2, 3, 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "tutorial_lts")
    parser.add_argument("--extra", nargs="*", default=[], help="more overrides for every job")
    parser.add_argument("--docs", type=Path, default=ROOT / "docs" / "tutorial_lts")
    args = parser.parse_args()
    out = args.out.resolve()
    start = time.time()
    todo = [(a, s) for a in ALGOS for s in SEEDS if not (out / f"{a}_seed{s}" / "summary.json").is_file()]
    for algo, seed in todo:
        # One job per call so each lands in a stable dir name (resumable), same overrides as -m.
        cmd = [sys.executable, "-m", "recsys_exp", "+experiment=tutorial_lts", f"algo={algo}", f"seed={seed}",
               "logger.mode=disabled", "progress=false", *args.extra, f"hydra.run.dir={out / f'{algo}_seed{seed}'}"]
        print("$", " ".join(cmd[1:]), flush=True)
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        if proc.returncode != 0:
            print(proc.stderr[-2000:], file=sys.stderr)
    subprocess.run([sys.executable, "-m", "recsys_exp.report", str(out)], cwd=ROOT, check=True)
    args.docs.mkdir(parents=True, exist_ok=True)
    for path in [out / "report.md", *out.glob("report_*.png")]:
        shutil.copy(path, args.docs / path.name)
    summaries = {p.parent.name: json.loads(p.read_text()) for p in sorted(out.glob("*/summary.json"))}
    print(f"{len(summaries)} runs, {time.time() - start:.0f} s; report in {out} and {args.docs}")


if __name__ == "__main__":
    main()
