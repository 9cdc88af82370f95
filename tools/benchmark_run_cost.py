#!/usr/bin/env python
"""Where one sweep run's time goes: process start, dataset checks, model and data loader
build, training iterations, evaluation (test and tune splits), checkpoint writes, and the
report's bootstrap. Runs `tools/sweep.py hydra.mode=RUN` (the default setting unless
overridden) in a scratch folder, then writes its report, and prints the breakdown that the
run recorded in metrics.json (`time_breakdown_s`).

    python tools/benchmark_run_cost.py                          # frn, 2 images per worker, cpu_short
    python tools/benchmark_run_cost.py norm=bn ims_per_gpu=1 threads=1
"""
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main(overrides):
    from frn_det.report import write_report

    out = Path(tempfile.mkdtemp(prefix="frn_det_run_cost_"))
    cmd = [
        sys.executable,
        str(REPO / "tools" / "sweep.py"),
        "hydra.mode=RUN",
        f"output_dir={out}",
        "report=false",
        *overrides,
    ]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=REPO)
    sweep_s = time.perf_counter() - start
    (run_dir,) = [p.parent for p in out.glob("*/metrics.json")]
    m = json.loads((run_dir / "metrics.json").read_text())
    if m["status"] != "finished":
        sys.exit(f"the run did not finish ({m['status']}: {m.get('status_detail')}); nothing to break down")
    start = time.perf_counter()
    write_report([out])
    report_s = time.perf_counter() - start
    parts = dict(m["time_breakdown_s"])
    parts["sweep process: config, checks, start (outside training)"] = max(
        0.0, sweep_s - m["wall_time_s"] - parts.get("process_start_and_exit", 0.0)
    )
    parts["report: per-image evaluation + bootstrap"] = report_s
    total = sum(parts.values())
    print(f"\n{run_dir.name}: {m['iterations']} iterations at {m['s_per_iter']:.3f} s/iter, "
          f"{m['machine']['torch_threads']} torch threads, {m['machine']['cpu']}")
    print("| part | seconds | share |\n|---|---:|---:|")
    for name, seconds in sorted(parts.items(), key=lambda kv: -kv[1]):
        print(f"| {name} | {seconds:.1f} | {seconds / total:.0%} |")
    print(f"| total | {total:.1f} | |")


if __name__ == "__main__":
    main(sys.argv[1:])
