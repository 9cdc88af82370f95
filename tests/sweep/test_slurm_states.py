"""The job states of a sweep on a SLURM cluster without accounting
(frn_det/sweep/running/slurm_states.py); on a real cluster: tests/sweep/test_slurm.py."""
from frn_det.sweep.running.slurm_states import ENDED, SqueueWhenNoAccounting


def test_without_accounting_job_states_come_from_squeue_and_a_job_it_forgot_has_ended():
    watcher = SqueueWhenNoAccounting()
    watcher.use_squeue = True
    for job in ("7_0", "7_1", "8_0", "8_1", "9", "10"):
        watcher.register_job(job)
    info = watcher.read_info("7_[0-1]|PENDING|\n8_0|RUNNING|n1\n9|COMPLETED|n1\n")
    states = {job: info[job]["State"] for job in ("7_0", "7_1", "8_0", "8_1", "9", "10")}
    assert states == {"7_0": "PENDING", "7_1": "PENDING", "8_0": "RUNNING", "8_1": ENDED, "9": "COMPLETED",
                      "10": ENDED}


def test_a_cluster_without_sacct_gets_one_line_and_squeue(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("PATH", str(tmp_path))  # no sacct (nor squeue) here
    watcher = SqueueWhenNoAccounting()
    watcher.register_job("12")
    with caplog.at_level("WARNING", logger="frn_det"):
        assert watcher._make_command()[0] == "squeue"
        assert watcher._make_command()[0] == "squeue"  # decided once
    assert [r.getMessage() for r in caplog.records] == [
        "SLURM accounting is not available (sacct: [Errno 2] No such file or directory: 'sacct'): job states come "
        "from squeue instead"]
