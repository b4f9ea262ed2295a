"CUSA's losses against the formulas written out with loops, its temperatures, the teacher cache, and its template."
import json, math
from pathlib import Path
import numpy as np, pytest, torch, torch.nn.functional as F
from itr_nb.core import ItrError
from itr_nb.losses import clamp_temperatures_
from itr_nb.cusa import soft_labels, kl_rows, csa_loss, usa_loss, CUSAObjective, Teacher, teacher_features, teacher_auc, label_peakedness
from itr_nb.retrieval import ModelConfig, build_model, ContrastiveObjective, load_split, pair_batches, steps_per_epoch
from itr_nb.train import TrainConfig, fit

# ---- methods eq. (2.1)-(2.6) (nbs/01_methods.ipynb) written out with Python loops in float64 -------------------------------------------

def dot(a, b): return sum(p * q for p, q in zip(a, b))

def softmax_row(z):
    m = max(z); e = [math.exp(v - m) for v in z]; s = sum(e)
    return [v / s for v in e]

def teacher_q(u, tau_t):
    "Q_ik = exp(cos(u_i,u_k)/tau_t) / sum_l exp(cos(u_i,u_l)/tau_t)."
    n = [math.sqrt(dot(a, a)) for a in u]
    return [softmax_row([dot(u[i], u[k]) / (n[i] * n[k]) / tau_t for k in range(len(u))]) for i in range(len(u))]

def kl_mean(Q, A, B, tau):
    "Mean over rows i of sum_k Q_ik (log Q_ik - log p_ik), p_i. = softmax_k(<A_i, B_k> / tau)."
    total = 0.
    for i in range(len(A)):
        p = softmax_row([dot(A[i], B[k]) / tau for k in range(len(B))])
        total += sum(q * (math.log(q) - math.log(pk)) for q, pk in zip(Q[i], p) if q > 0)
    return total / len(A)

def ref_csa(x, y, u, v, tau_t, tau_c):
    QI, QT = teacher_q(u, tau_t), teacher_q(v, tau_t)
    return (kl_mean(QI, x, y, tau_c) + kl_mean(QT, y, x, tau_c)) / 2

def ref_usa(xu, yu, u, v, tau_t, tau_ui, tau_ut):
    QI, QT = teacher_q(u, tau_t), teacher_q(v, tau_t)
    return (kl_mean(QI, xu, xu, tau_ui) + kl_mean(QT, yu, yu, tau_ut)) / 2

def hand_batch():
    "Five pairs in 3-d, unit vectors written by hand; pairs 0 and 3 show the same image."
    r = lambda *a: [c / math.sqrt(sum(b * b for b in a)) for c in a]
    x = [r(1, 0, 0), r(0, 1, 0), r(1, 1, 0), r(1, 0, 0), r(0, 1, 1)]
    y = [r(1, .2, 0), r(.1, 1, 0), r(1, 1, .5), r(.9, 0, .3), r(0, .5, 1)]
    u = [[2, 1, 0, 0], [0, 3, 1, 0], [1, 1, 1, 1], [2, 1, 0, 0], [0, 0, 1, 2]]   # teacher features, not normalised
    v = [[1, 0, 1], [0, 2, 0], [1, 1, 1], [3, 0, 1], [0, 1, 3]]
    return x, y, u, v

T = lambda a: torch.tensor(a, dtype=torch.float64)

@pytest.mark.parametrize('tau_t', [1.0, 0.1])
def test_losses_match_the_formulas(tau_t):
    x, y, u, v = hand_batch()
    qi, qt = soft_labels(T(u), tau_t).double(), soft_labels(T(v), tau_t).double()
    assert np.allclose(qi.numpy(), teacher_q(u, tau_t), atol=1e-6)
    got = csa_loss(T(x), T(y), qi, qt, 0.45).item()
    assert got == pytest.approx(ref_csa(x, y, u, v, tau_t, 0.45), rel=1e-5, abs=1e-7)
    xu, yu = y, x   # any unit vectors serve as the uni-modal heads' outputs
    got = usa_loss(T(xu), T(yu), qi, qt, 0.3, 0.7).item()
    assert got == pytest.approx(ref_usa(xu, yu, u, v, tau_t, 0.3, 0.7), rel=1e-5, abs=1e-7)

