"""COCO-5K-sized retrieval evaluation: itr_nb.metrics against the bare similarity product and the field's usual code.

    .venv/bin/python bench/bench_metrics.py [--repeats 2] [--chunk 1024]

5,000 images x 25,000 captions (5 per image), random 512-d unit vectors. Timed in one run, on the same machine:
- product:   `img @ txt.T` in torch (float32), the matrix every evaluation starts from;
- itr_nb:    `evaluate(sim, txt2img, rel=one-to-one positives)`: i2t/t2i R@1/5/10, RSUM, median/mean rank,
             plus mAP@R, R-P and R@1 with the positives as an extended-positive matrix;
- clip-style: CLIP_benchmark's formulation, re-written here: per K, top-K indices -> one-hot [queries, K, gallery]
             (int64) times the positive mask, summed; run on a slice of the queries and scaled up;
- sort-all:  torch.sort of every query's full row, then the position of its best positive; sliced and scaled;
- vse-loop:  VSE's per-query Python loop (np.argsort of one row, np.where for each positive); sliced and scaled.
Memory: peak resident memory above the level before the call, from the kernel's high-water mark (VmHWM in
/proc/self/status, reset by writing 5 to /proc/self/clear_refs; freed heap is returned with malloc_trim first). It
counts everything the process touches (numpy, torch, scipy), unlike tracemalloc, which misses torch's allocations.
Scaled figures (marked ~) assume time and memory linear in the number of queries, as they are for these codes.
"""
import argparse, ctypes, gc, time
from pathlib import Path
import numpy as np, scipy.sparse as sp, torch
from itr_nb.metrics import evaluate, format_table

def _status(key):
    for line in Path('/proc/self/status').read_text().splitlines():
        if line.startswith(key): return int(line.split()[1]) * 1024
    return None

def measure(f, repeats=1):
    "Best wall time over `repeats` calls of `f`, its last result, and peak extra resident bytes (None if unavailable)."
    best, peak, out = float('inf'), 0, None
    for _ in range(repeats):
        out = None; gc.collect()
        try: ctypes.CDLL('libc.so.6').malloc_trim(0)
        except OSError: pass
        base = _status('VmRSS:')
        try: Path('/proc/self/clear_refs').write_text('5')
        except OSError: base = None
        t0 = time.perf_counter(); out = f(); best = min(best, time.perf_counter() - t0)
        if base is not None: peak = max(peak, _status('VmHWM:') - base)
    return best, out, (peak if base is not None else None)

def clip_style(scores, pos, ks=(1, 5, 10)):
    "Per K: one-hot of the top-K indices [Q, K, gallery] times the positive mask; a hit if any positive is in the top K."
    out = {}
    for k in ks:
        top = torch.topk(scores, k, dim=1).indices
        tp = (torch.nn.functional.one_hot(top, scores.shape[1]) * pos[:, None, :]).sum((1, 2))
        out[k] = (tp > 0).float().mean().item()
    return out

def sort_all(scores, pos):
    "Sort each query's whole row; the rank of its best positive."
    order = torch.sort(scores, dim=1, descending=True).indices
    return (pos.gather(1, order).float().argmax(1) + 1)

def vse_loop(sim, txt2img, queries, t2i):
    "VSE-style loop: one np.argsort per query, np.where for each positive."
    ranks = []
    for q in queries:
        if t2i:
            inds = np.argsort(sim[:, q])[::-1]; ranks.append(np.where(inds == txt2img[q])[0][0])
        else:
            inds = np.argsort(sim[q])[::-1]; ranks.append(min(np.where(inds == j)[0][0] for j in np.nonzero(txt2img == q)[0]))
    return np.array(ranks) + 1

def mb(b): return '   n/a' if b is None else f'{b / 2**20:6.0f}'

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--repeats', type=int, default=2); p.add_argument('--chunk', type=int, default=1024)
    p.add_argument('--n-img', type=int, default=5000); p.add_argument('--dim', type=int, default=512)
    a = p.parse_args()
    n, m = a.n_img, 5 * a.n_img
    g = torch.Generator().manual_seed(0)
    img = torch.nn.functional.normalize(torch.randn(n, a.dim, generator=g), dim=1)
    txt = torch.nn.functional.normalize(torch.randn(m, a.dim, generator=g), dim=1)
    t2i = np.arange(m) // 5
    one = sp.csr_matrix((np.ones(m, bool), (t2i, np.arange(m))), shape=(n, m))
    print(f'{n} images x {m} captions, d={a.dim}, torch threads {torch.get_num_threads()}, best of {a.repeats}')

    t_mm, sim, m_mm = measure(lambda: img @ txt.T, a.repeats)
    t_ev, res, m_ev = measure(lambda: evaluate(sim, t2i, rel=one, chunk=a.chunk), a.repeats)
    print(format_table(res))

    rows = [('product img @ txt.T', t_mm, m_mm), ('itr_nb evaluate (recall + extended)', t_ev, m_ev)]
    # CLIP_benchmark style: a slice of each direction, scaled to all queries
    qi, qt = max(n // 100, 1), max(m // 100, 1)
    pos = torch.from_numpy(one.toarray())
    t_a, _, m_a = measure(lambda: clip_style(sim[:qi], pos[:qi]))
    t_b, _, m_b = measure(lambda: clip_style(sim.T[:qt].contiguous(), pos.T[:qt].contiguous()))
    rows.append(('~clip-style one-hot top-K (scaled)', t_a * n / qi + t_b * m / qt, max(m_a * n / qi, m_b * m / qt)))
    t_a, _, m_a = measure(lambda: sort_all(sim[:qi], pos[:qi]))
    t_b, _, m_b = measure(lambda: sort_all(sim.T[:qt].contiguous(), pos.T[:qt].contiguous()))
    rows.append(('~sort-all per query (scaled)', t_a * n / qi + t_b * m / qt, max(m_a * n / qi, m_b * m / qt)))
    s = sim.numpy(); vi, vt = max(n // 200, 1), max(m // 500, 1)
    t_a, _, _ = measure(lambda: vse_loop(s, t2i, range(vi), False))
    t_b, _, _ = measure(lambda: vse_loop(s, t2i, range(vt), True))
    rows.append(('~vse per-query loop (scaled)', t_a * n / vi + t_b * m / vt, None))

    print(f'\n{"":38s} {"seconds":>8s} {"x product":>10s} {"peak extra MiB":>15s}')
    for name, t, mem in rows: print(f'{name:38s} {t:8.2f} {t / t_mm:10.2f} {mb(mem):>15s}')
    print(f'\nitr_nb evaluate / product = {t_ev / t_mm:.2f} (target < 2); peak extra memory {mb(m_ev).strip()} MiB '
          f'(target < 1024); the similarity matrix itself is {sim.numel() * 4 / 2**20:.0f} MiB')

if __name__ == '__main__': main()
