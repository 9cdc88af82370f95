"""Running a sweep's jobs: a job skipped, resumed or trained (runner.py) in a fresh process
or DDP workers (worker.py, fresh_process.py), one process per run folder (lock.py), stopped
and requeued cleanly (stop.py, training_stop.py, slurm_states.py), on a cluster
(cluster.py), with a console line per run and the report at the end (console.py,
callbacks.py)."""
