"TGDT: local similarity and the CMC loss terms against loops, two-stage ranking against exhaustive fused ranking, misses beyond K, the template."
import json
import numpy as np, pytest, torch, torch.nn.functional as F
from itr_nb.core import ItrError
from itr_nb.metrics import recall_metrics
from itr_nb.tgdt import (local_sim, candidate_local_sim, pair_local_sim, triplet_hardest, intra_consistency, TGDTObjective, two_stage,
                         ranking_scores, TokenTransformer, TGDT, image_token_count, embed_tokens, evaluate_tgdt)


def rand_case(n=5, m=9, R=4, W=5, d=6, seed=0):
    g = np.random.default_rng(seed)
    unit = lambda *s: (lambda a: a / np.linalg.norm(a, axis=-1, keepdims=True))(g.normal(size=s))
    vm = np.ones((n, R), bool); vm[1, 2:] = False; vm[3, 1:] = False
    tm = np.arange(W)[None] < g.integers(1, W + 1, m)[:, None]
    return unit(n, d), unit(m, d), unit(n, R, d), vm, unit(m, W, d), tm


def loop_local(v, vm, t, tm, lam=1.0, reduce='mean'):
    "s_l by the definition: for each pair, each valid word's best valid region, then mean (or sum) times lambda."
    out = np.zeros((len(v), len(t)))
    for i in range(len(v)):
        for j in range(len(t)):
            words = []
            for w in range(t.shape[1]):
                if not tm[j, w]: continue
                words.append(max(sum(v[i, r, k] * t[j, w, k] for k in range(v.shape[2])) for r in range(v.shape[1]) if vm[i, r]))
            out[i, j] = lam * (sum(words) / len(words) if reduce == 'mean' else sum(words))
    return out


# float64 throughout: two paths (blocked products, gathers, loops) then agree to ~1e-15, so ties cannot flip an order
# and a tolerance of 1e-12 decides on the formula, not on the CPU's float32 kernels.
T = lambda a: torch.as_tensor(a, dtype=torch.float64)
TOL = 1e-12
B = lambda a: torch.as_tensor(a, dtype=torch.bool)


@pytest.mark.parametrize('lam,reduce', [(1.0, 'mean'), (10.0, 'sum'), (0.5, 'mean')])
def test_local_sim_against_loops(lam, reduce):
    x, y, v, vm, t, tm = rand_case()
    ref = loop_local(v, vm, t, tm, lam, reduce)
    np.testing.assert_allclose(local_sim(T(v), B(vm), T(t), B(tm), lam, reduce).numpy(), ref, rtol=0, atol=TOL)
    np.testing.assert_allclose(local_sim(T(v), B(vm), T(t), B(tm), lam, reduce, block_mb=0).numpy(), ref, rtol=0, atol=TOL)   # one image per block


def test_candidate_local_sim_against_loops():
    x, y, v, vm, t, tm = rand_case(seed=1)
    ref = loop_local(v, vm, t, tm)
    ci = torch.tensor([[8, 0, 3], [1, 1, 2], [4, 5, 6], [7, 0, 1], [2, 8, 3]])
    np.testing.assert_allclose(candidate_local_sim(T(v), B(vm), T(t), B(tm), ci, 'images').numpy(), np.take_along_axis(ref, ci.numpy(), 1), rtol=0, atol=TOL)
    ct = torch.tensor([[0, 4], [1, 3], [2, 2], [3, 0], [4, 1], [0, 1], [2, 3], [4, 4], [1, 0]])
    np.testing.assert_allclose(candidate_local_sim(T(v), B(vm), T(t), B(tm), ct, 'captions').numpy(), np.take_along_axis(ref.T, ct.numpy(), 1), rtol=0, atol=TOL)


def loop_triplet(S, ids, m, hardest=True):
    "VSE++ (hardest) or VSE0 (all negatives) by loops; negatives are pairs of another image."
    n, tot = len(S), 0.0
    for i in range(n):   # image i against captions j
        h = [max(0.0, m + S[i, j] - S[i, i]) for j in range(n) if ids[j] != ids[i]]
        tot += (max(h) if hardest else sum(h)) if h else 0.0
    for j in range(n):   # caption j against images i
        h = [max(0.0, m + S[i, j] - S[j, j]) for i in range(n) if ids[i] != ids[j]]
        tot += (max(h) if hardest else sum(h)) if h else 0.0
    return tot