def test_teacher_equals_student_gives_zero():
    x, _, _, _ = hand_batch()
    X = T(x)
    q = soft_labels(X, 0.45).double()
    # CSA: student distributions <x_i, y_k> with y = x at tau_c = tau_t reproduce both teachers exactly
    assert csa_loss(X, X, q, q, 0.45).item() == pytest.approx(0, abs=1e-12)
    assert ref_csa(x, x, x, x, 0.45, 0.45) == pytest.approx(0, abs=1e-12)
    # USA: uni-modal heads equal to the teachers' (normalised) features, tau_uI = tau_uT = tau_t
    assert usa_loss(X, X, q, q, 0.45, 0.45).item() == pytest.approx(0, abs=1e-12)
    # and a student that differs pays a positive KL
    assert csa_loss(X, X.flip(0), q, q, 0.45).item() > 1e-3

def test_kl_is_batchmean_of_teacher_student():
    q = torch.tensor([[0.5, 0.5], [0.9, 0.1]]); z = torch.tensor([[0., 1.], [2., 0.]])
    p = z.softmax(1)
    want = ((q * (q.log() - p.log())).sum(1)).mean()
    assert kl_rows(q, z).item() == pytest.approx(want.item(), rel=1e-6)

def test_temperatures_init_and_clamps():
    obj = CUSAObjective(torch.randn(4, 3), torch.randn(4, 3))
    assert obj.tau_c().item() == pytest.approx(0.45) and obj.tau_ui().item() == pytest.approx(0.45) and obj.tau_ut().item() == pytest.approx(0.45)
    with torch.no_grad():
        for t in (obj.tau_c, obj.tau_ui, obj.tau_ut, obj.con.temperature): t.value.fill_(5.)
    clamp_temperatures_(obj)
    assert [obj.tau_c().item(), obj.tau_ui().item(), obj.tau_ut().item(), obj.con.temperature().item()] == pytest.approx([0.99, 1.0, 1.0, 0.10])
    with torch.no_grad():
        for t in (obj.tau_c, obj.tau_ui, obj.tau_ut, obj.con.temperature): t.value.fill_(-1.)
    clamp_temperatures_(obj)
    assert [obj.tau_c().item(), obj.tau_ui().item(), obj.tau_ut().item(), obj.con.temperature().item()] == pytest.approx([0.10, 0.10, 0.10, 0.01])
    with pytest.raises(ItrError, match='teacher features'): CUSAObjective(alpha=0.1)

def test_objective_terms_and_lookup_by_index():
    "The objective's terms equal the loss functions applied to the rows picked by img_idx / cap_idx."
    # float64 model, batch and teacher features: the objective and the loops agree to ~1e-15 on any CPU
    m = build_model(ModelConfig(dim=16), seed=0).double().eval()
    g = torch.Generator().manual_seed(1)
    fi, ft = torch.randn(5, 6, generator=g, dtype=torch.float64), torch.randn(25, 4, generator=g, dtype=torch.float64)
    b = dict(images=torch.rand(3, 3, 32, 32, generator=g, dtype=torch.float64), captions=['a red circle', 'a blue star', 'two squares'],
             img_idx=torch.tensor([4, 0, 2]), cap_idx=torch.tensor([21, 3, 12]))
    obj = CUSAObjective(fi, ft, alpha=0.3, beta=0.7, tau_t=0.2).double()
    for t in (obj.tau_c, obj.tau_ui, obj.tau_ut): t.value.data.fill_(0.45)   # float64 0.45, as the loops use
    with torch.no_grad():
        r = obj(m, b); o = m(b['images'], b['captions'])
    # the objective keeps its teacher features as float32 unit vectors; the loops start from those same values
    fi, ft = (F.normalize(f.float(), dim=-1).double() for f in (fi, ft))
    qi, qt = teacher_q(fi[[4, 0, 2]].tolist(), 0.2), teacher_q(ft[[21, 3, 12]].tolist(), 0.2)
    X, Y, XU, YU = (o[k].double().tolist() for k in ('x', 'y', 'x_uni', 'y_uni'))
    csa = (kl_mean(qi, X, Y, 0.45) + kl_mean(qt, Y, X, 0.45)) / 2
    usa = (kl_mean(qi, XU, XU, 0.45) + kl_mean(qt, YU, YU, 0.45)) / 2
    assert r['csa'].item() == pytest.approx(csa, rel=1e-10) and r['usa'].item() == pytest.approx(usa, rel=1e-10)
    assert r['loss'].item() == pytest.approx(r['con'].item() + 0.3 * csa + 0.7 * usa, rel=1e-10)

@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    from itr_nb.synth import build_benchmark
    d = tmp_path_factory.mktemp('bench')
    return build_benchmark(d/'synth', seed=2, n_train=64, n_val=50, n_test=50, image_size=32, workers=1, progress=False)/'dataset.json'

