"""Which candidate words a model's pixel-level tag scores favour: the single-tag bias, word by word.

For a TTD checkpoint (or any `best.safetensors` of the dual encoder) on the validation split, prints the ROC AUC of
the image-level and pixel-level scores for the true tags, and for the most frequent candidate words whether they are
true tags and their mean min-max normalised pixel score (1 = the caption's top tag).

    .venv/bin/python bench/ttd_tag_words.py runs/ttd_baseline/best.safetensors --limit 300
"""
import argparse
from collections import defaultdict
import numpy as np
from itr_nb.synth import ensure_benchmark
from itr_nb.retrieval import load_split
from itr_nb.ttd import load_tag_truth, load_ttd_model, dense_eval, selection_auc


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('checkpoint'); p.add_argument('--split', default='val'); p.add_argument('--limit', type=int, default=300)
    p.add_argument('--words', type=int, default=20, help='how many of the most frequent candidate words to list')
    a = p.parse_args()
    ds = ensure_benchmark()/'dataset.json'
    data = load_split(ds, a.split, 64, limit=a.limit)
    ev = dense_eval(load_ttd_model(a.checkpoint), data, load_tag_truth(ds, data))
    v, t = ev['valid'], ev['truth']
    print(f"{a.split}, {data.n_images} images, {int(v.sum())} candidate tags ({100 * float(t[v].float().mean()):.1f}% true)")
    print(f"ROC AUC for true tags: image-level {selection_auc(ev['image'], t, v):.1f}, pixel-level {selection_auc(ev['pixel'], t, v):.1f}")
    scores = defaultdict(list)
    for c, k in zip(*np.nonzero(v.numpy())):
        scores[(ev['vocab'][ev['idx'][c, k]], bool(t[c, k]))].append(float(ev['pixel'][c, k]))
    print(f"{'word':>12} {'true tag':>8} {'count':>6} {'mean pixel score':>17}")
    for (w, tt), xs in sorted(scores.items(), key=lambda kv: -len(kv[1]))[:a.words]:
        print(f"{w:>12} {str(tt):>8} {len(xs):6d} {np.mean(xs):17.2f}")


if __name__ == '__main__': main()