@pytest.mark.parametrize('hardest', [True, False])
def test_triplet_against_loops(hardest):
    g = np.random.default_rng(2)
    S = g.uniform(-1, 1, (7, 7)); ids = np.array([0, 1, 2, 0, 3, 1, 4])   # two images with two captions each
    got = triplet_hardest(T(S), torch.as_tensor(ids), 0.2, hardest)
    assert float(got) == pytest.approx(loop_triplet(S, ids, 0.2, hardest), abs=TOL)
    # one-to-one batch (no ids) and a batch of one image (no negatives at all)
    assert float(triplet_hardest(T(S), None, 0.3, hardest)) == pytest.approx(loop_triplet(S, np.arange(7), 0.3, hardest), abs=TOL)
    assert float(triplet_hardest(T(S), torch.zeros(7, dtype=torch.long), 0.2, hardest)) == 0.0


def loop_intra(x, y, mc):
    n, tot = len(x), 0.0
    for j in range(n):
        diff = max(abs(float(y[i] @ y[j]) - float(x[i] @ x[j])) for i in range(n))
        tot += max(0.0, diff - mc)
    return tot


def test_intra_consistency_against_loops():
    x, y, *_ = rand_case(n=6, m=6, seed=3)
    for mc in (0.0, 0.3, 0.8):
        assert float(intra_consistency(T(x), T(y), mc)) == pytest.approx(loop_intra(x, y, mc), abs=TOL)


class _Fixed(torch.nn.Module):
    "A stand-in model returning fixed outputs, so the objective's sum can be checked against the loop terms."
    def __init__(self, o): super().__init__(); self.o = o
    def forward(self, images, captions): return self.o


def test_objective_weights_and_warmup():
    x, y, v, vm, t, tm = rand_case(n=6, m=6, seed=4)
    ids = np.array([0, 1, 0, 2, 3, 4])
    o = dict(x=T(x), y=T(y), img_tokens=T(v), img_mask=B(vm), txt_tokens=T(t), txt_mask=B(tm))
    sl = loop_local(v, vm, t, tm, 10.0, 'sum')
    for hardest, wu in ((True, 0), (False, 5)):
        obj = TGDTObjective(0.2, 0.3, 2.0, 0.5, 3.0, 10.0, 'sum', warmup_steps=wu)
        r = obj(_Fixed(o), dict(images=None, captions=None, img_idx=torch.as_tensor(ids)))
        want = 2.0 * loop_triplet(x @ y.T, ids, 0.2, hardest) + 0.5 * loop_triplet(sl, ids, 0.2, hardest) + 3.0 * loop_intra(x, y, 0.3)
        assert float(r['loss']) == pytest.approx(want, rel=TOL)
    with pytest.raises(ItrError, match='reduce'): TGDTObjective(reduce='max')


def embeddings(n=6, m=30, seed=5):
    x, y, v, vm, t, tm = rand_case(n, m, R=3, W=4, d=8, seed=seed)
    return dict(x=T(x), y=T(y), img_tokens=T(v), img_mask=B(vm), txt_tokens=T(t), txt_mask=B(tm)), x @ y.T + loop_local(v, vm, t, tm)


def test_two_stage_with_whole_gallery_is_exhaustive_fused():
    emb, fused = embeddings()
    r = two_stage(emb, k_i2t=30, k_t2i=6)
    np.testing.assert_array_equal(r['i2t'][0].numpy(), np.argsort(-fused, 1, kind='stable'))
    np.testing.assert_array_equal(r['t2i'][0].numpy(), np.argsort(-fused.T, 1, kind='stable'))
    np.testing.assert_allclose(r['i2t'][1].numpy(), -np.sort(-fused, 1), rtol=0, atol=TOL)
    # the score matrices handed to the metrics rank like the exhaustive fused scores in their own direction
    t2i = np.arange(30) % 6
    a = recall_metrics(fused, t2i)
    b = recall_metrics(ranking_scores(r['s_g'], *r['i2t'], 'i2t'), t2i); c = recall_metrics(ranking_scores(r['s_g'], *r['t2i'], 't2i'), t2i)
    assert {k: v for k, v in a.items() if k.startswith('i2t')} == {k: v for k, v in b.items() if k.startswith('i2t')}
    assert {k: v for k, v in a.items() if k.startswith('t2i')} == {k: v for k, v in c.items() if k.startswith('t2i')}


