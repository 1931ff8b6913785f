"""Registering a stand-in module and its submodules in ``sys.modules`` under another dotted name."""

import sys


def alias_tree(modules: dict, original: str, alias: str):
    """Registers ``modules[original]`` and every ``modules[original + '.x...']`` as ``alias`` / ``alias.x...``.

    Returns the module registered as ``alias``. Used for tpu_nb's own names only (``tpu_nb.dropin.v1``);
    ``install`` does the same for the original's names, and keeps what it replaced.
    """
    for path, module in modules.items():
        if path == original or path.startswith(original + "."):
            sys.modules[alias + path[len(original):]] = module
    return modules[original]
