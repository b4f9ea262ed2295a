"Training steps, batches and split loading of itr_nb.retrieval on the tiny benchmark."
import numpy as np, torch
from itr_nb.losses import info_nce
from itr_nb.retrieval import load_split, pair_batches, steps_per_epoch, build_model, ModelConfig, ContrastiveObjective, embed_split
from itr_nb.train import param_groups

def test_two_steps_lower_the_loss(tiny_benchmark):
    tr = load_split(tiny_benchmark, 'train', 32, progress=False)
    model, obj = build_model(ModelConfig(dim=32), seed=0), ContrastiveObjective()
    batch = next(pair_batches(tr, 48, seed=0))
    opt = torch.optim.AdamW(param_groups([model, obj]), lr=3e-3)
    losses = []
    for _ in range(3):
        loss = obj(model, batch)['loss']; losses.append(loss.item())
        opt.zero_grad(); loss.backward(); opt.step()
    assert losses[2] < losses[0]
    # the objective is the plain formula on the model's cross-modal embeddings
    model.eval()   # no dropout, fixed batch-norm statistics: two forward passes agree
    with torch.no_grad():
        out = model(batch['images'], batch['captions'])
        ref = info_nce(out['x'], out['y'], batch['img_idx'], obj.con.temperature())
        assert torch.isclose(obj(model, batch)['loss'], ref)

def test_batches_cover_every_image_once_with_its_own_captions(tiny_benchmark):
    tr = load_split(tiny_benchmark, 'train', 32, progress=False)
    seen = []
    for b in pair_batches(tr, 25, epoch=2, seed=7, drop_last=False):
        for c, i, cap in zip(b['cap_idx'].tolist(), b['img_idx'].tolist(), b['captions']):
            assert tr.split.txt2img[c] == i and tr.split.captions[c] == cap
        seen += b['img_idx'].tolist()
    assert sorted(seen) == list(range(120))
    assert steps_per_epoch(tr, 25, drop_last=False) == 5 and steps_per_epoch(tr, 25) == 4

def test_limit_keeps_the_relevance_of_the_kept_items(tiny_benchmark):
    full = load_split(tiny_benchmark, 'test', 32, progress=False)
    part = load_split(tiny_benchmark, 'test', 32, limit=7, progress=False)
    keep = [j for j in range(full.n_captions) if full.split.txt2img[j] < 7]
    assert part.split.captions == [full.split.captions[j] for j in keep]
    assert (part.rel['i2t'].toarray() == full.rel['i2t'].toarray()[:7][:, keep]).all()
    assert (part.rel['t2t'].toarray() == full.rel['t2t'].toarray()[keep][:, keep]).all()
    assert torch.equal(part.images[:], full.images[:7])

def test_embeddings_do_not_depend_on_batching(tiny_benchmark):
    te = load_split(tiny_benchmark, 'test', 32, progress=False)
    model = build_model(ModelConfig(dim=16), seed=1).eval()
    a, b = embed_split(model, te, batch_size=7), embed_split(model, te, batch_size=1000)
    # float32 (embed_split feeds float32 images): batches of 7 and of the whole split pad captions to other lengths and
    # may take other kernels, so each coordinate of a unit vector differs by rounding only. A worst-case bound for one
    # of the network's dot products of n <= 1,152 terms is n * 2^-24 ~ 7e-5 of their absolute sum; the tolerance
    # takes that bound for the whole forward. A padding leak or a reordering bug moves coordinates by ~1e-1.
    for k in a: assert (a[k] - b[k]).abs().max() <= 1152 * 2.0**-24, k
