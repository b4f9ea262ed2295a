"""Tests issue 19 asked for: TTD's L_tag masking and L_distill against a hand formula, `_tag_miou` against brute force,
TTD's thresholds chosen on validation only, and `two_stage(index='ivf')` end to end against the torch path and a
brute-force fused ranking (methods eq. (4.5)-(4.8), (3.7))."""
import math
import numpy as np, pytest, torch
from itr_nb.ttd import (TTDObjective, caption_tags, dense_summary, _tag_miou, THETAS, THRESHOLDS)
from itr_nb.tgdt import two_stage, ranking_scores, split_metrics


# ---- TTDObjective: L_distill and L_tag by hand (methods eq. (4.5)-(4.8)) --------------------------------------------

class StubModel(torch.nn.Module):
    "A dual encoder reduced to lookup tables: dense features per image, an embedding per text string (float64)."
    def __init__(self, dense, x, texts):
        super().__init__()
        self.image_enc = torch.nn.Identity()            # no MaskCLIP: `encode_dense` takes `img_tokens` as the grid
        self.dense, self.x, self.texts = dense, x, texts

    def encode_image(self, images): return dict(x=self.x[images.long()], img_tokens=self.dense[images.long()])
    def encode_text(self, texts): return dict(y=torch.stack([self.texts[t] for t in texts]))


def bce(z, m):
    "-(m log sigmoid(z) + (1 - m) log(1 - sigmoid(z))) for one logit, as softplus(z) - m z (no cancellation in 1 - p)."
    return max(z, 0.0) + math.log1p(math.exp(-abs(z))) - m * z


def hand_ttd(F, captions, E, theta, scale, shift):
    "L_distill and L_tag (and the selected share) by loops over captions, tags and pixels."
    L = F.shape[1]
    distill, tag_terms, n_sel, n_tags = [], [], 0, 0
    for j, c in enumerate(captions):
        tags = caption_tags(c)
        A = {t: [sum(F[j, p, d] * E[t][d] for d in range(F.shape[2])) for p in range(L)] for t in tags}
        s = {t: max(A[t]) for t in tags}
        lo, hi = min(s.values()), max(s.values())
        sel = {t: ((s[t] - lo) / (hi - lo) if hi > lo else 1.0) >= theta for t in tags}
        M = {t: [((a - min(A[t])) / (max(A[t]) - min(A[t])) if sel[t] else 0.0) for a in A[t]] for t in tags}
        union = [max(M[t][p] for t in tags) for p in range(L)]
        cap = [sum(F[j, p, d] * E[c][d] for d in range(F.shape[2])) for p in range(L)]
        distill.append(sum(bce(scale * cap[p] + shift, union[p]) for p in range(L)) / L)
        for t in tags: tag_terms.append(sum(bce(scale * A[t][p] + shift, M[t][p]) for p in range(L)) / L)
        n_sel += sum(sel.values()); n_tags += len(tags)
    return sum(distill) / len(distill), sum(tag_terms) / len(tag_terms), n_sel / n_tags


def ttd_case(seed=0):
    captions = ['red circle left of blue square', 'a cross', 'green ring above a small red cross']
    g = np.random.default_rng(seed)
    words = sorted({t for c in captions for t in caption_tags(c)} | set(captions))
    E = {w: g.normal(size=6) for w in words}
    F = g.normal(size=(3, 9, 6))                         # 3 images, 3 x 3 grid, d = 6
    model = StubModel(torch.tensor(F), torch.tensor(g.normal(size=(3, 6))), {w: torch.tensor(v) for w, v in E.items()})
    batch = dict(images=torch.arange(3), captions=captions, img_idx=torch.arange(3))
    return model, batch, F, E, captions


