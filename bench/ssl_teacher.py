"""A self-supervised image teacher for the embedded benchmark (issue 18): SimCLR (NT-Xent between two augmented views of
each image) on the pretraining split's images alone - no caption, no pairing - and its ROC AUC on the oracle's
image-image positives (validation split) as it trains.

    .venv/bin/python bench/ssl_teacher.py --name fg --fg 0.09      # background replaced first (itr_nb.cusa.foreground)
    .venv/bin/python bench/ssl_teacher.py --name raw --fg 0        # the images as they are

Writes runs/teachers/simclr-<name>.json (arguments, AUC by step and training seconds) and the encoder's weights to
data/teachers/simclr-<name>.safetensors. The loss is written here: none of the project's libraries ships NT-Xent.
"""
import argparse, json, math, time
import torch, torch.nn as nn, torch.nn.functional as F
from safetensors.torch import save_file
from tqdm.auto import tqdm
from itr_nb.core import atomic_write, runs_root, data_root, seed_everything
from itr_nb.splits import load_split
from itr_nb.synth import ensure_benchmark, ensure_pretrain
from itr_nb.cusa import teacher_auc, foreground
from itr_nb.encoders import SmallCNN

p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
p.add_argument('--name', required=True, help='names the outputs')
p.add_argument('--fg', type=float, default=0.09, help="foreground threshold (0: no background removal)")
p.add_argument('--steps', type=int, default=1500); p.add_argument('--batch-size', type=int, default=256)
p.add_argument('--lr', type=float, default=2e-3, help='peak (AdamW, linear warm-up, cosine)')
p.add_argument('--tau', type=float, default=0.2, help='NT-Xent temperature')
p.add_argument('--min-scale', type=float, default=0.2, help='smallest crop, as a share of the image area')
p.add_argument('--widths', default='32,64,128,256', help='SmallCNN stage widths')
p.add_argument('--n-images', type=int, default=120000, help="pretraining images (default: the split of itr-nb pretrain --student student-120k)")
p.add_argument('--eval-every', type=int, default=250); p.add_argument('--seed', type=int, default=0)
a = p.parse_args()

seed_everything(a.seed); g = torch.Generator().manual_seed(a.seed)
tr = load_split(ensure_pretrain(n_images=a.n_images, captions_per_image=2)/'dataset.json', 'train', 64, progress=False)
va = load_split(ensure_benchmark()/'dataset.json', 'val', 64, progress=False)
prep = (lambda x: foreground(x, a.fg)[0]) if a.fg else (lambda x: x)
X, XV = tr.images[:], prep(va.images[:].float() / 255)

def views(x):
    "A random resized crop (area share in [min_scale, 1], aspect 3/4-4/3), a horizontal flip half the time, sensor-like noise."
    B, S = len(x), x.shape[-1]
    s = torch.empty(B).uniform_(a.min_scale, 1.0, generator=g)
    r = torch.exp(torch.empty(B).uniform_(math.log(3 / 4), math.log(4 / 3), generator=g))
    w, h = (s * r).sqrt().clamp(max=1), (s / r).sqrt().clamp(max=1)
    th = torch.zeros(B, 2, 3)
    th[:, 0, 0] = w * torch.where(torch.rand(B, generator=g) < 0.5, -1.0, 1.0); th[:, 1, 1] = h
    th[:, 0, 2], th[:, 1, 2] = (torch.rand(B, generator=g) * 2 - 1) * (1 - w), (torch.rand(B, generator=g) * 2 - 1) * (1 - h)
    out = F.grid_sample(x, F.affine_grid(th, (B, 3, S, S), align_corners=False), padding_mode='reflection', align_corners=False)
    return (out + 0.03 * torch.randn(out.shape, generator=g)).clamp(0, 1)

def nt_xent(z, tau):
    "NT-Xent over 2B views (rows i and i+B are one image's): cross-entropy of each view against its partner."
    z = F.normalize(z.float(), dim=-1); n = len(z) // 2
    s = (z @ z.T / tau).fill_diagonal_(float('-inf'))
    return F.cross_entropy(s, torch.cat([torch.arange(n) + n, torch.arange(n)]))

enc = SmallCNN(tuple(int(v) for v in a.widths.split(',')), extra=1)
proj = nn.Sequential(nn.Linear(enc.dim, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, 128))
opt = torch.optim.AdamW([*enc.parameters(), *proj.parameters()], lr=a.lr, weight_decay=1e-4)
warm = min(200, a.steps // 10)
sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: (i + 1) / warm if i < warm else 0.5 * (1 + math.cos(math.pi * (i - warm) / max(1, a.steps - warm))))

@torch.no_grad()
def auc():
    "The teacher's AUC: cosine of the encoder's pooled features (before the projection), as CUSA's teachers are used."
    enc.eval(); f = torch.cat([enc(XV[b:b + 500]).global_ for b in range(0, len(XV), 500)]); enc.train()
    return round(teacher_auc(f, va.rel['i2i']), 4)

hist, secs = [dict(step=0, secs=0.0, auc=auc())], 0.0
bar = tqdm(range(a.steps), desc=f'simclr-{a.name}')
for step in bar:
    t = time.perf_counter()
    x = prep(X[torch.randint(0, len(X), (a.batch_size,), generator=g)].float() / 255)
    with torch.autocast('cpu', torch.bfloat16): z = proj(enc(torch.cat([views(x), views(x)])).global_)
    loss = nt_xent(z, a.tau)
    opt.zero_grad(set_to_none=True); loss.backward(); opt.step(); sched.step()
    secs += time.perf_counter() - t; bar.set_postfix(loss=f'{loss.item():.3f}')
    if (step + 1) % a.eval_every == 0 or step + 1 == a.steps:
        hist.append(dict(step=step + 1, secs=round(secs, 1), loss=round(loss.item(), 4), auc=auc())); bar.write(f"step {step + 1}: AUC {hist[-1]['auc']}")

(data_root()/'teachers').mkdir(parents=True, exist_ok=True); (runs_root()/'teachers').mkdir(parents=True, exist_ok=True)
save_file({k: v.contiguous() for k, v in enc.state_dict().items()}, str(data_root()/'teachers'/f'simclr-{a.name}.safetensors'))
with atomic_write(runs_root()/'teachers'/f'simclr-{a.name}.json') as f: f.write(json.dumps(dict(args=vars(a), hist=hist), indent=1))
print(f"simclr-{a.name}: AUC {hist[0]['auc']} -> {hist[-1]['auc']} in {secs:.0f} s of training")
