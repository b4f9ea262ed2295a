"""Student options on the embedded benchmark (issue 18): train one candidate dual encoder for a fixed number of steps
with InfoNCE, report validation (500 images) and test (1,000 x 5,000) retrieval and oracle metrics, write a JSON.

    .venv/bin/python bench/student_options.py --image 'eff{"size":64,"blocks":11}' --text minilm-frozen \
        --freeze-blocks 5 --steps 600 --out runs/student_options/E1.json

Image towers: 'small-cnn'; 'grid{...}' (a from-scratch CNN to an 8 x 8 grid, pool 'mean' or 'attn');
'eff{...}' (ImageNet EfficientNet-Lite0 at `size` px cut after `blocks` blocks, attention-pooled). Text: 'small'
(a from-scratch transformer) or 'minilm-frozen' (frozen MiniLM, embeddings computed once). experiments/student.ipynb
reads every JSON under runs/student_options/ (each records its arguments). This is the research harness the
package's `efficientnet-lite0-grid` student came from; the package trains it with `itr-nb pretrain`.
"""
import argparse, json, math, time, os, sys
import numpy as np, torch, torch.nn as nn, torch.nn.functional as F
from itr_nb.core import seed_everything
from itr_nb.retrieval import load_split, pair_batches, evaluate_split
from itr_nb.encoders import EncoderOutput, DualEncoder, text_encoder, image_encoder
from itr_nb.losses import ContrastiveLoss, clamp_temperatures_
from itr_nb.train import param_groups, cosine_schedule

def cbr(ci, co, s):
    return nn.Sequential(nn.Conv2d(ci, co, 3, s, 1, bias=False), nn.BatchNorm2d(co), nn.ReLU(inplace=True))

class AttnPool(nn.Module):
    "Learned positions + `layers` pre-LN transformer layers with a CLS token over the grid tokens."
    def __init__(self, d, n_tok, layers=1, heads=4):
        super().__init__()
        self.pos = nn.Parameter(torch.randn(n_tok, d) * 0.02); self.cls = nn.Parameter(torch.zeros(1, 1, d))
        l = nn.TransformerEncoderLayer(d, heads, 4 * d, dropout=0.0, batch_first=True, norm_first=True)
        self.enc = nn.TransformerEncoder(l, layers, norm=nn.LayerNorm(d), enable_nested_tensor=False)
    def forward(self, t):
        h = torch.cat([self.cls.expand(len(t), -1, -1), t + self.pos], 1)
        o = self.enc(h); return o[:, 0], o[:, 1:]

