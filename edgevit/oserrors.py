"""An OSError (full disk, no permission, a file where a folder should be) as the one-line
EdgevitError the CLI prints: these are the user's environment, not bugs in edgevit."""
from __future__ import annotations

import errno

from edgevit.errors import EdgevitError

FIXES = {
    errno.ENOSPC: "the disk is full: free space or choose --out on another disk",
    errno.EDQUOT: "the disk quota is exhausted: free space or choose --out on another disk",
    errno.EACCES: "no permission: choose a folder you can write (--out) or fix its permissions",
    errno.EPERM: "operation not permitted: choose a folder you own (--out) or fix its permissions",
    errno.EROFS: "the file system is read-only: choose --out on a writable disk",
    errno.ENOTDIR: "a file is in the way where a folder is needed: remove it or choose another path",
    errno.EISDIR: "a folder is in the way where a file is needed: give a file path",
    errno.EEXIST: "a file or folder is in the way there (e.g. a file where --out needs a folder): remove it or choose another path",
    errno.ENAMETOOLONG: "the path is too long: choose a shorter one",
    errno.ELOOP: "too many symbolic links in the path: resolve the links",
    errno.ENOENT: "a folder on the path does not exist: check the path",
    errno.EMFILE: "too many open files: raise the limit (ulimit -n)",
}


def os_error(exc: OSError) -> EdgevitError:
    where = exc.filename if exc.filename is not None else "(file system)"
    if exc.filename2 is not None:
        where = f"{where} -> {exc.filename2}"
    reason = exc.strerror or str(exc) or type(exc).__name__
    return EdgevitError(f"{where}: {reason}", FIXES.get(exc.errno, "check the path, its permissions and free disk space"))
