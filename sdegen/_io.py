"""Files that are never torn: the one atomic writer, partial files for streams, locks, output-path checks.

Every file sdegen writes (checkpoints, model files, the LeNet, trajectories, likelihood and study results,
run metadata) goes through this module, with one rule each:

* **Atomic replace.** A file is written to a temporary `.<name>.<pid>.<random>.tmp<suffix>` beside the
  target (it keeps the target's suffix, so that libraries choosing a format by it still do), flushed,
  fsync'ed, given the permissions of a new file (0o666 minus the umask) and moved into place with
  `os.replace`; the directory is fsync'ed so the rename itself is durable. A killed writer leaves the target
  untouched; its temporary file (named after its process) is removed by the next writer of that target once
  that process is gone (temporaries of older versions, `.<name>.<random>.tmp`, once they are an hour old).
* **Streams.** A file written record by record (`PartialFile`) lives as `<name>.partial` while it grows and
  is renamed onto `<name>` when the run completes; a failed or killed run leaves `<name>` untouched and the
  partial file readable. `<name>.lock` (an exclusive `flock`, holding the writer's pid) refuses a second
  writer of the same target.
* **Errors.** OS errors keep their errno and name the path (`OSError.filename`), so the CLI can print one
  line: path and cause. `check_output_file` / `check_output_dir` test a destination before any work starts.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import io
import os
import re
import secrets
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

# Below this many free bytes a failed write of a library that hides errno (HDF5, torch's zip writer) is
# reported as a full disk.
_LOW_SPACE = 1 << 20


class FileLockedError(RuntimeError):
    """Another process holds the lock of a file or run directory."""


def file_mode() -> int:
    """The permissions of every file sdegen creates: 0o666 minus the process umask (what `open` would give)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _temporary(path: Path) -> Path:
    return path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp{path.suffix}"