class GridCNN(nn.Module):
    "conv stages (stride 2 then stride 1 per stage) to an 8x8 grid at 64 px; pooling 'mean' or 'attn'."
    def __init__(self, widths=(32, 64, 128), size=64, pool='attn', pool_layers=1, extra=1, stem_stride=2):
        super().__init__()
        layers, ci = [], 3
        for k, w in enumerate(widths):
            layers.append(cbr(ci, w, 2 if (k > 0 or stem_stride == 2) else 1)); ci = w
            layers += [cbr(w, w, 1) for _ in range(extra)]
        self.body = nn.Sequential(*layers).to(memory_format=torch.channels_last)
        g = size // (2 ** (len(widths) - (stem_stride == 1)))
        self.pool = AttnPool(ci, g * g, pool_layers) if pool == 'attn' else None
        self.dim = self.token_dim = ci
        self.register_buffer('mean', torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer('std', torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)
    def forward(self, x):
        x = ((x - self.mean) / self.std).contiguous(memory_format=torch.channels_last)
        f = self.body(x).flatten(2).transpose(1, 2)
        if self.pool is None: return EncoderOutput(f.mean(1), f)
        g, t = self.pool(f); return EncoderOutput(g, t)

class EffGrid(nn.Module):
    "ImageNet EfficientNet-Lite0, input resized to `size`, cut after `blocks` blocks (+ optional 1x1 to `width`), pooled."
    def __init__(self, size=128, blocks=11, pool='attn', width=0, pool_layers=1):
        super().__init__()
        from itr_nb.encoders import EfficientNetLite0
        m = EfficientNetLite0().model
        self.stem = nn.Sequential(m._conv_stem, m._bn0, m._swish); self.blocks = m._blocks[:blocks]; self.size = size
        with torch.no_grad(): c = self._feat(torch.zeros(1, 3, 64, 64)).shape
        self.proj = nn.Sequential(nn.Conv2d(c[1], width, 1), nn.BatchNorm2d(width), nn.ReLU()) if width else nn.Identity()
        ci = width or c[1]
        self.pool = AttnPool(ci, c[2] * c[3], pool_layers) if pool == 'attn' else None
        self.dim = self.token_dim = ci
    frozen_blocks = 0
    def low(self, x):
        "The frozen part: input -> output of the first `frozen_blocks` blocks."
        if x.shape[-1] != self.size: x = F.interpolate(x, size=(self.size, self.size), mode='bilinear', align_corners=False)
        h = self.stem(x * 2 - 1)
        for b in self.blocks[:self.frozen_blocks]: h = b(h)
        return h
    def _feat(self, x):
        h = self.low(x) if x.shape[1] == 3 else x
        for b in self.blocks[self.frozen_blocks:]: h = b(h)
        return h
    def forward(self, x):
        f = self.proj(self._feat(x)).flatten(2).transpose(1, 2)
        if self.pool is None: return EncoderOutput(f.mean(1), f)
        g, t = self.pool(f); return EncoderOutput(g, t)

def make_image(name):
    if name == 'small-cnn': return image_encoder('small-cnn')
    if name.startswith('eff'): return EffGrid(**json.loads(name[3:] or '{}'))
    kw = json.loads(name[len('grid'):] or '{}')
    return GridCNN(**kw)

def evaluate_on(model, data):
    from itr_nb.metrics import evaluate
    xs, ys = [], []
    for b in range(0, data.n_images, 250):
        x = data.images[torch.arange(b, min(b + 250, data.n_images))]
        x = x.float().div_(255) if x.dtype == torch.uint8 else x.float()
        xs.append(model.encode_image(x)['x'])
    caps = data.split.captions
    for b in range(0, len(caps), 500): ys.append(model.encode_text(caps[b:b + 500])['y'])
    m = evaluate(torch.cat(xs) @ torch.cat(ys).T, data.split.txt2img, data.rel)
    return {k: m[k] for k in ('rsum', 'i2t_R@1', 't2i_R@1', 'ext_t2i_mAP@R', 'ext_i2t_mAP@R', 'ext_t2i_R-P') if k in m}

def main():
    p = argparse.ArgumentParser()
    p.add_argument('--image', default='grid{}'); p.add_argument('--text-dim', type=int, default=128); p.add_argument('--text-layers', type=int, default=2)
    p.add_argument('--dim', type=int, default=256); p.add_argument('--bs', type=int, default=128); p.add_argument('--lr', type=float, default=1e-3)
    p.add_argument('--steps', type=int, default=1000); p.add_argument('--warmup', type=int, default=100); p.add_argument('--wd', type=float, default=0.05)
    p.add_argument('--eval-every', type=int, default=500); p.add_argument('--seed', type=int, default=0)
    p.add_argument('--train', default=''); p.add_argument('--extra-train', default='')
    p.add_argument('--threads', type=int, default=2); p.add_argument('--text', default='small'); p.add_argument('--freeze-blocks', type=int, default=0); p.add_argument('--out', default=''); p.add_argument('--time-only', type=int, default=0)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    from itr_nb.synth import ensure_benchmark
    ds = a.train or str(ensure_benchmark()/'dataset.json')
    tr = load_split(ds, 'train', 64, join_restval=True, progress=False)
    if a.extra_train:
        ex = load_split(a.extra_train, 'train', 64, progress=False)
        from itr_nb.data import Split
        from itr_nb.splits import SplitData
        s = Split('train+extra', tr.split.image_paths + ex.split.image_paths, tr.split.imgids + ex.split.imgids,
                  tr.split.raw_captions + ex.split.raw_captions, tr.split.captions + ex.split.captions,
                  np.concatenate([tr.split.txt2img, ex.split.txt2img + tr.n_images]), [])
        tr = SplitData(s, torch.cat([tr.images[:], ex.images[:]]), None, ds)
    va = load_split(ds, 'val', 64, limit=500, progress=False)
    te = load_split(ds, 'test', 64, max_captions_per_image=5, progress=False)
    seed_everything(a.seed)
    if a.text == 'minilm-frozen':
        te_ = text_encoder('minilm').eval()
        def enc_all(caps):
            order = np.argsort([len(c) for c in caps]); out = torch.empty(len(caps), 384)
            with torch.no_grad():
                for b in range(0, len(caps), 512):
                    j = order[b:b+512]; out[torch.as_tensor(j)] = te_([caps[k] for k in j]).global_
            return out
        t0 = time.perf_counter()
        feats = {n: enc_all(d.split.captions) for n, d in (('tr', tr), ('va', va), ('te', te))}
        print(f"minilm features {time.perf_counter()-t0:.0f}s", flush=True)
        class Lookup(nn.Module):
            def __init__(s): super().__init__(); s.dim = s.token_dim = 384; s.table = None
            def forward(s, caps): return EncoderOutput(s.table[torch.as_tensor([s.index[c] for c in caps])])
        txt = Lookup()
        def use(name, d):
            txt.table = feats[name]; txt.index = {c: k for k, c in enumerate(d.split.captions)}
        use('tr', tr)
    else: txt = text_encoder('small-transformer', dim=a.text_dim, layers=a.text_layers)
    model = DualEncoder(make_image(a.image), txt, a.dim)
    lowc = {}
    if a.freeze_blocks:
        ie = model.image_enc; ie.frozen_blocks = a.freeze_blocks
        for m in [ie.stem, *ie.blocks[:a.freeze_blocks]]: m.requires_grad_(False)
        t0 = time.perf_counter()
        with torch.no_grad():
            for n, d in (('tr', tr), ('va', va), ('te', te)):
                for m in [ie.stem, *ie.blocks[:a.freeze_blocks]]: m.eval()
                lowc[n] = torch.cat([ie.low(d.images[torch.arange(b, min(b + 500, d.n_images))].float() / 255).half() for b in range(0, d.n_images, 500)])
        print(f"low-level cache {tuple(lowc['tr'].shape)} {time.perf_counter()-t0:.0f}s", flush=True)
        from itr_nb.splits import SplitData as SD
        class Arr:
            def __init__(s, t): s.t = t
            def __getitem__(s, i): return s.t[i].float()
        for n, d in (('tr', tr), ('va', va), ('te', te)): d.images = Arr(lowc[n])
        model.train_ = model.train
        def train(mode=True):
            model.train_(mode)
            for m in [ie.stem, *ie.blocks[:a.freeze_blocks]]: m.eval()
            return model
        model.train = train
    loss_fn = ContrastiveLoss()
    opt = torch.optim.AdamW(param_groups([model, loss_fn], a.wd), lr=a.lr)
    sch = cosine_schedule(opt, a.steps, 1e-6, a.warmup)
    nparam = sum(p.numel() for p in model.image_enc.parameters())
    print(f"image encoder params {nparam/1e6:.2f}M; train {tr.n_images} images {tr.n_captions} captions", flush=True)
    step, ep, t0, hist, tl = 0, 0, time.perf_counter(), [], []
    train_secs = 0.0
    while step < a.steps:
        for b in pair_batches(tr, a.bs, ep, a.seed, per_caption=True):
            ts = time.perf_counter()
            model.train()
            out = model(b['images'], b['captions'])
            loss = loss_fn(out['x'], out['y'], b['img_idx'])
            opt.zero_grad(set_to_none=True); loss.backward(); opt.step(); sch.step(); clamp_temperatures_(loss_fn)
            train_secs += time.perf_counter() - ts
            tl.append(loss.item()); step += 1
            if a.time_only and step == a.time_only:
                print(f"secs/step {train_secs/step:.3f}"); return
            if step % a.eval_every == 0 or step == a.steps:
                model.eval()
                if a.text == 'minilm-frozen': use('va', va)
                with torch.no_grad(): v = evaluate_on(model, va)
                if a.text == 'minilm-frozen': use('tr', tr)
                hist.append(dict(step=step, train_secs=train_secs, loss=float(np.mean(tl[-100:])), tau=loss_fn.temperature().item(), **{f'val_{k}': x for k, x in v.items()}))
                print(json.dumps(hist[-1]), flush=True)
            if step >= a.steps: break
        ep += 1
    model.eval()
    if a.text == 'minilm-frozen': use('te', te)
    with torch.no_grad(): t = evaluate_on(model, te)
    res = dict(args=vars(a), train_secs=train_secs, hist=hist, test=t)
    print('TEST', json.dumps(t), f"train {train_secs:.0f}s", flush=True)
    if a.out:
        os.makedirs(os.path.dirname(a.out) or '.', exist_ok=True); json.dump(res, open(a.out, 'w'), indent=1)
        torch.save(model.state_dict(), a.out.replace('.json', '.pt'))

if __name__ == '__main__': main()
