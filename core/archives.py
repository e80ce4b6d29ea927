"""Reading an untrusted zip of a Hugging Face checkpoint safely: what it holds, and extracting the files needed.

:func:`open_checkpoint` checks the whole archive before anything is extracted:

* a zip at all (400 ``invalid_archive``), not encrypted, STORED or DEFLATED entries only;
* at most ``max_entries`` entries; their declared uncompressed sizes add up to at most ``max_total_bytes`` and no
  entry (past 1 MB) inflates more than ``max_ratio`` times (zip bombs: 413 ``archive_too_large``);
* no absolute path, drive letter, ``..`` component, backslash, NUL, duplicate name, symbolic link or device/FIFO
  entry (422 ``unsafe_archive``), wherever it sits in the archive, even in files that would not be extracted;
* the checkpoint at the root or in one top-level folder (``__MACOSX/`` metadata is ignored), with ``config.json``,
  ``model.safetensors`` (a sharded checkpoint is refused: 422 ``sharded_checkpoint``) and a tokenizer
  (``tokenizer.json`` or ``vocab.txt``) (422 ``incomplete_checkpoint``); pickled weights (``.bin``, ``.pt``,
  ``.pth``, ``.pkl``, ``.ckpt``) without safetensors are refused (422 ``pickle_weights_refused``): loading a
  pickle can run any code.

:meth:`CheckpointArchive.extract` then copies only the known checkpoint files, counting the bytes actually
inflated (never trusting the declared sizes) and relying on zipfile's CRC check.
"""
from __future__ import annotations

import stat
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import BinaryIO

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
SHARD_INDEX = "model.safetensors.index.json"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json",
                   "added_tokens.json")
TOKENIZER_REQUIRED = ("tokenizer.json", "vocab.txt")  # one of these
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
IGNORED_TOP = ("__MACOSX",)
EXTRACT_CHUNK = 1024 * 1024
RATIO_FLOOR = 1024 * 1024  # small entries (JSON that compresses 100x) are never a bomb
_UNSAFE_TYPES = {stat.S_IFLNK: "a symbolic link", stat.S_IFCHR: "a device", stat.S_IFBLK: "a device",
                 stat.S_IFIFO: "a FIFO", stat.S_IFSOCK: "a socket"}


class ArchiveError(ValueError):
    """A refused archive: HTTP ``status``, API error ``code`` and a message saying why."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass(frozen=True)
class ArchiveLimits:
    """Bounds on what an archive may hold once inflated."""

    max_total_bytes: int
    max_entries: int = 1000
    max_ratio: int = 200


@dataclass
class CheckpointArchive:
    """A checked checkpoint zip: its checkpoint files by name (``config.json`` -> the entry to read)."""

    zip: zipfile.ZipFile
    files: dict[str, zipfile.ZipInfo]
    limits: ArchiveLimits
    root: str = ""  # the top-level folder the checkpoint sits in ("" at the root)
    extracted: int = field(default=0)  # bytes written so far

    def read_json_bytes(self, name: str, limit: int) -> bytes:
        """A small file's bytes (at most ``limit``), read from the archive without extracting it."""
        info = self.files[name]
        if info.file_size > limit:
            raise ArchiveError(422, "invalid_checkpoint", f"{name} is larger than {limit // 1024} kB")
        try:
            with self.zip.open(info) as f:
                data = f.read(limit + 1)
        except _UNREADABLE as exc:
            raise _unreadable(name, exc) from None
        if len(data) > limit:
            raise ArchiveError(422, "invalid_checkpoint", f"{name} is larger than {limit // 1024} kB")
        return data

    @contextmanager
    def open(self, name: str) -> Iterator[BinaryIO]:
        """Checkpoint file ``name`` as a stream read from the archive (to read a header without extracting)."""
        try:
            with self.zip.open(self.files[name]) as f:
                yield f
        except _UNREADABLE as exc:
            raise _unreadable(name, exc) from None

    def extract(self, name: str, destination: Path) -> Path:
        """Copy checkpoint file ``name`` to ``destination``, stopping if it inflates past its declared size or the
        archive's total past ``max_total_bytes``."""
        info = self.files[name]
        written = 0
        try:
            with self.zip.open(info) as source, open(destination, "wb") as out:
                while piece := source.read(EXTRACT_CHUNK):
                    written += len(piece)
                    self.extracted += len(piece)
                    if written > info.file_size or self.extracted > self.limits.max_total_bytes:
                        raise ArchiveError(413, "archive_too_large",
                                           f"{name} inflates past its declared size: refused as a zip bomb")
                    out.write(piece)
        except _UNREADABLE as exc:
            raise _unreadable(name, exc) from None
        return destination


# what zipfile raises for a corrupt entry (a bad CRC, a broken deflate stream, a truncated file)
_UNREADABLE = (zipfile.BadZipFile, EOFError, zlib.error)


