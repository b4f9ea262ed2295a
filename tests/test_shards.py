"""webdataset shards written from the embedded benchmark: training through a template, the split by rank and by
worker, held-out shards as a fixed split, and a sample without a caption."""
import io, json, tarfile
from pathlib import Path
import numpy as np, pytest, torch
from PIL import Image
from itr_nb.core import ItrError
from itr_nb.data import Preprocess, load_karpathy
from itr_nb.shards import write_shards, sample_id, shard_data, read_shard_split, ShardStream
from itr_nb.splits import load_split, pair_batches, steps_per_epoch

def _jpeg(path):
    b = io.BytesIO(); Image.open(path).convert('RGB').save(b, 'JPEG', quality=90); return b.getvalue()

@pytest.fixture(scope='module')
def shards(tiny_benchmark, tmp_path_factory):
    "The tiny benchmark's 120 training images with their first captions, as 8 img2dataset-style shards of 15."
    s = load_karpathy(tiny_benchmark).split('train')
    first = np.r_[0, np.cumsum(np.bincount(s.txt2img))[:-1]]
    samples = [(f'{k:09d}', _jpeg(p), s.raw_captions[first[k]], {'imgid': s.imgids[k]}) for k, p in enumerate(s.image_paths)]
    d = tmp_path_factory.mktemp('wds')
    paths = write_shards(samples, d, per_shard=15)
    return f'{d}/{{00000..{len(paths) - 1:05d}}}.tar', samples, [str(p) for p in paths]

def test_shards_train_through_the_template(shards, tiny_benchmark, tmp_path):
    from itr_nb.experiment import run_template
    pattern, _, _ = shards
    p = dict(dataset=pattern, eval_dataset=str(tiny_benchmark), epochs=1, batch_size=20, dim=16, image_size=32, workers=2, lr=1e-3)
    st = run_template('train_eval', p, tmp_path/'run', progress=False)
    assert st['status'] == 'ok', st.get('error')
    hist = json.loads((tmp_path/'run'/'history.json').read_text())
    assert len(hist) == 1 and np.isfinite(hist[0]['train_loss'])
    m = json.loads((tmp_path/'run'/'metrics.json').read_text())
    assert m['chance_R1_t2i'] == pytest.approx(100 / 30) and 0 <= m['rsum'] <= 600   # evaluated on the benchmark's test split

def test_ttd_trains_on_shards(shards, tiny_benchmark, tmp_path):
    "The TTD template on a caption corpus of shards: baseline and self-distillation stream them, eval_dataset evaluates."
    from itr_nb.experiment import run_template
    pattern, _, _ = shards
    p = dict(dataset=pattern, eval_dataset=str(tiny_benchmark), epochs=1, ttd_epochs=1, batch_size=20, dim=16, image_size=32,
             workers=0, limit_eval=10, n_examples=0)
    st = run_template('ttd', p, tmp_path/'run', progress=False)
    assert st['status'] == 'ok', st.get('error')
    m = json.loads((tmp_path/'run'/'metrics.json').read_text())
    assert m['ttd_epochs_run'] == 1 and 0 <= m['after_t2i_R@1'] <= 100