def clean_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Remove temporaries of `path` left by killed writers (see the module docstring); returns them."""
    path = Path(path)
    ours = re.compile(rf"\.{re.escape(path.name)}\.(\d+)\.[0-9a-f]{{8}}\.tmp{re.escape(path.suffix)}")
    legacy = re.compile(rf"\.{re.escape(path.name)}\.[A-Za-z0-9_]{{6,12}}\.tmp")  # mkstemp names, no pid
    removed = []
    with contextlib.suppress(OSError):
        for tmp in path.parent.glob(f".{path.name}.*.tmp*"):
            mine = ours.fullmatch(tmp.name)
            with contextlib.suppress(OSError):
                if (mine and not _pid_alive(int(mine[1]))) or (
                    not mine and legacy.fullmatch(tmp.name) and time.time() - tmp.stat().st_mtime > 3600
                ):
                    tmp.unlink()
                    removed.append(tmp)
    return removed


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _check_not_dir(path: Path) -> None:
    if str(path) in ("", "."):
        raise OSError(errno.EINVAL, "empty output path", str(path))
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, "is a directory, expected a file name", str(path))


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; when the block ends without error, move it onto `path` atomically.

    The caller writes the whole file to the yielded path (any library that takes a file name). On success the
    file is fsync'ed, given `file_mode()` and renamed onto `path`; on any error it is removed and `path` is
    left as it was. Parent directories are created.

    Raises:
        IsADirectoryError: `path` is an existing directory.
        OSError: from the writer or the file system, with `filename` set to `path` (see `explain_write_error`).
    """
    path = Path(path)
    _check_not_dir(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temporaries(path)
    tmp = _temporary(path)
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(err, RuntimeError):  # HDF5 and torch report failed writes so, without errno
            raise explain_write_error(err, path) from err
        if isinstance(err, OSError) and err.filename != str(path):
            raise _with_path(err, path) from err
        raise
    _fsync_dir(path.parent)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` atomically (see `atomic_path`)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
        f.flush()


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` (UTF-8) to `path` atomically (see `atomic_path`)."""
    atomic_write_bytes(path, text.encode())


def atomic_torch_save(obj, path: str | os.PathLike) -> None:
    """`torch.save(obj)` to `path` atomically.

    The object is serialised in memory first and written with plain file I/O, so a full disk or a read-only
    file system raises an `OSError` with its errno (torch's own zip writer reports only "file write failed").
    """
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def _with_path(err: OSError, path: Path) -> OSError:
    code = err.errno or errno.EIO
    return OSError(code, err.strerror or str(err) or os.strerror(code), str(path))


def explain_write_error(err: BaseException, path: str | os.PathLike) -> OSError:
    """An OSError naming `path` and the cause of a failed write, for libraries that hide errno (HDF5, torch).

    An `OSError` keeps its errno. For anything else the file system is asked: little free space → ENOSPC; a
    probe file that cannot be created gives its own errno (EACCES, EROFS, ...); otherwise EIO with the
    library's message.
    """
    path = Path(path)
    if isinstance(err, OSError) and err.errno:
        return _with_path(err, path)
    directory = path.parent if path.parent.exists() else Path(".")
    with contextlib.suppress(OSError):
        if shutil.disk_usage(directory).free < _LOW_SPACE:
            return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
    try:
        _probe(directory)
    except OSError as probe_err:
        return _with_path(probe_err, path)
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return OSError(errno.EIO, f"write failed ({first})", str(path))


def _probe(directory: Path) -> None:
    """Create and remove a small file in `directory`; raises the OSError the file system gives."""
    probe = directory / f".sdegen-probe.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    fd = os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    try:
        os.write(fd, b"\0" * 4096)
    finally:
        os.close(fd)
        with contextlib.suppress(OSError):
            probe.unlink()


def check_output_file(path: str | os.PathLike, what: str = "output") -> Path:
    """Check before any work that a file can be written at `path`: a name, not a directory, writable place.

    Missing parent directories count as writable when the nearest existing ancestor is (they are created
    when the file is written). Nothing is left behind.

    Raises:
        OSError: naming the path: EINVAL (empty), EISDIR, ENOTDIR, EACCES, EROFS, ENOSPC ...
    """
    if path is None or str(path).strip() == "":
        raise OSError(errno.EINVAL, f"empty {what} path", "")
    path = Path(path)
    _check_not_dir(path)
    ancestor = path.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, f"{ancestor} is a file, not a directory", str(path))
    if path.exists() and not os.access(path, os.W_OK):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
    try:
        _probe(ancestor)
    except OSError as err:
        raise _with_path(err, path) from None
    return path


def check_output_dir(path: str | os.PathLike, what: str = "output directory") -> Path:
    """Check before any work that `path` is (or can be created as) a writable directory; creates it.

    Raises:
        OSError: naming the path: EINVAL (empty), ENOTDIR (a file is in the way), EACCES, EROFS ...
    """
    if path is None or str(path).strip() == "":
        raise OSError(errno.EINVAL, f"empty {what} path", "")
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, f"exists and is not a directory ({what})", str(path))
    try:
        path.mkdir(parents=True, exist_ok=True)
        _probe(path)
    except OSError as err:
        raise _with_path(err, path) from None
    return path


class FileLock:
    """An exclusive, non-blocking `flock` on `path` (created if needed, holding the owner's pid).

    Args:
        path: the lock file, e.g. `x.nc.lock` or `<run dir>/train.lock`.
        what: what the lock guards, for the error message.

    Raises:
        FileLockedError: (on `acquire`) another process holds the lock; the message names it and its pid.
    """

    def __init__(self, path: str | os.PathLike, what: str):
        self.path, self.what = Path(path), what
        self._fd: int | None = None

    def acquire(self) -> FileLock:
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, file_mode())
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = os.read(fd, 32).decode(errors="replace").strip() or "?"
                os.close(fd)
                raise FileLockedError(
                    f"{self.what} is in use by another process (pid {owner}; lock {self.path}); "
                    "wait for it to finish or choose another path"
                ) from None
            except BaseException:
                os.close(fd)
                raise
            # The holder we waited for may have removed the file before we locked it: lock the current one.
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        """Remove the lock file and unlock (idempotent)."""
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            self.path.unlink()
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> FileLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def lock_owner(path: str | os.PathLike) -> int | None:
    """The pid holding the lock file `path`, or None if nobody holds it."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        text = os.read(fd, 32).decode(errors="replace").strip()
        return int(text) if text.isdigit() else -1
    finally:
        os.close(fd)
    return None


def partial_path(path: str | os.PathLike) -> Path:
    """Where a stream to `path` grows until it completes: `<path>.partial`."""
    path = Path(path)
    return path.with_name(path.name + ".partial")


class PartialFile:
    """The life of a streamed file: locked, written as `<path>.partial`, renamed onto `<path>` when complete.

    Args:
        path: the target file. Nothing touches it until `commit`.
        what: a description for the lock's error message.

    Raises:
        IsADirectoryError / OSError: the target is a directory or its place is not writable.
        FileLockedError: another process is writing the same target.
    """

    def __init__(self, path: str | os.PathLike, what: str = "output file"):
        self.path = Path(path)
        _check_not_dir(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.partial = partial_path(self.path)
        self._lock = FileLock(self.path.with_name(self.path.name + ".lock"), f"{what} {self.path}").acquire()

    def commit(self) -> Path:
        """fsync the partial file and move it onto the target; releases the lock. Returns the target."""
        try:
            fd = os.open(self.partial, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            os.chmod(self.partial, file_mode())
            os.replace(self.partial, self.path)
            _fsync_dir(self.path.parent)
        except OSError as err:
            raise _with_path(err, self.path) from err
        finally:
            self._lock.release()
        return self.path

    def abort(self, discard: bool = False) -> Path | None:
        """Keep the partial file as it is (or remove it: `discard`) and release the lock.

        Returns the partial file's path, or None if it was discarded.
        """
        if discard:
            with contextlib.suppress(OSError):
                self.partial.unlink()
        self._lock.release()
        return None if discard else self.partial


# Exit codes of the command line, one per kind of error (the same kind gives the same code in every command).
EXIT_OK = 0
EXIT_FAILURE = 1  # an unexpected error (a bug: the traceback is shown)
EXIT_USAGE = 2  # bad arguments, config or input values; model and data that do not fit together
EXIT_INPUT = 3  # an input file missing, unreadable, corrupt or foreign
EXIT_NOT_WRITABLE = 4  # an output path that cannot be written: permission, read-only file system, a directory
EXIT_NO_SPACE = 5  # no space left on the device (or quota exceeded)
EXIT_BUSY = 6  # locked by another process, or existing results that would be overwritten without --force
EXIT_DIVERGED = 7  # training stopped on non-finite losses or gradients
EXIT_IO = 8  # any other OS error while reading or writing
EXIT_INTERRUPTED = 130  # Ctrl-C
EXIT_BROKEN_PIPE = 141  # the reader of stdout went away (`| head`)

_NOT_WRITABLE = {errno.EACCES, errno.EPERM, errno.EROFS, errno.EISDIR, errno.ENOTDIR, errno.EINVAL, errno.EEXIST}


def os_error_exit_code(err: OSError) -> int:
    """The exit code of an OSError's kind (see the EXIT_* constants)."""
    if isinstance(err, FileNotFoundError):
        return EXIT_INPUT
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return EXIT_NO_SPACE
    if err.errno in _NOT_WRITABLE:
        return EXIT_NOT_WRITABLE
    return EXIT_IO


def describe_os_error(err: OSError) -> str:
    """One line: the path and the cause, e.g. "/data/x.nc: No space left on device"."""
    cause = err.strerror or str(err)
    name = err.filename if err.filename not in (None, "") else None
    line = f"{name}: {cause}" if name is not None else cause
    if err.filename2:
        line += f" (-> {err.filename2})"
    return line
