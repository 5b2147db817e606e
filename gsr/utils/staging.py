"""Commands that write a folder build it beside the target and move it into place only when complete."""
import contextlib
import os
import shutil
import tempfile
from typing import Iterator

from gsr.utils.errors import GsrError


@contextlib.contextmanager
def staged_folder(target: str, overwrite: bool = False) -> Iterator[str]:
    """Yield a temporary folder next to ``target``; on success it replaces ``target``, on failure it is removed.

    An existing ``target`` is an error unless ``overwrite``; it is then replaced only after the new folder is
    complete, so a failed run leaves the previous output untouched.
    """
    target = os.path.abspath(target)
    if os.path.exists(target) and not overwrite:
        raise GsrError(f'output already exists: {target} (pass --overwrite to replace it)')
    parent = os.path.dirname(target)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f'.{os.path.basename(target)}.', suffix='.partial', dir=parent)
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if os.path.exists(target):
        backup = staging + '.old'
        os.replace(target, backup)
        os.replace(staging, target)
        shutil.rmtree(backup, ignore_errors=True)
    else:
        os.replace(staging, target)
