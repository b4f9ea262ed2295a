"""Two gloo processes under DistributedDataParallel give the loss and gradients of one process on the whole batch.

Both sides run in float64 (model, batch, teacher features, objective). One process and two compute the same sums in a
different order (two shards, then the all-reduce), so they differ by rounding only. In float64 that rounding is about
n * eps * |terms| with eps = 1.1e-16 and n the length of the longest reduction (here < 10^4 terms), i.e. < 1e-11 of a
tensor's scale, on any CPU and any kernel set (AVX-512, AVX2 or ATEN_CPU_CAPABILITY=default). The tolerance below,
1e-9 of each tensor's largest magnitude, leaves two orders of margin for that and is still 10^8 times smaller than
what a bug gives: averaging instead of summing halves every gradient, and a dropped slice removes whole terms.
(float32 fails here: its rounding, ~1e-5 on values of order 1, depends on the CPU's kernels.)"""
import json, os, shutil, subprocess, sys
from pathlib import Path
import pytest, torch, torch.nn.functional as F, torch.multiprocessing as mp

CAPS = ['a red circle', 'a blue square left of a green star', 'two small triangles', 'a red circle',
        'a big yellow star', 'a green square', 'three blue circles above a star', 'a small red triangle']

def _setup(kind):
    "The same model, objective and global batch of 8 pairs in every process (seeded)."
    from itr_nb.retrieval import build_model, ModelConfig, ContrastiveObjective
    from itr_nb.cusa import CUSAObjective
    from itr_nb.encoders import image_encoder, text_encoder, DualEncoder
    from itr_nb.tgdt import TGDT, TGDTObjective
    from itr_nb.ttd import TTDObjective
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    batch = dict(images=torch.rand(8, 3, 32, 32, generator=g), captions=list(CAPS),
                 img_idx=torch.tensor([0, 0, 1, 2, 3, 3, 4, 5]), cap_idx=torch.tensor([0, 1, 5, 10, 15, 16, 20, 25]))
    # a frozen image backbone keeps BatchNorm in eval mode, so each item's embedding does not depend on its share
    if kind == 'tgdt':   # no dropout, so both sides compute the same function; the shares' captions pad to different lengths
        model = TGDT(image_encoder('small-cnn', widths=(8, 16)), text_encoder('small-transformer', dim=16, layers=1), 16, 1, 2,
                     dropout=0.0, freeze_image=True, image_size=32)
        obj = TGDTObjective(lambda_l=10.0, reduce='sum', gather_negatives=True)
    elif kind == 'ttd':
        torch.manual_seed(0)
        model = DualEncoder(image_encoder('small-cnn', widths=(8, 16)), text_encoder('small-transformer', dim=16, layers=1), 16, freeze_image=True)
        obj = TTDObjective(theta=0.4, w_distill=0.7, w_tag=1.3, gather_negatives=True)
    else:
        model = build_model(ModelConfig(dim=16, freeze_image=True), seed=0)
        if kind == 'infonce': obj = ContrastiveObjective(gather_negatives=True)
        else: obj = CUSAObjective(torch.randn(6, 12, generator=g, dtype=torch.float64), torch.randn(30, 7, generator=g, dtype=torch.float64),
                                  alpha=0.3, beta=0.7, tau_t=0.1, gather_negatives=True)
    batch['images'] = batch['images'].double()
    return model.double(), obj.double(), batch

RTOL = 1e-9   # of each tensor's largest magnitude: float64 rounding of reordered sums (see the module docstring)

def assert_close64(got, want, what):
    "|got - want| <= RTOL * max|want| everywhere (float64 on both sides)."
    assert got.dtype == want.dtype == torch.float64, what
    err, scale = (got - want).abs().max().item(), max(want.abs().max().item(), 1e-300)
    assert err <= RTOL * scale, (what, err, scale)

def _grads(model, obj):
    return {f'model.{n}': p.grad.clone() for n, p in model.named_parameters() if p.grad is not None} | \
           {f'loss.{n}': p.grad.clone() for n, p in obj.named_parameters() if p.grad is not None}

