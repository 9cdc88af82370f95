"""The job process's side of a stop signal (frn_det/sweep/running/training_stop.py), with real
processes and signals: the training process gets the signal and finishes its checkpoint
before the handler the signal found (submitit's: requeue and exit) runs; a training that
does not stop is ended after the bound. The whole path on a real cluster: tests/sweep/test_slurm.py."""
import os
import signal
import subprocess
import sys
import time

import pytest

from frn_det.engine.preemption import preemption_signals, submitit_signal
from frn_det.sweep.running import training_stop
from frn_det.sweep.running.training_stop import TrainingStop

# A stand-in for a training process: on the signal it "checkpoints" (writes a file after
# a moment) and ends; with "ignore" it never stops.
TRAINING = """
import signal, sys, time
path, mode = sys.argv[1], sys.argv[2]
def stop(signum, frame):
    if mode == "ignore":
        return
    time.sleep(0.5)
    open(path, "w").write(signal.Signals(signum).name)
    sys.exit(1)
signal.signal(signal.SIGUSR2, stop)
print("ready", flush=True)
time.sleep(60)
"""


def start_training(tmp_path, mode="checkpoint"):
    proc = subprocess.Popen([sys.executable, "-c", TRAINING, str(tmp_path / "checkpoint"), mode],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "ready\n"
    return proc


def test_the_signal_reaches_the_training_and_the_previous_handler_runs_after_its_checkpoint(tmp_path, monkeypatch):
    monkeypatch.delenv("SUBMITIT_PREEMPT_SIGNAL", raising=False)
    calls = []

    def requeue(signum, frame):  # what submitit installs: it requeues the job and exits
        calls.append((signal.Signals(signum).name, (tmp_path / "checkpoint").exists()))

    previous = signal.signal(signal.SIGUSR2, requeue)
    try:
        with TrainingStop() as stop:
            proc = start_training(tmp_path)
            stop.trains_in(proc)
            os.kill(os.getpid(), signal.SIGUSR2)  # to this process alone: it passes it on
            assert proc.wait(timeout=30) == 1
            assert calls == []  # not while the training writes its checkpoint
        assert stop.received == signal.SIGUSR2
        assert calls == [("SIGUSR2", True)]  # after the checkpoint, once
        assert (tmp_path / "checkpoint").read_text() == "SIGUSR2"
        assert signal.getsignal(signal.SIGUSR2) is requeue  # restored
    finally:
        signal.signal(signal.SIGUSR2, previous)


def test_a_training_that_does_not_stop_is_ended_after_the_bound(tmp_path, monkeypatch):
    monkeypatch.setattr(training_stop, "CHECKPOINT_WAIT_S", 1.0)
    start = time.time()
    with TrainingStop() as stop:
        proc = start_training(tmp_path, mode="ignore")
        stop.trains_in(proc)
        os.kill(os.getpid(), signal.SIGUSR2)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    assert time.time() - start < 10 and not (tmp_path / "checkpoint").exists()


def test_submitit_preempt_signal_names_the_signal_the_training_stops_on(monkeypatch):
    monkeypatch.delenv("SUBMITIT_PREEMPT_SIGNAL", raising=False)
    assert submitit_signal() == signal.SIGUSR2
    assert preemption_signals() == (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)
    monkeypatch.setenv("SUBMITIT_PREEMPT_SIGNAL", "HUP")
    assert preemption_signals() == (signal.SIGTERM, signal.SIGUSR1, signal.SIGHUP)
    monkeypatch.setenv("SUBMITIT_PREEMPT_SIGNAL", "USR1")  # already a stop signal: once
    assert preemption_signals() == (signal.SIGTERM, signal.SIGUSR1)
    monkeypatch.setenv("SUBMITIT_PREEMPT_SIGNAL", "SIGUSR2")
    with pytest.raises(ValueError, match=r"SUBMITIT_PREEMPT_SIGNAL='SIGUSR2' is not a signal name: expected e.g. USR2"):
        submitit_signal()