def test_ground_truth_outside_k_is_a_miss():
    # caption 0 belongs to image 2; globally it prefers images 0 and 1, locally image 2 matches it perfectly
    e = torch.eye(4, dtype=torch.float64)
    emb = dict(x=e[:3], y=F.normalize(T([[0.9, 0.4, 0.1, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0]]), dim=-1),
               img_tokens=T([[[1, 0, 0, 0]], [[0, 1, 0, 0]], [[0, 0, 0, 1]]]), img_mask=None,
               txt_tokens=T([[[0, 0, 0, 1]], [[0, 1, 0, 0]], [[0, 0, 1, 0]], [[1, 0, 0, 0]]]), txt_mask=None)
    txt2img = np.array([2, 1, 2, 0])   # captions 1-3 are found first both ways
    fused = (emb['x'] @ emb['y'].T + local_sim(emb['img_tokens'], None, emb['txt_tokens'], None)).numpy()
    assert fused[:, 0].argmax() == 2                          # exhaustive fused retrieval finds it
    r = two_stage(emb, k_i2t=3, k_t2i=2)
    assert 2 not in r['t2i'][0][0].tolist()                   # stage 1 leaves it out of caption 0's two candidates
    s = ranking_scores(r['s_g'], *r['t2i'], 't2i')
    assert (s[:, 0].argsort(descending=True)).tolist()[-1] == 2   # ranked third, after the two candidates
    m = recall_metrics(s, txt2img, ks=(1, 2, 3))
    assert m['t2i_R@1'] == 75 and m['t2i_R@2'] == 75 and m['t2i_R@3'] == 100   # caption 0: a miss up to K, found at K + 1
    with pytest.raises(ItrError, match='K must be'): two_stage(emb, k_i2t=5)


def test_padding_does_not_change_the_branch():
    torch.manual_seed(0)
    # float32 (the branch casts its tokens to float32): with 3 of 7 keys masked, attention sums the same 4 terms in
    # another blocking; each output coordinate is a sum of ~d*L terms of unit-scale values, so its rounding is
    # ~ 40 * 2^-24 ~ 3e-6 at most, under the 1e-5 asked of unit vectors; a leak of the padded keys gives ~1e-1.
    br = TokenTransformer(5, 8, 1, 2, 'first').eval()
    x = torch.randn(1, 4, 5)
    with torch.no_grad():
        g1, v1, m1 = br(x)
        g2, v2, m2 = br(torch.cat([x, torch.randn(1, 3, 5)], 1), torch.tensor([[1, 1, 1, 1, 0, 0, 0]]).bool())
    torch.testing.assert_close(g1, g2, atol=1e-5, rtol=0); torch.testing.assert_close(v1, v2[:, :3], atol=1e-5, rtol=0)
    assert m2.sum() == 3 and v2[:, 3:].abs().sum() == 0


def test_template_through_papermill(tiny_benchmark, tmp_path):
    from itr_nb.experiment import run_template
    p = dict(dataset=str(tiny_benchmark), epochs=2, batch_size=32, dim=32, layers=1, heads=2, image_size=32, lr=2e-3,
             k_i2t=5, k_t2i=3, k_curve=[1, 3, 150], warmup_steps=2, seed=1)
    st = run_template('tgdt', p, tmp_path/'run', progress=False)
    assert st['status'] == 'ok', st.get('error')
    m = json.loads((tmp_path/'run'/'metrics.json').read_text())
    for w in ('global', 'local', 'fused', 'two_stage'):
        six = [m[f'{w}_{d}_R@{k}'] for d in ('i2t', 't2i') for k in (1, 5, 10)]
        assert m[f'{w}_rsum'] == pytest.approx(sum(six)) and m[f'{w}_secs'] > 0 and f'{w}_ext_t2i_mAP@R' in m
    assert m['k150_rsum'] == pytest.approx(m['fused_rsum'])   # K clipped to the whole gallery: exhaustive fused
    for f in ('k_curve.png', 'table.md', 'curves.png', 'best.safetensors'): assert (tmp_path/'run'/f).exists()


