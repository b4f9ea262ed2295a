"""Images to training batches: the old in-memory `load_split` against the decode-once image cache, side by side.

Generates photo-like JPEGs (smooth random colour fields, gradients and grain, so decoding costs what a photo costs)
shaped like Flickr30K's (500 x 375) and, for the projections, COCO's (640 x 480), plus a Karpathy file listing them.
Then, each step in its own subprocess (so peak RSS, threads and imports do not leak from one into another), at
`--size` px, on one thread per process:

- load_split (old): today's path before the cache, kept here as a reference implementation: every image decoded and
  squashed in one process into a list of uint8 tensors, then `torch.stack`;
- cache build with 1 and with 2 worker processes (`itr_nb.splits.load_split`, `resize='crop'`, a fresh cache);
- cached read: the next run's `load_split` finds the cache, then reads every image once, in batches of 128 rows in
  a random order (what an epoch asks of it);
- DataLoader: one epoch of `pair_batches` (batch 128, 2 workers) over the cache, batches/s;
- peak RSS (the largest of the process and its workers) of a whole run - cache build, one epoch, a pass for
  evaluation - at N and 4N images, and of the old path at N and 4N;
- decoding alone on COCO-shaped JPEGs: Pillow, simplejpeg, Pillow's draft mode;
- rates at 224 and 336 px on both shapes, for the projected table of Flickr30K (31,783 images) and COCO (123,287).

    .venv/bin/python bench/bench_data.py              # N = 1000
    .venv/bin/python bench/bench_data.py --n 200      # quick
"""
import argparse, json, os, resource, subprocess, sys, time
from pathlib import Path
import numpy as np

HERE = Path(__file__).resolve().parent
CORPORA = {'Flickr30K': (31783, 'flickr'), 'COCO': (123287, 'coco')}
SHAPES = {'flickr': (500, 375), 'coco': (640, 480)}


