"""Precomputed region features (issue 17, item 2): a precomp folder written here from the tiny benchmark's captions and
random features, read memory-mapped, trained on by the dual encoder and TGDT, and refused when its files disagree."""
import numpy as np, pytest, torch
from itr_nb.core import ItrError
from itr_nb.data import load_karpathy
from itr_nb.precomp import save_precomp, load_precomp, GEOMETRY
from itr_nb.splits import load_split, load_splits, pair_batches

R, D = 6, 12

@pytest.fixture(scope='module')
def precomp(tiny_benchmark, tmp_path_factory):
    "train/dev/test of the tiny benchmark as a precomp folder: its captions, random [N, 6, 12] features, pixel boxes with image sizes."
    d = tmp_path_factory.mktemp('precomp')
    kd, rng = load_karpathy(tiny_benchmark), np.random.default_rng(0)
    for name, split in (('train', 'train'), ('dev', 'val'), ('test', 'test')):
        s = kd.split(split)
        n = len(s.image_paths)
        x1, y1 = rng.uniform(0, 50, (n, R)), rng.uniform(0, 30, (n, R))
        boxes = np.stack([x1, y1, x1 + rng.uniform(1, 50, (n, R)), y1 + rng.uniform(1, 30, (n, R))], -1)
        save_precomp(d, name, rng.standard_normal((n, R, D)).astype(np.float32), s.raw_captions, boxes=boxes, sizes=np.tile([[100, 60]], (n, 1)))
    return d

def test_reads_the_files_memory_mapped(precomp, tiny_benchmark):
    tr = load_split(f'precomp:{precomp}', 'train')
    assert isinstance(tr.feats.arr, np.memmap) and tr.images is None and tr.n_captions == 5 * tr.n_images
    ims, boxes = np.load(precomp/'train_ims.npy'), np.load(precomp/'train_boxes.npy')
    o = tr.feats.take(torch.tensor([7, 3]))
    assert o.tokens.shape == (2, R, D + GEOMETRY)
    torch.testing.assert_close(o.tokens[:, :, :D], torch.from_numpy(ims[[7, 3]]), rtol=0, atol=0)
    b = boxes[7, 2] / np.array([100, 60, 100, 60])                       # by hand: normalised box and its area
    torch.testing.assert_close(o.tokens[0, 2, D:].double(), torch.tensor([*b, (b[2] - b[0]) * (b[3] - b[1])]), rtol=0, atol=1e-6)
    torch.testing.assert_close(o.global_, o.tokens.mean(1))
    assert tr.split.captions[:5] == [c for c in load_karpathy(tiny_benchmark).split('train').captions[:5]]

def test_splits_and_batches(precomp):
    tr, va, te = load_splits(precomp, None, limit_eval=10, progress=False)
    assert (va.split.name, va.n_images, te.n_captions) == ('dev', 10, 50)
    b = next(pair_batches(tr, 20, seed=1))
    torch.testing.assert_close(b['images'].tokens, tr.feats.take(b['img_idx']).tokens)
    assert (torch.as_tensor(tr.split.txt2img)[b['cap_idx']] == b['img_idx']).all()

def test_dual_encoder_and_tgdt_train_on_regions(precomp):
    from itr_nb.retrieval import ModelConfig, train_retrieval, evaluate_split, image_encoder_for
    from itr_nb.encoders import text_encoder
    from itr_nb.train import TrainConfig
    from itr_nb.tgdt import TGDT, TGDTObjective, evaluate_tgdt
    torch.set_num_threads(1)
    tr, va, te = load_splits(precomp, None, limit_train=40, limit_eval=10, progress=False)
    cfg = TrainConfig(epochs=1, lr=1e-3, device='cpu')
    m, _, _ = train_retrieval(tr, va, ModelConfig('precomp', dim=16), cfg, batch_size=20, progress=False)
    assert m.image_enc.dim == D + GEOMETRY and 0 <= evaluate_split(m, te)['rsum'] <= 600
    for spec in ('precomp', 'precomp:1'):
        t = TGDT(image_encoder_for(spec, tr, **({'heads': 2, 'ff': 16} if ':' in spec else {})), text_encoder('small-transformer', dim=16, layers=1), 16, 1, 2)
        assert t.img_tr.pos.shape[0] == R                                  # the position table sized from the regions
        t, _, _ = train_retrieval(tr, va, ModelConfig(spec), cfg, TGDTObjective(), batch_size=20, progress=False, model=t)
        r = evaluate_tgdt(t, te, 5, 5, ks=(), image_feats=te.feats)
        assert 0 <= r['two_stage_rsum'] <= 600

def test_bad_folders_name_the_file(precomp, tmp_path):
    caps = load_split(precomp, 'test').split.raw_captions
    save_precomp(tmp_path/'a', 'test', np.zeros((30, R, D), np.float32) + 1, caps[:-1])
    with pytest.raises(ItrError, match=r'test_caps.txt: 149 captions for the 30 images of test_ims.npy'): load_precomp(tmp_path/'a', 'test')
    save_precomp(tmp_path/'b', 'test', np.ones((30, R), np.int64), caps)
    with pytest.raises(ItrError, match=r'test_ims.npy: region features must be a float array'): load_precomp(tmp_path/'b', 'test')
    save_precomp(tmp_path/'c', 'test', np.ones((30, R, D), np.float32), caps, boxes=np.ones((29, R, 4)))
    with pytest.raises(ItrError, match=r'test_boxes.npy: boxes of shape \(29, 6, 4\)'): load_precomp(tmp_path/'c', 'test')
    with pytest.raises(ItrError, match=r"no val_ims.npy or dev_ims.npy for split 'val'"): load_split(tmp_path/'c', 'val')
    from itr_nb.cusa import teacher_features
    with pytest.raises(ItrError, match='precomputed region features only'): teacher_features(load_split(precomp, 'test'), precomp/'test_ims.npy')

def test_train_eval_template_on_a_precomp_folder(precomp, tmp_path):
    "image_encoder='precomp' in a template: the dual encoder on the regions, evaluated on the precomp test split."
    import json
    from itr_nb.experiment import run_template
    st = run_template('train_eval', dict(dataset=f'precomp:{precomp}', image_encoder='precomp', epochs=1, batch_size=20, dim=16,
                                         workers=0, limit_eval=10), tmp_path/'run', progress=False)
    assert st['status'] == 'ok', st.get('error')
    m = json.loads((tmp_path/'run'/'metrics.json').read_text())
    assert 0 <= m['rsum'] <= 600 and m['chance_R1_t2i'] == 10.0