def _unreadable(name: str, exc: Exception) -> ArchiveError:
    return ArchiveError(400, "invalid_archive", f"{name} cannot be read from the zip: {exc}")


def _unsafe(name: str, message: str) -> ArchiveError:
    return ArchiveError(422, "unsafe_archive", f"refused: entry {name[:200]!r} {message}")


def _check_entry(info: zipfile.ZipInfo, limits: ArchiveLimits) -> PurePosixPath | None:
    """The entry's path (None for a directory); ArchiveError for anything unsafe."""
    name = info.filename
    if "\x00" in name or "\\" in name:
        raise _unsafe(name, "has a NUL or backslash in its name")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise _unsafe(name, "is an absolute path")
    path = PurePosixPath(name)
    if ".." in path.parts:
        raise _unsafe(name, "escapes the archive's folder ('..')")
    if info.flag_bits & 0x1:
        raise ArchiveError(422, "unsafe_archive", f"entry {name[:200]!r} is encrypted")
    mode = info.external_attr >> 16
    kind = _UNSAFE_TYPES.get(stat.S_IFMT(mode)) if info.create_system == 3 and mode else None
    if kind:
        raise _unsafe(name, f"is {kind}")
    if info.is_dir():
        return None
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise ArchiveError(422, "invalid_archive", f"entry {name[:200]!r} uses an unsupported compression method "
                           "(use stored or deflate)")
    if info.file_size > RATIO_FLOOR and info.file_size > limits.max_ratio * max(info.compress_size, 1):
        raise ArchiveError(413, "archive_too_large",
                           f"entry {name[:200]!r} inflates {info.file_size // max(info.compress_size, 1)} times: "
                           "refused as a zip bomb")
    return path


def open_checkpoint(stream: BinaryIO, limits: ArchiveLimits) -> CheckpointArchive:
    """Check the zip in ``stream`` (seekable; see the module docstring) and find its checkpoint files."""
    try:
        archive = zipfile.ZipFile(stream)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError) as exc:
        raise ArchiveError(400, "invalid_archive", f"the file is not a readable zip archive: {exc}") from None
    try:
        return _checkpoint(archive, limits)
    except BaseException:
        archive.close()
        raise


def _checkpoint(archive: zipfile.ZipFile, limits: ArchiveLimits) -> CheckpointArchive:
    entries = archive.infolist()
    if len(entries) > limits.max_entries:
        raise ArchiveError(413, "archive_too_large", f"the zip has {len(entries)} entries; at most "
                           f"{limits.max_entries} are accepted")
    files: dict[PurePosixPath, zipfile.ZipInfo] = {}
    total = 0
    for info in entries:
        path = _check_entry(info, limits)
        if path is None:
            continue
        if path in files:
            raise _unsafe(info.filename, "appears twice")
        total += info.file_size
        if total > limits.max_total_bytes:
            raise ArchiveError(413, "archive_too_large", f"the zip inflates to more than "
                               f"{limits.max_total_bytes / 2**20:g} MB: refused as a zip bomb")
        files[path] = info
    relevant = {p: i for p, i in files.items() if p.parts[0] not in IGNORED_TOP and p.name != ".DS_Store"}
    roots = sorted({str(p.parent) for p in relevant if p.name == CONFIG and len(p.parts) <= 2})
    if not roots:
        raise ArchiveError(422, "incomplete_checkpoint", "no config.json at the zip's root or in one top-level "
                           "folder: zip the folder save_pretrained wrote")
    if len(roots) > 1:
        raise ArchiveError(422, "incomplete_checkpoint", f"several checkpoints in one zip ({', '.join(roots)})")
    root = "" if roots[0] == "." else roots[0]
    here = {p.name: i for p, i in relevant.items() if str(p.parent) == (root or ".")}
    if WEIGHTS not in here:
        pickles = sorted(p.name for p in relevant if p.suffix.lower() in PICKLE_SUFFIXES)
        if pickles:
            raise ArchiveError(422, "pickle_weights_refused",
                               f"the checkpoint's weights are pickled ({', '.join(pickles[:3])}), and loading a "
                               "pickle can run arbitrary code: only model.safetensors weights are accepted. Convert "
                               "with model.save_pretrained(folder, safe_serialization=True)")
        if SHARD_INDEX in here:
            raise ArchiveError(422, "sharded_checkpoint", "sharded safetensors weights are not supported: save them "
                               "as one file with model.save_pretrained(folder, max_shard_size='100GB')")
        raise ArchiveError(422, "incomplete_checkpoint", f"no {WEIGHTS} next to config.json")
    if not any(name in here for name in TOKENIZER_REQUIRED):
        raise ArchiveError(422, "incomplete_checkpoint", "no tokenizer (tokenizer.json or vocab.txt) next to "
                           "config.json: save it too with tokenizer.save_pretrained(folder)")
    wanted = {CONFIG, WEIGHTS, *TOKENIZER_FILES}
    return CheckpointArchive(archive, {n: i for n, i in here.items() if n in wanted}, limits, root)
