"""The machine-learning code of bertqueue, apart from the Celery glue: data preparation, batching, the training loop,
metrics, inference and the serving batcher. No Celery, no SQL; torch is imported inside the functions that need it."""
