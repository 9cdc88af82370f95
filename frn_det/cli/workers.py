"""What the training command lines share: Detectron2's arguments plus --import, and the
training processes started by Detectron2's launch() with its own flags (--num-gpus,
--num-machines, --machine-rank, --dist-url)."""
from detectron2.engine import default_argument_parser, launch

from ..utils.imports import UserImportError, add_import_argument, import_requested


def parse_training_args(argv=None):
    """Detectron2's default_argument_parser with --import; the modules it names (and
    FRN_DET_IMPORTS) imported before any config is read, a bad one a usage error."""
    parser = add_import_argument(default_argument_parser())
    args = parser.parse_args(argv)
    print("Command Line Args:", args)
    try:
        import_requested(args)  # a user's norms, registered before the config names them
    except UserImportError as e:
        parser.error(str(e))
    return args


def launch_workers(train, args) -> None:
    """train(args) in every worker process (one per GPU, or GLOO workers on CPU)."""
    launch(train, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
           dist_url=args.dist_url, args=(args,))
