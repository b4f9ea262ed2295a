"""TGDT inference time: two-stage retrieval against exhaustive local matching as the gallery grows.

Random unit-norm features stand in for a trained model's embeddings (the time does not depend on their values):
images = captions / 5, R regions per image, W words per caption (lengths drawn in [W/2, W], padded), width d.
For each size it times, in one run and side by side: global-only scores (one matrix product), exhaustive local
similarity (`itr_nb.tgdt.local_sim`, every image with every caption) and two-stage inference (`two_stage`: stage 1
plus local matching of the top K for both directions). Prints seconds and the ratios, and beside two-stage/local
the pair share: the (image, caption) pairs two-stage scores locally, N*K_i2t + M*K_t2i, over the N*M of exhaustive
local. Divided by the pair share, stage 2/local is the local matching's cost per pair against exhaustive's (1: the
same), and two-stage/local the same with stage 1 (the global product and the top-K of both directions) included.

    .venv/bin/python bench/bench_tgdt.py --dim 128             # 1K, 5K, 25K captions
    .venv/bin/python bench/bench_tgdt.py --sizes 5000 25000 --threads 2 --device cuda
"""
import argparse, time
from common import timed
import torch, torch.nn.functional as F
from itr_nb.tgdt import local_sim, two_stage


def features(n_img, n_cap, R, W, d, seed=0):
    g = torch.Generator().manual_seed(seed)
    nrm = lambda *s: F.normalize(torch.randn(*s, generator=g), dim=-1)
    lens = torch.randint(W // 2, W + 1, (n_cap,), generator=g)
    tm = torch.arange(W)[None] < lens[:, None]
    return dict(x=nrm(n_img, d), y=nrm(n_cap, d), img_tokens=nrm(n_img, R, d), img_mask=torch.ones(n_img, R, dtype=torch.bool),
                txt_tokens=nrm(n_cap, W, d) * tm[..., None], txt_mask=tm)



def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--sizes', type=int, nargs='+', default=[1000, 5000, 25000], help='captions in the gallery (images = captions / 5)')
    p.add_argument('--regions', type=int, default=16, help='image tokens R (the small CNN at 64 px gives 16)')
    p.add_argument('--words', type=int, default=16, help='longest caption W (tokens)')
    p.add_argument('--dim', type=int, default=256, help='embedding width d')
    p.add_argument('--k-i2t', type=int, default=50); p.add_argument('--k-t2i', type=int, default=100)
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--repeat', type=int, default=1, help='best of this many runs (sizes of 25K: 1 is enough)')
    p.add_argument('--device', default='cpu', help='cpu or cuda: where the features live and everything runs')
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == 'cuda' else (lambda: None)
    print(f"device {dev}, threads {torch.get_num_threads()}, R {a.regions}, W {a.words}, d {a.dim}, K {a.k_i2t} captions / {a.k_t2i} images")
    print(f"{'images x captions':>18} {'global s':>9} {'local s':>9} {'two-stage s':>11} {'stage 2 s':>9} {'local/two-stage':>15} "
          f"{'pair share':>10} {'stage 2/local':>13} {'two-stage/local':>15} {'stage 2 per pair':>16} {'two-stage per pair':>18}")
    for m in a.sizes:
        n = max(1, m // 5); ki, kt = min(a.k_i2t, m), min(a.k_t2i, n)
        e = {k: v.to(dev) for k, v in features(n, m, a.regions, a.words, a.dim).items()}
        run = lambda f: (lambda: (f(), sync())[0])
        tg, _ = timed(run(lambda: e['x'] @ e['y'].T), a.repeat)
        tl, _ = timed(run(lambda: local_sim(e['img_tokens'], e['img_mask'], e['txt_tokens'], e['txt_mask'])), a.repeat)
        tt, r = timed(run(lambda: two_stage(e, ki, kt)), a.repeat)
        share = (n * ki + m * kt) / (n * m)
        s2 = r['stage2_secs']
        print(f"{f'{n} x {m}':>18} {tg:9.3f} {tl:9.2f} {tt:11.3f} {s2:9.3f} {tl / tt:15.1f} "
              f"{share:10.4f} {s2 / tl:13.4f} {tt / tl:15.4f} {s2 / tl / share:16.2f} {tt / tl / share:18.2f}", flush=True)


if __name__ == '__main__': main()
