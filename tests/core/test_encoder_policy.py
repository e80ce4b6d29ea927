"""Which encoders a training request may name."""
from __future__ import annotations

import os

import pytest

from core.config import Settings
from core.encoder_policy import EncoderNotAllowed, check_encoder, is_local_path, packaged_encoder_dir


def test_local_paths_and_hub_ids_are_told_apart(tmp_path):
    assert is_local_path("/srv/encoders/x") and is_local_path("./enc") and is_local_path(str(tmp_path))
    assert not is_local_path("sentence-transformers/all-MiniLM-L6-v2")


def test_default_roots_are_the_packaged_encoder_and_the_store_only(tmp_path):
    """An empty ENCODER_ROOTS no longer allows any local folder: only the packaged encoder and MODEL_STORE/encoders."""
    settings = Settings(model_store=str(tmp_path / "store"))
    assert (settings.encoder_roots, settings.allow_hub_encoders) == ("", True)
    allowed = (None, "default", " Default ", "org/model", str(packaged_encoder_dir()),
               str(tmp_path / "store" / "encoders" / "converted"))
    assert [check_encoder(name, settings) for name in allowed] == [None] * len(allowed)  # none raises
    for name in ("/anywhere/at/all", "./relative", str(tmp_path), "/etc"):
        with pytest.raises(EncoderNotAllowed):
            check_encoder(name, settings)
    # an operator who wants any folder says so
    check_encoder("/anywhere/at/all", settings.replace(encoder_roots="/"))


def test_every_refusal_reads_the_same_on_disk(tmp_path):
    """The worker's check (on_disk) refuses a missing folder, a file, a folder without config.json and a folder
    outside the roots with one message: the job's error must not tell which paths exist."""
    root = tmp_path / "encoders"
    (root / "empty").mkdir(parents=True)
    (root / "good").mkdir()
    (root / "good" / "config.json").write_text("{}")
    (root / "file").write_text("x")
    settings = Settings(model_store=str(tmp_path / "store"), encoder_roots=str(root))
    check_encoder(str(root / "good"), settings, on_disk=True)
    check_encoder(str(root / "empty"), settings)  # the web cannot see the worker's disk: roots only
    messages = set()
    for name in (str(root / "missing"), str(root / "file"), str(root / "empty"), "/etc"):
        with pytest.raises(EncoderNotAllowed) as info:
            check_encoder(name, settings, on_disk=True)
        messages.add(str(info.value).replace(repr(name), "<name>"))
    assert messages == {"encoder <name> is not available on this deployment"}


def test_roots_restrict_local_paths_without_revealing_what_exists(tmp_path):
    root = tmp_path / "encoders"
    (root / "mine").mkdir(parents=True)
    settings = Settings(model_store=str(tmp_path / "store"), encoder_roots=str(root))
    check_encoder(str(root / "mine"), settings)
    check_encoder(str(tmp_path / "store" / "encoders" / "converted"), settings)  # the store's own cache
    messages = set()
    for name in ("/etc", str(tmp_path), str(root / ".." / "elsewhere"), "/no/such/dir"):
        with pytest.raises(EncoderNotAllowed) as info:
            check_encoder(name, settings)
        messages.add(str(info.value).replace(repr(name), "<name>"))
    assert messages == {"encoder <name> is not available on this deployment"}


def test_symlink_out_of_a_root_is_refused(tmp_path):
    root = tmp_path / "encoders"
    root.mkdir()
    os.symlink("/etc", root / "sneaky")
    settings = Settings(model_store=str(tmp_path / "store"), encoder_roots=str(root))
    with pytest.raises(EncoderNotAllowed):
        check_encoder(str(root / "sneaky"), settings)


def test_hub_ids_can_be_switched_off(tmp_path):
    settings = Settings(model_store=str(tmp_path), allow_hub_encoders=False)
    with pytest.raises(EncoderNotAllowed):
        check_encoder("org/model", settings)
    check_encoder(None, settings)
