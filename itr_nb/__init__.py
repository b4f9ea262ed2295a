"""A notebook-driven research workbook for image-text retrieval: CUSA, TGDT and TTD on an embedded benchmark with exact ground truth

Modules:

- `itr_nb.train`: A training loop for dual encoders: AdamW with no decay on biases, norms and temperatures, cosine schedule, clipping, seeds, mixed precision on GPU, validation every epoch, the best checkpoint chosen on validation."""

__version__ = "0.1.0"
