"""core.archives: which zips are refused before anything is extracted, where the checkpoint is found, extraction."""
from __future__ import annotations

import io
import stat
import zipfile

import pytest

from core.archives import ArchiveError, ArchiveLimits, open_checkpoint

LIMITS = ArchiveLimits(max_total_bytes=10 * 1024 * 1024, max_entries=20, max_ratio=50)
CHECKPOINT = {"config.json": b"{}", "model.safetensors": b"weights", "vocab.txt": b"[PAD]\n[UNK]\n"}


def make_zip(files: dict[str, bytes], extra=()) -> io.BytesIO:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
        for info, data in extra:
            archive.writestr(info, data)
    out.seek(0)
    return out


def refused(stream, status: int, code: str, limits: ArchiveLimits = LIMITS) -> str:
    with pytest.raises(ArchiveError) as caught:
        open_checkpoint(stream, limits)
    assert (caught.value.status, caught.value.code) == (status, code), caught.value.message
    return caught.value.message


def _special(name: str, kind: int) -> tuple[zipfile.ZipInfo, bytes]:
    info = zipfile.ZipInfo(name)
    info.create_system = 3
    info.external_attr = (kind | 0o644) << 16
    return info, b""


@pytest.mark.parametrize("prefix", ["", "bert-finetuned/"])
def test_checkpoint_at_the_root_or_in_one_folder(prefix, tmp_path):
    files = {prefix + k: v for k, v in CHECKPOINT.items()} | {prefix + "README.md": b"hi",
                                                             "__MACOSX/._config.json": b"junk"}
    archive = open_checkpoint(make_zip(files), LIMITS)
    assert set(archive.files) == set(CHECKPOINT)  # only checkpoint files; README and macOS metadata ignored
    assert archive.root == prefix.rstrip("/")
    assert archive.extract("vocab.txt", tmp_path / "vocab.txt").read_bytes() == CHECKPOINT["vocab.txt"]
    assert archive.read_json_bytes("config.json", 100) == b"{}"
    with pytest.raises(ArchiveError):
        archive.read_json_bytes("vocab.txt", 4)


@pytest.mark.parametrize("name", ["../evil", "a/../../evil", "/etc/passwd", "C:/evil", "a\\..\\evil"])
def test_paths_escaping_the_folder_are_refused(name):
    assert "refused: entry" in refused(make_zip(CHECKPOINT | {name: b"x"}), 422, "unsafe_archive")


@pytest.mark.parametrize("kind", [stat.S_IFLNK, stat.S_IFCHR, stat.S_IFBLK, stat.S_IFIFO, stat.S_IFSOCK])
def test_links_and_special_files_are_refused(kind):
    refused(make_zip(CHECKPOINT, [_special("thing", kind)]), 422, "unsafe_archive")


def test_zip_bombs_are_refused_before_extraction():
    refused(make_zip(CHECKPOINT | {"zeros.txt": b"\0" * (5 * 1024 * 1024)}), 413, "archive_too_large")  # ratio
    big = ArchiveLimits(max_total_bytes=1024 * 1024, max_ratio=10**9)
    assert "inflates to more than 1 MB" in refused(make_zip(CHECKPOINT | {"a": b"\0" * 1_100_000}), 413,
                                                   "archive_too_large", big)
    many = {f"f{i}": b"" for i in range(LIMITS.max_entries)}
    refused(make_zip(CHECKPOINT | many), 413, "archive_too_large")


def test_pickles_shards_and_missing_files():
    no_weights = {k: v for k, v in CHECKPOINT.items() if k != "model.safetensors"}
    message = refused(make_zip(no_weights | {"pytorch_model.bin": b"\x80"}), 422, "pickle_weights_refused")
    assert "pickle" in message and "safe_serialization=True" in message
    refused(make_zip(no_weights | {"model.pth": b"\x80"}), 422, "pickle_weights_refused")
    refused(make_zip(no_weights | {"model.safetensors.index.json": b"{}"}), 422, "sharded_checkpoint")
    refused(make_zip(no_weights), 422, "incomplete_checkpoint")
    refused(make_zip({k: v for k, v in CHECKPOINT.items() if k != "vocab.txt"}), 422, "incomplete_checkpoint")
    refused(make_zip({k: v for k, v in CHECKPOINT.items() if k != "config.json"}), 422, "incomplete_checkpoint")
    two = {f"{d}/{k}": v for d in ("a", "b") for k, v in CHECKPOINT.items()}
    assert "several" in refused(make_zip(two), 422, "incomplete_checkpoint")
    deep = {f"a/b/{k}": v for k, v in CHECKPOINT.items()}
    refused(make_zip(deep), 422, "incomplete_checkpoint")
    # safetensors next to a pickle: the pickle is simply never read
    archive = open_checkpoint(make_zip(CHECKPOINT | {"pytorch_model.bin": b"\x80"}), LIMITS)
    assert "pytorch_model.bin" not in archive.files


def test_not_a_zip_and_encrypted_entries():
    refused(io.BytesIO(b"plain text"), 400, "invalid_archive")
    refused(io.BytesIO(b""), 400, "invalid_archive")
    data = bytearray(make_zip(CHECKPOINT | {"secret.txt": b"x"}).getvalue())
    entry = data.rindex(b"PK\x01\x02")  # the last central directory entry: secret.txt
    data[entry + 8] |= 0x1  # general purpose flag bit 0: encrypted
    assert "encrypted" in refused(io.BytesIO(bytes(data)), 422, "unsafe_archive")


def test_a_corrupt_entry_is_invalid_archive_when_read_or_extracted(tmp_path):
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as archive:  # stored: the bytes can be flipped in place
        for name, data in (CHECKPOINT | {"config.json": b'{"a": "HELLO"}', "model.safetensors": b"WEIGHTS"}).items():
            archive.writestr(name, data)
    data = out.getvalue().replace(b"HELLO", b"JELLO").replace(b"WEIGHTS", b"VEIGHTS")
    checkpoint = open_checkpoint(io.BytesIO(data), LIMITS)  # CRCs are checked when an entry is read
    for read in (lambda: checkpoint.read_json_bytes("config.json", 1024),
                 lambda: checkpoint.extract("model.safetensors", tmp_path / "w")):
        with pytest.raises(ArchiveError) as caught:
            read()
        assert (caught.value.status, caught.value.code) == (400, "invalid_archive")
        assert "CRC" in caught.value.message
