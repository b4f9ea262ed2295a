"Inspection views: pure functions against brute force, widgets driven through their controls' `.value`."
import html, json, re
import numpy as np, pytest, torch, torch.nn.functional as F
from itr_nb.inspect import (soft_label_matrices, batch_soft_labels, soft_label_neighbours, SoftLabelInspector,
                            false_negatives, fn_summary, filter_false_negatives, FalseNegativeBrowser, teacher_positives,
                            split_positives, tag_mask_data, TagMaskViewer, plot_soft_labels, plot_false_negatives, plot_tag_masks)


def _softmax_rows(z):
    z = np.asarray(z, np.float64); e = np.exp(z - z.max(1, keepdims=True)); return e / e.sum(1, keepdims=True)


def test_soft_label_matrices_match_the_formulas():
    g = torch.Generator().manual_seed(0)
    x, y, xu, yu = (F.normalize(torch.randn(5, 4, generator=g), dim=-1) for _ in range(4))
    ti, tt = torch.randn(5, 6, generator=g), torch.randn(5, 3, generator=g)
    m = soft_label_matrices(x, y, xu, yu, ti, tt, tau_t=0.7, tau_c=0.3, tau_ui=0.4, tau_ut=0.2)
    X, Y, XU, YU = (t.double().numpy() for t in (x, y, xu, yu))
    ui = ti.double().numpy(); ui /= np.linalg.norm(ui, axis=1, keepdims=True)
    ut = tt.double().numpy(); ut /= np.linalg.norm(ut, axis=1, keepdims=True)
    ref = dict(q_img=_softmax_rows(ui @ ui.T / 0.7), q_txt=_softmax_rows(ut @ ut.T / 0.7),
               p_i2t=_softmax_rows(X @ Y.T / 0.3), p_t2i=_softmax_rows(Y @ X.T / 0.3),
               p_i2i=_softmax_rows(XU @ XU.T / 0.4), p_t2t=_softmax_rows(YU @ YU.T / 0.2))
    # the view computes in float32: logits up to 1/0.2 = 5 carry a rounding of ~ 5 * 6 * 2^-24 ~ 2e-6 (dot products of
    # <= 6 terms), which moves a probability by at most that much; 1e-5 against the float64 reference covers it on any
    # CPU, while a wrong temperature or orientation moves probabilities by ~1e-1
    for k, v in ref.items(): np.testing.assert_allclose(m[k], v, rtol=0, atol=1e-5, err_msg=k)


def test_batch_soft_labels_orientation_matches_the_csa_loss(tiny_benchmark):
    "KL of the view's teacher rows against its student rows must equal CUSA's own L_CSA on the same batch."
    from itr_nb.retrieval import load_split, pair_batches, build_model, ModelConfig
    from itr_nb.cusa import csa_loss, soft_labels
    d = load_split(tiny_benchmark, 'val', 32, progress=False)
    m = build_model(ModelConfig(dim=16), seed=0).eval()
    b = next(pair_batches(d, 8, seed=1))
    g = torch.Generator().manual_seed(1)
    fi, ft = torch.randn(d.n_images, 10, generator=g), torch.randn(d.n_captions, 7, generator=g)
    v = batch_soft_labels(m, b, fi, ft, tau_t=0.5, tau_c=0.3)
    kl = lambda q, p: float(np.mean(np.sum(q * (np.log(q) - np.log(p)), 1)))
    mine = (kl(v['q_img'], v['p_i2t']) + kl(v['q_txt'], v['p_t2i'])) / 2
    with torch.no_grad():
        o = m(b['images'], b['captions'])
        ref = csa_loss(o['x'], o['y'], soft_labels(fi[b['img_idx']], 0.5), soft_labels(ft[b['cap_idx']], 0.5), 0.3)
    assert mine == pytest.approx(float(ref), rel=1e-4)
    assert v['captions'] == b['captions'] and v['img_idx'] == b['img_idx'].tolist()


