import os
from pathlib import Path
import pytest
os.environ.setdefault('HF_HUB_OFFLINE', '1')
os.environ.setdefault('TRANSFORMERS_OFFLINE', '1')
os.environ.setdefault('TOKENIZERS_PARALLELISM', 'false')
os.environ.setdefault('MPLBACKEND', 'Agg')

@pytest.fixture(scope='session')
def tiny_benchmark(tmp_path_factory):
    "A small embedded benchmark (120/30/30 images at 32 px) shared by the tests of one worker."
    from itr_nb.synth import build_benchmark
    return build_benchmark(tmp_path_factory.mktemp('synth'), seed=0, n_train=120, n_val=30, n_test=30,
                           image_size=32, workers=1, progress=False)/'dataset.json'
