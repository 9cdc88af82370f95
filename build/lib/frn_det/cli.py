"""Console entry points (see pyproject.toml)."""


def train_main():
    from .engine.train_net import run

    run()


def sweep_main():
    from .sweep.app import main

    main()


def report_main():
    import sys

    from .report.cli import main

    sys.exit(main())
