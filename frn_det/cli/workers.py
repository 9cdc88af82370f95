"""The training processes of a command line: Detectron2's launch() with its own flags
(--num-gpus, --num-machines, --machine-rank, --dist-url)."""
from detectron2.engine import launch


def launch_workers(train, args) -> None:
    """train(args) in every worker process (one per GPU, or GLOO workers on CPU)."""
    launch(train, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
           dist_url=args.dist_url, args=(args,))
