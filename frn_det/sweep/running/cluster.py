"""Where a sweep job runs: its machine rank and the rendezvous address of a multi-node run.

Under a scheduler they come from its environment: submitit's JobEnvironment inside a
submitit job, else the SLURM variables (SLURM_NODEID, SLURM_JOB_NODELIST, SLURM_JOB_ID).
MASTER_ADDR / MASTER_PORT override the host and port; explicit machine_rank and dist_url
in the sweep config win over all of them.
"""
import os
import zlib
from typing import Optional, Tuple

PORT_BASE, PORT_RANGE = 20000, 20000


def scheduler_env() -> Optional[dict]:
    """{node, num_nodes, master, job_id} of the scheduler job around this process, or None."""
    try:
        import submitit

        env = submitit.JobEnvironment()  # raises outside a submitit job
        return {"node": env.node, "num_nodes": env.num_nodes, "master": env.hostnames[0], "job_id": str(env.job_id)}
    except (ImportError, RuntimeError):
        pass
    if "SLURM_NODEID" not in os.environ:
        return None
    from submitit.slurm.slurm import _parse_node_list

    nodelist = os.environ.get("SLURM_JOB_NODELIST", "")
    hosts = _parse_node_list(nodelist) if nodelist else ["127.0.0.1"]
    return {"node": int(os.environ["SLURM_NODEID"]),
            "num_nodes": int(os.environ.get("SLURM_JOB_NUM_NODES", os.environ.get("SLURM_NNODES", len(hosts)))),
            "master": hosts[0], "job_id": os.environ.get("SLURM_JOB_ID", "0")}


def resolve_distributed(num_machines: int, machine_rank, dist_url) -> Tuple[int, str]:
    """(machine_rank, dist_url) for Detectron2's launch."""
    if num_machines == 1:
        return (0 if machine_rank is None else int(machine_rank)), (dist_url or "auto")
    env = scheduler_env()
    needs_env = machine_rank is None or dist_url in (None, "auto")
    if needs_env and env is None:
        raise ValueError(
            f"num_machines={num_machines} needs machine_rank (0..{num_machines - 1}) and dist_url=tcp://HOST:PORT, "
            "or a SLURM/submitit job to read them from (e.g. hydra/launcher=submitit_slurm hydra.launcher.nodes=N)"
        )
    if env is not None and needs_env and env["num_nodes"] != num_machines:
        raise ValueError(f"num_machines={num_machines} but the scheduler job has {env['num_nodes']} nodes")
    rank = int(env["node"]) if machine_rank is None else int(machine_rank)
    if not 0 <= rank < num_machines:
        raise ValueError(f"machine_rank={rank} is not in 0..{num_machines - 1}")
    if dist_url in (None, "auto"):
        host = os.environ.get("MASTER_ADDR") or env["master"]
        # The same port on every node without talking to each other: derived from the job id.
        port = os.environ.get("MASTER_PORT") or PORT_BASE + zlib.crc32(env["job_id"].encode()) % PORT_RANGE
        dist_url = f"tcp://{host}:{port}"
    return rank, dist_url
