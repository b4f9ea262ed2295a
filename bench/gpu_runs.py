"""Short CUSA, TGDT and TTD trainings on one GPU, in each precision: training images/s and peak GPU memory.

The embedded benchmark's generator makes a small training split (images at 64 px, five captions each); each method
trains through the functions its template calls (`train_retrieval`, `train_ttd`) for `--epochs` epochs with the
small from-scratch towers, and the last epoch's training time (validation excluded) gives images/s = steps x batch /
seconds. Peak memory is `torch.cuda.max_memory_allocated()` over that run (reset before it). All runs happen in one
process, one after the other, with the same data, so the ratios between precisions and methods are side by side.
scripts/gpu_check.sh runs it; on the CPU (--device cpu) it checks the same code path, without memory figures.

    python bench/gpu_runs.py                              # cuda, 2048 training images, 2 epochs, batch 128
    python bench/gpu_runs.py --device cpu --n-train 64 --epochs 1 --batch-size 32
"""
import argparse, json, tempfile, time
from pathlib import Path
import torch


def run(method, precision, data, args):
    "Train `method` once in `precision`; (images/s of the last epoch, peak MiB or None, last training loss)."
    from itr_nb.retrieval import ModelConfig, train_retrieval
    from itr_nb.train import TrainConfig
    from itr_nb.encoders import image_encoder, text_encoder
    train, val, ds, feats = data
    cfg = TrainConfig(epochs=args.epochs, lr=3e-4, precision=precision, device=args.device, seed=0,
                      grad_clip=0.0 if method == 'cusa' else 2.0)
    cuda = torch.device(args.device).type == 'cuda'
    if cuda: torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats()
    if method == 'cusa':
        from itr_nb.cusa import CUSAObjective
        _, _, h = train_retrieval(train, val, ModelConfig(dim=128), cfg, CUSAObjective(*feats, alpha=0.1, beta=0.5, tau_t=1.0),
                                  batch_size=args.batch_size, progress=False)
    elif method == 'tgdt':
        from itr_nb.tgdt import TGDT, TGDTObjective
        torch.manual_seed(0)
        m = TGDT(image_encoder('small-cnn'), text_encoder('small-transformer'), 256, 2, 4, image_size=train.images.shape[-1])
        _, _, h = train_retrieval(train, val, ModelConfig(), cfg, TGDTObjective(), batch_size=args.batch_size, progress=False, model=m)
    else:
        from itr_nb.ttd import build_ttd_model, TTDObjective, train_ttd, load_tag_truth
        m = build_ttd_model(ModelConfig(dim=128), 0, dict(widths=[16, 32, 64]))
        h = train_ttd(m, TTDObjective(), train, val, load_tag_truth(ds, val), cfg, batch_size=args.batch_size, progress=False)
    if cuda: torch.cuda.synchronize()
    steps = train.n_images // args.batch_size
    peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else None
    return steps * args.batch_size / h[-1]['secs'], peak, h[-1]['train_loss']


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--device', default='cuda'); p.add_argument('--n-train', type=int, default=2048)
    p.add_argument('--epochs', type=int, default=2); p.add_argument('--batch-size', type=int, default=128)
    p.add_argument('--methods', default='cusa,tgdt,ttd'); p.add_argument('--precisions', default='bf16,fp32')
    p.add_argument('--workers', type=int, default=4); p.add_argument('--out', default=None, help='also write the table as JSON')
    args = p.parse_args()
    if torch.device(args.device).type == 'cuda' and not torch.cuda.is_available(): raise SystemExit('gpu_runs: no CUDA GPU visible to torch')
    from itr_nb.synth import build_benchmark
    from itr_nb.splits import load_split
    from itr_nb.cusa import teacher_features
    tmp = Path(tempfile.mkdtemp(prefix='gpu_runs-'))
    t0 = time.perf_counter()
    ds = build_benchmark(tmp/'synth', seed=0, n_train=args.n_train, n_val=min(256, args.n_train), n_test=32, image_size=64,
                         workers=args.workers, progress=False)/'dataset.json'
    train, val = load_split(ds, 'train', 64, progress=False, cache_dir=tmp/'cache'), load_split(ds, 'val', 64, progress=False, cache_dir=tmp/'cache')
    torch.manual_seed(0)   # CUSA's teachers: the small towers, random and frozen (the timing does not depend on what they learned)
    feats = teacher_features(train, ds, 'small-cnn', 'small-transformer', 64, tmp/'cusa', device=args.device, progress=False) \
        if 'cusa' in args.methods else None
    print(f"data: {train.n_images} training images at 64 px, {val.n_images} val ({time.perf_counter() - t0:.0f} s); "
          f"device {args.device}{' (' + torch.cuda.get_device_name() + ')' if torch.device(args.device).type == 'cuda' else ''}; "
          f"{args.epochs} epochs of {train.n_images // args.batch_size} steps, batch {args.batch_size}")
    rows = []
    print(f"{'method':8} {'precision':9} {'images/s':>10} {'peak MiB':>9} {'loss':>8} {'secs':>6}")
    for method in args.methods.split(','):
        for prec in args.precisions.split(','):
            t = time.perf_counter()
            ips, peak, loss = run(method, prec, (train, val, ds, feats), args)
            rows.append(dict(method=method, precision=prec, images_per_s=ips, peak_mib=peak, train_loss=loss, secs=time.perf_counter() - t))
            print(f"{method:8} {prec:9} {ips:10.0f} {'-' if peak is None else f'{peak:.0f}':>9} {loss:8.4f} {rows[-1]['secs']:6.1f}", flush=True)
    for method in args.methods.split(','):
        r = {x['precision']: x for x in rows if x['method'] == method}
        if 'bf16' in r and 'fp32' in r: print(f"{method}: bf16 / fp32 images/s {r['bf16']['images_per_s'] / r['fp32']['images_per_s']:.2f}")
    if args.out: Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == '__main__':
    main()
