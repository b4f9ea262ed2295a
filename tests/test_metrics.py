"Retrieval metrics against per-query Python references, hand-computed cases, and the eccv_caption package's own code."
import json, math
import numpy as np, pytest, scipy.sparse as sp, torch
from itr_nb.core import ItrError, save_relevance
from itr_nb.metrics import (recall_metrics, coco_1k, extended_metrics, unimodal_metrics, evaluate, format_table,
                            coco_positives, coco_5k_ids, coco_caption_ids)

# ---------------------------------------------------------------- references: one query at a time, plain Python

def order_of(scores):
    "Gallery indices by descending score, ties by lower index (a stable sort)."
    return sorted(range(len(scores)), key=lambda j: (-scores[j], j))

def ref_recall(sim, txt2img, ks=(1, 5, 10)):
    n, m = sim.shape; out, ranks = {}, {}
    own = [[j for j in range(m) if txt2img[j] == i] for i in range(n)]
    ranks['i2t'] = [min(order_of(list(sim[i])).index(j) for j in own[i]) + 1 for i in range(n)]
    ranks['t2i'] = [order_of(list(sim[:, j])).index(txt2img[j]) + 1 for j in range(m)]
    for d in ('i2t', 't2i'):
        for k in ks: out[f'{d}_R@{k}'] = 100 * sum(r <= k for r in ranks[d]) / len(ranks[d])
    out['rsum'] = sum(out.values())
    for d in ('i2t', 't2i'):
        out[f'{d}_medr'] = math.floor(np.median(ranks[d])); out[f'{d}_meanr'] = sum(ranks[d]) / len(ranks[d])
    return out

def ref_ext(sim, pos, ks=(1,), unseen=None, self_out=False):
    "Mean AP@R, R-P, R@K over queries (rows of `sim`) with positives; `pos[q]` a set of gallery indices."
    aps, rps, hits = [], [], {k: [] for k in ks}
    for q in range(sim.shape[0]):
        P = set(pos[q]) - ({q} if self_out else set())
        R = len(P) + (unseen[q] if unseen is not None else 0)
        if R == 0: continue
        ranking = [j for j in order_of(list(sim[q])) if not (self_out and j == q)]
        found, ap = 0, 0.
        for k, j in enumerate(ranking[:R], 1):
            if j in P: found += 1; ap += found / k
        aps.append(ap / R); rps.append(found / R)
        for k in ks: hits[k].append(any(j in P for j in ranking[:k]))
    return {'mAP@R': 100 * np.mean(aps), 'R-P': 100 * np.mean(rps)} | {f'R@{k}': 100 * np.mean(h) for k, h in hits.items()}

def rows(csr): return [set(csr.indices[csr.indptr[i]:csr.indptr[i + 1]].tolist()) for i in range(csr.shape[0])]

def random_case(rng, n, ties):
    "An n-image gallery with 1..6 captions per image, scores with many ties (quarters) or continuous."
    t2i = np.repeat(np.arange(n), rng.integers(1, 7, n)); rng.shuffle(t2i)
    shape = (n, len(t2i))
    sim = rng.integers(0, 4, shape) / 4 if ties else rng.standard_normal(shape)
    return sim.astype(np.float32), t2i

def close(a, b, keys=None):
    assert set(a) == set(b) if keys is None else True
    for k in keys or b: assert a[k] == pytest.approx(b[k], abs=1e-9), (k, a[k], b[k])

# ---------------------------------------------------------------- recall

@pytest.mark.parametrize('ties', [False, True])
@pytest.mark.parametrize('chunk', [1, 7, 1024])
def test_recall_vs_reference(ties, chunk):
    rng = np.random.default_rng(chunk + ties)
    sim, t2i = random_case(rng, 23, ties)
    close(recall_metrics(sim, t2i, chunk=chunk), ref_recall(sim, t2i))
    close(recall_metrics(torch.from_numpy(sim).double(), t2i, ks=(1, 2, 3), chunk=chunk), ref_recall(sim.astype(np.float64), t2i, (1, 2, 3)))

