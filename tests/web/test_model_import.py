"""POST /api/v1/models/import: a transformers checkpoint (built here, tiny) becomes a servable model with the same
probabilities; hostile or broken archives are refused with a clear 4xx and leave nothing behind."""
from __future__ import annotations

import io
import json
import os
import random
import stat
import struct
import time
import zipfile
from pathlib import Path

import pytest
from sqlalchemy import func, select

from core.db import db
from core.schema import TrainedModel

from .helpers import assert_error

TEXTS = ["I love this!", "The flight was delayed again and nobody told us why.", "meh"]
LABELS = ["negative", "neutral", "positive"]


def hf_checkpoint(family: str, directory: Path, *, labels=LABELS, seed: int = 0) -> Path:
    """A tiny random ``<Family>ForSequenceClassification`` + the packaged tokenizer, as save_pretrained writes it
    (transformers 5 always writes safetensors)."""
    import torch
    from transformers import (BertConfig, BertForSequenceClassification, DistilBertConfig,
                              DistilBertForSequenceClassification)

    from tests.factories import TINY_DIMS, _packaged_tokenizer

    kwargs = {} if family == "bert" else {"model_input_names": ["input_ids", "attention_mask"]}
    tokenizer = _packaged_tokenizer(**kwargs)
    label_maps = {"id2label": dict(enumerate(labels)), "label2id": {label: i for i, label in enumerate(labels)}}
    if family == "bert":
        config = BertConfig(vocab_size=len(tokenizer), hidden_size=TINY_DIMS["hidden"],
                            num_hidden_layers=TINY_DIMS["layers"], num_attention_heads=TINY_DIMS["heads"],
                            intermediate_size=TINY_DIMS["intermediate"],
                            max_position_embeddings=TINY_DIMS["max_positions"], **label_maps)
        cls = BertForSequenceClassification
    else:
        config = DistilBertConfig(vocab_size=len(tokenizer), dim=TINY_DIMS["hidden"], n_layers=TINY_DIMS["layers"],
                                  n_heads=TINY_DIMS["heads"], hidden_dim=TINY_DIMS["intermediate"],
                                  max_position_embeddings=TINY_DIMS["max_positions"], **label_maps)
        cls = DistilBertForSequenceClassification
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = cls(config)
        model.classifier.weight.data.normal_(0, 1.0)  # probabilities far from uniform
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(directory))
    tokenizer.save_pretrained(str(directory))
    assert (directory / "model.safetensors").is_file()
    return directory


def zip_bytes(files: dict[str, bytes | Path], *, prefix: str = "", extra: list[zipfile.ZipInfo | tuple] = ()) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in files.items():
            archive.writestr(prefix + name, content.read_bytes() if isinstance(content, Path) else content)
        for info, data in extra:
            archive.writestr(info, data)
    return out.getvalue()


def folder_files(directory: Path) -> dict[str, Path]:
    return {p.name: p for p in directory.iterdir() if p.is_file()}


def post(client, data: bytes, name: str | None = "imported", filename: str = "checkpoint.zip"):
    form = {"file": (io.BytesIO(data), filename)}
    if name is not None:
        form["name"] = name
    return client.post("/api/v1/models/import", data=form, content_type="multipart/form-data")


