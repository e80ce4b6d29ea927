"""A model's files: download it as a zip, import a Hugging Face checkpoint (``web.model_files``)."""
from __future__ import annotations

from flask import Response, url_for
from pydantic import BaseModel, ConfigDict, Field

from core import hf_format

from .. import model_files, schemas
from ..auth import current
from ..queries import UploadedFile
from . import bp
from .apidoc import Answer, documented

ZIP = {"application/zip": {"schema": {"type": "string", "format": "binary"}}}


class ModelImportUpload(BaseModel):
    """The multipart/form-data body of ``POST /api/v1/models/import``."""

    model_config = ConfigDict(extra="ignore", arbitrary_types_allowed=True)

    file: UploadedFile = Field(description="a zip of a transformers checkpoint folder (save_pretrained with "
                               "safetensors weights + the tokenizer), at its root or in one top-level folder")
    name: str = Field(default="", max_length=200, description="the model's name; importing under an existing name "
                      "adds its next version (default: the zip's file name without its extension)")


@bp.get("/api/v1/models/<int:model_id>/download")
@documented(
    "Download a model as a zip (streamed), with a model card (README.md)",
    description="Single-label `bert` models that pool through the encoder's pooler and `distilbert` models "
    "download as a plain Hugging Face checkpoint: `AutoModelForSequenceClassification.from_pretrained(folder)` and "
    "`AutoTokenizer.from_pretrained(folder)` load the unzipped folder with no custom code and give the platform's "
    "probabilities. Token-classification `bert` and `distilbert` models download as `BertForTokenClassification` / "
    "`DistilBertForTokenClassification`: `pipeline(\"token-classification\", model=folder, "
    "aggregation_strategy=\"first\")` gives the platform's entities. Question-answering and multiple-choice `bert` / "
    "`distilbert` models download as `Bert/DistilBertForQuestionAnswering` / `...ForMultipleChoice` "
    "(`AutoModelForQuestionAnswering` / `AutoModelForMultipleChoice` give the platform's logits at every real "
    "position). Other models download in the platform's own "
    "format; their README.md (whose metadata names the Hugging Face `pipeline_tag`) says how to load them.",
    responses={
        200: Answer("the zip", model=None, content=ZIP,
                    headers={"Content-Disposition": 'attachment; filename="<name>-v<version>.zip"'}),
        410: "the model was deleted (model_deleted), or its files are gone (model_files_missing)",
    },
)
def download_model(model_id: int):
    result = model_files.download(current(), model_id)
    return Response(result.chunks, content_type="application/zip",
                    headers={"Content-Disposition": f'attachment; filename="{result.filename}"'})


@bp.post("/api/v1/models/import")
@documented(
    "Import a Hugging Face checkpoint: sequence or token classification, question answering or multiple choice "
    "(BERT or DistilBERT, safetensors weights)",
    description="The class in config.json's `architectures` names the task type and family "
    f"({', '.join(hf_format.importable_architectures())}); the labels come from the checkpoint's `id2label`, "
    "which must name one label per output of the classifier (422 labels_mismatch; question-answering and "
    "multiple-choice heads take fixed labels instead). The model then classifies (tags, answers) and evaluates like "
    "a trained one. Zips up to MAX_MODEL_UPLOAD_MB.",
    form=ModelImportUpload,
    responses={
        201: Answer("imported", schemas.Model, headers={"Location": "the model"}),
        400: "missing file (missing_file), or not a readable zip (invalid_archive)",
        409: "another import or training took the name's next version meanwhile (version_conflict): try again",
        413: "larger than MAX_MODEL_UPLOAD_MB (payload_too_large), or inflating too much: a zip bomb "
        "(archive_too_large)",
        422: "pickled weights (pickle_weights_refused), an architecture no task type imports "
        "(unsupported_architecture), id2label not fitting the classifier (labels_mismatch), unsafe entries: "
        "absolute or '..' paths, links, devices (unsafe_archive), missing config, weights or tokenizer "
        "(incomplete_checkpoint), sharded weights (sharded_checkpoint), a bad config.json or token ids past the "
        "embeddings (invalid_checkpoint), "
        "weights that do not match it (invalid_weights), a tokenizer needing custom code or with special tokens "
        "outside its vocabulary (unsupported_tokenizer), a bad name (validation_error), a model past the "
        "MAX_MODEL_* caps: layers, hidden size, vocabulary, positions, parameters (model_too_large)",
        507: "not enough free disk in the model store for the unzipped model (insufficient_storage)",
    },
)
def import_model(form: ModelImportUpload):
    result = model_files.import_model(current(), form.file.stream, form.file.filename, form.name)
    return result, 201, {"Location": url_for("api.get_model", model_id=result["id"])}
