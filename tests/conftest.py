import os
from pathlib import Path
import pytest
os.environ.setdefault('HF_HUB_OFFLINE', '1')
os.environ.setdefault('TRANSFORMERS_OFFLINE', '1')
os.environ.setdefault('TOKENIZERS_PARALLELISM', 'false')
os.environ.setdefault('MPLBACKEND', 'Agg')

@pytest.fixture(scope='session', autouse=True)
def image_cache(tmp_path_factory):
    "The tests' image caches go to a temporary folder, not data/cache/images (subprocesses and templates inherit it)."
    d = tmp_path_factory.mktemp('image_cache')
    old = os.environ.get('ITR_NB_IMAGE_CACHE'); os.environ['ITR_NB_IMAGE_CACHE'] = str(d)
    yield d
    if old is None: os.environ.pop('ITR_NB_IMAGE_CACHE', None)
    else: os.environ['ITR_NB_IMAGE_CACHE'] = old

@pytest.fixture(scope='session')
def tiny_benchmark(tmp_path_factory):
    "A small embedded benchmark (120/30/30 images at 32 px) shared by the tests of one worker."
    from itr_nb.synth import build_benchmark
    return build_benchmark(tmp_path_factory.mktemp('synth'), seed=0, n_train=120, n_val=30, n_test=30,
                           image_size=32, workers=1, progress=False)/'dataset.json'

def pytest_collection_modifyitems(config, items):
    "Tests marked `cuda` need a CUDA GPU: skipped where torch sees none (scripts/gpu_check.sh runs them with `-m cuda`)."
    import torch
    if torch.cuda.is_available(): return
    skip = pytest.mark.skip(reason='needs a CUDA GPU (torch.cuda.is_available() is False)')
    for it in items:
        if 'cuda' in it.keywords: it.add_marker(skip)
