#!/usr/bin/env python
"""Fault drill: run a small sweep while killing and signalling it at random moments.

Each round starts the same multirun twice on the same folder, the second a moment after
the first (two sweeps racing, as when a job is submitted twice), and after a random delay
sends both SIGKILL, SIGTERM or SIGUSR1 (each sweep's whole process group, as a scheduler
would). After the rounds the two sweeps run once more undisturbed, still racing. Then
every run must have finished exactly once (one "end" event in its events.jsonl: a run
trained by both sweeps would have two), its metrics.json must be complete and the report
must list every run. Prints the counts; exits 1 if any run was lost.

The sweeps use a cache of their own (FRN_DET_CACHE: a new temporary folder unless --cache
names one), never the user's: the drill kills them also while they build the C++ kernels
or generate the dataset, which is what a cache must survive, but not what a user's cache
should have to.

    python tools/fault_drill.py --rounds 8 --out /tmp/drill
"""
import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from frn_det.record.events import read_events  # noqa: E402

SIGNALS = {"SIGKILL": signal.SIGKILL, "SIGTERM": signal.SIGTERM, "SIGUSR1": signal.SIGUSR1}


def sweep_command(out: Path, norms: str, iters: int):
    return [
        sys.executable, str(REPO / "tools" / "sweep.py"), "-m", f"norm={norms}", "ims_per_gpu=2", "seed=0",
        f"output_dir={out}", "schedule.reference_batch=2", f"schedule.max_iter={iters}",
        f"schedule.steps=[{iters * 3 // 4}]", "schedule.warmup_iters=5", "schedule.checkpoint_period=10",
    ]


def start_racing_sweeps(cmd, log, rng, cache: Path):
    """Two sweeps on the same folder, the second started up to 2 s after the first, with
    `cache` as their FRN_DET_CACHE. One OpenMP thread each (unless set): two processes with
    a thread per core spin against each other."""
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "FRN_DET_CACHE": str(cache)}
    first = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    time.sleep(rng.uniform(0.0, 2.0))
    second = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    return [first, second]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=6, help="disturbed rounds (default 6)")
    parser.add_argument("--out", type=Path, default=None, help="sweep folder (default: a new temp folder)")
    parser.add_argument("--norms", default="bn,gn,frn", help="norms of the multirun (default bn,gn,frn)")
    parser.add_argument("--iters", type=int, default=40, help="iterations per run (default 40)")
    parser.add_argument("--min-delay", type=float, default=8.0, help="seconds before a signal, at least")
    parser.add_argument("--max-delay", type=float, default=45.0, help="seconds before a signal, at most")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", type=Path, default=None,
                        help="FRN_DET_CACHE of the sweeps (default: a new temporary folder, removed at the end; "
                             "never the user's cache)")
    args = parser.parse_args(argv)
    if args.rounds < 0 or not 0 <= args.min_delay <= args.max_delay:
        parser.error(f"need rounds >= 0 and 0 <= min-delay <= max-delay, got {args.rounds}, {args.min_delay}, "
                     f"{args.max_delay}")
    out = args.out or Path(tempfile.mkdtemp(prefix="frn_fault_drill_"))
    cache = args.cache or Path(tempfile.mkdtemp(prefix="frn_fault_drill_cache_"))
    try:
        return _drill(args, out, cache)
    finally:
        if args.cache is None:
            shutil.rmtree(cache, ignore_errors=True)
        print(f"sweeps' cache: {cache}" + (" (temporary, removed)" if args.cache is None else ""))


def _drill(args, out: Path, cache: Path) -> int:
    rng = random.Random(args.seed)
    cmd = sweep_command(out, args.norms, args.iters)
    counts = {name: 0 for name in SIGNALS}
    log = open(out.parent / f"{out.name}.drill.log", "a") if args.out else open(out / "drill.log", "a")
    for round_no in range(1, args.rounds + 1):
        procs = start_racing_sweeps(cmd, log, rng, cache)
        delay = rng.uniform(args.min_delay, args.max_delay)
        deadline = time.time() + delay
        name = rng.choice(sorted(SIGNALS))
        signalled = 0
        for proc in procs:
            try:
                proc.wait(timeout=max(0.0, deadline - time.time()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, SIGNALS[name])
                signalled += 1
        codes = [proc.wait() for proc in procs]
        counts[name] += signalled
        what = (
            f"{name} to {signalled} sweep(s) after {delay:.0f}s"
            if signalled
            else f"both ended by themselves before {delay:.0f}s"
        )
        print(f"round {round_no}: {what} (exits {codes})", flush=True)
    codes = [proc.wait() for proc in start_racing_sweeps(cmd, log, rng, cache)]
    print(f"final undisturbed racing sweeps: exits {codes}", flush=True)

    runs = sorted(p.parent for p in out.glob("*/metrics.json"))
    expected = len(args.norms.split(","))
    finished_once, resumes, busy = 0, 0, 0
    for run_dir in runs:
        events = read_events(run_dir)
        busy += sum(e["event"] == "busy" for e in events)
        ends = [e for e in events if e["event"] == "end"]
        resumes += max(0, sum(e["event"] == "start" for e in events) - 1)  # every start after the first resumed
        metrics = json.loads((run_dir / "metrics.json").read_text())
        ok = (
            len(ends) == 1
            and ends[0]["status"] == "finished"
            and metrics["status"] == "finished"
            and metrics["AP"] is not None
        )
        finished_once += ok
        print(f"  {run_dir.name}: {metrics['status']}, AP {metrics.get('AP')}, starts "
              f"{sum(e['event'] == 'start' for e in events)}, preempted "
              f"{sum(e['event'] == 'preempted' for e in events)}, "
              f"ends {len(ends)}, resumed from {metrics.get('resumed_from_iter')}")
    report = json.loads((out / "results.json").read_text()) if (out / "results.json").exists() else []
    report_complete = len(report) == expected and all(r["status"] == "finished" for r in report)
    lost = expected - finished_once
    print(f"rounds {args.rounds}, kills {counts['SIGKILL']}, sigterm {counts['SIGTERM']}, sigusr1 {counts['SIGUSR1']}, "
          f"resumes {resumes}, runs found busy by the other sweep {busy}, "
          f"runs finished exactly once {finished_once}/{expected}, report complete {report_complete}, runs lost {lost}")
    print(f"sweep folder: {out}")
    return 0 if lost == 0 and report_complete else 1


if __name__ == "__main__":
    sys.exit(main())
