"""A real SLURM cluster on this machine, for the tests: munge, slurmctld and two slurmd
node daemons (n1, n2) in a temporary folder, on free ports, with Debian's packages (slurm
22.05: `apt-get install slurmctld slurmd munge slurm-client`, which .ci/run does).

Every daemon runs in the foreground as a child of the test process (and ends with it, even
when it is killed), so that stopping the cluster ends exactly what it started; job
processes are found by the SLURM_CONF they carry. The cluster needs root (slurmd starts
jobs as their user) and resolvable node names (the hosts file: a multi-node run's
rendezvous address is its first node's name).
"""
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Dict, List, Optional

NODES = ("n1", "n2")
PARTITION = "cpu"
PACKAGES = ("slurmctld", "slurmd", "munged", "sinfo")  # the programs the Debian packages install


class ClusterUnavailable(RuntimeError):
    """SLURM cannot run here; the message says why."""


def _free_ports(count: int) -> List[int]:
    """Distinct ports that nothing listens on now (held open together while chosen)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _resolve_node_names() -> None:
    missing = []
    for node in NODES:
        try:
            socket.gethostbyname(node)
        except OSError:
            missing.append(node)
    if missing:
        try:
            with open("/etc/hosts", "a") as hosts:
                hosts.write(f"127.0.0.1 {' '.join(missing)}  # frn-det's test SLURM cluster\n")
        except OSError as e:
            raise ClusterUnavailable(f"node names {missing} do not resolve and /etc/hosts cannot take them: {e}")


def _slurm_conf(root: Path) -> str:
    host = socket.gethostname()
    controller, *ports = _free_ports(1 + len(NODES))
    nodes = "\n".join(f"NodeName={n} NodeHostname={host} Port={port} CPUs=2 RealMemory=4000 State=UNKNOWN"
                      for n, port in zip(NODES, ports))
    return f"""\