@pytest.mark.parametrize('theta', [0.4, 0.75])
def test_ttd_objective_against_hand_formula(theta):
    model, batch, F, E, captions = ttd_case()
    obj = TTDObjective(theta=theta, w_con=0.0, w_distill=0.7, w_tag=1.3, scale=4.0, shift=-0.5, learn_affine=False)
    out = obj(model, batch)
    distill, tag, share = hand_ttd(F, captions, E, theta, 4.0, -0.5)
    # float64 throughout: the two sums of a few dozen terms agree to ~1e-15
    assert out['distill'].item() == pytest.approx(distill, rel=1e-12, abs=1e-12)
    assert out['tag'].item() == pytest.approx(tag, rel=1e-12, abs=1e-12)
    assert out['selected'].item() == pytest.approx(share, rel=1e-6)     # a ratio of counts, in float32
    assert out['loss'].item() == pytest.approx(0.7 * distill + 1.3 * tag, rel=1e-12)   # w_con = 0: L_con drops out


def test_ttd_tag_loss_leaves_out_padding_but_keeps_rejected_tags():
    model, batch, F, E, captions = ttd_case(seed=1)
    n = [len(caption_tags(c)) for c in captions]
    assert len(set(n)) > 1, 'the captions must differ in length, so the batch has padding positions'
    obj = TTDObjective(theta=0.6, w_con=0.0, scale=4.0, shift=-0.5, learn_affine=False)
    out = obj(model, batch)
    _, tag, share = hand_ttd(F, captions, E, 0.6, 4.0, -0.5)
    assert 0 < share < 1, 'some tags selected and some rejected'
    assert out['tag'].item() == pytest.approx(tag, rel=1e-12)
    # what L_tag would be if padding counted: the padded slots repeat vocabulary word 0 with an all-zero target
    vocab = sorted({t for c in captions for t in caption_tags(c)})
    L, T = F.shape[1], max(n)
    pad = []
    for j in range(len(captions)):
        A0 = [sum(F[j, p, d] * E[vocab[0]][d] for d in range(F.shape[2])) for p in range(L)]
        pad += [sum(bce(4.0 * a - 0.5, 0.0) for a in A0) / L] * (T - n[j])
    unmasked = (tag * sum(n) + sum(pad)) / (len(captions) * T)
    assert abs(unmasked - tag) > 1e-3                    # the case tells the two apart
    assert out['tag'].item() != pytest.approx(unmasked, rel=1e-6)


# ---- _tag_miou against brute force over pixels -------------------------------------------------------------------

def tag_case(seed=0, C=6, T=4, S=5):
    "Random tag maps and true masks for C captions of up to T candidates; counts per threshold as dense_eval keeps them."
    g = np.random.default_rng(seed)
    vocab = ['circle', 'cross', 'red', 'ring', 'square']
    idx = g.integers(0, len(vocab), (C, T)); idx[0, 0] = idx[1, 0] = 1          # 'cross' in two captions: pooled
    valid = np.arange(T)[None] < g.integers(1, T + 1, C)[:, None]; valid[:2, 0] = True
    truth = g.random((C, T)) < 0.6; truth[:2, 0] = True
    maps = g.random((C, T, S, S)); true = g.random((C, T, S, S)) < 0.35
    true[2, :] = False; maps[2, :] = 0.0                                          # empty prediction and truth: no union
    th = THRESHOLDS[[1, 4, 7]]
    pred = maps[..., None] >= th                                                  # [C,T,S,S,K]
    inter = (pred & true[..., None]).sum((2, 3)); union = (pred | true[..., None]).sum((2, 3))
    ev = dict(truth=torch.tensor(truth), valid=torch.tensor(valid), idx=torch.tensor(idx), vocab=vocab,
              tag_inter=torch.tensor(inter, dtype=torch.float32), tag_union=torch.tensor(union, dtype=torch.float32),
              thresholds=th)
    return ev, maps, true, th


