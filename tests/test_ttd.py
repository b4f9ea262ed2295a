"TTD: pixel-level scores and selection, union targets with stop-gradient, mask IoU, truth from the benchmark, the template."
import json, math
from pathlib import Path
import numpy as np, pytest, torch
from itr_nb.ttd import (caption_tags, pad_tags, pixel_scores, minmax_tags, select_tags, selection_metrics, mask_iou,
                        normalise_maps, ttd_targets, TTDObjective, load_tag_truth, dense_eval, similarity_maps)


def _ref_scores(maps, argmax_only):
    "Brute force over tags and pixels, in plain Python."
    T, H, W = maps.shape
    s = []
    for t in range(T):
        vals = [maps[t, y, x] for y in range(H) for x in range(W)
                if not argmax_only or max(range(T), key=lambda u: (maps[u, y, x], -u)) == t]
        s.append(max(vals) if vals else -math.inf)
    fin = [v for v in s if v != -math.inf]
    lo, hi = min(fin), max(fin)
    return s, [(v - lo) / (hi - lo) if v != -math.inf else 0.0 for v in s]


def test_pixel_score_and_selection_hand_built():
    # three tags on a 3 x 3 map: "circle" lights the left column, "square" the right column, "the" is flat and low
    m = np.zeros((3, 3, 3)); m[0, :, 0] = [0.8, 0.9, 0.7]; m[1, :, 2] = [0.6, 0.5, 0.4]; m[2] += 0.05
    maps, v = torch.tensor(m)[None], torch.ones(1, 3, dtype=torch.bool)
    s = pixel_scores(maps, v)[0]
    assert s.tolist() == pytest.approx([0.9, 0.6, 0.05])
    n = minmax_tags(s[None], v)[0]
    assert n.tolist() == pytest.approx([1.0, 0.55 / 0.85, 0.0])
    assert select_tags(n[None], v, 0.5)[0].tolist() == [True, True, False]
    assert select_tags(n[None], v, 0.7)[0].tolist() == [True, False, False]
    for am in (False, True):
        rs, rn = _ref_scores(m, am)
        assert pixel_scores(maps, v, am)[0].tolist() == pytest.approx(rs)
        assert minmax_tags(pixel_scores(maps, v, am), v)[0].tolist() == pytest.approx(rn)


def test_pixel_score_random_against_brute_force():
    g = torch.Generator().manual_seed(0)
    maps = torch.rand(4, 5, 3, 4, generator=g, dtype=torch.float64)
    valid = torch.ones(4, 5, dtype=torch.bool); valid[1, 3:] = False
    for am in (False, True):
        got = minmax_tags(pixel_scores(maps, valid, am), valid)
        for c in range(4):
            nt = int(valid[c].sum())
            _, ref = _ref_scores(maps[c, :nt].numpy(), am)
            assert got[c, :nt].tolist() == pytest.approx(ref)
            assert (got[c, nt:] == 0).all()


def test_union_target_and_stop_gradient():
    A = torch.tensor([[[[1.0, 0.0], [0.5, 0.0]], [[0.0, 2.0], [0.0, 1.0]], [[0.1, 0.1], [0.1, 0.0]]]], requires_grad=True)
    valid = torch.ones(1, 3, dtype=torch.bool)
    sel, tgt, union = ttd_targets(A, valid, theta=0.3)
    assert sel.tolist() == [[True, True, False]]               # scores (1, 2, 0.1): normalised (0.47, 1, 0)
    assert tgt[0, 0].tolist() == [[1.0, 0.0], [0.5, 0.0]] and tgt[0, 1].tolist() == [[0.0, 1.0], [0.0, 0.5]]
    assert (tgt[0, 2] == 0).all()                               # rejected tag: all-zero target
    assert union[0].tolist() == [[1.0, 1.0], [0.5, 0.5]]        # pixel-wise max of the selected maps
    assert not union.requires_grad and not tgt.requires_grad
    # the distillation loss moves the caption map only: no gradient reaches the tag maps through the target
    cap = torch.zeros(1, 2, 2, requires_grad=True)
    TTDObjective().bce(cap, union).sum().backward()
    assert A.grad is None and cap.grad is not None and cap.grad.abs().sum() > 0
    # BCE by hand at a pixel: sigmoid(10 * 0 - 2) against target 1
    p = 1 / (1 + math.exp(2.0))
    loss = TTDObjective(scale=10, shift=-2).bce(torch.zeros(1, 1, 1), torch.ones(1, 1, 1))
    assert loss.item() == pytest.approx(-math.log(p), rel=1e-5)


def test_mask_iou_hand_computed():
    a = torch.zeros(5, 5, dtype=torch.bool); b = torch.zeros(5, 5, dtype=torch.bool)
    a[0:2, 0:4] = True        # 8 pixels
    b[1:4, 2:4] = True        # 6 pixels, 2 shared (row 1, columns 2-3)
    assert mask_iou(a, b).item() == pytest.approx(2 / 12)
    assert mask_iou(a, a).item() == 1.0 and mask_iou(a, ~a).item() == 0.0
    assert math.isnan(mask_iou(torch.zeros(3, 3, dtype=torch.bool), torch.zeros(3, 3, dtype=torch.bool)).item())


