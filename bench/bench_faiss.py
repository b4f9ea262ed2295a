"""Query time of top-K retrieval over large galleries: torch matrix product vs FAISS exact vs FAISS IVF / HNSW.

Clustered unit vectors stand in for a model's embeddings (real embeddings are clustered; uniform random vectors
are the worst case for approximate indexes): `--clusters` centres, each item a centre plus Gaussian noise of
`--noise` per dimension, normalised; queries are drawn the same way. For each gallery size it builds each index
once (build time reported apart) and times searching all queries, in one run and side by side, then prints seconds,
the ratio to the torch product, and each approximate index's recall@K against the exact top K.

    .venv/bin/python bench/bench_faiss.py                          # 100K and 1M items, 1,000 queries, d = 128
    .venv/bin/python bench/bench_faiss.py --sizes 100000 --dim 256 --threads 2
"""
import argparse, gc, time
from common import timed
import numpy as np, torch
from itr_nb.search import torch_topk, build_index, search_index, recall_at_k


def clustered(n, d, centres, noise, rng, block=200_000):
    "n unit vectors near random centres, float32, made in blocks to bound memory."
    out = np.empty((n, d), np.float32)
    for a in range(0, n, block):
        b = min(n, a + block)
        x = centres[rng.integers(len(centres), size=b - a)] + noise * rng.standard_normal((b - a, d), dtype=np.float32)
        out[a:b] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out



def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--sizes', type=int, nargs='+', default=[100_000, 1_000_000], help='gallery sizes')
    p.add_argument('--queries', type=int, default=1000); p.add_argument('--dim', type=int, default=128); p.add_argument('--k', type=int, default=10)
    p.add_argument('--clusters', type=int, default=1000); p.add_argument('--noise', type=float, default=0.1)
    p.add_argument('--nprobe', type=int, default=16, help='IVF cells searched per query (nlist: a power of two near sqrt(n))')
    p.add_argument('--hnsw-m', type=int, default=16); p.add_argument('--ef-construction', type=int, default=40); p.add_argument('--ef-search', type=int, default=128)
    p.add_argument('--hnsw-max', type=int, default=100_000, help='build HNSW only up to this gallery size (its build is slow on 2 cores)')
    p.add_argument('--threads', type=int, default=2); p.add_argument('--repeat', type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    import faiss; faiss.omp_set_num_threads(a.threads)
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((a.clusters, a.dim), dtype=np.float32) / np.sqrt(a.dim)
    Q = clustered(a.queries, a.dim, centres, a.noise, rng)
    print(f"{a.queries} queries, d = {a.dim}, top {a.k}, {a.threads} threads, {a.clusters} clusters (noise {a.noise})")
    for n in a.sizes:
        G = clustered(n, a.dim, centres, a.noise, rng)
        t_torch, (_, exact) = timed(lambda: torch_topk(Q, G, a.k), a.repeat)
        rows = [('torch matmul + topk (blocked)', 0.0, t_torch, None)]
        kinds = [('faiss exact (IndexFlatIP)', 'exact', {}, {}),
                 (f'faiss IVF (nprobe {a.nprobe})', 'ivf', {}, dict(nprobe=a.nprobe))]
        if n <= a.hnsw_max: kinds.append((f'faiss HNSW (M {a.hnsw_m}, ef {a.ef_search})', 'hnsw', dict(hnsw_m=a.hnsw_m, ef_construction=a.ef_construction), dict(ef_search=a.ef_search)))
        for name, kind, bkw, skw in kinds:
            t0 = time.perf_counter(); idx = build_index(G, kind, **bkw); t_build = time.perf_counter() - t0
            t, (_, i) = timed(lambda: search_index(idx, Q, a.k, **skw), a.repeat)
            if kind == 'ivf': name += f', nlist {idx.nlist}'
            rows.append((name, t_build, t, recall_at_k(i, exact)))
            del idx; gc.collect()
        print(f"\ngallery {n:,} items ({G.nbytes / 2**20:.0f} MiB)")
        print(f"{'':44s}{'build s':>9s}{'query s':>9s}{'x torch':>9s}{'ms/query':>10s}{'recall@' + str(a.k):>11s}")
        for name, tb, t, r in rows:
            print(f"{name:44s}{tb:9.2f}{t:9.3f}{t / t_torch:9.3f}{1000 * t / a.queries:10.3f}{'' if r is None else f'{r:11.3f}'}")
        del G; gc.collect()


if __name__ == '__main__':
    main()