def test_ranks_and_workers_split_the_shards(shards, monkeypatch):
    "Two ranks x two workers: every sample once per epoch, each rank from its own shards only (as wds.split_by_node deals them)."
    import webdataset as wds
    pattern, samples, paths = shards
    d = shard_data(pattern, Preprocess(32), buffer=10)
    assert d.n_samples == 120 and steps_per_epoch(d, 20) == 6
    ids = {}
    for r in range(2):
        bs = list(pair_batches(d, 20, epoch=1, seed=3, workers=2, rank=r, world=2))
        assert len(bs) == 6 and all(len(b['img_idx']) == 10 for b in bs)
        ids[r] = [i for b in bs for i in b['img_idx'].tolist()]
        mine = ShardStream(d, 10, seed=3, epoch=1, rank=r, world=2).rank_shards()
        monkeypatch.setenv('RANK', str(r)); monkeypatch.setenv('WORLD_SIZE', '2')
        urls = list(d.urls); import random; random.Random(3 * 100003 + 1).shuffle(urls)
        assert mine == list(wds.split_by_node(iter(urls)))                       # the library's rule
        own = {sample_id(u, f'{k:09d}') for u in mine for k in range(15 * int(Path(u).stem), 15 * int(Path(u).stem) + 15)}
        assert set(ids[r]) == own and len(ids[r]) == 60                          # its shards, each sample once
    monkeypatch.delenv('RANK'); monkeypatch.delenv('WORLD_SIZE')
    assert not set(ids[0]) & set(ids[1])
    assert set(ids[0]) | set(ids[1]) == {sample_id(paths[k // 15], s[0]) for k, s in enumerate(samples)}
    again = [i for b in pair_batches(d, 20, epoch=1, seed=3, workers=0, rank=0, world=2) for i in b['img_idx'].tolist()]
    other = [i for b in pair_batches(d, 20, epoch=2, seed=3, workers=2, rank=0, world=2) for i in b['img_idx'].tolist()]
    assert sorted(again) == sorted(ids[0]) and other != ids[0]                   # same samples without workers; epochs differ
    b = next(pair_batches(d, 20, seed=3, workers=2))
    cap = {sample_id(paths[k // 15], s[0]): s for k, s in enumerate(samples)}
    for i, c, x in zip(b['img_idx'].tolist(), b['captions'], b['images']):
        key, jpg, raw, _ = cap[i]
        assert c == ' '.join(raw.lower().replace('.', ' ').replace(',', ' ').split())
        ref = torch.from_numpy(np.asarray(Image.open(io.BytesIO(jpg)).convert('RGB')).copy()).permute(2, 0, 1).float() / 255
        assert torch.equal(x, ref)                                               # the sample's own image, 32 px as stored

def test_heldout_shards_are_a_fixed_split(shards, tmp_path):
    pattern, samples, _ = shards
    te = load_split(pattern, 'heldout', 32, cache_dir=tmp_path/'c', workers=2, progress=False)
    assert (te.n_images, te.n_captions, te.split.imgids[:2]) == (120, 120, ['000000000', '000000001'])
    for k in (0, 77, 119):
        ref = torch.from_numpy(np.asarray(Image.open(io.BytesIO(samples[k][1])).convert('RGB')).copy()).permute(2, 0, 1)
        assert torch.equal(te.images[k], ref)
    assert torch.equal(load_split(pattern, 'heldout', 32, cache_dir=tmp_path/'c', progress=False).images[:], te.images[:])

def test_sample_without_caption_names_shard_and_key(shards, tmp_path):
    _, samples, _ = shards
    bad = [(k, j, None if k == '000000013' else c, m) for k, j, c, m in samples[:30]]
    paths = write_shards(bad, tmp_path/'bad', per_shard=15)
    with pytest.raises(ItrError, match=r"00000\.tar: sample 000000013 has no caption"):
        list(pair_batches(shard_data(f'{tmp_path}/bad/{{00000..00001}}.tar', Preprocess(32)), 10, workers=2))
    with pytest.raises(ItrError, match=r"00000\.tar: sample 000000013 has no caption"):
        read_shard_split([str(p) for p in paths])

def test_frozen_text_tower_on_shards_streams_its_captions(shards, tiny_benchmark, tmp_path):
    "Shards have no caption list to cache: a frozen text tower (dual encoder or TGDT) encodes the streamed captions as they come."
    from itr_nb.experiment import run_template
    pattern, _, _ = shards
    small = dict(dataset=pattern, eval_dataset=str(tiny_benchmark), epochs=1, batch_size=20, dim=16, image_size=32, workers=0,
                 freeze_text=True)
    st = run_template('train_eval', small, tmp_path/'de', progress=False)
    assert st['status'] == 'ok', st.get('error')
    st = run_template('tgdt', small | dict(layers=1, heads=2, k_i2t=5, k_t2i=3, k_curve=[]), tmp_path/'tgdt', progress=False)
    assert st['status'] == 'ok', st.get('error')