def test_alpha_beta_zero_trains_exactly_like_the_baseline(tiny):
    tr = load_split(tiny, 'train', 32, progress=False)
    cfg = TrainConfig(epochs=1, lr=2e-3, device='cpu', seed=0)
    batches = lambda ep: pair_batches(tr, 16, ep, 0)
    states = []
    for obj in (ContrastiveObjective(), CUSAObjective(torch.randn(64, 3), torch.randn(320, 3), alpha=0, beta=0)):
        m = build_model(ModelConfig(dim=16), seed=0)
        h = fit(m, obj, batches, steps_per_epoch(tr, 16), lambda m: {}, cfg, progress=False)
        states.append((h[0]['train_loss'], {k: v.clone() for k, v in m.state_dict().items()}))
    assert states[0][0] == states[1][0]
    assert all(torch.equal(states[0][1][k], states[1][1][k]) for k in states[0][1])

class CountingTeacher(Teacher):
    "A teacher that counts how many items it encodes."
    def __init__(self, *a, **k): super().__init__(*a, **k); self.items = 0
    def __call__(self, b): self.items += len(b); return super().__call__(b)

def test_teacher_cache_reused_and_rebuilt_when_stale(tiny, tmp_path, capsys):
    va = load_split(tiny, 'val', 32, progress=False)
    ti, tt = CountingTeacher('small-cnn', 'image', 32), Teacher('small-transformer', 'text')
    texts = []; tt.encoder.register_forward_hook(lambda m, inp, out: texts.extend(inp[0]))   # what the text tower encodes
    fi, ft = teacher_features(va, tiny, ti, tt, cache_dir=tmp_path, progress=False)
    assert ti.items == 50 and sorted(texts) == sorted(set(va.split.captions)) and fi.shape == (50, 128) and ft.shape == (250, 128)
    # the text rows follow the split's caption order (the table stores them sorted by length)
    with torch.no_grad(): assert torch.allclose(ft[5], tt.encoder([va.split.captions[5]]).global_[0], atol=1e-5)
    texts.clear()
    fi2, ft2 = teacher_features(va, tiny, ti, tt, cache_dir=tmp_path, progress=False)
    assert (ti.items, texts) == (50, []) and torch.equal(fi, fi2) and torch.equal(ft, ft2)
    # another subset of the split (same file names, other content): the image file is stale, rebuilt, not reused;
    # the caption table, keyed by the captions it holds, serves a subset as it is
    sub = load_split(tiny, 'val', 32, limit=10, progress=False)
    ti3 = CountingTeacher('small-cnn', 'image', 32)
    _, ft3 = teacher_features(sub, tiny, ti3, tt, cache_dir=tmp_path, progress=False)
    assert (ti3.items, texts) == (10, []) and torch.equal(ft3, ft[:50])
    # a rewritten dataset file (new modification time) makes the image cache stale as well
    import os; st = os.stat(tiny); os.utime(tiny, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    ti4 = CountingTeacher('small-cnn', 'image', 32)
    teacher_features(va, tiny, ti4, tt, cache_dir=tmp_path, progress=False)
    assert (ti4.items, texts) == (50, []) and 'stale' in capsys.readouterr().out
    # another teacher (input size) for the same split: its own file, the text table still used
    ti5 = CountingTeacher('small-cnn', 'image', 48)
    teacher_features(va, tiny, ti5, tt, cache_dir=tmp_path, progress=False)
    assert (ti5.items, texts) == (50, [])
    # another text tower (other weights) gets its own table
    tt6 = Teacher('small-transformer', 'text'); n6 = []; tt6.encoder.register_forward_hook(lambda m, inp, out: n6.extend(inp[0]))
    teacher_features(va, tiny, ti5, tt6, cache_dir=tmp_path, progress=False)
    assert sorted(n6) == sorted(set(va.split.captions))

def test_teacher_specs():
    with pytest.raises(ItrError, match='modality'): Teacher('minilm', 'audio')
    with pytest.raises(ItrError, match='not found locally'): Teacher('hf:/no/such/model', 'image').encoder
    with pytest.raises(ItrError, match='not found locally'): Teacher('st:/no/such/model', 'text').encoder
    assert Teacher('efficientnet-lite0', 'image', 128).spec == 'image-teacher:efficientnet-lite0@128px'

def test_hf_and_sentence_transformers_teachers(tmp_path):
    from transformers import ViTConfig, ViTModel
    from itr_nb.encoders import minilm_path
    torch.manual_seed(0)
    ViTModel(ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37, image_size=32, patch_size=8)).save_pretrained(tmp_path/'vit')
    o = Teacher(f'hf:{tmp_path/"vit"}', 'image', 32)(torch.randint(0, 255, (2, 3, 24, 24), dtype=torch.uint8))
    assert o.global_.shape == (2, 32)
    from sentence_transformers import SentenceTransformer
    st = Teacher(f'st:{minilm_path()}', 'text')(['a red circle', 'two blue squares'])
    ref = SentenceTransformer(str(minilm_path()), device='cpu').encode(['a red circle', 'two blue squares'], convert_to_tensor=True)
    assert torch.allclose(st.global_, ref, atol=1e-5)
    mini = Teacher('minilm', 'text')(['a red circle', 'two blue squares']).global_   # mean pooling, not normalised
    assert torch.allclose(F.normalize(mini, dim=-1), F.normalize(ref, dim=-1), atol=1e-5)

