"""Training cost of CUSA against InfoNCE alone, per epoch, with cached teacher features (paper: +4.5%).

Both objectives train their own copy of the same model on the same batches; their epochs alternate in one process so
both see the same machine load. Prints seconds per epoch of each and the ratio.
Usage: .venv/bin/python bench/cusa_cost.py [--limit-train 2000] [--epochs 3] [--batch-size 128]"""
import argparse, time
import torch
from itr_nb.synth import ensure_benchmark
from itr_nb.retrieval import load_split, ModelConfig, build_model, pair_batches, steps_per_epoch
from itr_nb.train import param_groups
from itr_nb.losses import clamp_temperatures_
from itr_nb.cusa import CUSAObjective, teacher_features

p = argparse.ArgumentParser()
p.add_argument('--limit-train', type=int, default=2000); p.add_argument('--epochs', type=int, default=3)
p.add_argument('--batch-size', type=int, default=128); p.add_argument('--threads', type=int, default=0)
a = p.parse_args()
if a.threads: torch.set_num_threads(a.threads)
ds = ensure_benchmark()/'dataset.json'
tr = load_split(ds, 'train', 64, join_restval=True, limit=a.limit_train, progress=False)
fi, ft = teacher_features(tr, ds, teacher_size=64, progress=False)   # cached after the first run
objs = {'InfoNCE': CUSAObjective(alpha=0, beta=0), 'CUSA': CUSAObjective(fi, ft, alpha=0.1, beta=0.5)}
runs = {}
for k, obj in objs.items():
    m = build_model(ModelConfig(), seed=0).train()
    runs[k] = (m, obj, torch.optim.AdamW(param_groups([m, obj]), lr=1e-3))
secs = {k: [] for k in objs}
for ep in range(a.epochs + 1):   # epoch 0 warms up and is not counted
    for k, (m, obj, opt) in runs.items():
        t = time.perf_counter()
        for b in pair_batches(tr, a.batch_size, ep, 0):
            loss = obj(m, b)['loss']; opt.zero_grad(); loss.backward(); opt.step(); clamp_temperatures_(obj)
        if ep: secs[k].append(time.perf_counter() - t)
n = steps_per_epoch(tr, a.batch_size)
for k, s in secs.items(): print(f"{k:8s} {sum(s)/len(s):7.2f} s/epoch ({n} steps of {a.batch_size}; epochs: {', '.join(f'{x:.2f}' for x in s)})")
r = sum(secs['CUSA']) / sum(secs['InfoNCE'])
print(f"CUSA / InfoNCE = {r:.3f} ({100*(r-1):+.1f}% per epoch; paper +4.5%), {tr.n_images} images, torch threads {torch.get_num_threads()}")
