"""The states of a sweep's SLURM jobs, on clusters with or without accounting.

submitit asks `sacct` for the states of the jobs it waits for. Without SLURM accounting (a
small or new cluster) every call fails: submitit prints a warning at every poll, and a job
that ends without writing its result (killed, its node lost, cancelled) stays UNKNOWN,
which submitit takes for "not done yet": the sweep would wait for it forever. So a sweep's
jobs are watched by SqueueWhenNoAccounting: sacct if its first call works; else one line
on the console and `squeue` from then on. squeue lists a job until SLURM forgets it
(MinJobAge after its end); a job it no longer lists has ended.
"""
import logging
import subprocess
from typing import Dict, List, Optional

from submitit.slurm.slurm import SlurmInfoWatcher, SlurmJob

logger = logging.getLogger("frn_det")
ENDED = "ENDED"  # a job that squeue no longer lists: over, its final state forgotten
_FIELDS = "JobID|State|NodeList"  # sacct's columns, which submitit's read_info parses


class SqueueWhenNoAccounting(SlurmInfoWatcher):
    use_squeue: Optional[bool] = None  # decided at the first call: does sacct work?

    def _make_command(self) -> Optional[List[str]]:
        command = super()._make_command()
        if command is None:
            return None
        if self.use_squeue is None:
            try:
                probe = subprocess.run(command, capture_output=True, text=True, timeout=60)
                reason = (probe.stderr or probe.stdout).strip().splitlines() or [f"exit status {probe.returncode}"]
                self.use_squeue = probe.returncode != 0
            except (OSError, subprocess.TimeoutExpired) as e:  # no sacct at all, or it hangs
                reason, self.use_squeue = [str(e)], True
            if self.use_squeue:
                logger.warning("SLURM accounting is not available (sacct: %s): job states come from squeue instead",
                               reason[-1])
        return ["squeue", "--me", "--noheader", "--states=all", "--format=%i|%T|%N"] if self.use_squeue else command

    def read_info(self, string) -> Dict[str, Dict[str, str]]:
        if not self.use_squeue:
            return super().read_info(string)
        if not isinstance(string, str):
            string = string.decode()
        info = super().read_info(f"{_FIELDS}\n{string}")  # an array's lines read 123_4 or 123_[5-7]
        ended = {job_id: {"JobID": job_id, "State": ENDED} for job_id in self._registered - self._finished}
        return {**ended, **info}


def watch_slurm_jobs_without_accounting() -> None:
    """In the sweep process, before submitit submits."""
    if not isinstance(SlurmJob.watcher, SqueueWhenNoAccounting):
        SlurmJob.watcher = SqueueWhenNoAccounting(delay_s=SlurmJob.watcher._delay_s)