def brute_tag_miou(maps, true, ev, th):
    "Per word: intersections and unions summed pixel by pixel over its true, valid occurrences; mean IoU over words (%)."
    acc = {}
    C, T = maps.shape[:2]
    for c in range(C):
        for t in range(T):
            if not (ev['truth'][c, t] and ev['valid'][c, t]): continue
            w = ev['vocab'][int(ev['idx'][c, t])]
            i = u = 0
            for a in range(maps.shape[2]):
                for b in range(maps.shape[3]):
                    p = maps[c, t, a, b] >= th
                    i += p and true[c, t, a, b]; u += p or true[c, t, a, b]
            I, U = acc.get(w, (0, 0)); acc[w] = (I + i, U + u)
    ious = [I / U for I, U in acc.values() if U > 0]
    return 100 * sum(ious) / len(ious) if ious else math.nan


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_tag_miou_against_brute_force(seed):
    ev, maps, true, th = tag_case(seed)
    for k, v in enumerate(th):
        assert _tag_miou(ev, k) == pytest.approx(brute_tag_miou(maps, true, ev, v), rel=1e-12)


def test_tag_miou_ignores_padding_and_untrue_tags_and_is_nan_without_union():
    ev, maps, true, th = tag_case(3)
    base = _tag_miou(ev, 1)
    off = ~(ev['truth'] & ev['valid'])
    assert off.any()
    ev2 = dict(ev, tag_inter=ev['tag_inter'].clone(), tag_union=ev['tag_union'].clone())
    ev2['tag_inter'][off] = 7.0; ev2['tag_union'][off] = 9.0                     # counts there must not matter
    assert _tag_miou(ev2, 1) == pytest.approx(base, rel=1e-12)
    ev3 = dict(ev, tag_union=torch.zeros_like(ev['tag_union']), tag_inter=torch.zeros_like(ev['tag_inter']))
    assert math.isnan(_tag_miou(ev3, 0))


# ---- TTD's thresholds come from validation only ---------------------------------------------------------------

def f1(sel, truth, valid):
    "Selection F1 (%) by counting, over the valid pairs."
    tp = fp = fn = 0
    for s, t, v in zip(sel.flatten().tolist(), truth.flatten().tolist(), valid.flatten().tolist()):
        if not v: continue
        tp += s and t; fp += s and not t; fn += t and not s
    p, r = tp / max(tp + fp, 1), tp / max(tp + fn, 1)
    return 100 * 2 * p * r / (p + r) if p + r else 0.0


def best_theta(scores, truth, valid):
    "The first threshold of the grid with the highest F1, by brute force."
    f = [f1((scores >= th) & valid, truth, valid) for th in THETAS]
    return float(THETAS[int(np.argmax(f))]), f


def split_case(seed, true_level, false_level, best_k):
    "Synthetic dense_eval output: true tags score near `true_level`, others near `false_level`; caption IoU peaks at `best_k`."
    g = np.random.default_rng(seed)
    C, T, K = 40, 5, len(THRESHOLDS)
    valid = torch.tensor(np.arange(T)[None] < g.integers(2, T + 1, C)[:, None])
    truth = torch.tensor(g.random((C, T)) < 0.5) & valid
    noise = lambda: torch.tensor(g.uniform(-0.08, 0.08, (C, T)))
    pixel = torch.where(truth, true_level + noise(), false_level + noise()).clamp(0, 1) * valid
    image = torch.where(truth, true_level - 0.1 + noise(), false_level + noise()).clamp(0, 1) * valid
    iou = np.exp(-0.5 * ((np.arange(K) - best_k) / 1.5) ** 2)                      # peaked at best_k
    union = torch.full((C, K), 100.0); inter = torch.tensor(np.clip(iou[None] * g.uniform(30, 90, (C, 1)), 0, 100), dtype=torch.float32)
    tu = torch.full((C, T, K), 50.0); ti = torch.tensor(np.clip(iou[None, None] * g.uniform(10, 45, (C, T, 1)), 0, 50), dtype=torch.float32)
    return dict(valid=valid, truth=truth, pixel=pixel, image=image, thresholds=np.asarray(THRESHOLDS),
                cap_inter=inter, cap_union=union, true_inter=inter * 0.9, true_union=union,
                tag_inter=ti, tag_union=tu, idx=torch.tensor(g.integers(0, 6, (C, T))), vocab=list('abcdef'),
                balance=torch.tensor(g.uniform(0, 1, C), dtype=torch.float32))


