"""Which candidate words a model's pixel-level tag scores favour: the single-tag bias, word by word and by word class.

For a TTD checkpoint (or any `best.safetensors` of the dual encoder) on a split of the embedded benchmark, prints the
ROC AUC of the image-level and pixel-level scores for the true tags; per word class (colour, shape, size, texture,
generic noun, other words) the share of true tags, the mean min-max normalised image-level and pixel-level scores
(1 = the caption's top tag) and the tag mask IoU (summed intersections over summed unions at one mask threshold);
and for the most frequent candidate words whether they are true tags and their mean pixel score.

    .venv/bin/python bench/ttd_tag_words.py runs/ttd_base/baseline.safetensors --limit 300
"""
import argparse
from collections import defaultdict
import numpy as np
from itr_nb.synth import ensure_benchmark, ATTRS, SYN, GENERIC
from itr_nb.retrieval import load_split
from itr_nb.ttd import load_tag_truth, load_ttd_model, dense_eval, selection_auc


def word_classes() -> dict:
    "word -> class, from the benchmark's vocabulary (a word used by several classes keeps the first; generic nouns first)."
    out = {w: 'generic' for w in GENERIC}
    for a, vals in ATTRS.items():
        for v in vals:
            for phrase in SYN.get(v, [v]):
                for w in phrase.split(): out.setdefault(w, a)
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('checkpoint'); p.add_argument('--split', default='val'); p.add_argument('--limit', type=int, default=300)
    p.add_argument('--words', type=int, default=20, help='how many of the most frequent candidate words to list')
    p.add_argument('--mask-threshold', type=float, default=0.5, help='threshold on min-max normalised tag maps for the IoU')
    a = p.parse_args()
    ds = ensure_benchmark()/'dataset.json'
    data = load_split(ds, a.split, 64, limit=a.limit)
    ev = dense_eval(load_ttd_model(a.checkpoint), data, load_tag_truth(ds, data))
    v, t = ev['valid'], ev['truth']
    k = int(np.argmin(np.abs(ev['thresholds'] - a.mask_threshold)))
    print(f"{a.split}, {data.n_images} images, {int(v.sum())} candidate tags ({100 * float(t[v].float().mean()):.1f}% true)")
    print(f"ROC AUC for true tags: image-level {selection_auc(ev['image'], t, v):.1f}, pixel-level {selection_auc(ev['pixel'], t, v):.1f}")
    cls, by_cls, by_word = word_classes(), defaultdict(lambda: defaultdict(list)), defaultdict(list)
    for c, j in zip(*np.nonzero(v.numpy())):
        w, tt = ev['vocab'][ev['idx'][c, j]], bool(t[c, j])
        g = by_cls[cls.get(w, 'other') if tt else 'other']
        g['true'].append(tt); g['image'].append(float(ev['image'][c, j])); g['pixel'].append(float(ev['pixel'][c, j]))
        if tt: g['inter'].append(float(ev['tag_inter'][c, j, k])); g['union'].append(float(ev['tag_union'][c, j, k]))
        by_word[(w, tt)].append(float(ev['pixel'][c, j]))
    print(f"\n{'class':>10} {'count':>6} {'true %':>7} {'image score':>12} {'pixel score':>12} {'tag IoU @' + str(ev['thresholds'][k]):>13}")
    for name in ('colour', 'shape', 'size', 'texture', 'generic', 'other'):
        g = by_cls.get(name)
        if not g: continue
        iou = 100 * sum(g['inter']) / max(sum(g['union']), 1) if g['union'] else float('nan')
        print(f"{name:>10} {len(g['true']):6d} {100 * np.mean(g['true']):7.1f} {np.mean(g['image']):12.2f} {np.mean(g['pixel']):12.2f} {iou:13.1f}")
    print(f"\n{'word':>12} {'true tag':>8} {'count':>6} {'mean pixel score':>17}")
    for (w, tt), xs in sorted(by_word.items(), key=lambda kv: -len(kv[1]))[:a.words]:
        print(f"{w:>12} {str(tt):>8} {len(xs):6d} {np.mean(xs):17.2f}")


if __name__ == '__main__': main()
