"""BasicSR-style auto-import: every ``<name><suffix>.py`` in a package folder is imported for registration."""
import importlib
import os
from typing import List


def import_modules(package: str, folder: str, suffix: str) -> List[str]:
    """Import ``package.<name>`` for each file in ``folder`` ending in ``suffix``; return the module names."""
    names = sorted(f[:-3] for f in os.listdir(folder) if f.endswith(suffix))
    for name in names:
        importlib.import_module(f'{package}.{name}')
    return names
