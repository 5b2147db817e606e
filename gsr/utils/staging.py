"""gsr's one output-folder policy: never an input, never a user's files.

Commands that write a finished folder (``gsr infer``, ``gsr degrade``) build it beside the target and move it into
place only when complete (``staged_folder``). Commands that fill a folder as they go and resume in it (``gsr
evaluate``, ``gsr analyze``, ``gsr repro``) write only into a folder that is new, empty or one gsr made
(``claim_output_folder``). Every gsr folder carries ``OWNER_FILE``; a staged one lists what gsr wrote in it, with
each file's sha256. ``--overwrite`` replaces a folder only when it holds that list and nothing else — no other file,
no symlink or folder of the user's, no listed file changed since — so it can never delete a user's work; and no
output folder may be, or contain, one of the command's inputs.
"""
import contextlib
import hashlib
import json
import os
import shutil
import socket
import tempfile
from typing import Dict, Iterable, Iterator, List

from gsr.utils.checkpoint import atomic_write_text, current_umask, file_sha256, temporary_prefix
from gsr.utils.errors import GsrError

OWNER_FILE = '.gsr-output.json'
STAGING_SUFFIX = '.partial'
# a staging folder's name says who writes it (host tag, process id), so a later command can tell an abandoned one
HOST_TAG = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:6]


def _files(folder: str) -> List[str]:
    """Every entry under ``folder`` that is not a plain folder with something in it: files, symlinks (to files or
    folders, not followed) and empty folders (with a trailing ``/``), relative to ``folder``."""
    found = []
    for root, dirs, names in os.walk(folder):
        found += [os.path.relpath(os.path.join(root, n), folder) for n in names]
        for d in dirs:
            path = os.path.join(root, d)
            if os.path.islink(path):
                found.append(os.path.relpath(path, folder))
            elif not os.listdir(path):
                found.append(os.path.relpath(path, folder) + os.sep)
    return sorted(found)


def _contents(folder: str) -> Dict[str, str]:
    """relative path -> sha256 of every file gsr wrote in a finished ``folder`` (``OWNER_FILE``'s record)."""
    return {name: file_sha256(os.path.join(folder, name)) for name in _files(folder)
            if not name.endswith(os.sep) and not os.path.islink(os.path.join(folder, name))}


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
        with open(owner) as f:
            record = json.load(f)
        if record.get('resumable'):
            raise GsrError(f'{target} is a folder gsr evaluate / analyze / repro fills and resumes in; --overwrite '
                           'does not replace it: choose another output')
        written = record['files']
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise GsrError(f'{owner} is unreadable; {target} is left as it is: choose another output') from e
    sums = written if isinstance(written, dict) else {}  # a list: written before gsr recorded contents
    foreign = [f for f in _files(target) if f != OWNER_FILE and (
        f not in written or os.path.islink(os.path.join(target, f)) or
        (f in sums and file_sha256(os.path.join(target, f)) != sums[f]))]
    if foreign:
        raise GsrError(f'{target} holds {len(foreign)} file(s) gsr did not write or that changed since (e.g. '
                       f'{foreign[0]}); --overwrite never deletes them: move them away or choose another output')


def staging_owner(pid: int) -> str:
    """The part of a staging folder's name that says who writes it: ``<host tag>-<process id>``."""
    return f'{HOST_TAG}-{pid}'


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        pass
    return True


def remove_abandoned_staging(target: str) -> None:
    """Remove the staging folders beside ``target`` that a killed command of this machine left (review case G3):
    the folder's name holds its writer's host and process id, and that process is gone. A folder whose replacement
    was cut short (a ``.old`` backup beside it) is left for the user: it may hold the only complete output."""
    parent, prefix = os.path.dirname(target), temporary_prefix(target)
    names = set(os.listdir(parent))
    for name in names:
        if not (name.startswith(prefix) and name.endswith(STAGING_SUFFIX)) or name + '.old' in names:
            continue
        owner = name[len(prefix):].split('.', 1)[0]
        pid = owner.rpartition('-')[2]
        if pid.isdigit() and owner == staging_owner(int(pid)) and not process_alive(int(pid)):
            shutil.rmtree(os.path.join(parent, name), ignore_errors=True)


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
        remove_abandoned_staging(target)
        staging = tempfile.mkdtemp(prefix=f'{temporary_prefix(target)}{staging_owner(os.getpid())}.',
                                   suffix=STAGING_SUFFIX, dir=parent)
    except OSError as e:
        raise GsrError(f'could not write {target}: {e}') from e
    try:
        yield staging
        atomic_write_text(os.path.join(staging, OWNER_FILE), json.dumps({'files': _contents(staging)}, indent=1))
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


def claim_output_folder(folder: str, inputs: Iterable[str] = ()) -> str:
    """The folder a resumable command writes into (module docstring): created, or an empty folder, or one gsr made
    (it holds ``OWNER_FILE``); never one of ``inputs`` or a folder that contains one. Returns its real path."""
    target = os.path.realpath(folder)
    check_not_inside(target, inputs)
    owner = os.path.join(target, OWNER_FILE)
    if os.path.lexists(target):
        if not os.path.isdir(target):
            raise GsrError(f'output {folder} is a file, not a folder: choose another output')
        if os.listdir(target) and not os.path.isfile(owner):
            raise GsrError(f'output folder {folder} holds files gsr did not write (no {OWNER_FILE}); gsr never '
                           f'writes beside them: choose a new or empty folder (a folder an earlier gsr wrote: add '
                           f'an empty {OWNER_FILE} to it)')
    try:
        os.makedirs(target, exist_ok=True)
    except OSError as e:
        raise GsrError(f'could not write {folder}: {e}') from e
    if not os.path.isfile(owner):
        atomic_write_text(owner, json.dumps({'resumable': True}) + '\n')
    return target