def _view(B=6, seed=0):
    rng = np.random.default_rng(seed)
    mats = {k: _softmax_rows(rng.normal(size=(B, B)) * 3) for k in ('q_img', 'q_txt', 'p_i2t', 'p_t2i', 'p_i2i', 'p_t2t')}
    return mats | dict(images=[rng.random((8, 8, 3)).astype(np.float32) for _ in range(B)],
                       captions=[f'caption number {j}' for j in range(B)], img_idx=list(range(B)), cap_idx=list(range(B)), temperatures={})


def test_soft_label_inspector_shows_the_chosen_rows_neighbours():
    v = _view()
    w = SoftLabelInspector(v, k=3)
    for row, side in ((0, 'image'), (4, 'image'), (4, 'text'), (2, 'text')):
        before = w.heatmaps.value
        w.row.value, w.side.value = row, side
        q = v['q_img' if side == 'image' else 'q_txt'][row]
        expect = sorted(range(6), key=lambda j: -q[j])[:3]          # brute force: largest teacher weight first
        titles = [c.children[1].value for c in w.neighbours.children]
        assert [int(re.search(r'#(\d+)', t).group(1)) for t in titles] == expect
        assert [f'{q[j]:.3f}' in t for j, t in zip(expect, titles)] == [True] * 3
        assert all(f'caption number {j}' in c.children[2].value for j, c in zip(expect, w.neighbours.children))
        assert f'row {row}' in w.query.value and html.escape(v['captions'][row]) in w.query.value
        assert w.heatmaps.value[:4] == b'\x89PNG'
        if (row, side) != (0, 'image'): assert w.heatmaps.value != before   # the row mark moved
    with pytest.raises(ValueError): soft_label_neighbours(v, 9, 'image')


def _brute_fn(S, gts, rel):
    "For each query: gallery order by (-score, index); items before the first ground truth, with ranks and marks."
    rows = []
    for q in range(S.shape[0]):
        order = sorted(range(S.shape[1]), key=lambda g: (-S[q, g], g))
        first = next(p for p, g in enumerate(order) if g in gts[q])
        for p, g in enumerate(order[:first]): rows.append((q, g, p + 1, first + 1, bool(rel[q][g])))
    return rows


@pytest.mark.parametrize('multi', [False, True])
def test_false_negatives_against_brute_force(multi):
    rng = np.random.default_rng(3)
    Q, G = 12, 9
    S = np.round(rng.normal(size=(Q, G)), 1)                       # rounding makes ties
    rel = rng.random((Q, G)) < 0.3
    if multi:
        gt = rng.random((Q, G)) < 0.25; gt[np.arange(Q), rng.integers(0, G, Q)] = True
        gts = [set(np.flatnonzero(r)) for r in gt]
    else:
        gt = rng.integers(0, G, Q); gts = [{int(g)} for g in gt]
    t = false_negatives(S, gt, rel, chunk=5)                        # chunks that split the queries
    ref = _brute_fn(S, gts, rel)
    assert [tuple(r) for r in t[['query', 'item', 'rank', 'gt_rank', 'false_negative']].itertuples(index=False)] == ref
    s = fn_summary(t)
    n_fn = sum(r[4] for r in ref)
    assert (s['errors'], s['false_negatives'], s['queries'], s['queries_with_errors']) == (len(ref), n_fn, Q, len({r[0] for r in ref}))
    assert s['fn_share'] == pytest.approx(100 * n_fn / len(ref))
    assert set(t['kind']) <= {'false negative', 'error'} and (t['kind'] == 'false negative').sum() == n_fn


def test_false_negatives_hand_case_and_errors():
    S = np.array([[0.9, 0.1, 0.5, 0.6], [0.8, 0.2, 0.3, 0.1], [0.2, 0.9, 0.9, 0.0]])
    rel = np.array([[0, 0, 1, 1], [1, 0, 0, 0], [0, 1, 1, 0]], bool)
    t = false_negatives(S, [2, 0, 2], rel)
    # query 0: items 0 (0.9) and 3 (0.6) above its GT 2 (0.5), 3 is a positive; query 2: item 1 ties its GT and comes first
    assert t[['query', 'item', 'false_negative']].values.tolist() == [[0, 0, False], [0, 3, True], [2, 1, True]]
    assert fn_summary(t)['fn_share'] == pytest.approx(200 / 3)
    with pytest.raises(ValueError, match='NaN'): false_negatives(np.array([[np.nan, 1.0]]), [0])
    with pytest.raises(ValueError, match='positives'): false_negatives(S, [2, 0, 2], rel[:2])
    import scipy.sparse as sp
    t2 = false_negatives(S, sp.csr_matrix(np.eye(3, 4, k=0, dtype=bool)), sp.csr_matrix(rel))
    assert t2[['query', 'item']].values.tolist() == [[1, 0], [1, 2], [2, 1]]


