"""Write outputs to a temporary sibling and rename at the end, so a failed stage leaves nothing half-written."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike, *, directory: bool = False, unique: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to `final`; on success it replaces `final`, on error it is removed.

    With directory=True the temporary path is created as an empty directory. The temporary name is
    fixed, so a killed run's leftover is cleared by the next; unique=True names it per writer instead,
    for files that several processes may write at once (shared caches).
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    if unique:
        make = tempfile.mkdtemp if directory else tempfile.mkstemp
        made = make(dir=final.parent, prefix=f".{final.name}.", suffix=".partial")
        if not directory:
            os.close(made[0])
            os.chmod(made[1], 0o644)  # mkstemp's 0600 would hide a shared cache from its other users
        tmp = Path(made if directory else made[1])
    else:
        tmp = final.with_name(f".{final.name}.partial")
        _remove(tmp)
        if directory:
            tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        _remove(tmp)
        raise
    if tmp.is_dir() or final.is_dir():
        _remove(final)  # os.replace swaps a file in one step, but not a directory over another
    os.replace(tmp, final)
