"""Import a user's modules (their norms register themselves, docs/own_norm.md) in every
process that builds a model or checks a config.

The modules come from the sweep key `imports`, `--import MODULE` of tools/train_net.py and
tools/lazyconfig_train_net.py, and the environment variable FRN_DET_IMPORTS (module names
separated by commas), which the sweep sets for its training processes (fresh interpreters,
Detectron2's spawned workers) and which SLURM jobs inherit. A module is imported by name,
so its folder must be on the Python path (PYTHONPATH, or the current folder).
"""
import importlib
import os
from typing import Iterable, List, Optional

__all__ = ["ENV_VAR", "UserImportError", "import_modules", "import_from_env", "export_to_env", "module_list",
           "add_import_argument", "import_requested"]

ENV_VAR = "FRN_DET_IMPORTS"


class UserImportError(ImportError):
    """A module named in `imports` / --import / FRN_DET_IMPORTS that cannot be imported."""


def module_list(value) -> List[str]:
    """Module names from a list or a comma-separated string; None: none."""
    if value is None:
        return []
    if isinstance(value, str):
        return [m.strip() for m in value.split(",") if m.strip()]
    return [str(m).strip() for m in value]


def import_modules(modules, key: str = "imports") -> List[str]:
    """Import each module (a list, or names separated by commas); returns their names.
    UserImportError names `key`, the module and why (its own error), before anything is built."""
    names = module_list(modules)
    for name in names:
        if not name or not all(part.isidentifier() for part in name.split(".")):
            raise UserImportError(f"{key}: {name!r} is not a module name (expected e.g. my_norms or my_pkg.my_norm)")
        try:
            importlib.import_module(name)
        except Exception as e:  # noqa: BLE001  whatever the module raises: say which one, and where from
            missing = isinstance(e, ModuleNotFoundError) and bool(e.name) and name.startswith(e.name)
            where = "; is its folder on PYTHONPATH (or the current folder)?" if missing else ""
            raise UserImportError(f"{key}: cannot import {name!r} ({type(e).__name__}: {e}){where}") from e
    return names


def import_from_env(environ: Optional[dict] = None) -> List[str]:
    """Import the modules of FRN_DET_IMPORTS."""
    environ = os.environ if environ is None else environ
    return import_modules(environ.get(ENV_VAR), ENV_VAR)


def export_to_env(modules: Iterable[str]) -> None:
    """Add `modules` to FRN_DET_IMPORTS of this process, so the processes it starts import them."""
    names = module_list(os.environ.get(ENV_VAR)) + [m for m in module_list(modules)]
    if names:
        os.environ[ENV_VAR] = ",".join(dict.fromkeys(names))


def add_import_argument(parser):
    """`--import MODULE` (repeatable) of the training CLIs (tools/train_net.py,
    tools/lazyconfig_train_net.py): modules imported before the config is read."""
    parser.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                        help="a module to import before the config is read, e.g. one that registers a norm of your "
                             "own (docs/own_norm.md); repeatable; its folder must be on PYTHONPATH. "
                             f"{ENV_VAR}=a,b does the same")
    return parser


def import_requested(args) -> List[str]:
    """Import FRN_DET_IMPORTS and the CLI's --import modules (in every worker process: the
    spawned ones get `args`), and pass them on to the processes this one starts."""
    names = import_from_env() + import_modules(getattr(args, "imports", None) or [], "--import")
    export_to_env(names)
    return names