def photo(rng, w, h):
    "A photo-like RGB image: a smooth colour field, a gradient and fine grain."
    from PIL import Image
    lo = rng.integers(0, 256, (h // 24 + 2, w // 24 + 2, 3), dtype=np.uint8)
    f = np.asarray(Image.fromarray(lo).resize((w, h), Image.BICUBIC), np.float32)
    f += np.linspace(-30, 30, w, dtype=np.float32)[None, :, None] * rng.uniform(-1, 1, 3).astype(np.float32)
    f += rng.normal(0, 6, f.shape).astype(np.float32)
    return Image.fromarray(f.clip(0, 255).astype(np.uint8))


def make_corpus(root, n, shape, seed=0):
    "`n` JPEGs of `shape` under root/images and root/dataset.json listing them (split train), reused if present."
    root = Path(root); ds = root/'dataset.json'
    if ds.exists() and len(json.loads(ds.read_text())['images']) == n: return ds
    (root/'images').mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    ims = []
    for k in range(n):
        p = root/'images'/f'{k:06d}.jpg'
        if not p.exists(): photo(rng, *shape).save(p, quality=90)
        ims.append(dict(filename=f'{k:06d}.jpg', filepath='images', imgid=k, split='train', sentences=[dict(raw=f'photo number {k}')]))
    ds.write_text(json.dumps(dict(images=ims)))
    return ds


# ---- the old path, as `itr_nb.data.read_image` / `load_images` were before the cache (reference implementation)
def old_read_image(path, size):
    import torch
    from PIL import Image
    with Image.open(path) as im:
        im = im.convert('RGB')
        if size is not None and im.size != (size, size): im = im.resize((size, size), Image.BICUBIC)
        a = np.asarray(im, dtype=np.uint8).copy()
    return torch.from_numpy(a).permute(2, 0, 1).float().div_(255)

def old_load_split(ds, size):
    import torch
    from itr_nb.data import load_karpathy
    s = load_karpathy(ds).split('train')
    return torch.stack([(old_read_image(p, size) * 255).round_().to(torch.uint8) for p in s.image_paths])


# ---- tasks, each run in a fresh subprocess: `bench_data.py --task NAME --arg JSON` prints one JSON line
def peak_rss_mib():
    "The largest peak RSS of this process and of any child it waited for (DataLoader workers), in MiB."
    return max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024

def task(name, a):
    import torch
    torch.set_num_threads(1)
    from itr_nb.data import Preprocess
    from itr_nb.splits import load_split, pair_batches
    pre = Preprocess(a['size'], 'crop')
    t0 = time.perf_counter()
    if name == 'old':
        x = old_load_split(a['ds'], a['size'])
        return dict(secs=time.perf_counter() - t0, n=len(x), rss=peak_rss_mib())
    if name == 'build':
        d = load_split(a['ds'], 'train', preprocess=pre, workers=a['workers'], cache_dir=a['cache'], progress=False)
        return dict(secs=time.perf_counter() - t0, n=d.n_images, rss=peak_rss_mib())
    if name == 'read':
        d = load_split(a['ds'], 'train', preprocess=pre, cache_dir=a['cache'], progress=False)   # found, not built
        order = torch.randperm(d.n_images, generator=torch.Generator().manual_seed(0))
        t1 = time.perf_counter()
        for b in range(0, d.n_images, 128): d.images[order[b:b + 128]]
        t2 = time.perf_counter()
        for b in range(0, d.n_images, 128): d.images[order[b:b + 128]]             # a second epoch's reads
        return dict(secs=t2 - t1, again_secs=time.perf_counter() - t2, open_secs=t1 - t0, n=d.n_images, rss=peak_rss_mib())
    if name == 'loader':
        d = load_split(a['ds'], 'train', preprocess=pre, cache_dir=a['cache'], progress=False)
        t1 = time.perf_counter(); k = 0
        for b in pair_batches(d, 128, workers=2, drop_last=False): k += 1
        return dict(secs=time.perf_counter() - t1, batches=k, rss=peak_rss_mib())
    if name == 'run':        # a whole run's data side: build the cache, an epoch of batches, a pass for evaluation
        d = load_split(a['ds'], 'train', preprocess=pre, workers=2, cache_dir=a['cache'], progress=False)
        for b in pair_batches(d, 128, workers=2): pass
        for b in range(0, d.n_images, 256): d.images[b:b + 256].float().div_(255)
        return dict(secs=time.perf_counter() - t0, n=d.n_images, rss=peak_rss_mib())
    if name == 'decode':     # decoding + preprocessing alone, three ways, on the same files
        import itr_nb.data as D
        from itr_nb.data import load_karpathy
        paths = load_karpathy(a['ds']).split('train').image_paths
        out = {}
        for how in ('pillow', 'simplejpeg', 'pillow draft'):
            sj = D.simplejpeg
            if how != 'simplejpeg': D.simplejpeg = None
            p = Preprocess(a['size'], 'crop', draft=how == 'pillow draft')
            D.load_image(paths[0], p)                                              # warm
            t1 = time.perf_counter()
            for q in paths: D.load_image(q, p)
            out[how] = len(paths) / (time.perf_counter() - t1)
            D.simplejpeg = sj
        return out
    raise SystemExit(f'unknown task {name}')

def run_task(name, **a):
    env = dict(os.environ, OMP_NUM_THREADS='1', MKL_NUM_THREADS='1', TOKENIZERS_PARALLELISM='false')
    r = subprocess.run([sys.executable, __file__, '--task', name, '--arg', json.dumps(a, default=str)], capture_output=True, text=True, env=env)
    if r.returncode: raise SystemExit(f'task {name} failed:\n{r.stdout}\n{r.stderr}')
    return json.loads(r.stdout.strip().splitlines()[-1])


def fresh(d):
    import shutil
    shutil.rmtree(d, ignore_errors=True); return d

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--task'); p.add_argument('--arg')
    p.add_argument('--n', type=int, default=1000, help='N: images of the main corpus (the RSS check also uses 4N)')
    p.add_argument('--size', type=int, default=224)
    p.add_argument('--sample', type=int, default=300, help='images per shape and size for the projection rates')
    p.add_argument('--out', default=str(HERE/'out'/'data'), help='where the JPEGs and caches go')
    a = p.parse_args()
    if a.task:
        print(json.dumps(task(a.task, json.loads(a.arg)))); return
    out, N, S = Path(a.out), a.n, a.size
    t0 = time.perf_counter()
    ds = {n: make_corpus(out/f'flickr{n}', n, SHAPES['flickr']) for n in (N, 4 * N)}
    samples = {k: make_corpus(out/f'{k}{a.sample}', a.sample, SHAPES[k], seed=1) for k in SHAPES}
    print(f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}; corpora ready in {time.perf_counter() - t0:.0f} s "
          f"({N} and {4 * N} Flickr-shaped, {a.sample} per shape for projections); {S} px, one thread per process")
    cache = out/'cache'
    old = run_task('old', ds=ds[N], size=S)
    b1 = run_task('build', ds=ds[N], size=S, workers=1, cache=fresh(cache/'b1'))
    b2 = run_task('build', ds=ds[N], size=S, workers=2, cache=fresh(cache/'b2'))
    rd = run_task('read', ds=ds[N], size=S, cache=cache/'b2')
    ld = run_task('loader', ds=ds[N], size=S, cache=cache/'b2')
    rate = lambda r: r['n'] / r['secs']
    A, B, C, D = rate(old), rate(b1), rate(b2), rate(rd)
    print(f"load_split (old, in memory, squash): {A:8.0f} images/s   {old['secs']:6.1f} s   peak RSS {old['rss']:6.0f} MiB")
    print(f"cache build, 1 worker (crop):        {B:8.0f} images/s   {b1['secs']:6.1f} s   ({B / A:.2f} x old)")
    print(f"cache build, 2 workers (crop):       {C:8.0f} images/s   {b2['secs']:6.1f} s   ({C / A:.2f} x old; aim >= 1.6)")
    print(f"cached read (random batches of 128): {D:8.0f} images/s   {rd['secs']:6.2f} s   ({D / A:.0f} x old; aim >= 50); a second pass {rd['n'] / rd['again_secs']:.0f} images/s; finding the cache {rd['open_secs'] * 1e3:.0f} ms")
    print(f"DataLoader (2 workers, batch 128):   {ld['batches'] / ld['secs']:8.1f} batches/s ({ld['batches'] * 128 / ld['secs']:.0f} images/s)")
    runs = {n: run_task('run', ds=ds[n], size=S, cache=fresh(cache/f'run{n}')) for n in (N, 4 * N)}
    olds = {N: old, 4 * N: run_task('old', ds=ds[4 * N], size=S)}
    E, F = runs[N]['rss'], runs[4 * N]['rss']
    print(f"peak RSS of a run (build + epoch + eval pass): {E:.0f} MiB at {N}, {F:.0f} MiB at {4 * N} (+{F - E:.0f}; aim < 150); "
          f"old path: {olds[N]['rss']:.0f} MiB at {N}, {olds[4 * N]['rss']:.0f} MiB at {4 * N}")
    dec = run_task('decode', ds=samples['coco'], size=S)
    print(f"decode + preprocess, COCO-shaped JPEGs at {S} px (one process): " +
          ', '.join(f"{k} {v:.0f} images/s" for k, v in dec.items()) + f" (draft {dec['pillow draft'] / dec['pillow']:.2f} x Pillow)")
    # projections: rates measured on each shape and size, memory from the measured per-image RSS of the old path
    per_img = (olds[4 * N]['rss'] - olds[N]['rss']) / (3 * N) / (S * S)           # MiB per image per pixel, old path
    rates = {}
    for k in SHAPES:
        for s in (224, 336):
            rates[k, s] = (rate(run_task('old', ds=samples[k], size=s)), rate(run_task('build', ds=samples[k], size=s, workers=2, cache=fresh(cache/f'p{k}{s}'))),
                           run_task('run', ds=samples[k], size=s, cache=fresh(cache/f'r{k}{s}'))['rss'])
    print(f"\nprojected from rates measured here on {a.sample} images per shape and size ({os.cpu_count()} cores; old = decoded into memory "
          f"every run; new = cache built once with 2 workers, then read; new peak memory = a run's, measured, independent of the corpus size):")
    print(f"| corpus | px | old: load every run | old: peak memory | new: first run | new: later runs | new: peak memory | cache on disk |")
    print(f"|---|---|---|---|---|---|---|---|")
    for c, (n, k) in CORPORA.items():
        for s in (224, 336):
            ro, rn, rss = rates[k, s]
            print(f"| {c} ({n:,}) | {s} | {n / ro / 60:.1f} min | {per_img * s * s * n / 1024:.1f} GiB | {n / rn / 60:.1f} min | "
                  f"{n / D * (s / S) ** 2:.0f} s of reads per epoch | {rss:.0f} MiB | {3 * s * s * n / 2**30:.1f} GiB |")
    print(f"\nimages/s: load_split {A:.0f}, cache build {B:.0f} (1 worker) {C:.0f} (2 workers), cached read {D:.0f}; "
          f"peak RSS {E:.0f} MiB at {N}, {F:.0f} MiB at {4 * N}")


if __name__ == '__main__':
    main()
