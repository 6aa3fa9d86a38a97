"""Start-up time of commands that do not train, this checkout against a baseline commit, side by
side: each round runs every (version, command) once, in alternating order, so that the CPU's
speed swings hit both versions alike; the medians and their ratio are what to read. Also records
whether the command loaded torch and the trainer (``cl_toolkit.train``).

    python benchmarks/startup.py [--baseline fdd1441] [--rounds 7]

Writes benchmarks/results/startup.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cl_toolkit.runtime import environment  # noqa: E402

COMMANDS = [["tag", "--help"], ["encoders"], ["eval", "knn", "--help"], ["--help"]]
PROBE = ("import sys, json, time\nt0 = time.perf_counter()\nsys.argv = ['cltk', *json.loads(sys.argv[1])]\n"
         "from cl_toolkit.cli import main\ntry:\n    main()\nexcept SystemExit:\n    pass\n"
         "sys.stderr.write('PROBE' + json.dumps({'torch': 'torch' in sys.modules, "
         "'trainer': 'cl_toolkit.train' in sys.modules}) + '\\n')")


def run_once(tree: Path, argv: list[str]) -> tuple[float, dict]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", PROBE, json.dumps(argv)], capture_output=True, text=True, env=env,
                         cwd=tree, timeout=300)
    seconds = time.perf_counter() - t0
    line = next(ln for ln in out.stderr.splitlines() if ln.startswith("PROBE"))
    return seconds, json.loads(line[5:])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--baseline", default="fdd1441", help="commit to compare with (before the redesign)")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "startup.json"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "baseline"
        subprocess.run(["git", "worktree", "add", "--detach", str(base), args.baseline], cwd=ROOT, check=True,
                       capture_output=True)
        try:
            trees = {"baseline": base, "current": ROOT}
            times: dict[str, dict[str, list[float]]] = {v: {" ".join(c): [] for c in COMMANDS} for v in trees}
            loaded: dict[str, dict[str, dict]] = {v: {} for v in trees}
            for r in range(args.rounds):
                order = list(trees.items()) if r % 2 == 0 else list(trees.items())[::-1]
                for argv in COMMANDS:
                    for version, tree in order:
                        s, mods = run_once(tree, argv)
                        times[version][" ".join(argv)].append(s)
                        loaded[version][" ".join(argv)] = mods
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(base)], cwd=ROOT, capture_output=True)
    rows = []
    for argv in COMMANDS:
        cmd = " ".join(argv)
        b, c = statistics.median(times["baseline"][cmd]), statistics.median(times["current"][cmd])
        rows.append({"command": f"cltk {cmd}", "baseline_s": round(b, 3), "current_s": round(c, 3),
                     "speedup": round(b / c, 2), "baseline_loads": loaded["baseline"][cmd],
                     "current_loads": loaded["current"][cmd]})
        print(f"cltk {cmd:<20} baseline {b:.3f}s  current {c:.3f}s  x{b / c:.2f}  {loaded['current'][cmd]}")
    result = {"benchmark": "startup", "baseline_commit": args.baseline, "rounds": args.rounds, "rows": rows,
              "raw_seconds": times, "loadavg": os.getloadavg(), "env": environment()}
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
