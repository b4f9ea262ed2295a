"""A notebook-driven research workbook for image-text retrieval: CUSA, TGDT and TTD on an embedded benchmark with exact ground truth

Modules:

- `itr_nb.claims`: Each paper's claim as a paired comparison of two arms over seeds, with a 95% interval bootstrapped over test queries within seeds and over seeds, and a verdict fixed in advance: shown, contradicted, or not shown.
- `itr_nb.cusa`: CUSA (Huang et al., AAAI 2024): frozen uni-modal teachers give soft labels over the batch; the student's cross-modal (CSA) and uni-modal (USA) similarity distributions are pulled toward them (methods §2).
- `itr_nb.data`: Karpathy-format split files (Flickr30K, COCO, the embedded benchmark), caption preprocessing, image decoding and preprocessing as the models expect it, and PyTorch datasets.
- `itr_nb.distributed`: Every training template under torchrun: `itr-nb ddp TEMPLATE` runs the template's own code in each process, with the same parameters; the training functions shard the batches, gather negatives and sum gradients.
- `itr_nb.encoders`: Image and text encoders behind one interface, the dual encoder with two heads per modality, its configuration and builder, and on-disk caches of frozen features.
- `itr_nb.experiment`: Papermill experiments: run a template notebook with checked parameters into `runs/`, sweep a grid over parameters and seeds, and summarise the runs as tables and a plot.
- `itr_nb.images`: The decode-once image cache: a split's images decoded by worker processes into one uint8 array on disk, written atomically, keyed by the dataset file and the preprocessing, and read back a batch at a time.
- `itr_nb.inspect`: Views that show why a model ranks what it ranks: CUSA's soft labels over a batch, the results ranked above each query's ground truth with the false negatives among them, and TTD's caption and tag maps against the true masks.
- `itr_nb.losses`: The contrastive baseline: InfoNCE with several positives per query, a learnable clamped temperature, negatives gathered across processes, and the baseline objective.
- `itr_nb.metrics`: Retrieval evaluation on an images x captions similarity matrix: R@K, RSUM and ranks (VSE / CLIP_benchmark), COCO 5K and 1K, extended positives (R-Precision, mAP@R; ECCV Caption, CxC), uni-modal retrieval; streamed over query blocks, never sorting the whole matrix.
- `itr_nb.precomp`: Precomputed region features as a dataset: the SCAN/VSE "precomp" folders (`{split}_ims.npy`, `{split}_caps.txt`, boxes where present) that VSE++, SCAN, SGRAF and VSE∞ read, memory-mapped, with box geometry appended as TERAN and TGDT add it.
- `itr_nb.retrieval`: The dual-encoder experiment in functions: the image preprocessing a tower expects, a run's splits, embedding a split and evaluating it, and training a dual encoder. Templates and methods (CUSA, TGDT, TTD) build on these.
- `itr_nb.search`: Top-K retrieval over large galleries: a blocked matrix product for small ones, FAISS for large ones (an exact inner-product index by default; IVF or HNSW approximate indexes as options).
- `itr_nb.shards`: webdataset shards as a dataset: `.tar` files in img2dataset's layout (an image plus a `.txt` or `.json` caption per sample), streamed for training with a shuffle buffer and split by rank and worker, or read whole as a fixed evaluation split.
- `itr_nb.splits`: A split ready to train and evaluate on: captions, relevance and its images from the decode-once cache (or a stream of webdataset shards), and the training batches, through a torch DataLoader with workers.
- `itr_nb.tgdt`: TGDT (Liu et al., IEEE TIP 2023): one token-guided transformer per modality gives a global embedding and token embeddings; the CMC loss trains both; two-stage inference ranks by global vectors and re-ranks the top K with local token matching (methods §3).
- `itr_nb.train`: A training loop for dual encoders: AdamW with no decay on biases, norms and temperatures, cosine schedule, clipping, seeds, bf16 / fp16 / fp32 precision on GPU, validation every epoch, the best checkpoint chosen on validation.
- `itr_nb.ttd`: Text-tag self-distillation (Jo et al., ECCV 2024): dense image-text maps, tag selection by pixel-tag scoring, and fine-tuning that pulls a caption's map toward the union of its selected tags' maps (methods §4)."""

__version__ = "0.1.0"