D = lambda a: torch.as_tensor(a, dtype=torch.float64)


@pytest.mark.parametrize('batched', [False, True])
@pytest.mark.parametrize('lam,reduce', [(1.0, 'mean'), (10.0, 'sum')])
def test_pair_local_sim_float64_against_loops(batched, lam, reduce):
    "Arbitrary pairs (repeats, every image, ragged captions, masked regions) in float64 against the definition, and equal to local_sim's entries."
    x, y, v, vm, t, tm = rand_case(n=7, m=13, R=5, W=6, d=8, seed=11)
    ref = loop_local(v, vm, t, tm, lam, reduce)
    g = np.random.default_rng(0)
    img, cap = g.integers(0, 7, 60), g.integers(0, 13, 60)
    img[:3], cap[:3] = 1, 4                                             # a pair listed three times
    for mb in (256, 0):                                                 # one word slot per product, too
        got = pair_local_sim(D(v), B(vm), D(t), B(tm), torch.as_tensor(img), torch.as_tensor(cap), lam, reduce, block_mb=mb, batched=batched)
        assert got.dtype == torch.float64
        np.testing.assert_allclose(got.numpy(), ref[img, cap], rtol=0, atol=1e-12)
    full = local_sim(D(v), B(vm), D(t), B(tm), lam, reduce)
    np.testing.assert_allclose(got.numpy(), full[img, cap].numpy(), rtol=0, atol=1e-12)


def test_two_stage_float64_against_exhaustive():
    "Two-stage scores of every candidate pair equal s_g + local_sim of that pair (float64), in both directions."
    x, y, v, vm, t, tm = rand_case(n=9, m=40, R=4, W=7, d=6, seed=12)
    emb = dict(x=D(x), y=D(y), img_tokens=D(v), img_mask=B(vm), txt_tokens=D(t), txt_mask=B(tm))
    fused = x @ y.T + loop_local(v, vm, t, tm)
    r = two_stage(emb, k_i2t=7, k_t2i=3)
    np.testing.assert_allclose(r['i2t'][1].numpy(), np.take_along_axis(fused, r['i2t'][0].numpy(), 1), rtol=0, atol=1e-12)
    np.testing.assert_allclose(r['t2i'][1].numpy(), np.take_along_axis(fused.T, r['t2i'][0].numpy(), 1), rtol=0, atol=1e-12)


def test_image_positions_sized_from_the_encoder():
    "More than 256 image tokens (the old fixed table): a ViT with 4-px patches at 72 px gives 324; a small CNN's grid by image size."
    from itr_nb.encoders import image_encoder, text_encoder
    te = text_encoder('small-transformer', dim=16, layers=1)
    vit = image_encoder('timm:vit_tiny_patch16_224', img_size=72, patch_size=4, depth=1)
    assert image_token_count(vit) == 324
    m = TGDT(vit, te, 16, 1, 2).eval()
    with torch.no_grad(): o = m.encode_image(torch.rand(2, 3, 72, 72))
    assert m.img_tr.pos.shape == (324, 16) and o['img_tokens'].shape == (2, 324, 16)
    cnn = image_encoder('small-cnn', widths=(8, 16))
    assert image_token_count(cnn, 96) == 24 * 24 and TGDT(cnn, te, 16, 1, 2, image_size=96).img_tr.pos.shape == (576, 16)
    assert TGDT(cnn, te, 16, 1, 2, img_positions=256).img_tr.pos.shape == (256, 16)   # the old table on request
    with pytest.raises(ItrError, match='give TGDT image_size='): TGDT(cnn, te, 16, 1, 2)
    small = TGDT(cnn, te, 16, 1, 2, img_positions=4)
    with pytest.raises(ItrError, match='position embeddings for only 4'): small.encode_image(torch.rand(1, 3, 32, 32))


