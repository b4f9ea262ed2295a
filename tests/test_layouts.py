"""Real corpora's layouts through a template: Flickr30K's (the Karpathy file and the image folder apart, so
`image_root` is needed), COCO's `filepath` subfolders, grey, transparent and CMYK images, an image with more than
five captions, and restval."""
import json
from pathlib import Path
import numpy as np, pytest, torch
from PIL import Image
from itr_nb.experiment import run_template

def _photo(rng, w, h):
    "A smooth random RGB image (JPEG-friendly, not flat)."
    return np.asarray(Image.fromarray(rng.integers(0, 256, (4, 5, 3), dtype=np.uint8)).resize((w, h), Image.BICUBIC))

def flickr_layout(root):
    "ann/dataset_flickr30k.json and imgs/flickr30k-images/ (+ a subfolder named by `filepath`), with odd images."
    rng = np.random.default_rng(0)
    imgs = root/'imgs'/'flickr30k-images'; (imgs/'sub').mkdir(parents=True); (root/'ann').mkdir()
    ims, k = [], 0
    def add(split, name, save, ncap=5, filepath=None):
        nonlocal k
        save(imgs/(filepath or '')/name)
        e = dict(filename=name, imgid=1000 + k, split=split, sentences=[dict(raw=f'A photo, number {k}; caption {c}.') for c in range(ncap)])
        if filepath: e['filepath'] = filepath
        ims.append(e); k += 1
    jpg = lambda w, h: (lambda p: Image.fromarray(_photo(rng, w, h)).save(p, quality=90))
    for i in range(8): add('train', f'tr{i}.jpg', jpg(60 + 4 * i, 45), filepath='sub' if i % 2 else None)
    for i in range(4): add('restval', f'rv{i}.jpg', jpg(45, 60))
    add('val', 'grey.jpg', lambda p: Image.fromarray(_photo(rng, 50, 40)[..., 0]).save(p))          # mode L
    add('val', 'many.jpg', jpg(64, 48), ncap=7)
    add('val', 'rgba.png', lambda p: Image.fromarray(np.dstack([_photo(rng, 40, 50), np.r_[np.zeros((25, 40)), np.full((25, 40), 255)].astype(np.uint8)])).save(p))
    add('val', 'cmyk.jpg', lambda p: Image.fromarray(_photo(rng, 48, 48)).convert('CMYK').save(p))
    add('test', 'te_grey.png', lambda p: Image.fromarray(_photo(rng, 70, 40)[..., 1]).save(p))
    add('test', 'te_many.jpg', jpg(56, 42), ncap=7, filepath='sub')
    add('test', 'te_rgba.png', lambda p: Image.fromarray(np.dstack([_photo(rng, 48, 36), np.full((36, 48), 128, np.uint8)])).save(p))
    for i in range(2): add('test', f'te{i}.jpg', jpg(50, 70))
    (root/'ann'/'dataset_flickr30k.json').write_text(json.dumps(dict(dataset='flickr30k', images=ims)))
    return root/'ann'/'dataset_flickr30k.json', imgs

def _reference(path, size):
    "Independently: Pillow decode, transparency on white, Pillow bicubic shorter side to `size`, centre crop (round)."
    im = Image.open(path)
    if 'A' in im.getbands():
        a = np.asarray(im.convert('RGBA')).astype(np.float64)
        im = Image.fromarray(np.round(a[..., :3] * a[..., 3:] / 255 + 255 * (1 - a[..., 3:] / 255)).astype(np.uint8))
    im = im.convert('RGB'); w, h = im.size
    W, H = (size, int(size * h / w)) if w <= h else (int(size * w / h), size)
    a = np.asarray(im.resize((W, H), Image.BICUBIC)).astype(np.int64)
    t, l = int(round((H - size) / 2)), int(round((W - size) / 2))
    return torch.from_numpy(a[t:t + size, l:l + size]).permute(2, 0, 1)

def test_flickr_layout_through_the_template(tmp_path):
    ds, root = flickr_layout(tmp_path)
    p = dict(dataset=str(ds), image_root=str(root), image_size=32, resize='crop', epochs=1, batch_size=8, dim=16, workers=2, lr=1e-3)
    st = run_template('train_eval', p, tmp_path/'run', progress=False)
    assert st['status'] == 'ok', st.get('error')
    m = json.loads((tmp_path/'run'/'metrics.json').read_text())
    assert m['chance_R1_t2i'] == pytest.approx(100 / 5) and m['chance_R1_i2t'] == pytest.approx(100 * 5 / 25)   # 5 captions each at test
    # the template's caches, read back: train joins restval, val keeps all seven captions, test five
    from itr_nb.retrieval import image_preprocess, load_splits
    tr, va, te = load_splits(str(ds), image_preprocess('small-cnn', 32, 'crop'), str(root), progress=False)
    assert (tr.n_images, tr.n_captions, va.n_images, va.n_captions, te.n_images, te.n_captions) == (12, 60, 4, 22, 5, 25)
    names = [Path(x).name for s in (tr, va, te) for x in s.split.image_paths]
    assert Path(tr.split.image_paths[1]) == root/'sub'/'tr1.jpg' and 'rv3.jpg' in names
    for data in (tr, va, te):
        ref = torch.stack([_reference(x, 32) for x in data.split.image_paths])
        assert (data.images[:].long() - ref).abs().max() <= 1                    # one level: the two resamplers' rounding
    grey, rgba = va.images[0], va.images[2]
    assert torch.equal(grey[0], grey[1]) and torch.equal(grey[1], grey[2])       # grey replicated to RGB
    top = _reference(va.split.image_paths[2], 32)[:, :10]
    assert (top == 255).all() and (rgba[:, :10] == 255).all()                    # the transparent half is white
    assert (tmp_path/'run'/'best.safetensors').exists()

def test_image_root_is_a_template_parameter():
    from itr_nb.experiment import check_params
    root = Path(__file__).resolve().parents[1]/'experiments'
    for t in ('train_eval', 'cusa', 'tgdt', 'ttd'):
        check_params(root/f'{t}.ipynb', dict(image_root='/data/flickr30k/flickr30k-images', resize='crop', workers=0))

def test_ttd_command_takes_image_root(tmp_path, capsys):
    "`itr-nb ttd --image-root` reads a Flickr30K-layout corpus whose images live apart from its JSON; without it the message names the root."
    from dataclasses import asdict
    from itr_nb.cli import main
    from itr_nb.encoders import ModelConfig, build_model
    from itr_nb.train import save_checkpoint
    ds, root = flickr_layout(tmp_path)
    cfg = ModelConfig(dim=16)
    ck = save_checkpoint(tmp_path/'ck'/'best.safetensors', dict(model=build_model(cfg, seed=0)), asdict(cfg))
    assert main(['ttd', str(ck), '--dataset', str(ds), '--image-size', '32']) == 2
    assert str(ds.parent) in capsys.readouterr().err                     # the JSON's folder, where it looked by default
    assert main(['ttd', str(ck), '--dataset', str(ds), '--image-root', str(root), '--image-size', '32', '--out', str(tmp_path/'m.json')]) == 0
    assert (tmp_path/'m.json').exists()
