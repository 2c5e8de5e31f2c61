"""Atomic, durable file writes: write to a temp file in the same folder, fsync, rename.

A reader (or a resumed run) therefore sees either the old file or the complete new one, never a
truncated file, even if the writer is killed with SIGKILL.

Files get the process umask's mode, like ``open(path, "w")``: ``0o666 & ~umask`` (0644 under umask
022, 0600 under 077). The temp file is created with ``os.open(..., O_CREAT | O_EXCL, 0o666)``, so
the kernel applies the umask (``tempfile.mkstemp`` would force 0600); the umask itself is never
read or changed (``os.umask`` sets it process-wide, a race with other threads). A temp file is named
``.NAME.HOST-PID.HEX.tmp`` (HOST: a short hash of the host name); one left by a writer of this host
that died (SIGKILL) is removed by the next atomic write of the same file.

Every write here fails as one line: a full disk or quota (``ENOSPC``, ``EDQUOT``, ``EFBIG``) is a
:class:`~ditscale.errors.WriteError` naming the file, and an append-mode file never follows a
symbolic link (``O_NOFOLLOW``): a link planted where a log is appended to is refused. Reads refuse
what is not a regular file (a FIFO would block forever). :func:`check_apart` keeps a command's
outputs apart from its inputs.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import hashlib
import json
import math
import os
import pickletools
import re
import secrets
import shutil
import socket
import stat
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any

from ditscale.errors import ConfigError, DataError, WriteError

# errno values of a full disk or an exhausted quota / file size limit: one line, not a traceback
NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
# Largest pid a Linux kernel hands out (pid_max's ceiling, 2**22): anything else in a lock or temp name is damage.
PID_MAX = 1 << 22


def is_no_space(err: BaseException) -> bool:
    """True for an OSError of a full disk or an exhausted quota (:data:`NO_SPACE`)."""
    return isinstance(err, OSError) and err.errno in NO_SPACE


def no_space_error(path: str | os.PathLike | None, err: OSError) -> WriteError:
    """The one-line error for ``err`` (a full disk, :func:`is_no_space`) while writing ``path``."""
    where = f" {str(path)!r}" if path is not None else ""
    return WriteError(
        f"could not write{where} ({os.strerror(err.errno or errno.ENOSPC)}); free space and run the same "
        "command again (completed work is kept)"
    )


def pid_alive(pid: Any) -> bool:
    """True while process ``pid`` of this host runs (a zombie, killed but not yet reaped, does not).
    A value that is no process id (not an int in 1..:data:`PID_MAX`: 0, -1, a 20-digit number) is not alive."""
    if isinstance(pid, bool) or not isinstance(pid, int) or not 0 < pid <= PID_MAX:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # Linux: the state field of /proc/<pid>/stat
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")


def host_tag() -> str:
    """A short hash of this host's name: marks temp files, so only this host's dead writers are judged."""
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def shown_path(path: str | os.PathLike) -> str:
    """``path`` as printable UTF-8 text: bytes of a file name that are not UTF-8 (held by Python as lone
    surrogates, which no terminal, log or pickle can encode) are written as ``\\xNN``."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


PICKLE_SCAN_BYTES = 1 << 26  # a refused file's pickle is read this far to name what it imports (64 MiB)
# what torch.save pickles besides containers: tensors' rebuild functions and storages, and argparse.Namespace
_TORCH_GLOBALS = re.compile(r"^(torch\.|collections\.OrderedDict$|argparse\.Namespace$|_codecs\.encode$)")


