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

class _Toy(torch.nn.Module):
    def __init__(self): super().__init__(); self.f = torch.nn.Linear(8, 8)

class _BigLoss(torch.nn.Module):
    "A summed squared error large enough that float16 gradients overflow at the GradScaler's initial scale (65536)."
    def forward(self, model, b): return dict(loss=((model.f(b['x']).float() - b['y']) ** 2).sum() * 10)

def _toy_data():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(64, 8, generator=g); Y = X @ torch.randn(8, 8, generator=g)
    return (lambda ep: ({'x': X[i:i + 16], 'y': Y[i:i + 16]} for i in range(0, 64, 16))), (lambda m: dict(rsum=-float(((m.f(X) - Y) ** 2).mean())))

def test_fp16_grad_scaler_state_resumes(tmp_path, monkeypatch):
    "fp16 with its GradScaler (forced onto the CPU here, where autocast is otherwise off): the scaler's state is saved and restored, so a resumed run matches one never stopped."
    import itr_nb.train as T
    monkeypatch.setattr(T, '_amp_dtype', lambda precision, device: T.PRECISIONS[precision])
    batches, validate = _toy_data()
    cfg = T.TrainConfig(epochs=3, lr=1e-3, device='cpu', precision='fp16', grad_clip=1.0, ckpt_every=2)
    class Stop(Exception): pass
    def stopping(ep):
        for k, b in enumerate(batches(ep)):
            if ep == 1 and k == 3: raise Stop
            yield b
    torch.manual_seed(0); full = T.fit(_Toy(), _BigLoss(), batches, 4, validate, cfg, tmp_path/'a', progress=False)
    with safe_open(str(tmp_path/'a'/'last.safetensors'), 'pt') as f: meta = json.loads(f.metadata()['itr_nb_train_state'])
    assert meta['grad_scaler']['scale'] < 65536.0             # overflowing steps were skipped and the scale backed off
    torch.manual_seed(0)
    with pytest.raises(Stop): T.fit(_Toy(), _BigLoss(), stopping, 4, validate, cfg, tmp_path/'b', progress=False)
    torch.manual_seed(5); resumed = T.fit(_Toy(), _BigLoss(), batches, 4, validate, cfg, tmp_path/'b', progress=False, resume=True)
    assert _strip(resumed) == _strip(full)
    wa, wb = load_file(tmp_path/'a'/'best.safetensors'), load_file(tmp_path/'b'/'best.safetensors')
    assert all(torch.equal(wa[k], wb[k]) for k in wa)

def test_resume_state_from_before_precision(tmp_path):
    "A resume state written when TrainConfig had `amp` (and ModelConfig no `proj`) resumes as bf16 / proj=True, and is refused for another precision."
    import itr_nb.train as T
    from itr_nb.core import ItrError
    batches, validate = _toy_data()
    cfg = T.TrainConfig(epochs=1, lr=1e-3, device='cpu')
    T.fit(_Toy(), _BigLoss(), batches, 4, validate, cfg, tmp_path, dict(dim=8, proj=True), progress=False)
    p = tmp_path/'last.safetensors'
    with safe_open(str(p), 'pt') as f: meta = json.loads(f.metadata()['itr_nb_train_state'])
    c = meta['config']; c.pop('train.precision'); c.pop('model.proj'); c['train.amp'] = True   # as written before issue 17
    tensors = load_file(p)
    from safetensors.torch import save_file
    save_file(tensors, p, metadata={'itr_nb_train_state': json.dumps(meta)})
    h = T.fit(_Toy(), _BigLoss(), batches, 4, validate, cfg, tmp_path, dict(dim=8, proj=True), progress=False, resume=True)
    assert len(h) == 1                                          # accepted: the finished epoch is read back
    with pytest.raises(ItrError, match=r"train\.precision = 'bf16' there, 'fp32' here"):
        T.fit(_Toy(), _BigLoss(), batches, 4, validate, T.TrainConfig(epochs=1, lr=1e-3, device='cpu', precision='fp32'), tmp_path, dict(dim=8, proj=True), progress=False, resume=True)