def _worker(rank, world, init, out, kind):
    import torch.distributed as dist
    from itr_nb.distributed import wrap_ddp, shard_batch
    torch.set_num_threads(1)
    dist.init_process_group('gloo', init_method=init, rank=rank, world_size=world)
    model, obj, batch = _setup(kind)
    net = wrap_ddp(model)
    parts = obj(net, shard_batch(batch, rank, world))
    parts['loss'].backward()
    torch.save(dict(parts={k: v.detach() for k, v in parts.items()}, grads=_grads(model, obj)), f'{out}/{rank}.pt')
    dist.destroy_process_group()

@pytest.mark.parametrize('kind', ['infonce', 'cusa', 'tgdt', 'ttd'])
def test_two_processes_equal_one(kind, tmp_path):
    torch.set_num_threads(1)
    model, obj, batch = _setup(kind)
    ref = obj(model, batch); ref['loss'].backward()      # one process, the whole batch (no process group: nothing gathered)
    gref = _grads(model, obj)
    want = dict(infonce={'loss'}, cusa={'loss', 'con', 'csa', 'usa'}, tgdt={'loss', 'tri_g', 'tri_l', 'intra'}, ttd={'loss', 'con', 'distill', 'tag', 'selected'})[kind]
    assert set(ref) == want
    mp.spawn(_worker, args=(2, f'file://{tmp_path}/store', str(tmp_path), kind), nprocs=2, join=True)
    for r in range(2):
        o = torch.load(tmp_path/f'{r}.pt', weights_only=True)
        for k, v in ref.items():
            if k != 'selected': assert_close64(o['parts'][k], v.detach(), (r, k))   # 'selected': the share of this process's tags
        assert sorted(o['grads']) == sorted(gref)
        assert any(k.startswith('model.text_enc') for k in gref) and (kind == 'tgdt' or any(k.startswith('loss.') for k in gref))
        for k, v in gref.items(): assert_close64(o['grads'][k], v, (r, k))

def _torchrun(tmp, template, *params, out='run'):
    "`torchrun --nproc_per_node 2 itr-nb ddp TEMPLATE -p ...` on the CPU (gloo), one thread per process."
    exe = Path(sys.executable).parent
    cmd = [str(exe/'torchrun'), '--standalone', '--nproc_per_node', '2', '--no-python', str(exe/'itr-nb'), 'ddp', template,
           '--threads', '1', '--out', str(tmp/out)]
    for k, v in params: cmd += ['-p', k, str(v)]
    return subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS='1'), timeout=400)

SMALL = [('epochs', 1), ('batch_size', 20), ('dim', 16), ('image_size', 32), ('limit_eval', 20), ('workers', 0)]

@pytest.mark.parametrize('template', ['train_eval', 'cusa'])
def test_torchrun_end_to_end(template, tiny_benchmark, tmp_path):
    "The template's own code in two processes: rank 0 writes the run (checkpoint, history, metrics), rank 1 follows its history and best checkpoint."
    extra = [('teacher_size', 32), ('cache_dir', str(tmp_path/'cusa'))] if template == 'cusa' else []
    r = _torchrun(tmp_path, template, ('dataset', tiny_benchmark), *SMALL, *extra)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    run, other = tmp_path/'run', tmp_path/'run'/'ranks'/'1'
    m, hist = json.loads((run/'metrics.json').read_text()), json.loads((run/'history.json').read_text())
    assert 0 <= m['rsum'] <= 600 and len(hist) == 1 and (run/'best.safetensors').exists() and (run/'last.safetensors').exists()
    assert (run/'executed.ipynb').exists() and (other/'executed.ipynb').exists()
    assert (other/'best.safetensors').resolve() == (run/'best.safetensors').resolve()     # rank 1 loaded rank 0's best
    assert json.loads((other/'metrics.json').read_text())['rsum'] == m['rsum']            # and so evaluates the same model
    assert not (other/'history.json').exists() and not (other/'last.safetensors').exists()
    if template == 'train_eval':
        r = _torchrun(tmp_path, template, ('dataset', tiny_benchmark), *SMALL[:1], ('batch_size', 21), *SMALL[2:], out='odd')
        assert r.returncode != 0 and 'cannot be split evenly over 2 processes' in r.stdout + r.stderr