def hf_probabilities(directory: Path) -> list[list[float]]:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(str(directory), local_files_only=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
    with torch.no_grad():
        return model(**tokenizer(TEXTS, truncation=True, padding=True, return_tensors="pt")).logits.softmax(-1).tolist()


def assert_nothing_left(settings) -> None:
    with db.session() as session:
        assert session.scalar(select(func.count()).select_from(TrainedModel)) == 0
    store = Path(settings.model_store)
    for folder in ("models", "tmp"):
        leftovers = list((store / folder).iterdir()) if (store / folder).exists() else []
        assert leftovers == [], leftovers


@pytest.fixture(scope="module")
def bert_checkpoint(tmp_path_factory) -> Path:
    return hf_checkpoint("bert", tmp_path_factory.mktemp("hf-bert"))


@pytest.mark.parametrize("family", ["bert", "distilbert"])
@pytest.mark.parametrize("prefix", ["", "my-model/"])
def test_import_gives_the_checkpoint_s_probabilities(family, prefix, client, tmp_path):
    from ml.inference import Predictor

    checkpoint = hf_checkpoint(family, tmp_path / "hf")
    response = post(client, zip_bytes(folder_files(checkpoint), prefix=prefix), name="tweets")
    assert response.status_code == 201, response.json
    model = response.json
    assert response.headers["Location"].endswith(f"/api/v1/models/{model['id']}")
    assert model["family"] == family and model["labels"] == LABELS and model["name"] == "tweets"
    assert model["version"] == 1 and model["training_job_id"] is None
    assert model["params"]["imported_from"] == "checkpoint.zip"
    with db.session() as session:
        row = session.get(TrainedModel, model["id"])
        assert row.source == "imported"
        artifact_dir = row.artifact_dir
    predictor = Predictor.load(artifact_dir)
    assert predictor.family == family and predictor.max_length == 128
    got = [[r["scores"][label] for label in LABELS] for r in predictor.predict(TEXTS)]
    for row_got, row_expected in zip(got, hf_probabilities(checkpoint)):
        assert row_got == pytest.approx(row_expected, abs=1e-5)
    assert client.get(f"/api/v1/models/{model['id']}").status_code == 200


def test_versions_by_name_and_default_name(client, bert_checkpoint):
    data = zip_bytes(folder_files(bert_checkpoint))
    first, second = post(client, data, name="air"), post(client, data, name="air")
    assert (first.json["version"], second.json["version"]) == (1, 2)
    unnamed = post(client, data, name=None, filename="my-sentiment.zip")
    assert unnamed.status_code == 201 and unnamed.json["name"] == "my-sentiment"
    long = post(client, data, name=None, filename="m" * 230 + ".zip")  # the derived name is cut, not a 422
    assert long.status_code == 201, long.json
    assert long.json["name"] == "m" * 200


def test_labels_default_to_label_i_without_id2label(client, bert_checkpoint, tmp_path):
    files = folder_files(bert_checkpoint)
    config = json.loads(files["config.json"].read_text())
    del config["id2label"], config["label2id"]
    config["num_labels"] = 3
    response = post(client, zip_bytes({**files, "config.json": json.dumps(config).encode()}))
    assert response.status_code == 201, response.json
    assert response.json["labels"] == ["LABEL_0", "LABEL_1", "LABEL_2"]


def _symlink(name: str) -> tuple[zipfile.ZipInfo, bytes]:
    info = zipfile.ZipInfo(name)
    info.create_system = 3
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info, b"/etc/passwd"


def _corrupt_header(path: Path) -> bytes:
    data = path.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + length])
    name = next(k for k in header if k != "__metadata__")
    header[name]["data_offsets"][1] += 4  # overlaps the next tensor
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data[8 + length:]


def _config_with(path: Path, **changes) -> bytes:
    return json.dumps({**json.loads(path.read_text()), **changes}).encode()


