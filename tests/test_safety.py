"Loading a checkpoint runs no code; nothing reaches the network unless the user allows it; the source keeps to both."
import json, os, pickle, re, subprocess, sys
from pathlib import Path
import pytest, torch
from itr_nb.core import ItrError

ROOT = Path(__file__).resolve().parents[1]

class Payload:
    "Unpickling this creates a file: the proof that a loader executed code."
    def __init__(self, marker): self.marker = marker
    def __reduce__(self): return (open, (self.marker, 'w'))

def test_source_loads_no_pickles():
    "Every torch.load in the package passes weights_only=True; no np.load allows pickles; no pickle module is used."
    for f in sorted((ROOT/'itr_nb').glob('*.py')):
        src = f.read_text()
        for m in re.finditer(r'torch\.load\(([^\n]*)', src): assert 'weights_only=True' in m.group(1), f'{f.name}: {m.group(0)}'
        assert 'allow_pickle=True' not in src and not re.search(r'^\s*import pickle|pickle\.loads?\(', src, re.M), f.name

@pytest.mark.parametrize('loader', ['best', 'resume'])
def test_pickled_checkpoint_is_refused_without_running_it(tmp_path, loader):
    from itr_nb.train import load_checkpoint, load_train_state, cosine_schedule
    marker = tmp_path/'executed'
    ck = tmp_path/'evil.safetensors'
    torch.save({'model.weight': Payload(str(marker))}, ck)          # a pickle, as torch.save writes it
    m = torch.nn.Linear(2, 2)
    if loader == 'best':
        (tmp_path/'evil.json').write_text(json.dumps({'config': {}}))
        with pytest.raises(ItrError, match=f'{ck}: unreadable checkpoint'): load_checkpoint(ck, dict(model=m))
    else:
        opt = torch.optim.AdamW(m.parameters()); sch = cosine_schedule(opt, 10)
        with pytest.raises(ItrError, match=f'{ck}: unreadable resume checkpoint'): load_train_state(ck, m, torch.nn.Module(), opt, sch)
    assert not marker.exists()
    with pytest.raises(Exception): torch.load(ck, weights_only=True)   # what the package's torch.load calls do with it
    assert not marker.exists()

GUARD = r'''
import os, socket, sys
tried = []
def refuse(self, addr, *a): tried.append(addr); raise OSError('network refused by the test')
socket.socket.connect = refuse; socket.socket.connect_ex = refuse
import itr_nb.core
print('offline', os.environ.get('HF_HUB_OFFLINE'), os.environ.get('TRANSFORMERS_OFFLINE'))
if sys.argv[1] == 'models':
    import torch
    from itr_nb.encoders import text_encoder, image_encoder
    with torch.no_grad():
        t = text_encoder('minilm')(['a red circle']); i = image_encoder('efficientnet-lite0')(torch.rand(1, 3, 64, 64))
    print('shapes', tuple(t.global_.shape), tuple(i.global_.shape))
print('connections', tried)
'''

def _guarded(tmp_path, what, **env):
    (tmp_path/'guard.py').write_text(GUARD)
    e = {k: v for k, v in os.environ.items() if not k.startswith(('HF_', 'TRANSFORMERS_', 'ITR_NB_ALLOW'))} | env
    r = subprocess.run([sys.executable, str(tmp_path/'guard.py'), what], capture_output=True, text=True, env=e, timeout=300)
    assert r.returncode == 0, r.stderr
    return r.stdout

def test_offline_by_default_and_pretrained_models_load_without_network(tmp_path):
    out = _guarded(tmp_path, 'models')
    assert 'offline 1 1' in out and 'shapes (1, 384) (1, 1280)' in out and 'connections []' in out, out

def test_network_only_when_allowed(tmp_path):
    assert 'offline None None' in _guarded(tmp_path, 'env', ITR_NB_ALLOW_NETWORK='1')
