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
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    batch = dict(images=torch.rand(8, 3, 32, 32, generator=g), captions=list(CAPS),
                 img_idx=torch.tensor([0, 0, 1, 2, 3, 3, 4, 5]), cap_idx=torch.tensor([0, 1, 5, 10, 15, 16, 20, 25]))
    # a frozen image backbone keeps BatchNorm in eval mode, so each item's embedding does not depend on its share
    model = build_model(ModelConfig(dim=16, freeze_image=True), seed=0).double()
    if kind == 'infonce': obj = ContrastiveObjective(gather_negatives=True)
    else: obj = CUSAObjective(torch.randn(6, 12, generator=g, dtype=torch.float64), torch.randn(30, 7, generator=g, dtype=torch.float64),
                              alpha=0.3, beta=0.7, tau_t=0.1, gather_negatives=True)
    batch['images'] = batch['images'].double()
    return model, obj.double(), batch

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

@pytest.mark.parametrize('kind', ['infonce', 'cusa'])
def test_two_processes_equal_one(kind, tmp_path):
    torch.set_num_threads(1)
    model, obj, batch = _setup(kind)
    ref = obj(model, batch); ref['loss'].backward()      # one process, the whole batch (no process group: nothing gathered)
    gref = _grads(model, obj)
    assert {'con', 'csa', 'usa'} <= set(ref) if kind == 'cusa' else set(ref) == {'loss'}
    mp.spawn(_worker, args=(2, f'file://{tmp_path}/store', str(tmp_path), kind), nprocs=2, join=True)
    for r in range(2):
        o = torch.load(tmp_path/f'{r}.pt', weights_only=True)
        for k, v in ref.items(): assert_close64(o['parts'][k], v.detach(), (r, k))
        assert sorted(o['grads']) == sorted(gref)
        assert any(k.startswith('model.text_enc') for k in gref) and any(k.startswith('loss.') for k in gref)
        for k, v in gref.items(): assert_close64(o['grads'][k], v, (r, k))

def test_torchrun_end_to_end(tiny_benchmark, tmp_path):
    "`torchrun --nproc_per_node 2 itr-nb ddp` trains, rank 0 writes the checkpoint, history and test metrics."
    exe = Path(sys.executable).parent
    env = dict(os.environ, OMP_NUM_THREADS='1')
    cmd = [str(exe/'torchrun'), '--standalone', '--nproc_per_node', '2', '--no-python', str(exe/'itr-nb'), 'ddp',
           '--dataset', str(tiny_benchmark), '--epochs', '1', '--batch-size', '20', '--dim', '16', '--image-size', '32',
           '--limit-eval', '20', '--threads', '1', '--out', str(tmp_path/'run')]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    m = json.loads((tmp_path/'run'/'metrics.json').read_text())
    assert m['processes'] == 2 and m['global_batch'] == 20 and 0 <= m['rsum'] <= 600
    assert len(json.loads((tmp_path/'run'/'history.json').read_text())) == 1
    assert (tmp_path/'run'/'best.safetensors').exists() and (tmp_path/'run'/'last.safetensors').exists()
    r = subprocess.run(cmd[:-2] + ['--batch-size', '21', '--out', str(tmp_path/'odd')], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode != 0 and 'not divisible by 2 processes' in r.stdout + r.stderr
