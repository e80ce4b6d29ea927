# One image for web, worker and migrations; docker-compose.yml picks the command.
FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
# Optional: an extra package index (e.g. PyTorch's CPU-only wheels) so torch==2.13.0 is not the CUDA build.
ARG PIP_EXTRA_INDEX_URL=""
WORKDIR /app
COPY requirements.txt .
RUN pip install -r requirements.txt
COPY . .
# /var/cache/bertqueue: the model cache of MODEL_STORE=sql (docker-compose.yml); /data/models: a directory store
RUN useradd --create-home bertqueue && mkdir -p /data/models /var/cache/bertqueue \
    && chown -R bertqueue /data /var/cache/bertqueue /app
USER bertqueue
EXPOSE 5000
CMD ["gunicorn", "--bind", "0.0.0.0:5000", "--workers", "2", "--timeout", "120", "web:create_app()"]
