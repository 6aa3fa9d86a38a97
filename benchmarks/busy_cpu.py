"""Training speed on a busy CPU: the default BYOL preset (``--minutes M``, images/s from the run
summary) alone, beside a single-threaded busy loop, and as two ``cltk pretrain`` runs at once;
for a baseline commit (before the change) and this checkout, interleaved in rounds so that the
host's speed swings hit both alike.

    python benchmarks/busy_cpu.py [--baseline fdd1441] [--minutes 1] [--rounds 2]

Writes benchmarks/results/busy_cpu.json. Read the ratios to "alone" of the same version and
round; the absolute speeds move with the host.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cl_toolkit.runtime import environment  # noqa: E402

DATA = "fashion-mnist:train?per_class=1000"
SCENARIOS = ("alone", "busy_loop", "two_runs")


def _pretrain(tree: Path, out: Path, minutes: float, extra_env: dict) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(tree), **extra_env}
    return subprocess.Popen([sys.executable, "-m", "cl_toolkit", "pretrain", "--method", "byol", "--data", DATA,
                             "--out", str(out), "--minutes", str(minutes), "--quiet", "--force"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tree)


def _rate(proc: subprocess.Popen) -> float:
    out, err = proc.communicate(timeout=3600)
    if proc.returncode != 0:
        raise SystemExit(f"pretrain failed: {err.strip().splitlines()[-1:]}")
    return json.loads(out)["images_per_s"]


def scenario(name: str, tree: Path, work: Path, minutes: float, env: dict) -> list[float]:
    """images/s of each cltk run in the scenario."""
    if name == "two_runs":
        procs = [_pretrain(tree, work / f"run{i}", minutes, env) for i in range(2)]
        return [_rate(p) for p in procs]
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if name == "busy_loop" else None
    try:
        return [_rate(_pretrain(tree, work / "run0", minutes, env))]
    finally:
        if busy is not None:
            busy.kill()
            busy.wait()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--baseline", default="fdd1441")
    ap.add_argument("--minutes", type=float, default=1.0)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "busy_cpu.json"))
    args = ap.parse_args()
    load_before = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "baseline"
        subprocess.run(["git", "worktree", "add", "--detach", str(base), args.baseline], cwd=ROOT, check=True,
                       capture_output=True)
        try:
            versions = {"before": (base, {}), "after": (ROOT, {})}
            for r in range(args.rounds):
                for version, (tree, env) in (list(versions.items()) if r % 2 == 0 else list(versions.items())[::-1]):
                    for name in SCENARIOS:
                        rates = scenario(name, tree, Path(tmp) / version, args.minutes, env)
                        rows.append({"round": r, "version": version, "scenario": name, "images_per_s": rates,
                                     "total": round(sum(rates), 1)})
                        print(rows[-1], flush=True)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(base)], cwd=ROOT, capture_output=True)
    summary = {}
    for version in ("before", "after"):
        alone = statistics.median(x["total"] for x in rows if x["version"] == version and x["scenario"] == "alone")
        summary[version] = {name: {"images_per_s": statistics.median(x["total"] for x in rows
                                                                     if x["version"] == version
                                                                     and x["scenario"] == name),
                                   "of_alone": round(statistics.median(
                                       x["total"] / next(y["total"] for y in rows if y["version"] == version
                                                         and y["round"] == x["round"] and y["scenario"] == "alone")
                                       for x in rows if x["version"] == version and x["scenario"] == name), 3)}
                            for name in SCENARIOS}
        summary[version]["alone_median"] = alone
    summary["after_alone_vs_before_alone"] = round(summary["after"]["alone_median"]
                                                   / summary["before"]["alone_median"], 3)
    result = {"benchmark": "busy_cpu", "baseline_commit": args.baseline, "minutes": args.minutes,
              "rounds": args.rounds, "summary": summary, "rows": rows, "loadavg_before": load_before,
              "loadavg_after": os.getloadavg(), "env": environment()}
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
