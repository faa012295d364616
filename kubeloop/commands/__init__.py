"""Sub-commands beyond ``run``, ``compile`` and ``registry``, one module each.

Every module here defines ``register(sub, common)``: it adds its parser(s) to
``sub`` (an argparse sub-parsers object), calls ``common(parser)`` for the shared
``--config``/``--s3-endpoint`` flags, and sets ``func`` to a function taking the
parsed arguments and returning an exit code. Raise ``kubeloop.errors.UserError``
for the user's mistakes (exit 2, message only) and ``Conflict`` for lost races
(exit 3). The CLI finds the modules itself, so adding a command touches no other
file.
"""

import importlib
import pkgutil
from collections.abc import Callable
from typing import Any


def register_all(sub: Any, common: Callable[[Any], None]) -> None:
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        module.register(sub, common)