REFUSALS = {
    "pickle weights": (lambda f: {k: v for k, v in f.items() if k != "model.safetensors"}
                       | {"pytorch_model.bin": b"\x80\x04pickle"}, [], 422, "pickle_weights_refused"),
    "traversal": (lambda f: f | {"../evil.txt": b"x"}, [], 422, "unsafe_archive"),
    "absolute path": (lambda f: f | {"/etc/evil": b"x"}, [], 422, "unsafe_archive"),
    "symlink": (lambda f: f, [_symlink("vocab-link.txt")], 422, "unsafe_archive"),
    "unsupported architecture": (lambda f: f | {"config.json": _config_with(
        f["config.json"], architectures=["RobertaForSequenceClassification"], model_type="roberta")}, [], 422,
        "unsupported_architecture"),
    "missing tokenizer": (lambda f: {k: v for k, v in f.items() if k not in ("tokenizer.json", "vocab.txt")}, [],
                          422, "incomplete_checkpoint"),
    "missing config": (lambda f: {k: v for k, v in f.items() if k != "config.json"}, [], 422,
                       "incomplete_checkpoint"),
    "corrupt safetensors header": (lambda f: f | {"model.safetensors": _corrupt_header(f["model.safetensors"])},
                                   [], 422, "invalid_weights"),
    "weights not matching config": (lambda f: f | {"config.json": _config_with(f["config.json"],
                                                                               intermediate_size=48)},
                                    [], 422, "invalid_weights"),
    "config not JSON": (lambda f: f | {"config.json": b"{nope"}, [], 422, "invalid_checkpoint"),
    "id2label not fitting the classifier": (lambda f: f | {"config.json": _config_with(
        f["config.json"], id2label={"0": "a", "1": "b"}, label2id={"a": 0, "b": 1})}, [], 422, "labels_mismatch"),
    "custom tokenizer code": (lambda f: f | {"tokenizer_config.json": _config_with(
        f["tokenizer_config.json"], auto_map={"AutoTokenizer": ["x.Tok", None]})}, [], 422, "unsupported_tokenizer"),
    "zip bomb": (lambda f: f | {"notes.txt": b"\0" * (40 * 1024 * 1024)}, [], 413, "archive_too_large"),
    # token ids past the embeddings (an IndexError on CPU, a device-side assert on CUDA): the tokenizer would
    # append an unknown special token, or take an added token's id as written
    "special token outside the vocabulary": (lambda f: f | {"special_tokens_map.json": json.dumps(
        {"additional_special_tokens": ["<new>"]}).encode()}, [], 422, "unsupported_tokenizer"),
    "added token id past the embeddings": (lambda f: f | {"tokenizer_config.json": _config_with(
        f["tokenizer_config.json"], added_tokens_decoder={"99999": {"content": "<far>", "special": True}})}, [],
        422, "invalid_checkpoint"),
    "tokenizer_class not a string": (lambda f: f | {"tokenizer_config.json": _config_with(
        f["tokenizer_config.json"], tokenizer_class=["BertTokenizer"])}, [], 422, "unsupported_tokenizer"),
    "added_tokens.json id past the embeddings": (lambda f: f | {"added_tokens.json": b'{"<far>": 77777}'}, [], 422,
                                                 "invalid_checkpoint"),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_refused_imports_leave_nothing_behind(case, client, settings, bert_checkpoint):
    build, extra, status, code = REFUSALS[case]
    error = assert_error(post(client, zip_bytes(build(folder_files(bert_checkpoint)), extra=extra)), status, code)
    if case == "pickle weights":
        assert "safetensors" in error["message"] and "pickle" in error["message"]
    assert_nothing_left(settings)


def test_not_a_zip_missing_file_and_bad_name(client, settings, bert_checkpoint):
    assert_error(post(client, b"PK\x03\x04 not really"), 400, "invalid_archive")
    assert_error(client.post("/api/v1/models/import", data={"name": "x"}, content_type="multipart/form-data"), 400,
                 "missing_file")
    data = zip_bytes(folder_files(bert_checkpoint))
    assert_error(post(client, data, name="a\x00b"), 422, "validation_error")
    assert_error(post(client, data, name="x" * 201), 422, "validation_error")
    assert_error(client.post("/api/v1/models/import", json={"name": "x"}), 415, "unsupported_media_type")
    assert_nothing_left(settings)


def test_model_upload_limit_is_its_own(settings, bert_checkpoint):
    from tests.factories import api_client, make_user
    from web import create_app

    data = zip_bytes(folder_files(bert_checkpoint))
    assert len(data) > 1024 * 1024  # past the dataset limit below
    roomy = create_app({"TESTING": True, "SETTINGS": settings.replace(max_upload_mb=1, max_model_upload_mb=20)})
    client = api_client(roomy, make_user("importer"))
    assert post(client, data).status_code == 201
    with db.session() as session:
        session.execute(TrainedModel.__table__.delete())
    for path in (Path(settings.model_store) / "models").iterdir():
        import shutil

        shutil.rmtree(path)
    tight = create_app({"TESTING": True, "SETTINGS": settings.replace(max_model_upload_mb=1)})
    error = assert_error(post(api_client(tight, make_user("other")), data), 413, "payload_too_large")
    assert "1 MB" in error["message"]
    assert_nothing_left(settings)


def test_import_page(client, settings, bert_checkpoint):
    page = client.get("/models/import")
    assert page.status_code == 200 and b"safetensors" in page.data
    assert b'href="/models/import"' in client.get("/models").data
    bad = client.post("/models/import", data={"file": (io.BytesIO(b"not a zip"), "x.zip")},
                      content_type="multipart/form-data")
    assert bad.status_code == 400 and b"not a readable zip" in bad.data
    assert_nothing_left(settings)
    data = zip_bytes(folder_files(bert_checkpoint))
    done = client.post("/models/import", data={"file": (io.BytesIO(data), "hub.zip"), "name": "from-page"},
                       content_type="multipart/form-data")
    assert done.status_code == 302, done.data[:500]
    with db.session() as session:
        model = session.scalar(select(TrainedModel))
        assert (model.name, model.source) == ("from-page", "imported")
    assert done.headers["Location"].endswith(f"/models/{model.id}")
    assert client.get(f"/models/{model.id}").status_code == 200  # the model page of an imported model
    assert client.get(f"/classify?model_id={model.id}").status_code == 200


def test_import_page_checks_csrf_and_takes_the_model_limit(settings, bert_checkpoint):
    from tests.factories import api_client, make_user
    from web import create_app

    app = create_app({"TESTING": True, "SETTINGS": settings.replace(max_upload_mb=1, max_model_upload_mb=20)})
    client = api_client(app, make_user("page-user"))
    data = zip_bytes(folder_files(bert_checkpoint))
    refused = client.post("/models/import", data={"file": (io.BytesIO(data), "hub.zip")},
                          content_type="multipart/form-data")
    assert refused.status_code == 400 and b"CSRF" in refused.data  # parsed under the model limit, then refused
    assert_nothing_left(settings)


def test_upload_is_spooled_to_disk_and_tokenizer_paths_dropped(client, bert_checkpoint, monkeypatch):
    """Werkzeug hands the zip over as a temporary file on disk (not bytes in memory); a tokenizer config naming
    files elsewhere loses those keys."""
    from web import model_files

    seen = []
    real = model_files.open_checkpoint

    def spy(stream, limits):
        seen.append(getattr(stream, "_rolled", None))
        return real(stream, limits)

    monkeypatch.setattr(model_files, "open_checkpoint", spy)
    files = folder_files(bert_checkpoint)
    tokenizer_config = json.loads(files["tokenizer_config.json"].read_text())
    tokenizer_config.update(vocab_file="/etc/passwd", tokenizer_file="/etc/shadow")
    response = post(client, zip_bytes({**files, "tokenizer_config.json": json.dumps(tokenizer_config).encode()}))
    assert response.status_code == 201, response.json
    assert seen == [True]  # a SpooledTemporaryFile rolled over to disk
    with db.session() as session:
        directory = Path(session.get(TrainedModel, response.json["id"]).artifact_dir)
    saved = json.loads((directory / "tokenizer_config.json").read_text())
    assert "vocab_file" not in saved and "tokenizer_file" not in saved and saved["tokenizer_class"] == "BertTokenizer"


def test_import_page_grants_the_model_limit_to_logged_in_users_only(settings, monkeypatch):
    """The CSRF check parses (spools) the page's form before the login guard: an anonymous POST keeps the dataset
    limit, so it cannot make the server write MAX_MODEL_UPLOAD_MB to disk."""
    from web import create_app

    app = create_app({"TESTING": True, "SETTINGS": settings.replace(max_upload_mb=1, max_model_upload_mb=20)})
    parsed = []
    monkeypatch.setattr("web.model_files.import_model", lambda *args: parsed.append(args))
    body = {"file": (io.BytesIO(b"\0" * (2 * 1024 * 1024)), "big.zip")}
    response = app.test_client().post("/models/import", data=body, content_type="multipart/form-data")
    assert response.status_code == 413 and parsed == []


def test_scratch_folders_of_a_killed_import_are_removed_by_the_next(client, settings, bert_checkpoint):
    from web import model_files

    scratch = Path(settings.model_store) / "tmp"
    stale, recent = scratch / "import-stale", scratch / "import-running"
    for folder in (stale, recent):
        (folder / "part").mkdir(parents=True)
    old = time.time() - model_files.STALE_IMPORT_S - 60
    os.utime(stale, (old, old))
    response = post(client, zip_bytes(folder_files(bert_checkpoint)), name="after-a-crash")
    assert response.status_code == 201, response.json
    assert not stale.exists()  # left by a killed process: gone
    assert recent.exists()  # maybe another import in progress: kept


# ---------------------------------------------------------------- size caps (issue 16, item 2)

# a megabyte of weights that deflates about 140 times, as the checkpoint did (under the 200x bomb ratio)
ZERO_CHUNK = random.Random(0).randbytes(7000) + b"\0" * (1024 * 1024 - 7000)


def inflated_zip(checkpoint: Path, vocab_size: int) -> bytes:
    """``checkpoint`` with a ``vocab_size``-token embedding of zeros: a valid BERT checkpoint that zips tiny but
    unzips large (the weights are streamed into the zip, never held whole)."""
    files = folder_files(checkpoint)
    data = files.pop("model.safetensors").read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + length])
    metadata = header.pop("__metadata__", None)
    big = "bert.embeddings.word_embeddings.weight"
    header[big]["shape"][0] = vocab_size
    position, pieces = 0, []
    for name, entry in sorted(header.items(), key=lambda item: item[1]["data_offsets"][0]):
        start, end = entry["data_offsets"]
        size = vocab_size * entry["shape"][1] * 4 if name == big else end - start
        pieces.append((name, None if name == big else data[8 + length + start:8 + length + end], size))
        entry["data_offsets"] = [position, position + size]
        position += size
    raw = json.dumps({**header, **({"__metadata__": metadata} if metadata else {})}).encode()
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in files.items():
            archive.writestr(name, _config_with(content, vocab_size=vocab_size) if name == "config.json"
                             else content.read_bytes())
        with archive.open("model.safetensors", "w") as weights:
            weights.write(struct.pack("<Q", len(raw)) + raw)
            for _, content, size in pieces:
                if content is not None:
                    weights.write(content)
                    continue
                for _ in range(size // len(ZERO_CHUNK)):
                    weights.write(ZERO_CHUNK)
                weights.write(b"\0" * (size % len(ZERO_CHUNK)))
    return out.getvalue()


@pytest.fixture
def no_extraction(monkeypatch):
    """Fails the test if anything is extracted: the caps are checked from the zip's directory and headers first."""
    from core.archives import CheckpointArchive

    def refuse(self, name, destination):
        raise AssertionError(f"{name} was extracted before the size checks refused the import")

    monkeypatch.setattr(CheckpointArchive, "extract", refuse)


def test_a_checkpoint_of_zeros_past_the_vocabulary_cap_is_refused_before_extracting(client, settings,
                                                                                   bert_checkpoint, no_extraction):
    """The issue's checkpoint, scaled down: 200k tokens of mostly zeros zip ~140x smaller; MAX_MODEL_VOCAB_SIZE
    refuses it."""
    data = inflated_zip(bert_checkpoint, 200_000)  # 25.6 MB of weights
    assert len(data) < 1024 * 1024
    error = assert_error(post(client, data), 422, "model_too_large")
    assert "vocab_size is 200000" in error["message"] and "MAX_MODEL_VOCAB_SIZE" in error["message"]
    assert_nothing_left(settings)


def _client_with(settings, **changes):
    from tests.factories import api_client, make_user
    from web import create_app

    app = create_app({"TESTING": True, "SETTINGS": settings.replace(**changes), "WTF_CSRF_ENABLED": False})
    return api_client(app, make_user("-".join(changes)[:60]))


def test_parameter_layer_and_extracted_size_caps(settings, bert_checkpoint, no_extraction):
    data = zip_bytes(folder_files(bert_checkpoint))
    error = assert_error(post(_client_with(settings, max_model_parameters=1000), data), 422, "model_too_large")
    assert "MAX_MODEL_PARAMETERS" in error["message"]
    error = assert_error(post(_client_with(settings, max_model_layers=1), data), 422, "model_too_large")
    assert "num_hidden_layers is 2" in error["message"]
    # the unzipped size is capped on its own (a model of zeros within every other cap)
    assert_error(post(_client_with(settings, max_model_extracted_mb=1), inflated_zip(bert_checkpoint, 20_000)), 413,
                 "archive_too_large")
    assert_nothing_left(settings)


def test_an_import_needing_more_disk_than_is_free_is_507(client, settings, bert_checkpoint, monkeypatch,
                                                         no_extraction):
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 10 * 2**20, 10 * 2**20))
    error = assert_error(post(client, zip_bytes(folder_files(bert_checkpoint))), 507, "insufficient_storage")
    assert "MB free" in error["message"]
    assert_nothing_left(settings)