def test_selection_metrics_hand_computed():
    sel = torch.tensor([[1, 0, 1, 0], [1, 1, 0, 0]], dtype=torch.bool)
    tru = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 0]], dtype=torch.bool)
    val = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]], dtype=torch.bool)
    m = selection_metrics(sel, tru, val)  # tp 3, fp 1, fn 2, 7 valid pairs of which 4 right
    assert m['precision'] == pytest.approx(75) and m['recall'] == pytest.approx(60)
    assert m['f1'] == pytest.approx(2 * .75 * .6 / 1.35 * 100) and m['accuracy'] == pytest.approx(400 / 7, rel=1e-5)


def test_caption_tags():
    assert caption_tags('Two shapes with a big red ring, to the left of a tiny cross.') == \
        ['two', 'shapes', 'with', 'a', 'big', 'red', 'ring', 'to', 'the', 'left', 'of', 'tiny', 'cross']
    assert caption_tags('A big red ring, left of a cross.', stop_words=True) == ['big', 'red', 'ring', 'left', 'cross']
    vocab, idx, valid = pad_tags([['b', 'a'], []])
    assert vocab == ['a', 'b'] and idx.tolist() == [[1, 0], [0, 0]] and valid.tolist() == [[True, True], [False, False]]


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    from itr_nb.synth import build_benchmark
    return build_benchmark(tmp_path_factory.mktemp('synth'), seed=3, n_train=200, n_val=50, n_test=50, image_size=32,
                           workers=1, progress=False)


def test_truth_matches_annotations(tiny):
    from itr_nb.retrieval import load_split
    d = load_split(tiny/'dataset.json', 'val', 32, progress=False)
    tr = load_tag_truth(tiny/'dataset.json', d)
    ann = json.loads((tiny/'annotations.json').read_text())
    caps = {c['sentid']: c for im in ann['images'] for c in im['captions']}
    with np.load(tiny/'masks_val.npz') as z: masks = dict(zip(z['imgids'].tolist(), z['masks']))
    for j in range(0, d.n_captions, 7):
        a = caps[d.split.sentids[j]]
        named = {t['word'] for t in a['tags'] if t['object'] is not None}
        assert {t for t, o in zip(tr.tags[j], tr.objects[j]) if o} == named
        assert np.array_equal(tr.masks[d.split.txt2img[j]].numpy(), masks[d.split.imgids[d.split.txt2img[j]]])


def test_dense_eval_caption_iou_brute_force(tiny):
    "dense_eval's caption intersections/unions against a direct computation for a few captions."
    from itr_nb.retrieval import load_split, ModelConfig, build_model
    from itr_nb.ttd import encode_dense, embed_tags
    d = load_split(tiny/'dataset.json', 'val', 32, limit=6, progress=False)
    tr = load_tag_truth(tiny/'dataset.json', d)
    m = build_model(ModelConfig(dim=16), seed=0).eval()
    ev = dense_eval(m, d, tr, thresholds=[0.3, 0.6], batch_size=4)
    with torch.no_grad():
        for c in (0, 13, 29):
            i = int(d.split.txt2img[c])
            r = encode_dense(m, d.images[i:i + 1].float() / 255)
            y = m.encode_text([d.split.captions[c]])['y']
            cap = torch.nn.functional.interpolate(torch.einsum('bhwd,bd->bhw', r['dense'], y)[:, None], (32, 32), mode='bilinear')[0, 0]
            cap = (cap - cap.min()) / (cap.max() - cap.min())
            true = np.isin(tr.masks[i].numpy(), [k + 1 for k in tr.cap_objects[c]])
            for k, th in enumerate([0.3, 0.6]):
                p = (cap >= th).numpy()
                assert ev['cap_inter'][c, k].item() == (p & true).sum() and ev['cap_union'][c, k].item() == (p | true).sum()
            # the union of the true tags' maps, one tag at a time, against the caption's mask
            words = [t for t, o in zip(tr.tags[c], tr.objects[c]) if o]
            assert words, 'every benchmark caption names an object'
            union = torch.zeros(32, 32)
            for w in words:
                e = m.encode_text([w])['y']
                a = torch.nn.functional.interpolate(torch.einsum('bhwd,bd->bhw', r['dense'], e)[:, None], (32, 32), mode='bilinear')[0, 0]
                union = torch.maximum(union, (a - a.min()) / (a.max() - a.min()))
            for k, th in enumerate([0.3, 0.6]):
                p = (union >= th).numpy()
                assert ev['true_inter'][c, k].item() == (p & true).sum() and ev['true_union'][c, k].item() == (p | true).sum()


