"""Which encoders a training request may name."""
from __future__ import annotations

import os

import pytest

from core.config import Settings
from core.encoder_policy import EncoderNotAllowed, check_encoder, is_local_path


def test_local_paths_and_hub_ids_are_told_apart(tmp_path):
    assert is_local_path("/srv/encoders/x") and is_local_path("./enc") and is_local_path(str(tmp_path))
    assert not is_local_path("sentence-transformers/all-MiniLM-L6-v2")


def test_unrestricted_by_default(tmp_path):
    settings = Settings(model_store=str(tmp_path / "store"))
    assert (settings.encoder_roots, settings.allow_hub_encoders) == ("", True)
    names = (None, "default", " Default ", "/anywhere/at/all", "./relative", "org/model")
    assert [check_encoder(name, settings) for name in names] == [None] * len(names)  # none raises
    # the same names under a restriction: only the default ones stay allowed, so it is the default that allows
    restricted = settings.replace(encoder_roots=str(tmp_path / "encoders"), allow_hub_encoders=False)
    refused = []
    for name in names:
        try:
            check_encoder(name, restricted)
        except EncoderNotAllowed:
            refused.append(name)
    assert refused == ["/anywhere/at/all", "./relative", "org/model"]


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