ClusterName=frndettest
SlurmctldHost={host}
SlurmctldPort={controller}
SlurmUser=root
AuthType=auth/munge
AuthInfo=socket={root}/munge/munge.socket
CredType=cred/munge
# no systemd, no cgroups: processes tracked by their parents, no task binding
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool/%n
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/spool/%n/slurmd.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/%n.log
# a lost node is noticed within seconds and comes back when its slurmd starts again
SlurmdTimeout=10
ReturnToService=2
KillWait=10
{nodes}
PartitionName={PARTITION} Nodes={','.join(NODES)} Default=YES MaxTime=INFINITE State=UP
"""


class SlurmCluster:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.conf = self.root / "slurm.conf"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}
        self._daemons: Dict[str, subprocess.Popen] = {}

    # --- daemons -------------------------------------------------------------------------
    def _start(self, name: str, *command: str) -> None:
        log = open(self.root / "log" / f"{name}.out", "wb")
        self._daemons[name] = subprocess.Popen(command, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                               start_new_session=True, preexec_fn=_end_with_the_tests)

    def start(self, timeout: float = 60) -> "SlurmCluster":
        if os.geteuid() != 0:
            raise ClusterUnavailable("needs root (slurmd starts jobs as their user)")
        absent = [p for p in PACKAGES if shutil.which(p) is None and not Path("/usr/sbin", p).exists()]
        if absent:
            raise ClusterUnavailable(f"{', '.join(absent)} not installed (apt-get install slurmctld slurmd munge "
                                     "slurm-client; .ci/run does it)")
        _resolve_node_names()
        for sub in ("munge", "state", "log", *(f"spool/{n}" for n in NODES)):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        munge = self.root / "munge"
        munge.chmod(0o755)
        (munge / "munge.key").write_bytes(os.urandom(1024))
        (munge / "munge.key").chmod(0o400)
        self.conf.write_text(_slurm_conf(self.root))
        self._start("munged", _sbin("munged"), "--foreground", "--force", f"--socket={munge}/munge.socket",
                    f"--key-file={munge}/munge.key", f"--pid-file={munge}/munged.pid",
                    f"--log-file={munge}/munged.log", f"--seed-file={munge}/munged.seed")
        self._wait(lambda: (munge / "munge.socket").exists(), 20, "munged")
        self._start("slurmctld", _sbin("slurmctld"), "-D", "-f", str(self.conf))
        self._wait(lambda: self.run("sinfo", check=False).returncode == 0, timeout, "slurmctld")
        for node in NODES:
            self._start(node, _sbin("slurmd"), "-D", "-N", node, "-f", str(self.conf))
        self._wait(lambda: self.node_states() == {n: "idle" for n in NODES}, timeout, "slurmd n1/n2 idle")
        return self

    def _wait(self, ready, timeout: float, what: str) -> None:
        deadline = time.time() + timeout
        while not ready():
            dead = [n for n, p in self._daemons.items() if p.poll() is not None]
            if dead or time.time() > deadline:
                raise ClusterUnavailable(f"{what} did not start{' (' + ', '.join(dead) + ' exited)' if dead else ''}:"
                                         f"\n{self.logs()}")
            time.sleep(0.3)

    def logs(self, lines: int = 15) -> str:
        out = []
        for log in sorted((self.root / "log").glob("*")) + [self.root / "munge" / "munged.log"]:
            if log.is_file():
                out.append(f"--- {log.name}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-lines:]))
        return "\n".join(out)

    def stop(self) -> None:
        """End the jobs, then the daemons: whatever state the tests left."""
        if "slurmctld" in self._daemons:
            self.run("scancel", "--full", "--user=root", check=False)
            deadline = time.time() + 30
            while self.jobs(states="RUNNING,COMPLETING", check=False) and time.time() < deadline:
                time.sleep(0.5)
        for pid in self.job_processes():
            _kill(pid)
        for name, proc in reversed(list(self._daemons.items())):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self._daemons.clear()

    # --- clients -------------------------------------------------------------------------
    def run(self, *command: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
        proc = subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed ({proc.returncode}): {proc.stderr or proc.stdout}")
        return proc

    def node_states(self) -> Dict[str, str]:
        out = self.run("sinfo", "--noheader", "--Node", "--format=%N %t", check=False).stdout
        return dict(line.split() for line in out.splitlines() if line.strip())

    def jobs(self, states: str = "all", check: bool = True) -> List[dict]:
        """squeue's jobs: id (123 or 123_4), state, reason, nodes."""
        proc = self.run("squeue", "--noheader", f"--states={states}", "--format=%i|%T|%r|%N", check=check)
        return [dict(zip(("id", "state", "reason", "nodes"), line.split("|")))
                for line in proc.stdout.splitlines() if line.strip()]

    def start_requeued_now(self, time_limit: Optional[int] = None) -> List[str]:
        """SLURM holds a requeued job for two minutes (BeginTime, not configurable): let it start
        now (with `time_limit`: that many minutes)."""
        held = [j["id"] for j in self.jobs(states="PENDING", check=False) if j["reason"] == "BeginTime"]
        for job_id in held:
            limit = [f"TimeLimit={time_limit}"] if time_limit else []
            self.run("scontrol", "update", f"JobId={job_id}", *limit, "StartTime=now", check=False)
        return held

    def end_time_limit_soon(self, job_id: str) -> int:
        """Shorten a running job's time limit so that SLURM's own time-limit signal comes at
        slurmctld's next time-limit check (every 30 s), for a job submitted with a signal
        delay of at least 60 s: the limit ends 32-92 s from now. Returns it, in minutes."""
        fields = dict(f.split("=", 1) for f in self.run("scontrol", "show", "job", "-o", job_id).stdout.split()
                      if "=" in f)
        days, _, clock = fields["RunTime"].rpartition("-")
        h, m, sec = map(int, clock.split(":"))
        elapsed = int(days or 0) * 86400 + h * 3600 + m * 60 + sec
        minutes = (elapsed + 32) // 60 + 1
        self.run("scontrol", "update", f"JobId={job_id}", f"TimeLimit={minutes}")
        return minutes

    def job_processes(self, node: Optional[str] = None) -> List[int]:
        """Processes of this cluster's jobs (every node, or one), not its daemons."""
        mine = f"SLURM_CONF={self.conf}".encode()
        found = []
        for environ in Path("/proc").glob("[0-9]*/environ"):
            try:
                variables = environ.read_bytes().split(b"\0")
            except OSError:  # ended meanwhile
                continue
            in_a_job = any(v.startswith(b"SLURM_JOB_ID=") for v in variables)
            if mine in variables and in_a_job and (node is None or f"SLURMD_NODENAME={node}".encode() in variables):
                found.append(int(environ.parent.name))
        return [pid for pid in found if pid != os.getpid()]


def _end_with_the_tests() -> None:
    """In a daemon: SIGTERM when the test process ends, even killed (Linux), so that no
    daemon outlives the tests."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _sbin(program: str) -> str:
    return shutil.which(program) or f"/usr/sbin/{program}"


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