def test_false_negative_browser_filters(tiny_benchmark):
    from itr_nb.retrieval import load_split
    d = load_split(tiny_benchmark, 'test', 32, progress=False)
    rng = np.random.default_rng(0)
    S = rng.normal(size=(d.n_captions, d.n_images))
    rel = d.rel['i2t'].T.toarray()
    t = false_negatives(S, d.split.txt2img, split_positives(d, 't2i'))
    w = FalseNegativeBrowser(t, d, 't2i', max_rows=40)
    ref = _brute_fn(S, [{int(g)} for g in d.split.txt2img], rel)
    n_fn = sum(r[4] for r in ref)
    assert f'{n_fn} false negatives ({100 * n_fn / len(ref):.1f}% of the errors)' in w.summary.value
    assert w.rows.value.count('<tr>') == 40 and f'shown: {len(ref)} rows' in w.counts.value   # body rows (the header's <tr> has a style)
    q = ref[len(ref) // 2][0]
    w.query.value = q
    mine = [r for r in ref if r[0] == q]
    assert w.rows.value.count('<tr>') == min(len(mine), 40) and f'shown: {len(mine)} rows' in w.counts.value
    assert [int(x) for x in re.findall(r'<tr>\s*<td>(\d+)</td>', w.rows.value)] == [q] * min(len(mine), 40)
    assert html.escape(d.split.captions[q]) in w.cards.children[0].children[-1].value
    assert len(w.cards.children) == 1 + min(len(mine), 6) + 1     # query, items, ground truth
    assert f'ground truth #{mine[0][3]}' in w.cards.children[-1].children[1].value
    w.kind.value = 'error'
    assert f'shown: {sum(not r[4] for r in mine)} rows' in w.counts.value
    w.query.value, w.kind.value = -1, 'false negative'
    assert f'shown: {n_fn} rows, {n_fn} false negatives, 0 errors' in w.counts.value
    cut = float(np.median([S[r[0], r[1]] for r in ref]))
    w.kind.value = 'all'; w.min_score.value = cut
    kept = [r for r in ref if S[r[0], r[1]] >= w.min_score.value]
    assert f'shown: {len(kept)} rows' in w.counts.value and 0 < len(kept) < len(ref)


def test_teacher_positives_against_loops():
    rng = np.random.default_rng(1)
    f = torch.tensor(rng.normal(size=(10, 4)), dtype=torch.float32); t2i = np.repeat(np.arange(5), 2)
    u = f.numpy() / np.linalg.norm(f.numpy(), axis=1, keepdims=True)
    ref = np.array([[max(u[c] @ u[c2] for c2 in range(10) if t2i[c2] == g) >= 0.5 for g in range(5)] for c in range(10)])
    np.testing.assert_array_equal(teacher_positives(f, t2i, 0.5, chunk=3), ref)
    np.testing.assert_array_equal(teacher_positives(f, t2i, 0.5, 'i2t'), ref.T)
    assert ref[np.arange(10), t2i].all()                              # a caption is always like one of its own image's


def test_split_positives_oracle(tiny_benchmark):
    from itr_nb.retrieval import load_split
    from itr_nb.core import load_relevance
    d = load_split(tiny_benchmark, 'val', 32, progress=False)
    rel = load_relevance(tiny_benchmark.parent/'relevance_val.npz')['i2t'].toarray()
    np.testing.assert_array_equal(split_positives(d, 't2i').toarray(), rel.T)
    np.testing.assert_array_equal(split_positives(d, 'i2t').toarray(), rel)
    with pytest.raises(ValueError, match='teacher'): split_positives(d, 't2i', 'teacher')
    with pytest.raises(ValueError, match='unknown source'): split_positives(d, 't2i', 'nope')


@pytest.fixture(scope='module')
def tag_setup(tiny_benchmark):
    from itr_nb.retrieval import load_split, ModelConfig
    from itr_nb.ttd import build_ttd_model, load_tag_truth
    d = load_split(tiny_benchmark, 'test', 32, progress=False)
    return d, load_tag_truth(tiny_benchmark, d), build_ttd_model(ModelConfig(dim=16), 0).eval()


def _reference_tags(model, d, truth, c, ann):
    "Scores from the model's grid tokens and each tag encoded alone; truth from annotations.json; masks from masks_test.npz."
    i = int(d.split.txt2img[c])
    with torch.no_grad():
        tok = model.encode_image(d.images[i:i + 1].float() / 255)['img_tokens'][0]             # [L,d]
        raw = [float((tok @ model.encode_text([t])['y'][0]).max()) for t in truth.tags[c]]
    lo, hi = min(raw), max(raw)
    norm = [(r - lo) / (hi - lo) if hi > lo else 1.0 for r in raw]
    named = {w['word'] for w in ann[d.split.sentids[c]]['tags'] if w['object'] is not None}
    return norm, [t in named for t in truth.tags[c]]


def _table(viewer):
    return re.findall(r'<tr><td>(.*?)</td><td>(.*?)</td><td>(yes|no)</td><td>(yes|no)</td></tr>', viewer.tags.value)


def test_tag_mask_viewer_follows_caption_and_theta(tag_setup, tiny_benchmark):
    d, truth, model = tag_setup
    ann = {c['sentid']: c for im in json.loads((tiny_benchmark.parent/'annotations.json').read_text())['images'] for c in im['captions']}
    w = TagMaskViewer(model, d, truth)
    for c, theta in ((3, 0.5), (3, 0.8), (11, 0.2), (11, 1.0)):
        w.caption.value, w.theta.value = c, theta
        norm, true = _reference_tags(model, d, truth, c, ann)
        rows = _table(w)
        assert [r[0] for r in rows] == [html.escape(t) for t in truth.tags[c]]
        np.testing.assert_allclose([float(r[1]) for r in rows], norm, atol=2e-3)
        for n, r in zip(norm, rows):
            if abs(n - theta) > 1e-4: assert (r[2] == 'yes') == (n >= theta), (c, theta, r, n)   # selected: score >= theta
        assert [r[3] == 'yes' for r in rows] == true
        assert html.escape(d.split.captions[c]) in w.text.value
    w.true_only.value = True
    assert [r[0] for r in _table(w)] == [t for t, tr in zip(truth.tags[11], true) if tr]


def test_tag_mask_data_masks_from_the_label_maps(tag_setup, tiny_benchmark):
    d, truth, model = tag_setup
    with np.load(tiny_benchmark.parent/'masks_test.npz') as z: labels = dict(zip(z['imgids'].tolist(), z['masks']))
    c = 4; r = tag_mask_data(model, d, truth, c)
    lab = labels[int(d.split.imgids[d.split.txt2img[c]])]
    for t, objs in enumerate(truth.objects[c]):
        ref = np.zeros_like(lab, bool)
        for k in objs: ref |= lab == k + 1
        np.testing.assert_array_equal(r['tag_masks'][t], ref)
    ref = np.zeros_like(lab, bool)
    for k in truth.cap_objects[c]: ref |= lab == k + 1
    np.testing.assert_array_equal(r['cap_mask'], ref)
    assert r['cap_map'].min() == pytest.approx(0) and r['cap_map'].max() == pytest.approx(1)


def test_static_plots_draw(tag_setup):
    import matplotlib; matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    d, truth, model = tag_setup
    f = plot_soft_labels(_view(), row=2, side='text', k=4); assert len(f.axes) == 10 + 5; plt.close(f)
    t = false_negatives(np.random.default_rng(0).normal(size=(d.n_captions, d.n_images)), d.split.txt2img, split_positives(d, 't2i'))
    f = plot_false_negatives(t, d, 't2i', queries=[0, 1], k=3); assert len(f.axes) == 2 * 5; plt.close(f)
    f = plot_tag_masks(tag_mask_data(model, d, truth, 0), max_tags=3); assert len(f.axes) == 5; plt.close(f)
