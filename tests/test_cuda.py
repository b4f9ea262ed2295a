"""What only a GPU can show (marked `cuda`: skipped without one; scripts/gpu_check.sh runs them): the run's device for
training in each precision, TGDT's stage 2, teachers, frozen-feature caches and TTD's dense maps, each against the same
computation on the CPU. Two float64 paths agree to rounding (1e-9 of the scale); float32 ones to 1e-4 of the scale
(a few hundred float32 roundings of 6e-8 in the longest reductions, with two orders of margin)."""
import json
import pytest, torch, torch.nn.functional as F
from torch import nn

pytestmark = pytest.mark.cuda

def close(a, b, rtol):
    a, b = a.detach().cpu(), b.detach().cpu()
    assert a.shape == b.shape and (a.double() - b.double()).abs().max() <= rtol * b.double().abs().max().clamp_min(1e-30)

def test_fit_in_each_precision_on_cuda():
    "fp32 on the GPU trains like the CPU; bf16 and fp16 (grad scaler) run autocast there, so their losses differ, and stay finite."
    from itr_nb.train import fit, TrainConfig
    g = torch.Generator().manual_seed(0)
    X = torch.randn(256, 32, generator=g); Y = X @ torch.randn(32, 32, generator=g) + 0.1 * torch.randn(256, 32, generator=g)
    batches = lambda ep: ({'x': X[i:i + 64], 'y': Y[i:i + 64]} for i in range(0, 256, 64))
    class Loss(nn.Module):
        def forward(self, m, b): return dict(loss=F.mse_loss(m(b['x']), b['y']))
    def train(device, precision):
        torch.manual_seed(0); m = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 32))
        h = fit(m, Loss(), batches, 4, lambda m: {}, TrainConfig(epochs=3, lr=1e-2, device=device, precision=precision, grad_clip=1.0), progress=False)
        return torch.tensor([r['train_loss'] for r in h])
    cpu = train('cpu', 'fp32')
    close(train('cuda', 'fp32'), cpu, 1e-3)
    for p in ('bf16', 'fp16'):
        l = train('cuda', p)
        assert torch.isfinite(l).all() and not torch.equal(l, cpu) and l[-1] < l[0], p

def test_tgdt_scoring_on_cuda_equals_cpu():
    "Stage 2 (the batched pair scoring of the GPU) and exhaustive local similarity on CUDA, against the CPU, in float64."
    from itr_nb.tgdt import local_sim, two_stage, pair_local_sim
    g = torch.Generator().manual_seed(0)
    n = lambda *s: F.normalize(torch.randn(*s, generator=g, dtype=torch.float64), dim=-1)
    lens = torch.randint(3, 12, (300,), generator=g); tm = torch.arange(12)[None] < lens[:, None]
    e = dict(x=n(60, 16), y=n(300, 16), img_tokens=n(60, 9, 16), img_mask=torch.ones(60, 9, dtype=torch.bool), txt_tokens=n(300, 12, 16) * tm[..., None], txt_mask=tm)
    ec = {k: v.cuda() for k, v in e.items()}
    for lam, red in ((1.0, 'mean'), (10.0, 'sum')):
        close(local_sim(ec['img_tokens'], None, ec['txt_tokens'], ec['txt_mask'], lam, red), local_sim(e['img_tokens'], None, e['txt_tokens'], e['txt_mask'], lam, red), 1e-9)
        a, b = two_stage(ec, 20, 30, lam, red), two_stage(e, 20, 30, lam, red)
        for d in ('i2t', 't2i'): close(a[d][1], b[d][1], 1e-9)
    img, cap = torch.randint(0, 60, (500,), generator=g), torch.randint(0, 300, (500,), generator=g)
    close(pair_local_sim(ec['img_tokens'], None, ec['txt_tokens'], ec['txt_mask'], img, cap, batched=True),
          local_sim(e['img_tokens'], None, e['txt_tokens'], e['txt_mask'])[img, cap], 1e-9)

def test_teachers_caches_and_dense_maps_on_cuda(tiny_benchmark, tmp_path):
    "CUSA's teacher features, a frozen backbone's cache and TTD's dense evaluation computed on the GPU match the CPU's."
    from itr_nb.splits import load_split
    from itr_nb.cusa import teacher_features
    from itr_nb.retrieval import build_model, ModelConfig, cache_image_features
    from itr_nb.ttd import build_ttd_model, dense_eval, load_tag_truth
    va = load_split(tiny_benchmark, 'val', 32, progress=False)
    out = {}
    for dev in ('cpu', 'cuda'):
        torch.manual_seed(0)
        out[dev] = teacher_features(va, tiny_benchmark, 'small-cnn', 'small-transformer', 32, tmp_path/dev, device=dev, progress=False)
    for a, b in zip(out['cuda'], out['cpu']): close(a, b, 1e-4)
    m = build_model(ModelConfig(dim=16, freeze_image=True), 0).eval()
    f = {dev: cache_image_features(m, load_split(tiny_benchmark, 'val', 32, progress=False), tmp_path/f'f{dev}', device=dev).feats for dev in ('cpu', 'cuda')}
    close(f['cuda'].global_, f['cpu'].global_, 1e-4); close(f['cuda'].tokens.float(), f['cpu'].tokens.float(), 1e-3)   # tokens stored in fp16
    t = build_ttd_model(ModelConfig(dim=16), 0, dict(widths=[8, 16, 32])).eval()
    truth = load_tag_truth(tiny_benchmark, va)
    ev = {dev: dense_eval(t, va, truth, device=dev) for dev in ('cpu', 'cuda')}
    close(ev['cuda']['pixel'], ev['cpu']['pixel'], 1e-4); close(ev['cuda']['cap_inter'], ev['cpu']['cap_inter'], 2e-2)   # pixel counts at thresholds: a few flips

def test_templates_on_cuda(tiny_benchmark, tmp_path):
    "The tgdt and cusa templates on the GPU in bf16, one epoch: the run's device end to end (teachers, caches, stage 2)."
    from itr_nb.experiment import run_template
    for tpl, extra in (('tgdt', dict(layers=1, heads=2, k_curve=[1, 5])), ('cusa', dict(teacher_size=32, cache_dir=str(tmp_path/'cusa'), image_teacher='small-cnn', text_teacher='small-transformer'))):
        st = run_template(tpl, dict(dataset=str(tiny_benchmark), epochs=1, batch_size=32, dim=32, image_size=32, limit_eval=20, workers=0,
                                    device='cuda', precision='bf16', **extra), tmp_path/tpl, progress=False)
        assert st['status'] == 'ok', st.get('error')
        assert 0 <= json.loads((tmp_path/tpl/'metrics.json').read_text())['rsum' if tpl == 'cusa' else 'two_stage_rsum'] <= 600