def test_ttd_thresholds_come_from_validation_only():
    val = split_case(0, true_level=0.45, false_level=0.15, best_k=2)
    test = split_case(1, true_level=0.85, false_level=0.55, best_k=6)
    test2 = split_case(2, true_level=0.30, false_level=0.05, best_k=0)
    th_val, _ = best_theta(val['pixel'], val['truth'], val['valid'])
    th_test, _ = best_theta(test['pixel'], test['truth'], test['valid'])
    assert th_val != th_test, 'the case needs validation and test to prefer different thresholds'
    out = dense_summary(val, test)
    assert out['pixel_theta'] == th_val
    assert out['image_theta'] == best_theta(val['image'], val['truth'], val['valid'])[0]
    # the reported test F1 is test's F1 at validation's threshold, not test's best
    assert out['pixel_f1'] == pytest.approx(f1((test['pixel'] >= th_val) & test['valid'], test['truth'], test['valid']), rel=1e-9)
    assert out['pixel_f1'] < max(best_theta(test['pixel'], test['truth'], test['valid'])[1])
    # mask thresholds: validation's best caption IoU threshold, applied to test
    assert out['cap_mask_threshold'] == float(THRESHOLDS[2]) and out['tag_mask_threshold'] == float(THRESHOLDS[2])
    assert out['cap_miou'] == pytest.approx(100 * float((test['cap_inter'][:, 2] / test['cap_union'][:, 2]).mean()), rel=1e-6)
    # another test split changes no threshold; another validation split changes them
    out2 = dense_summary(val, test2)
    assert all(out2[k] == out[k] for k in ('pixel_theta', 'image_theta', 'cap_mask_threshold', 'tag_mask_threshold'))
    out3 = dense_summary(test, val)
    assert out3['pixel_theta'] == th_test and out3['cap_mask_threshold'] == float(THRESHOLDS[6])


# ---- two_stage(index='ivf') end to end ------------------------------------------------------------------------

def unit(g, *shape):
    a = g.normal(size=shape); return a / np.linalg.norm(a, axis=-1, keepdims=True)


def brute_local(v, t, tm):
    "s_l by the definition (mean over valid words of the best region), float64 loops."
    N, M = len(v), len(t)
    out = np.zeros((N, M))
    for i in range(N):
        for j in range(M):
            w = [max(float(v[i, r] @ t[j, k]) for r in range(v.shape[1])) for k in range(t.shape[1]) if tm[j, k]]
            out[i, j] = sum(w) / len(w)
    return out


def brute_two_stage(s_g, s_l, K):
    "Per query row: the K best by s_g, then those K sorted by s_g + s_l (Python sorts)."
    cand, fused = [], []
    for q in range(len(s_g)):
        top = sorted(range(s_g.shape[1]), key=lambda c: -s_g[q, c])[:K]
        order = sorted(top, key=lambda c: -(s_g[q, c] + s_l[q, c]))
        cand.append(order); fused.append([s_g[q, c] + s_l[q, c] for c in order])
    return np.array(cand), np.array(fused)


# float32 inner products of unit vectors in d dimensions are within d * 2^-24 of the float64 value; FAISS scores in
# float32, so two rankings can only differ where float64 scores are closer than twice that. The case below checks
# that its gaps are far wider, so it decides on the logic, not on this CPU's rounding.
D = 8
F32 = 2 * D * 2.0 ** -24