def pickled_global(p: Path) -> str | None:
    """The first global (``module.name``) the pickle of ``p`` imports that torch.save would not write, read
    with :mod:`pickletools` (it parses opcodes and runs nothing); None when there is none or it does not
    parse. For torch's own (zip) format the pickle is the archive's ``data.pkl``; else the file itself."""
    try:
        if zipfile.is_zipfile(p):
            with zipfile.ZipFile(p) as z:
                name = next((n for n in z.namelist() if n.endswith("data.pkl")), None)
                data = z.open(name).read(PICKLE_SCAN_BYTES) if name else b""
        else:
            with open(p, "rb") as fh:
                data = fh.read(PICKLE_SCAN_BYTES)
        strings: list[str] = []
        for op, arg, _ in pickletools.genops(data):
            if op.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "BINUNICODE8"):
                strings.append(arg)
            found = arg.replace(" ", ".") if op.name == "GLOBAL" else None
            if op.name == "STACK_GLOBAL" and len(strings) >= 2:
                found = f"{strings[-2]}.{strings[-1]}"
            if found and not _TORCH_GLOBALS.match(found):
                return found
    except Exception:  # noqa: BLE001 - a damaged pickle names nothing; the caller then calls it unreadable
        return None
    return None


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(str(path), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


TEMP_FILE = r"(?P<host>[0-9a-f]{8})-(?P<pid>\d+)\.[0-9a-f]{12}\.tmp"  # .NAME.HOST-PID.HEX.tmp
STAGED_FOLDER = r"[a-z]+-(?P<host>[0-9a-f]{8})-(?P<pid>\d+)\.tmp"  # .NAME.TAG-HOST-PID.tmp (and .old-...)


def remove_stale_temps(path: Path, pattern: str) -> None:
    """Remove the leftovers of writers of ``path`` that died: entries of ``path.parent`` named
    ``.NAME.<pattern>`` (a regex whose groups ``host`` and ``pid`` are the writer's) made by this host
    (:func:`host_tag`) under a pid that is no longer alive. Others' and live writers' are kept."""
    name = re.compile(rf"\.{re.escape(path.name)}\.{pattern}")
    try:
        entries = list(path.parent.iterdir())
    except OSError:
        return
    for entry in entries:
        m = name.fullmatch(entry.name)
        if m is None or m["host"] != host_tag() or pid_alive(int(m["pid"])):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                entry.unlink()


def _create_temp(path: Path) -> tuple[Path, int]:
    """Create an empty, uniquely named temp file next to ``path`` with mode ``0o666 & ~umask``;
    returns it and that mode (read back from the new file, so the umask is never queried)."""
    remove_stale_temps(path, TEMP_FILE)
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{host_tag()}-{os.getpid()}.{secrets.token_hex(6)}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        try:
            mode = os.fstat(fd).st_mode & 0o777
        finally:
            os.close(fd)
        return tmp, mode
    raise FileExistsError(f"could not create a unique temp file next to {path}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success fsync it and rename it over ``path``.

    Use for writers that take a filename (``safetensors.torch.save_file``, ``PIL.Image.save``)::

        with atomic_path(out / "model.safetensors") as tmp:
            save_file(tensors, tmp)

    The final file has mode ``0o666 & ~umask`` (the mode the temp file was created with; reset in
    case the writer replaced the temp file with one of its own).
    """
    path = Path(path)
    if path.is_dir():  # os.replace would fail only after the work is done
        raise ConfigError(f"{path} is a folder, where a file is to be written; move the folder away and retry")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp, mode = _create_temp(path)
    except OSError as err:
        if is_no_space(err):
            raise no_space_error(path, err) from None
        raise
    try:
        yield tmp
        if os.stat(tmp).st_mode & 0o777 != mode:
            os.chmod(tmp, mode)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException as err:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if is_no_space(err):
            raise no_space_error(path, err) from None
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically and durably."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically and durably."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_npz(path: str | os.PathLike, arrays: dict[str, Any]) -> Path:
    """Write numpy ``arrays`` uncompressed to an ``.npz`` (``np.savez``, as ADM's batches) atomically;
    returns the path. Through a file handle, so ``np.savez`` appends no second ``.npz``."""
    import numpy as np  # lazy: numpy stays out of CLI start-up (ditscale.io loads with every command)

    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
    return path


def atomic_write_json(path: str | os.PathLike, obj: Any, *, indent: int | None = 2) -> None:
    """Write ``obj`` as JSON to ``path`` atomically and durably (keys kept in insertion order)."""
    atomic_write_text(path, json.dumps(obj, indent=indent, allow_nan=True) + "\n")


def decode_utf8(data: bytes, where: str, error: type[Exception] = DataError) -> str:
    """``data`` decoded as UTF-8 (a leading byte-order mark dropped, as spreadsheets write one); a
    one-line ``error`` naming ``where`` and the first bad byte when it is not UTF-8."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise error(
            f"{where} is not UTF-8 text (byte {err.start}); save it as UTF-8 (or restore it, if it was "
            "damaged) and retry"
        ) from None


def read_bytes(path: str | os.PathLike, error: type[Exception] = DataError) -> bytes:
    """A regular file's bytes. Anything else (a FIFO, a device, a socket) is a one-line ``error``
    naming it: it is opened without blocking and refused, where reading a FIFO would wait forever.
    A missing file raises FileNotFoundError, as ``open`` does."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = "a FIFO" if stat.S_ISFIFO(mode) else "a folder" if stat.S_ISDIR(mode) else "not a regular file"
            raise error(f"{str(path)!r} is {kind}, not a file to read; replace it with a regular file and retry")
        os.set_blocking(fd, True)
        with os.fdopen(fd, "rb", closefd=False) as fh:
            return fh.read()
    finally:
        os.close(fd)


def read_text(path: str | os.PathLike, error: type[Exception] = DataError) -> str:
    """A text file's contents, read as UTF-8 (see :func:`decode_utf8` and :func:`read_bytes`; ``error``
    names the file)."""
    return decode_utf8(read_bytes(path, error), str(path), error)


def parse_json(data: str | bytes) -> Any:
    """``json.loads(data)``, with JSON nested beyond the parser's depth (a crafted file, or one
    damaged into ``[[[[...``) raised as the ``ValueError`` every damaged-JSON handler catches,
    never a RecursionError traceback."""
    try:
        return json.loads(data)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def read_json(path: str | os.PathLike, error: type[Exception] = DataError) -> Any:
    """A JSON file's parsed contents (:func:`read_bytes` then :func:`parse_json`): damaged,
    undecodable or too deeply nested JSON raises ``ValueError``; a FIFO is a one-line ``error``."""
    return parse_json(read_bytes(path, error))


def sha256_json(obj: Any) -> str:
    """SHA-256 (hex) of ``obj`` as canonical JSON (sorted keys): a fingerprint of a config or spec."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes (used to detect corrupt or truncated checkpoints)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            block = fh.read(chunk)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


@contextlib.contextmanager
def csv_errors(where: str, error: type[Exception] = DataError) -> Iterator[None]:
    """Turn what the ``csv`` module refuses while reading (a field over its 131,072-character limit, a
    malformed quote) into a one-line ``error`` naming ``where``."""
    try:
        yield
    except csv.Error as err:
        raise error(f"{where} is not a readable CSV ({err}); fix or restore the file and retry") from None


def refuse_symlink(path: str | os.PathLike) -> None:
    """A one-line :class:`~ditscale.errors.ConfigError` when ``path`` is a symbolic link: a file the
    project appends to or rewrites in a run or study folder is never written through a link."""
    if os.path.islink(path):
        raise ConfigError(
            f"{str(path)!r} is a symbolic link; ditscale does not write through links in its folders "
            "(it could change a file elsewhere): remove the link and retry"
        )


@contextlib.contextmanager
def open_append(path: str | os.PathLike) -> Iterator[IO[str]]:
    """``path`` opened for appending UTF-8 text, created with mode ``0o666 & ~umask`` if missing,
    without following a symbolic link (``O_NOFOLLOW``: a link there is refused, :func:`refuse_symlink`).
    A full disk while opening, writing or closing is a :class:`~ditscale.errors.WriteError`."""
    try:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o666)
        except OSError as err:
            if err.errno == errno.ELOOP:
                refuse_symlink(path)
            raise
        with os.fdopen(fd, "a", encoding="utf-8") as fh:
            yield fh
    except OSError as err:
        if is_no_space(err):
            raise no_space_error(path, err) from None
        raise


def append_text(path: str | os.PathLike, text: str, *, fsync: bool = False) -> None:
    """Append ``text`` to ``path`` (:func:`open_append`) and flush it (and fsync it, with ``fsync``)."""
    with open_append(path) as fh:
        fh.write(text)
        fh.flush()
        if fsync:
            os.fsync(fh.fileno())


def append_jsonl(path: str | os.PathLike, record: dict[str, Any]) -> None:
    """Append one JSON line to ``path`` and flush it to disk (metrics logs)."""
    append_text(path, json.dumps(record) + "\n", fsync=True)


# -- memory, checked before anything is allocated ----------------------------------------------------
def _meminfo_kib(path: str, field: str) -> float | None:
    """The ``field`` line of a /proc file (``MemAvailable:`` of /proc/meminfo, ``VmSize:`` of
    /proc/self/status) in KiB, or None where there is no such file or line."""
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(field):
                return float(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def available_memory() -> float | None:
    """Bytes this process can still allocate (None: not known): the RAM available now
    (``MemAvailable``, else all physical memory), capped by what its address-space limit
    (``RLIMIT_AS``, ``ulimit -v``) leaves above its current size (``VmSize``)."""
    free = _meminfo_kib("/proc/meminfo", "MemAvailable:")
    available = free * 1024 if free is not None else None
    if available is None:
        try:
            available = float(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError, AttributeError):
            available = None
    try:
        import resource  # lazy: Unix only
    except ImportError:
        return available
    soft = resource.getrlimit(resource.RLIMIT_AS)[0]
    size = _meminfo_kib("/proc/self/status", "VmSize:")
    if soft == resource.RLIM_INFINITY or size is None:
        return available
    room = max(0.0, soft - size * 1024)
    return room if available is None else min(available, room)


def check_allocation(nbytes: float, what: str, remedy: str, error: type[Exception] = ConfigError) -> None:
    """Refuse, before allocating, ``what`` that needs at least ``nbytes`` bytes when fewer are
    :func:`available_memory`: a one-line ``error`` with both figures and ``remedy``."""
    available = available_memory()
    if available is not None and nbytes > available:
        raise error(
            f"{what} needs at least {nbytes / 2**30:,.1f} GiB of memory but {available / 2**30:,.1f} GiB is "
            f"available; {remedy}"
        )


def check_npz(path: str | os.PathLike, error: type[Exception] = DataError) -> None:
    """Check an ``.npz`` before any array is read: each member's ``.npy`` header (shape and dtype)
    must declare no more bytes than the member holds and than :func:`available_memory`, and no
    Python objects (never unpickled). A one-line ``error`` naming the file and the array otherwise;
    a file that is not a zip raises ``zipfile.BadZipFile`` (``np.load``'s own errors stay the caller's)."""
    import zipfile  # lazy: the .npz readers only

    import numpy as np  # lazy: numpy stays out of CLI start-up (ditscale.io loads with every command)

    readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            name = info.filename.removesuffix(".npy")
            declared = info.file_size
            if info.filename.endswith(".npy"):
                with zf.open(info) as fh:
                    version = np.lib.format.read_magic(fh)
                    shape, _, dtype = readers.get(version, np.lib.format.read_array_header_2_0)(fh)
                if dtype.hasobject:
                    raise error(
                        f"'{path}': array '{name}' holds Python objects, which are never unpickled; store numbers "
                        "as numeric arrays and strings as unicode arrays"
                    )
                declared = math.prod(shape) * dtype.itemsize
                if declared > info.file_size:
                    raise error(
                        f"'{path}': array '{name}' declares shape {shape} of {dtype} ({declared:,} bytes) but holds "
                        f"{info.file_size:,} bytes; the file is damaged or crafted: write it again"
                    )
            check_allocation(declared, f"'{path}': array '{name}'", "the file is damaged or too large to read", error)


# -- output paths, checked before any work -----------------------------------------------------------
def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _check_creatable(path: Path, what: str) -> None:
    """``path`` (absent) can be created: its nearest existing ancestor is a writable folder."""
    base = _nearest_existing(path.parent if str(path.parent) else Path("."))
    if not base.is_dir():
        raise ConfigError(
            f"{what} {str(path)!r} cannot be created: {str(base)!r} is a file, not a folder; choose another path"
        )
    if not os.access(base, os.W_OK | os.X_OK):
        raise ConfigError(
            f"{what} {str(path)!r} cannot be created: the folder {str(base)!r} is not writable; choose another path"
        )


def check_output_file(path: str | os.PathLike, what: str) -> Path:
    """``path`` as a Path if a file can be written there (atomically): not a folder, and a writable
    folder above it; else a one-line :class:`~ditscale.errors.ConfigError` naming ``what`` (e.g. "--npz")."""
    p = Path(path).expanduser()
    if p.is_dir():
        raise ConfigError(f"{what} {str(p)!r} is a folder; give a file path")
    if p.exists() and not os.access(p.parent, os.W_OK | os.X_OK):
        raise ConfigError(f"{what} {str(p)!r} cannot be replaced: its folder is not writable; choose another path")
    if not p.exists():
        _check_creatable(p, what)
    return p


def check_output_dir(path: str | os.PathLike, what: str) -> Path:
    """``path`` as a Path if it is a writable folder or can be created as one; else a one-line
    :class:`~ditscale.errors.ConfigError` naming ``what`` (e.g. "--out")."""
    p = Path(path).expanduser()
    if p.exists() and not p.is_dir():
        raise ConfigError(f"{what} {str(p)!r} is a file, not a folder; give a folder path")
    if p.is_dir() and not os.access(p, os.W_OK | os.X_OK):
        raise ConfigError(f"{what} {str(p)!r} is not writable; choose another folder")
    if not p.exists():
        _check_creatable(p, what)
    return p


# -- outputs apart from inputs ----------------------------------------------------------------------
def _overlap(out: Path, inp: Path) -> str | None:
    """How output ``out`` overlaps input ``inp`` (both resolved): "is", "contains", "lies inside" or None."""
    if out == inp or (out.exists() and inp.exists() and os.path.samefile(out, inp)):
        return "is"
    if out in inp.parents:
        return "contains"
    if inp in out.parents:
        return "lies inside"
    return None


def check_apart(
    outputs: Mapping[str, str | os.PathLike | None], inputs: Mapping[str, str | os.PathLike | None]
) -> None:
    """Refuse, as one :class:`~ditscale.errors.ConfigError`, an output path that is, contains or lies
    inside an input path: writing it could destroy what the command reads (``export --out RUN
    --overwrite`` would replace the run it exports). Both sides are named as the user gave them (e.g.
    ``{"--out": args.out}``, ``{"RUN": args.run}``) and compared with symbolic links resolved (and hard
    links as the same file); None and inputs that do not exist (a hub id, say) are skipped."""
    given = {what: p for what, p in inputs.items() if p is not None and os.path.lexists(Path(p).expanduser())}
    for out_what, out in outputs.items():
        if out is None:
            continue
        o = Path(out).expanduser().resolve()
        for in_what, inp in given.items():
            relation = _overlap(o, Path(inp).expanduser().resolve())
            if relation is not None:
                raise ConfigError(
                    f"{out_what} {str(out)!r} {relation} the input {in_what} {str(inp)!r}; writing there "
                    "could destroy what is read: choose an output outside every input"
                )


# -- folders assembled whole -------------------------------------------------------------------------
def _refuse_existing(path: Path, what: str, overwrite: bool) -> None:
    if path.exists() and not overwrite:
        raise ConfigError(f"{what} {path} already exists; pick a new folder or pass --overwrite")


def check_new_dir(path: str | os.PathLike, what: str, *, overwrite: bool = False) -> Path:
    """:func:`check_output_dir`, and ``path`` must not exist yet unless ``overwrite`` (checked before
    any work, then again by :func:`staged_folder`)."""
    p = Path(path).expanduser()
    _refuse_existing(p, what, overwrite)
    return check_output_dir(p, what)


@contextlib.contextmanager
def staged_folder(out: Path, *, overwrite: bool, what: str = "--out", tag: str = "export") -> Iterator[Path]:
    """A fresh temporary sibling of ``out`` (``.NAME.TAG-HOST-PID.tmp``) to fill; renamed to ``out`` on
    success (replacing it with ``overwrite``), removed on failure: an interrupted writer leaves no
    half-written ``out``, and one killed outright leaves a folder the next writer of ``out`` removes."""
    _refuse_existing(out, what, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(out, STAGED_FOLDER)
    tmp = out.parent / f".{out.name}.{tag}-{host_tag()}-{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        old = out.parent / f".{out.name}.old-{host_tag()}-{os.getpid()}.tmp"
        if out.exists():
            out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