def test_template_papermill(tiny, tmp_path):
    from itr_nb.experiment import run_template
    st = run_template('ttd', dict(dataset=str(tiny/'dataset.json'), image_size=32, dim=32, epochs=1, ttd_epochs=1, batch_size=32,
                                  n_examples=2, device='cpu', short_text_p=0.5), out_dir=tmp_path/'run', progress=False)
    assert st['status'] == 'ok', st
    m = json.loads((tmp_path/'run'/'metrics.json').read_text())
    for k in ('before_image_f1', 'before_pixel_f1', 'after_pixel_f1', 'before_cap_miou', 'after_cap_miou', 'after_rsum',
              'before_dominant_object_share', 'before_single_tag_share_image'):
        assert k in m and math.isfinite(m[k]) and m[k] >= 0, (k, m.get(k))   # a NaN fails too
    assert (tmp_path/'run'/'examples.png').exists() and (tmp_path/'run'/'table.md').exists()
    # the baseline's per-epoch checkpoint records the image encoder's widths too, so it loads as a TTD baseline
    from itr_nb.ttd import load_ttd_model
    a, b = (load_ttd_model(tmp_path/'run'/p).state_dict() for p in ('baseline/best.safetensors', 'baseline.safetensors'))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _plain_corpus(tiny, dst):
    "The tiny benchmark as a plain Karpathy corpus: dataset.json and the images only (no annotations, masks or relevance)."
    import shutil
    dst.mkdir()
    shutil.copy(tiny/'dataset.json', dst/'dataset.json'); shutil.copytree(tiny/'images', dst/'images')
    return dst/'dataset.json'


def test_truth_without_annotations(tiny, tmp_path):
    "No annotations.json / masks: the candidates are the captions' own words and there is no truth; one file alone is refused."
    import shutil
    from itr_nb.core import ItrError
    from itr_nb.retrieval import load_split
    ds = _plain_corpus(tiny, tmp_path/'plain')
    d = load_split(ds, 'val', 32, progress=False)
    tr = load_tag_truth(ds, d, stop_words=True)
    assert not tr.annotated and tr.truth() is None and tr.masks is None
    assert tr.tags == [caption_tags(c, True) for c in d.split.captions]
    shutil.copy(tiny/'annotations.json', tmp_path/'plain'/'annotations.json')
    with pytest.raises(ItrError, match='masks_val.npz: not found, but annotations.json is there'): load_tag_truth(ds, d)


def test_dense_eval_without_masks_matches_scores(tiny, tmp_path):
    "Without truth dense_eval gives the same image- and pixel-level scores as with it, and dense_summary only what needs no truth."
    from itr_nb.retrieval import load_split, ModelConfig, build_model
    from itr_nb.ttd import dense_summary, THETA
    d = load_split(tiny/'dataset.json', 'val', 32, limit=8, progress=False)
    m = build_model(ModelConfig(dim=16), seed=0).eval()
    a = dense_eval(m, d, load_tag_truth(tiny/'dataset.json', d))
    plain = _plain_corpus(tiny, tmp_path/'plain')
    b = dense_eval(m, d, load_tag_truth(plain, d))
    assert torch.equal(a['image'], b['image']) and torch.equal(a['pixel'], b['pixel']) and 'cap_inter' not in b
    s = dense_summary(b, b)
    assert set(s) == {'image_theta', 'image_selected_share', 'pixel_theta', 'pixel_selected_share'} and s['pixel_theta'] == THETA
    assert s['pixel_selected_share'] == pytest.approx(100 * float(select_tags(b['pixel'], b['valid'], THETA).sum()) / float(b['valid'].sum()))
    assert dense_summary(a, a, dict(image=0.3, pixel=0.3))['pixel_selected_share'] == pytest.approx(dense_summary(b, b, dict(image=0.3, pixel=0.3))['pixel_selected_share'])


def test_template_on_a_corpus_without_annotations(tiny, tmp_path):
    "The TTD template on a plain Karpathy corpus: baseline, selection, distillation and retrieval run; truth-based numbers are left out."
    from itr_nb.experiment import run_template
    ds = _plain_corpus(tiny, tmp_path/'plain')
    st = run_template('ttd', dict(dataset=str(ds), image_size=32, dim=32, epochs=1, ttd_epochs=1, batch_size=32, n_examples=2,
                                  device='cpu', theta=-1.0, stop_words=True), out_dir=tmp_path/'run', progress=False)
    assert st['status'] == 'ok', st
    m = json.loads((tmp_path/'run'/'metrics.json').read_text())
    assert m['theta'] == 0.5 and 0 <= m['after_pixel_selected_share'] <= 100 and 0 <= m['after_rsum'] <= 600
    assert not any(k.endswith(('_f1', '_miou', '_auc')) for k in m)
    assert (tmp_path/'run'/'examples.png').exists() and (tmp_path/'run'/'table.md').exists()