def ivf_case(seed=4, N=12, M=48, R=3, W=4):
    g = np.random.default_rng(seed)
    x, y, v, t = unit(g, N, D), unit(g, M, D), unit(g, N, R, D), unit(g, M, W, D)
    tm = np.arange(W)[None] < g.integers(1, W + 1, M)[:, None]
    emb = dict(x=torch.tensor(x), y=torch.tensor(y), img_tokens=torch.tensor(v), img_mask=None,
               txt_tokens=torch.tensor(t) * torch.tensor(tm)[..., None], txt_mask=torch.tensor(tm))
    return emb, x @ y.T, brute_local(v, t, tm)


def min_gap(S, K):
    "Smallest gap that decides a ranking: between the K-th and (K+1)-th s_g of a row, and between its fused candidates."
    gaps = []
    for row in S:
        s = np.sort(row)[::-1]; gaps.append(s[K - 1] - s[K])
    return min(gaps)


@pytest.mark.parametrize('k_i2t,k_t2i', [(10, 4), (48, 12)])
def test_two_stage_ivf_equals_torch_and_brute_force(k_i2t, k_t2i):
    emb, s_g, s_l = ivf_case()
    N, M = s_g.shape
    ci, fi = brute_two_stage(s_g, s_l, k_i2t)
    ct, ft = brute_two_stage(s_g.T, s_l.T, k_t2i)
    if k_i2t < M: assert min_gap(s_g, k_i2t) > 4 * F32 and min_gap(s_g.T, k_t2i) > 4 * F32
    assert min(np.diff(-fi, axis=1).min(), np.diff(-ft, axis=1).min()) > 4 * F32
    ref = two_stage(emb, k_i2t, k_t2i)
    for nlist in (1, 4):                                 # nprobe covers every cell: IVF is exhaustive
        r = two_stage(emb, k_i2t, k_t2i, index='ivf', nlist=nlist, nprobe=nlist)
        assert r['s_g'] is None
        for d, (c_ref, f_ref) in (('i2t', (ci, fi)), ('t2i', (ct, ft))):
            np.testing.assert_array_equal(r[d][0].numpy(), c_ref)
            np.testing.assert_array_equal(r[d][0].numpy(), ref[d][0].numpy())
            np.testing.assert_allclose(r[d][1].numpy(), f_ref, rtol=0, atol=F32)
            np.testing.assert_allclose(r[d][1].numpy(), ref[d][1].numpy(), rtol=0, atol=F32)
    # and the metrics computed from the IVF path's rankings are the torch path's
    txt2img = np.arange(M) % N
    s_ref = torch.tensor(s_g)
    m_ivf = split_metrics(ranking_scores(s_ref, *r['i2t'], 'i2t'), ranking_scores(s_ref, *r['t2i'], 't2i'), txt2img)
    m_ref = split_metrics(ranking_scores(ref['s_g'], *ref['i2t'], 'i2t'), ranking_scores(ref['s_g'], *ref['t2i'], 't2i'), txt2img)
    assert m_ivf == m_ref


def test_two_stage_ivf_with_few_cells_visited_stays_a_ranking():
    "nprobe < nlist may miss candidates, but each query still gets K distinct gallery items in fused order."
    from itr_nb.search import topk
    emb, s_g, s_l = ivf_case(seed=5)
    assert (topk(emb['x'], emb['y'], 10, 'ivf', nlist=8, nprobe=1)[1] < 0).any()   # the case does hit FAISS's -1 candidates
    r = two_stage(emb, 10, 4, index='ivf', nlist=8, nprobe=1)
    for d, G in (('i2t', s_g.shape[1]), ('t2i', s_g.shape[0])):
        c, f = r[d][0].numpy(), r[d][1].numpy()
        assert ((c >= 0) & (c < G)).all() and all(len(set(row)) == len(row) for row in c)
        assert (np.diff(f, axis=1) <= 0).all()
