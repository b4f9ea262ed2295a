"""Encoder speeds on this machine, measured side by side in one run: .venv/bin/python bench/encoders_speed.py
- small-cnn training step (forward + backward + SGD, batch 256) at 64 px: channels_last vs contiguous memory, default
  widths vs 2x wider;
- all-MiniLM-L6-v2 inference, batches of 128: padded per batch (unsorted), sorted by length, padded to 64 tokens."""
import time, torch
from itr_nb.encoders import SmallCNN, text_encoder

def rate(fn, n, reps=5):
    fn(); t = time.perf_counter()
    for _ in range(reps): fn()
    return n * reps / (time.perf_counter() - t)

class Contiguous(SmallCNN):
    def __init__(self, **kw): super().__init__(**kw); self.body.to(memory_format=torch.contiguous_format)
    def forward(self, x): return self.body((x - self.mean) / self.std).mean((2, 3))

def cnn_rate(cls, bs=256, **kw):
    torch.manual_seed(0)
    cnn = cls(**kw).train()
    opt, x = torch.optim.SGD(cnn.parameters(), lr=0.01), torch.rand(bs, 3, 64, 64)
    def step():
        opt.zero_grad(); o = cnn(x); (o.global_ if hasattr(o, 'global_') else o).square().mean().backward(); opt.step()
    return rate(step, bs)

print(f"torch threads {torch.get_num_threads()}")
for kw in [dict(), dict(widths=(32, 64, 128, 256))]:
    a, b = cnn_rate(SmallCNN, **kw), cnn_rate(Contiguous, **kw)
    print(f"small-cnn {kw or 'default'} train step 64 px: channels_last {a:.0f} img/s, contiguous {b:.0f} img/s, ratio {a/b:.2f}")
    with torch.no_grad(): print(f"  inference channels_last {rate(lambda c=SmallCNN(**kw).eval(), x=torch.rand(256, 3, 64, 64): c(x), 256):.0f} img/s")

mini = text_encoder('minilm').eval()
words = 'a man woman dog cat red blue small large sits runs next to on the with near tree car street table'.split()
g = torch.Generator().manual_seed(0)
sents = [' '.join(words[i] for i in torch.randint(len(words), (int(l),), generator=g)) for l in torch.randint(6, 30, (512,), generator=g)]
def enc(ss, bs=128):
    for i in range(0, len(ss), bs): mini(ss[i:i+bs])
def fixed(ss, bs=128):
    for i in range(0, len(ss), bs):
        mini.model(**mini.tok(ss[i:i+bs], padding='max_length', max_length=64, truncation=True, return_tensors='pt'))
with torch.no_grad():
    u, s, f = rate(lambda: enc(sents), 512, 2), rate(lambda: enc(sorted(sents, key=len)), 512, 2), rate(lambda: fixed(sents), 512, 2)
print(f"minilm batch 128 (captions of 6-29 words): per-batch padding {u:.0f} captions/s, sorted by length {s:.0f}, fixed 64 tokens {f:.0f}")