def test_open_clip_teachers(tmp_path):
    "open_clip:<folder> as CUSA's image and text teachers: open_clip's own embeddings of the images and the captions."
    import open_clip
    from itr_nb.encoders import tiny_open_clip
    d = tiny_open_clip(tmp_path/'oc')
    ref = open_clip.create_model(f'local-dir:{d}').eval(); tok = open_clip.get_tokenizer(f'local-dir:{d}')
    imgs, caps = torch.randint(0, 255, (2, 3, 32, 32), dtype=torch.uint8), ['a red circle', 'two blue squares']
    it, tt = Teacher(f'open_clip:{d}', 'image'), Teacher(f'open_clip:{d}', 'text')
    mean, std = torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1), torch.tensor([0.2, 0.25, 0.3]).view(1, 3, 1, 1)   # the folder's preprocess_cfg
    with torch.no_grad():
        assert torch.allclose(it(imgs).global_, ref.encode_image((imgs.float() / 255 - mean) / std), atol=1e-5)
        assert torch.allclose(tt(caps).global_, ref.encode_text(tok(caps)), atol=1e-5)
    assert it.spec == f'image-teacher:open_clip:{d}'

def test_teacher_auc_against_brute_force():
    g = torch.Generator().manual_seed(0)
    f = torch.randn(9, 4, generator=g); rel = np.zeros((9, 9), bool); rel[[0, 1, 2, 5], [1, 0, 5, 2]] = True
    c = F.normalize(f, dim=-1); s = (c @ c.T).numpy()
    pos = [s[i, j] for i in range(9) for j in range(9) if i != j and rel[i, j]]
    neg = [s[i, j] for i in range(9) for j in range(9) if i != j and not rel[i, j]]
    want = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg) / (len(pos) * len(neg))   # Mann-Whitney
    assert teacher_auc(f, rel) == pytest.approx(want)

def test_peakedness_extremes():
    f = torch.eye(16)   # orthogonal items: diagonal logit 1/tau_t, the others 0
    for r in label_peakedness(f, (1.0, 0.05), batch_size=16, n_batches=2):
        e = math.exp(1 / r['tau_t']); d = e / (e + 15)
        assert r['diag_share'] == pytest.approx(d, rel=1e-5)
        ent = -(d * math.log(d) + 15 * (1 - d) / 15 * math.log((1 - d) / 15))
        assert r["entropy_ratio"] == pytest.approx(ent / math.log(16), rel=1e-4, abs=1e-6)

def test_template_through_papermill(tiny, tmp_path):
    from itr_nb.experiment import run_template
    small = dict(dataset=str(tiny), epochs=2, batch_size=16, dim=32, image_size=32, lr=2e-3, teacher_size=32,
                 cache_dir=str(tmp_path/'cache'), alpha=0.5, beta=0.5, tau_t=0.1)
    st = run_template('cusa', small, tmp_path/'run', progress=False)
    assert st['status'] == 'ok', st.get('error')
    m = json.loads((tmp_path/'run'/'metrics.json').read_text())
    assert {'rsum', 'ext_t2i_mAP@R', 'ext_i2t_R-P', 'i2i_R@1', 't2t_mAP@R', 'cross_i2i_R@1', 'val_rsum', 'tau_c'} <= set(m)
    hist = json.loads((tmp_path/'run'/'history.json').read_text())
    assert len(hist) == 2 and {'train_con', 'train_csa', 'train_usa'} <= set(hist[0])
    assert len(list((tmp_path/'cache').glob('*.safetensors'))) == 2
    st = run_template('cusa', dict(small, alpha=0.0, beta=0.0, epochs=1), tmp_path/'base', progress=False)
    assert st['status'] == 'ok', st.get('error')
    assert 'train_csa' not in json.loads((tmp_path/'base'/'history.json').read_text())[0]