def test_imports_count_against_the_storage_quota(settings, bert_checkpoint):
    """Issue 16: an import's size is recorded on its row; past a quota it is refused and leaves nothing behind."""
    from tests.factories import api_client, make_user
    from web import create_app

    data = zip_bytes(folder_files(bert_checkpoint))
    quota = create_app({"TESTING": True, "SETTINGS": settings.replace(max_models_per_user=1)})
    client = api_client(quota, make_user("importer"))
    created = post(client, data)
    assert created.status_code == 201
    with db.session() as session:
        row = session.get(TrainedModel, created.json["id"])
        files = sum(p.stat().st_size for p in Path(row.artifact_dir).rglob("*") if p.is_file())
        assert row.size_bytes == files > 0
    error = assert_error(post(client, data), 429, "quota_exceeded")
    assert (error["quota"], error["usage"], error["limit"]) == ("models", 1, 1)
    assert len(list((Path(settings.model_store) / "models").iterdir())) == 1  # the refused one's files are gone
    tight = create_app({"TESTING": True, "SETTINGS": settings.replace(max_model_mb_per_user=1)})
    error = assert_error(post(api_client(tight, make_user("other")), data), 413, "quota_exceeded")
    assert error["quota"] == "model_bytes" and error["requested"] > 2**20


def test_an_import_whose_commit_answer_was_lost_keeps_the_files_of_its_row(client, settings, bert_checkpoint,
                                                                            monkeypatch):
    """The row landed but its commit's answer was lost: the files stay with the row; an error before anything was
    recorded still removes them (issue 16, item 9, for imports)."""
    from web import model_files

    real = model_files._insert

    def lost_reply(*args, **kwargs):
        real(*args, **kwargs)
        raise ConnectionError("server closed the connection after the commit")

    monkeypatch.setattr(model_files, "_insert", lost_reply)
    client.application.config["PROPAGATE_EXCEPTIONS"] = False
    data = zip_bytes(folder_files(bert_checkpoint))
    assert post(client, data).status_code == 500
    with db.session() as session:
        row = session.scalars(select(TrainedModel)).one()
    assert (Path(row.artifact_dir) / "model.safetensors").is_file()

    def refused(*args, **kwargs):
        raise ConnectionError("the database went away before the commit")

    monkeypatch.setattr(model_files, "_insert", refused)
    assert post(client, data).status_code == 500
    assert [p.name for p in (Path(settings.model_store) / "models").iterdir()] == [Path(row.artifact_dir).name]