def test_recall_by_hand():
    sim = np.array([[.9, .1, .8, .2], [.3, .7, .6, .5]])   # image 0: captions 0, 1; image 1: captions 2, 3
    r = recall_metrics(sim, [0, 0, 1, 1], ks=(1, 2))
    assert r == {'i2t_R@1': 50, 'i2t_R@2': 100, 't2i_R@1': 50, 't2i_R@2': 100, 'rsum': 300,
                 'i2t_medr': 1, 'i2t_meanr': 1.5, 't2i_medr': 1, 't2i_meanr': 1.5}
    # all scores tied: the earlier index ranks first; image 1's captions 2, 3 come after 0, 1 -> rank 3
    r = recall_metrics(np.zeros((2, 4)), [0, 0, 1, 1], ks=(1,))
    assert (r['i2t_R@1'], r['i2t_meanr'], r['t2i_R@1'], r['t2i_meanr']) == (50, 2, 50, 1.5)

def test_coco_1k_by_folds():
    rng = np.random.default_rng(5)
    n = 500; t2i = np.arange(5 * n) // 5
    sim = rng.standard_normal((n, 5 * n)).astype(np.float32) + np.repeat(np.eye(n, dtype=np.float32), 5, 1)
    f = n // 5
    folds = [ref_recall(sim[i*f:(i+1)*f, i*5*f:(i+1)*5*f], t2i[i*5*f:(i+1)*5*f] - i*f) for i in range(5)]
    close(coco_1k(sim, t2i, chunk=64), {k: np.mean([x[k] for x in folds]) for k in folds[0]})
    # uneven captions per image, shuffled caption order: folds follow the images, not caption positions
    sim, t2i = random_case(rng, 15, True)
    folds = []
    for i in range(5):
        c = np.nonzero(t2i // 3 == i)[0]; folds.append(ref_recall(sim[3*i:3*i+3][:, c], t2i[c] - 3*i))
    close(coco_1k(sim, t2i), {k: np.mean([x[k] for x in folds]) for k in folds[0]})

# ---------------------------------------------------------------- extended positives and uni-modal

@pytest.mark.parametrize('ties', [False, True])
def test_extended_vs_reference(ties):
    rng = np.random.default_rng(11 + ties)
    n, m = 17, 60
    sim = (rng.integers(0, 3, (n, m)) / 3 if ties else rng.standard_normal((n, m))).astype(np.float32)
    # uneven positives: 0 to 12 per image, some images with none
    i2t = sp.csr_matrix(rng.random((n, m)) < rng.random((n, 1)) * 0.2)
    t2i = sp.csr_matrix(rng.random((m, n)) < 0.15)            # a t2i set that is not the transpose
    for chunk in (1, 5, 1024):
        e = extended_metrics(sim, i2t, chunk, ks=(1, 3, 10))
        close({k[4:]: v for k, v in e.items() if k.startswith('i2t')}, ref_ext(sim, rows(i2t), (1, 3, 10)))
        close({k[4:]: v for k, v in e.items() if k.startswith('t2i')}, ref_ext(sim.T, rows(i2t.T.tocsr()), (1, 3, 10)))
        e = extended_metrics(sim, i2t, chunk, t2i_rel=t2i)
        close({k[4:]: v for k, v in e.items() if k.startswith('t2i')}, ref_ext(sim.T, rows(t2i)))
    u = (rng.integers(0, 3, n), rng.integers(0, 2, m))        # positives outside the gallery count in R
    e = extended_metrics(sim, i2t, 4, t2i_rel=t2i, unseen=u)
    close({k[4:]: v for k, v in e.items() if k.startswith('i2t')}, ref_ext(sim, rows(i2t), unseen=u[0]))
    close({k[4:]: v for k, v in e.items() if k.startswith('t2i')}, ref_ext(sim.T, rows(t2i), unseen=u[1]))

def test_extended_by_hand():
    x = np.array([[.9, .8, .7, .6, .5, .4]]); rel = np.array([[1, 0, 1, 0, 1, 0]], bool)
    e = extended_metrics(x, rel)   # positives at ranks 1, 3, 5 of R = 3
    assert e['i2t_mAP@R'] == pytest.approx(100 * (1 + 2/3) / 3) and e['i2t_R-P'] == pytest.approx(200 / 3)
    assert e['i2t_R@1'] == 100 and e['t2i_mAP@R'] == 100
    x = np.array([[.1, .9, .8, .2]]); rel = np.array([[1, 0, 1, 1]], bool)   # ranks 4, 2, 3 of R = 3
    e = extended_metrics(x, rel)
    assert e['i2t_mAP@R'] == pytest.approx(100 * (1/2 + 2/3) / 3) and e['i2t_R-P'] == pytest.approx(200 / 3) and e['i2t_R@1'] == 0

@pytest.mark.parametrize('ties', [False, True])
def test_unimodal_vs_reference(ties):
    rng = np.random.default_rng(3 + ties)
    n = 31
    sim = (rng.integers(0, 3, (n, n)) / 3 if ties else rng.standard_normal((n, n))).astype(np.float32)
    np.fill_diagonal(sim, 1.0)                                 # the query matches itself best: must not count
    lab = rng.integers(0, 6, n); rel = lab[:, None] == lab[None, :]   # same class, diagonal included
    for chunk in (2, 1024):
        ref = ref_ext(sim, [set(np.nonzero(r)[0].tolist()) for r in rel], self_out=True)
        close(unimodal_metrics(sim, rel, 'i2i', chunk), {'i2i_R@1': ref['R@1'], 'i2i_mAP@R': ref['mAP@R']})

def test_unimodal_by_hand():
    ss = np.array([[1., .8, .2], [.5, 1., .6], [.1, .2, 1.]])
    rel = np.array([[1, 1, 0], [1, 1, 0], [0, 0, 1]], bool)   # image 2 has no other positive: left out
    assert unimodal_metrics(ss, rel, 't2t') == {'t2t_R@1': 50, 't2t_mAP@R': 50}

# ---------------------------------------------------------------- bad inputs

def test_bad_inputs():
    sim = np.random.default_rng(0).standard_normal((3, 6)).astype(np.float32); t2i = np.arange(6) // 2
    with pytest.raises(ItrError, match='shape 3 x 6, but the ground truth has 4'): recall_metrics(sim, t2i[:4])
    with pytest.raises(ItrError, match='transposed'): recall_metrics(sim.T, t2i)
    with pytest.raises(ItrError, match='2-D'): recall_metrics(sim[0], t2i)
    with pytest.raises(ItrError, match='points to image 3'): recall_metrics(sim, t2i + 1)
    with pytest.raises(ItrError, match='image 2 has no caption'): recall_metrics(sim, t2i % 2)
    for bad in (np.nan, np.inf, -np.inf):
        s = sim.copy(); s[2, 4] = bad
        with pytest.raises(ItrError, match=r'NaN or inf \(first in row 2\)'): recall_metrics(s, t2i)
        with pytest.raises(ItrError, match='NaN or inf'): extended_metrics(s, sim > 0)
        with pytest.raises(ItrError, match='NaN or inf'): coco_1k(np.tile(s, (5, 5)), np.arange(30) // 2)
    with pytest.raises(ItrError, match='i2t positives has shape 3 x 5'): extended_metrics(sim, sim[:, :5] > 0)
    with pytest.raises(ItrError, match='t2i positives has shape 3 x 6'): extended_metrics(sim, sim > 0, t2i_rel=sim > 0)
    with pytest.raises(ItrError, match='no i2t query has a positive'): extended_metrics(sim, sim > 99)
    with pytest.raises(ItrError, match='must be square'): unimodal_metrics(sim, sim > 0, 'i2i')
    with pytest.raises(ItrError, match='cannot be cut into 5'): coco_1k(sim, t2i)
    with pytest.raises(ItrError, match='unknown protocol'): evaluate(sim, t2i, protocol='coco2k')
    with pytest.raises(ItrError, match='needs the COCO 5K test split'): evaluate(sim, t2i, protocol='cxc')
    with pytest.raises(ItrError, match='needs i2i positives'): evaluate(sim, t2i, img_sim=np.eye(3))

# ---------------------------------------------------------------- eccv_caption's own implementation

def ranked(sim, L):
    "Top-L gallery indices of each row (descending, ties by index): topk, then a stable re-sort of a wider prefix."
    v, ix = torch.from_numpy(np.ascontiguousarray(sim)).topk(min(L + 20, sim.shape[1]), 1)
    v, ix = v.numpy(), ix.numpy()
    return np.take_along_axis(ix, np.lexsort((ix, -v), axis=1), 1)[:, :L].tolist()

@pytest.fixture(scope='module')
def coco5k():
    "A COCO-5K-shaped similarity (5,000 x 25,000) from random 48-d embeddings with some signal, float64 (no ties)."
    rng = np.random.default_rng(0)
    im = rng.standard_normal((5000, 48)); tx = np.repeat(im, 5, 0) * 0.35 + rng.standard_normal((25000, 48))
    return im @ tx.T, np.arange(25000) // 5

def test_eccv_caption_crosscheck(coco5k):
    from eccv_caption import Metrics
    from eccv_caption._metrics import compute_eccv_metrics, compute_r_at_k
    sim, t2i = coco5k
    ims, caps = coco_5k_ids(); M = Metrics()
    i2t_items = {int(ims[i]): [int(caps[j]) for j in r] for i, r in enumerate(ranked(sim, 100))}
    t2i_items = {int(caps[j]): [int(ims[i]) for i in r] for j, r in enumerate(ranked(sim.T, 100))}
    items = {'i2t': i2t_items, 't2i': t2i_items}
    got = evaluate(sim, t2i, protocol='coco')
    # ECCV Caption: mAP@R, R-P, R@1
    ref = M.eccv_metrics(items, 'all')
    for d in ('i2t', 't2i'):
        assert got[f'eccv_{d}_mAP@R'] == pytest.approx(100 * ref['eccv_map_at_r'][d], abs=1e-9)
        assert got[f'eccv_{d}_R-P'] == pytest.approx(100 * ref['eccv_rprecision'][d], abs=1e-9)
        assert got[f'eccv_{d}_R@1'] == pytest.approx(100 * ref['eccv_r1'][d], abs=1e-9)
    # COCO 1K: the package filters each ranking to the query's fold; rank within the folds so every list is long enough
    i1k, t1k = {}, {}
    for f in range(5):
        sub = sim[1000*f:1000*(f+1), 5000*f:5000*(f+1)]
        i1k |= {int(ims[1000*f + i]): [int(caps[5000*f + j]) for j in r] for i, r in enumerate(ranked(sub, 20))}
        t1k |= {int(caps[5000*f + j]): [int(ims[1000*f + i]) for i in r] for j, r in enumerate(ranked(sub.T, 20))}
    for K in (1, 5, 10):
        cxc, c5k, c1k = M.cxc_recalls(items, 'all', K), M.coco_5k_recalls(items, 'all', K), M.coco_1k_recalls({'i2t': i1k, 't2i': t1k}, 'all', K)
        for d in ('i2t', 't2i'):
            assert got[f'cxc_{d}_R@{K}'] == pytest.approx(100 * cxc[d], abs=1e-9)
            assert got[f'5k_{d}_R@{K}'] == pytest.approx(100 * c5k[d], abs=1e-9)
            assert got[f'1k_{d}_R@{K}'] == pytest.approx(100 * c1k[d], abs=1e-9)
    # R-P and mAP@R with COCO's own one-to-one positives, through the package's metric function
    coco = coco_positives('original')
    e = extended_metrics(sim, coco['i2t'], t2i_rel=coco['t2i'])
    for d in ('i2t', 't2i'):
        r = compute_eccv_metrics(items[d], M.coco_gts[d])
        assert e[f'{d}_mAP@R'] == pytest.approx(100 * r['eccv_map_at_r'], abs=1e-9)
        assert e[f'{d}_R-P'] == pytest.approx(100 * r['eccv_rprecision'], abs=1e-9)
        assert e[f'{d}_R@1'] == pytest.approx(100 * compute_r_at_k(items[d], M.coco_gts[d], 1), abs=1e-9)

def test_eccv_metric_code_on_synthetic_positives():
    "The package's compute_eccv_metrics on random rankings and uneven positive sets."
    from eccv_caption._metrics import compute_eccv_metrics
    rng = np.random.default_rng(7)
    sim = rng.standard_normal((40, 300))
    rel = rng.random((40, 300)) < rng.random((40, 1)) * 0.1
    rel[0, :] = False; rel[1, :40] = True                                 # a query without positives, one with 40
    rel = sp.csr_matrix(rel)
    gts = {q: sorted(p) for q, p in enumerate(rows(rel)) if p}
    items = {q: r for q, r in enumerate(ranked(sim, 60))}
    ref = compute_eccv_metrics(items, gts)
    e = extended_metrics(sim, rel, chunk=9)
    assert (e['i2t_mAP@R'], e['i2t_R-P'], e['i2t_R@1']) == pytest.approx(
        (100 * ref['eccv_map_at_r'], 100 * ref['eccv_rprecision'], 100 * ref['eccv_r1']), abs=1e-9)

def test_coco_ids():
    ims, caps = coco_5k_ids()
    assert len(set(ims.tolist())) == 5000 and len(set(caps.tolist())) == 25000
    # a split listing two test images in the other order, with three captions each
    got = coco_caption_ids([ims[1], ims[0]], [0, 0, 0, 1, 1, 1])
    assert got.tolist() == caps[5:8].tolist() + caps[0:3].tolist()
    with pytest.raises(ItrError, match='not in the COCO 5K test split'): coco_caption_ids([1], [0])
    with pytest.raises(ItrError, match='more than 5 captions'): coco_caption_ids([ims[0]], [0] * 6)
    e = coco_positives('eccv')
    assert ((np.diff(e['i2t'].indptr) > 0).sum(), (np.diff(e['t2i'].indptr) > 0).sum()) == (1261, 1332)

# ---------------------------------------------------------------- evaluate, table, CLI

def test_evaluate_and_table():
    rng = np.random.default_rng(2)
    sim, t2i = random_case(rng, 10, False)
    one = sp.csr_matrix((np.ones(len(t2i), bool), (t2i, np.arange(len(t2i)))), shape=sim.shape)
    tt = one.T @ one
    m = evaluate(sim, t2i, {'i2t': one, 't2t': tt}, txt_sim=rng.standard_normal((len(t2i),) * 2))
    assert {'rsum', 'ext_i2t_mAP@R', 'ext_t2i_R@1', 't2t_R@1', 't2t_mAP@R'} <= set(m)
    assert m['ext_t2i_R@1'] == m['t2i_R@1']
    t = format_table(m).splitlines()
    assert t[0].split()[:3] == ['R@1', 'R@5', 'R@10'] and t[1].startswith('i2t ') and t[-1].startswith('rsum')
    assert any(l.startswith('ext_i2t') for l in t) and any(l.startswith('t2t') for l in t)

def karpathy(path, n, caps=2, cocoids=None):
    ims = [{'filename': f'{i}.jpg', 'imgid': i, 'split': 'test', 'sentences': [{'raw': f'a photo {i} {k}'} for k in range(caps)]}
           for i in range(n)] + [{'filename': 'x.jpg', 'imgid': 99, 'split': 'train', 'sentences': [{'raw': 'train'}]}]
    if cocoids is not None:
        for im, c in zip(ims, cocoids): im['cocoid'] = int(c)
    path.write_text(json.dumps({'images': ims})); return path

def test_cli(tmp_path, capsys):
    from itr_nb.cli import main
    sim = np.array([[.9, .1, .8, .2], [.3, .7, .6, .5]], np.float32)
    np.save(tmp_path/'sim.npy', sim); gt = karpathy(tmp_path/'gt.json', 2)
    assert main(['eval', str(tmp_path/'sim.npy'), '--gt', str(gt), '--out', str(tmp_path/'out'/'m.json')]) == 0
    out = capsys.readouterr().out
    assert 'R@1' in out and 'rsum' in out
    m = json.loads((tmp_path/'out'/'m.json').read_text())
    assert m['rsum'] == 500 and m['t2i_meanr'] == 1.5
    # extended positives as --rel besides the Karpathy file, and a relevance file alone as --gt
    save_relevance(tmp_path/'rel.npz', i2t=np.array([[1, 0, 1, 0], [1, 0, 1, 1]], bool))  # image 1: top 3 holds 2 of its 3
    assert main(['eval', str(tmp_path/'sim.npy'), '--gt', str(gt), '--rel', str(tmp_path/'rel.npz'), '--out', str(tmp_path/'m2.json')]) == 0
    m2 = json.loads((tmp_path/'m2.json').read_text())
    assert m2['rsum'] == 500 and m2['ext_i2t_R-P'] == pytest.approx(100 * (1 + 2/3) / 2)
    assert main(['eval', str(tmp_path/'sim.npy'), '--gt', str(tmp_path/'rel.npz'), '--out', str(tmp_path/'m3.json')]) == 0
    m3 = json.loads((tmp_path/'m3.json').read_text())
    assert 'rsum' not in m3 and m3['ext_i2t_R-P'] == m2['ext_i2t_R-P']
    # refused: shape mismatch, NaN, a protocol that needs a Karpathy file
    np.save(tmp_path/'bad.npy', sim[:, :3])
    assert main(['eval', str(tmp_path/'bad.npy'), '--gt', str(gt)]) == 2
    assert 'bad.npy against' in capsys.readouterr().err
    s = sim.copy(); s[1, 1] = np.nan; np.save(tmp_path/'nan.npy', s)
    assert main(['eval', str(tmp_path/'nan.npy'), '--gt', str(gt)]) == 2
    assert 'NaN or inf (first in row 1)' in capsys.readouterr().err
    assert main(['eval', str(tmp_path/'sim.npy'), '--gt', str(tmp_path/'rel.npz'), '--protocol', 'coco1k']) == 2
    assert main(['eval', str(tmp_path/'none.npy'), '--gt', str(gt)]) == 2
    assert 'similarity matrix not found' in capsys.readouterr().err

def test_cli_coco_protocol(tmp_path, coco5k):
    "--protocol eccv on a Karpathy-like file of the 5K test images, matched through cocoid, with > 5 captions each."
    from itr_nb.cli import main
    sim, t2i = coco5k
    ims, _ = coco_5k_ids()
    np.save(tmp_path/'sim.npy', sim.astype(np.float32))
    gt = karpathy(tmp_path/'gt.json', 5000, caps=6, cocoids=ims)
    assert main(['eval', str(tmp_path/'sim.npy'), '--gt', str(gt), '--protocol', 'eccv', '--out', str(tmp_path/'m.json')]) == 0
    m = json.loads((tmp_path/'m.json').read_text())
    ref = evaluate(sim.astype(np.float32), t2i, protocol='eccv')
    assert m == pytest.approx(ref)
