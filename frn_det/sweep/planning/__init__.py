"""Planning a sweep, before anything runs: the grid and its Hydra config, each job's
Detectron2 config and scaled schedule, the sweep keys checked, the cost plan. Importing
it registers the config's resolvers (resolvers.py)."""
from . import resolvers  # noqa: F401  (registers the OmegaConf resolvers)
