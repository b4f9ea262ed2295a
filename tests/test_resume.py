"A training run killed with SIGKILL mid-epoch and resumed from its last checkpoint ends exactly like one never stopped."
import json, os, signal, subprocess, sys, time
from pathlib import Path
import pytest, torch
from safetensors import safe_open
from safetensors.torch import load_file

SCRIPT = r'''
import json, sys, time
import torch
torch.set_num_threads(1)
import itr_nb.retrieval as R
from itr_nb.core import save_json
from itr_nb.train import TrainConfig
ds, out, resume, delay, workers = sys.argv[1], sys.argv[2], sys.argv[3] == '1', float(sys.argv[4]), int(sys.argv[5])
orig = R.pair_batches
def slow_batches(*a, **kw):   # the same batches, slower, so the test can kill the run in the middle of an epoch
    for b in orig(*a, **kw):
        yield b; time.sleep(delay)
R.pair_batches = slow_batches
tr, va = R.load_split(ds, 'train', 32, progress=False), R.load_split(ds, 'val', 32, progress=False)
model, obj, hist = R.train_retrieval(tr, va, R.ModelConfig(dim=32), TrainConfig(epochs=2, lr=2e-3, device='cpu', ckpt_every=2),
                                     batch_size=20, out_dir=out, progress=True, resume=resume, workers=workers)
save_json(R.evaluate_split(model, va), f'{out}/metrics.json')
'''

def _run(script, ds, out, resume=False, delay=0.0, workers=0, **kw):
    env = dict(os.environ, OMP_NUM_THREADS='1', MKL_NUM_THREADS='1')
    return subprocess.Popen([sys.executable, str(script), str(ds), str(out), '1' if resume else '0', str(delay), str(workers)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)

def _state(path):
    "(epoch, step) of a resume checkpoint, or None while there is none."
    try:
        with safe_open(str(path), 'pt') as f: m = json.loads(f.metadata()['itr_nb_train_state'])
        return m['epoch'], m['step']
    except Exception: return None

def _strip(hist): return [{k: v for k, v in r.items() if k != 'secs'} for r in hist]

def test_sigkill_mid_epoch_then_resume_matches_uninterrupted(tiny_benchmark, tmp_path):
    script = tmp_path/'train.py'; script.write_text(SCRIPT)
    ref = _run(script, tiny_benchmark, tmp_path/'ref')                        # batches made in the training process
    killed = _run(script, tiny_benchmark, tmp_path/'run', delay=0.25, workers=2)   # ... and by DataLoader workers
    t0, state = time.time(), None
    while time.time() - t0 < 120 and killed.poll() is None:
        state = _state(tmp_path/'run'/'last.safetensors')
        if state and state[0] == 1 and state[1] > 0: break    # a mid-epoch checkpoint of the second epoch exists
        time.sleep(0.02)
    assert killed.poll() is None, f'the run ended before it could be killed:\n{killed.stdout.read()}'
    os.kill(killed.pid, signal.SIGKILL); killed.wait()
    assert killed.returncode == -signal.SIGKILL
    assert not (tmp_path/'run'/'metrics.json').exists() and len(json.loads((tmp_path/'run'/'history.json').read_text())) == 1
    at = _state(tmp_path/'run'/'last.safetensors'); assert at[0] == 1 and 0 < at[1] < 6   # 6 steps per epoch
    resumed = _run(script, tiny_benchmark, tmp_path/'run', resume=True, workers=2)
    out, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, out
    assert f'resuming from {tmp_path/"run"/"last.safetensors"}: epoch 2, step {at[1]} of 6' in out, out
    ref_out, _ = ref.communicate(timeout=300)
    assert ref.returncode == 0, ref_out
    a, b = tmp_path/'ref', tmp_path/'run'
    assert json.loads((a/'metrics.json').read_text()) == json.loads((b/'metrics.json').read_text())
    assert _strip(json.loads((a/'history.json').read_text())) == _strip(json.loads((b/'history.json').read_text()))
    wa, wb = load_file(a/'best.safetensors'), load_file(b/'best.safetensors')
    assert sorted(wa) == sorted(wb) and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert _state(b/'last.safetensors') == (2, 0)

def test_resume_refuses_another_configuration(tiny_benchmark, tmp_path):
    "A resume checkpoint made with another learning rate or model is refused, naming the file and the field."
    from itr_nb.core import ItrError
    from itr_nb.retrieval import load_split, train_retrieval, ModelConfig
    from itr_nb.train import TrainConfig
    tr, va = load_split(tiny_benchmark, 'train', 32, limit=32, progress=False), load_split(tiny_benchmark, 'val', 32, limit=10, progress=False)
    train_retrieval(tr, va, ModelConfig(dim=16), TrainConfig(epochs=1, lr=1e-3, device='cpu'), batch_size=16, out_dir=tmp_path, progress=False)
    with pytest.raises(ItrError, match=r"last\.safetensors was saved with another configuration: train\.lr = 0\.001 there, 0\.002 here"):
        train_retrieval(tr, va, ModelConfig(dim=16), TrainConfig(epochs=1, lr=2e-3, device='cpu'), batch_size=16, out_dir=tmp_path, progress=False, resume=True)
    with pytest.raises(ItrError, match=r"model\.dim = 16 there, 8 here"):
        train_retrieval(tr, va, ModelConfig(dim=8), TrainConfig(epochs=1, lr=1e-3, device='cpu'), batch_size=16, out_dir=tmp_path, progress=False, resume=True)
