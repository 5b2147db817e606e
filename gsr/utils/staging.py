"""Commands that write a folder build it beside the target and move it into place only when complete.

Every such folder carries ``OWNER_FILE``, the list of what gsr wrote in it. ``--overwrite`` replaces a folder only
when it holds that list and nothing else besides the listed files, so it can never delete a user's files; and no
output folder may be, or contain, one of the command's inputs.
"""
import contextlib
import json
import os
import shutil
import tempfile
from typing import Iterable, Iterator, List

from gsr.utils.checkpoint import atomic_write_text, current_umask, temporary_prefix
from gsr.utils.errors import GsrError

OWNER_FILE = '.gsr-output.json'


def _files(folder: str) -> List[str]:
    found = []
    for root, _, names in os.walk(folder):
        found += [os.path.relpath(os.path.join(root, n), folder) for n in names]
    return sorted(found)


def check_not_inside(target: str, inputs: Iterable[str]) -> None:
    """Refuse an output folder that is one of ``inputs`` or contains one."""
    for source in inputs:
        source = os.path.realpath(source)
        if source == target or source.startswith(target + os.sep):
            raise GsrError(f'output folder {target} contains the input {source}: choose an output outside it')


def check_replaceable(target: str) -> None:
    """``target`` may be replaced only if gsr wrote it and it holds nothing gsr did not write."""
    owner = os.path.join(target, OWNER_FILE)
    if not os.path.isdir(target) or not os.path.isfile(owner):
        raise GsrError(f'--overwrite replaces only folders gsr wrote, and {target} is not one (no {OWNER_FILE}); '
                       'choose another output')
    try:
        written = set(json.load(open(owner))['files'])
    except (ValueError, KeyError, TypeError) as e:
        raise GsrError(f'{owner} is unreadable; {target} is left as it is: choose another output') from e
    foreign = [f for f in _files(target) if f not in written and f != OWNER_FILE]
    if foreign:
        raise GsrError(f'{target} holds {len(foreign)} file(s) gsr did not write (e.g. {foreign[0]}); --overwrite '
                       'never deletes them: move them away or choose another output')


@contextlib.contextmanager
def staged_folder(target: str, overwrite: bool = False, inputs: Iterable[str] = ()) -> Iterator[str]:
    """Yield a temporary folder next to ``target``; on success it replaces ``target``, on failure it is removed.

    An existing ``target`` is an error unless ``overwrite``, and with it unless gsr wrote it (module docstring); it
    is replaced only after the new folder is complete, so a failed run leaves the previous output untouched.
    """
    target = os.path.realpath(target)
    check_not_inside(target, inputs)
    if os.path.lexists(target):
        if not overwrite:
            raise GsrError(f'output already exists: {target} (pass --overwrite to replace it)')
        check_replaceable(target)
    parent = os.path.dirname(target)
    try:
        os.makedirs(parent, exist_ok=True)
        staging = tempfile.mkdtemp(prefix=temporary_prefix(target), suffix='.partial', dir=parent)
    except OSError as e:
        raise GsrError(f'could not write {target}: {e}') from e
    try:
        yield staging
        atomic_write_text(os.path.join(staging, OWNER_FILE), json.dumps({'files': _files(staging)}, indent=1))
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    os.chmod(staging, 0o777 & ~current_umask())
    if os.path.exists(target):
        backup = staging + '.old'
        os.replace(target, backup)
        os.replace(staging, target)
        shutil.rmtree(backup, ignore_errors=True)
    else:
        os.replace(staging, target)