def test_official_architecture():
    "arch='official': tokens from a stage-1 post-LN transformer, global from a stage-2 one on its detached output, 2048-wide FF, text words without the last two."
    from itr_nb.encoders import image_encoder, text_encoder
    torch.manual_seed(0)
    m = TGDT(image_encoder('small-cnn', widths=(8, 16)), text_encoder('small-transformer', dim=16, layers=1), 16, 1, 2,
             arch='official', image_size=32, dropout=0.0)
    for br in (m.img_tr, m.txt_tr):
        assert br.enc2 is not None and br.enc.norm is None and not br.enc.layers[0].norm_first and br.enc.layers[0].linear1.out_features == 2048
    caps = ['a red circle', 'two small blue squares', 'a star']
    o = m(torch.rand(3, 3, 32, 32), caps)
    L = [len(m.text_enc.tok(c)['input_ids']) for c in caps]
    assert o['txt_mask'].sum(1).tolist() == [l - 3 for l in L]         # [CLS], and the last two positions, are not words
    assert (o['txt_tokens'][~o['txt_mask']] == 0).all()
    # the global embedding's loss reaches stage 2 only; the local tokens' loss reaches stage 1 and the backbone
    o['x'].sum().backward()
    assert m.img_tr.enc.layers[0].linear1.weight.grad is None and m.img_tr.enc2.layers[0].linear1.weight.grad is not None
    m.zero_grad(); o = m(torch.rand(3, 3, 32, 32), caps); o['img_tokens'].sum().backward()
    assert m.img_tr.enc.layers[0].linear1.weight.grad is not None and m.img_tr.enc2.layers[0].linear1.weight.grad is None
    assert m.image_enc.body[0][0].weight.grad is not None
    with pytest.raises(ItrError, match='arch must be'): TGDT(m.image_enc, m.text_enc, 16, 1, 2, arch='two', image_size=32)


def test_evaluate_on_a_given_device(tiny_benchmark):
    "embed_tokens and evaluate_tgdt run where they are told and keep the embeddings there (the CPU here; a GPU run shows the rest)."
    from itr_nb.encoders import image_encoder, text_encoder
    from itr_nb.retrieval import load_split
    te = load_split(tiny_benchmark, 'test', 32, progress=False)
    torch.manual_seed(0)
    m = TGDT(image_encoder('small-cnn', widths=(8, 16)), text_encoder('small-transformer', dim=16, layers=1), 16, 1, 2, image_size=32)
    e = embed_tokens(m, te, device='cpu')
    assert all(e[k].device.type == 'cpu' for k in ('x', 'y', 'img_tokens', 'txt_tokens'))
    r = evaluate_tgdt(m, te, 5, 3, device=torch.device('cpu'))
    assert r['two_stage_secs'] > 0 and 0 <= r['two_stage_rsum'] <= 600


def test_tgdt_reads_frozen_text_tokens_from_disk(tmp_path):
    "A frozen text tower's tokens from `cache_text_tokens` give TGDT's text branch what the tower's own tokens, rounded to float16, give it."
    from itr_nb.encoders import SmallCNN, SmallTextTransformer, EncoderOutput, cache_text_tokens
    torch.manual_seed(0)
    m = TGDT(SmallCNN(widths=(8, 16)), SmallTextTransformer(dim=16), dim=16, layers=1, heads=2, image_size=32, freeze_text=True).eval()
    caps = ['a red square', 'two blue circles above a small cat', 'a cat']
    with torch.no_grad():
        live = m.text_enc(caps)
        ref = m.encode_text(EncoderOutput(live.global_, (live.tokens.half().float() * live.mask[..., None]), live.mask))
        cache_text_tokens(m, caps + ['a green star'], tmp_path)
        got = m.encode_text(caps)
    assert torch.equal(got['txt_mask'], ref['txt_mask'])
    for k in ('y', 'txt_tokens'): assert torch.allclose(got[k], ref[k], atol=1e-5), k
    with pytest.raises(ItrError, match='trained'): cache_text_tokens(TGDT(SmallCNN(widths=(8, 16)), SmallTextTransformer(dim=16), dim=16, layers=1, heads=2, image_size=32), caps, tmp_path)
