"""The image chain (decode, resize, crop, the uint8 cache, the encoder's normalisation) against the libraries' own
transforms on real photographs, and the decode-once cache: corrupt images, stale caches, missing images.

Tolerance: the cache stores uint8, and torchvision's uint8 resampling (which itr_nb and transformers'
CLIPImageProcessor use) and Pillow's (which timm's transform uses) round to the nearest level independently, so a
pixel may differ by one level, 1/255 before normalisation, 1/(255 std) after; float32 arithmetic adds < 1e-5."""
import contextlib, io, json, shutil
from pathlib import Path
import numpy as np, pytest, torch
from PIL import Image
from itr_nb.core import ItrError
from itr_nb.data import Preprocess, load_image
from itr_nb.splits import load_split
from itr_nb.retrieval import image_preprocess

def _photos():
    "scikit-image's photographs: square, landscape, portrait, grey, odd sides; a JPEG among the PNGs."
    skd = pytest.importorskip('skimage.data')
    a = {n: getattr(skd, n)() for n in ('astronaut', 'chelsea', 'coffee', 'rocket', 'camera', 'coins', 'hubble_deep_field')}
    a['rocket_portrait'] = np.ascontiguousarray(a['rocket'].transpose(1, 0, 2))
    a['chelsea_odd'] = a['chelsea'][:299, :449]          # odd margins: the crop's rounding matters
    return a

@pytest.fixture(scope='module')
def photo_set(tmp_path_factory):
    "The photos as files (PNG, and chelsea and coffee as JPEG too) and a Karpathy file listing them in split test."
    d = tmp_path_factory.mktemp('photos')
    files = []
    for name, a in _photos().items():
        Image.fromarray(a).save(d/f'{name}.png'); files.append(f'{name}.png')
        if name in ('chelsea', 'coffee', 'hubble_deep_field'): Image.fromarray(a).save(d/f'{name}.jpg', quality=92); files.append(f'{name}.jpg')
    ims = [dict(filename=f, imgid=k, split='test', sentences=[dict(raw=f'photo {k}')]) for k, f in enumerate(files)]
    (d/'dataset.json').write_text(json.dumps(dict(images=ims)))
    return d, files

def _worst(ours, ref, std):
    "Largest difference per channel, in units of one uint8 level after normalisation (1 / (255 std))."
    return ((ours - ref).abs().amax(dim=(0, 2, 3)) * 255 * std.view(3)).max().item()

def test_chain_matches_clip_image_processor(photo_set, tmp_path):
    "Cached uint8 -> CLIPImage's own normalisation equals CLIPImageProcessor's pixel_values, at 224 and at a saved config."
    from transformers import CLIPImageProcessor
    from itr_nb.encoders import tiny_clip, CLIPImage
    d, files = photo_set
    clip = tiny_clip(tmp_path/'clip')
    for kw in ({}, dict(size={'shortest_edge': 40}, crop_size={'height': 32, 'width': 32}, image_mean=[0.5, 0.4, 0.3], image_std=[0.2, 0.25, 0.3])):
        proc = CLIPImageProcessor(**kw); proc.save_pretrained(clip)
        enc = CLIPImage(clip)
        pre = image_preprocess(f'clip:{clip}')
        assert (pre.size, pre.target, pre.resize, pre.crop_offset) == (proc.crop_size['height'], proc.size['shortest_edge'], 'crop', 'floor')
        data = load_split(d/'dataset.json', 'test', preprocess=pre, cache_dir=tmp_path/'cache', progress=False)
        ours = (data.images[:].float() / 255 - enc.mean) / enc.std
        ref = torch.cat([proc(images=[Image.open(d/f)], return_tensors='pt')['pixel_values'] for f in files])
        assert ours.shape == ref.shape
        assert _worst(ours, ref, enc.std) <= 1 + 1e-3, _worst(ours, ref, enc.std)

def test_spec_overrides_match_clip_image_processor_with_the_same_overrides(photo_set, tmp_path):
    "'clip:DIR#mean=..#std=..#crop_pct=..' equals CLIPImageProcessor told the same mean, std and shortest edge."
    from transformers import CLIPImageProcessor
    from itr_nb.encoders import tiny_clip, image_encoder
    d, files = photo_set
    clip = tiny_clip(tmp_path/'clip'); CLIPImageProcessor().save_pretrained(clip)   # the tower's own: 224 of 224, CLIP's mean/std
    spec = f'clip:{clip}#mean=0.5,0.4,0.3#std=0.2,0.25,0.3#crop_pct=0.8'
    enc, pre = image_encoder(spec), image_preprocess(spec)
    assert (pre.size, pre.target) == (224, 280)                                      # floor(224 / 0.8)
    proc = CLIPImageProcessor(size={'shortest_edge': 280}, image_mean=[0.5, 0.4, 0.3], image_std=[0.2, 0.25, 0.3])
    data = load_split(d/'dataset.json', 'test', preprocess=pre, cache_dir=tmp_path/'cache', progress=False)
    ours = (data.images[:].float() / 255 - enc.mean) / enc.std
    ref = torch.cat([proc(images=[Image.open(d/f)], return_tensors='pt')['pixel_values'] for f in files])
    assert ours.shape == ref.shape
    assert _worst(ours, ref, enc.std) <= 1 + 1e-3, _worst(ours, ref, enc.std)

def test_chain_matches_timm_eval_transform(photo_set, tmp_path):
    "Cached uint8 -> TimmImage's normalisation equals timm's resolve_data_config + create_transform (eval)."
    import timm
    from timm.data import resolve_data_config, create_transform
    from itr_nb.encoders import TimmImage
    d, files = photo_set
    enc = TimmImage('resnet18')
    cfg = resolve_data_config({}, model=enc.model)
    tf = create_transform(**cfg)
    pre = image_preprocess('timm:resnet18', cfg['input_size'][-1], 'crop')
    assert (pre.size, pre.target, pre.crop_offset, pre.interpolation) == (224, int(224 // cfg['crop_pct']), 'round', cfg['interpolation'])
    data = load_split(d/'dataset.json', 'test', preprocess=pre, cache_dir=tmp_path/'cache', progress=False)
    ours = (data.images[:].float() / 255 - enc.mean) / enc.std
    ref = torch.stack([tf(Image.open(d/f).convert('RGB')) for f in files])
    assert _worst(ours, ref, enc.std) <= 1 + 1e-3, _worst(ours, ref, enc.std)

def test_draft_decoding_is_the_library_transform_of_the_reduced_decode(photo_set):
    "With draft, a JPEG twice the target decodes at a reduced scale, and the rest of the chain is the library's on it."
    from transformers import CLIPImageProcessor
    d, _ = photo_set
    proc, p = CLIPImageProcessor(), Preprocess(224, 'crop', crop_offset='floor', draft=True)
    im = Image.open(d/'hubble_deep_field.jpg'); im.draft('RGB', (224, 224))
    assert im.size == (500, 436)                                                  # 1000 x 872 decoded at half scale
    ref = proc(images=[im.convert('RGB')], return_tensors='pt')['pixel_values'][0]
    std, mean = torch.tensor(proc.image_std).view(3, 1, 1), torch.tensor(proc.image_mean).view(3, 1, 1)
    ours = (load_image(d/'hubble_deep_field.jpg', p).float() / 255 - mean) / std
    assert _worst(ours[None], ref[None], std) <= 1 + 1e-3

def _jpeg_dataset(root, n=20, splits=None):
    "n small photo-like JPEGs and a Karpathy file (all in split test unless `splits` says otherwise)."
    rng = np.random.default_rng(1)
    (root/'img').mkdir(parents=True, exist_ok=True)
    ims = []
    for k in range(n):
        a = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
        Image.fromarray(a).resize((80, 60), Image.BICUBIC).save(root/'img'/f'{k}.jpg', quality=90)
        ims.append(dict(filepath='img', filename=f'{k}.jpg', imgid=100 + k, split=(splits or {}).get(k, 'test'),
                        sentences=[dict(raw=f'image number {k}')]))
    (root/'dataset.json').write_text(json.dumps(dict(images=ims)))
    return root/'dataset.json'

def test_corrupt_jpeg_mid_build_names_file_and_imgid_and_leaves_no_cache(tmp_path):
    ds = _jpeg_dataset(tmp_path/'ds')
    bad = tmp_path/'ds'/'img'/'11.jpg'
    bad.write_bytes(bad.read_bytes()[:300])                                       # a JPEG cut short
    with pytest.raises(ItrError) as e:
        load_split(ds, 'test', 32, resize='crop', workers=2, cache_dir=tmp_path/'cache', progress=False)
    msg = str(e.value)
    for needle in (str(ds), 'images[11]', 'imgid 111', 'split test', f'unreadable image {bad}'): assert needle in msg, msg
    assert not (tmp_path/'cache').exists() or not list((tmp_path/'cache').iterdir())    # no cache, no temporary file

def test_missing_image_names_root_json_entry_and_split(tmp_path):
    ds = _jpeg_dataset(tmp_path/'ds', 6)
    with pytest.raises(ItrError) as e: load_split(ds, 'test', 32, image_root=tmp_path/'elsewhere', cache_dir=tmp_path/'c', progress=False)
    msg = str(e.value)
    for needle in (str(ds), 'images[0]', 'imgid 100 of split test', f"image not found: {tmp_path/'elsewhere'/'img'/'0.jpg'}",
                   f"image_root {tmp_path/'elsewhere'}"): assert needle in msg, msg

def test_cache_of_another_dataset_file_is_rebuilt(tmp_path):
    "A cache made from dataset A, put where dataset B's goes, is named stale and rebuilt from B's images."
    a, b = _jpeg_dataset(tmp_path/'a', 8), _jpeg_dataset(tmp_path/'b', 8)
    for k in range(8):                                                            # B's images differ from A's
        Image.fromarray(np.full((50, 70, 3), 20 * k, np.uint8)).save(tmp_path/'b'/'img'/f'{k}.jpg')
    ca, cb = tmp_path/'ca', tmp_path/'cb'
    A = load_split(a, 'test', 32, cache_dir=ca, progress=False)
    B = load_split(b, 'test', 32, cache_dir=cb, progress=False)
    fa, fb = next(ca.iterdir()), next(cb.iterdir())
    shutil.copy(fa, fb)                                                           # A's cache under B's name
    with contextlib.redirect_stdout(io.StringIO()) as out: B2 = load_split(b, 'test', 32, cache_dir=cb, progress=False)
    assert f'image cache {fb} is stale (' in out.getvalue() and 'dataset' in out.getvalue(), out.getvalue()
    ref = load_split(b, 'test', 32, cache=False, progress=False).images           # decoded in memory, no cache involved
    assert torch.equal(B2.images[:], ref) and not torch.equal(B2.images[:], A.images[:])
    # the dataset file itself changing (another modification time) also makes the cache stale
    b.write_text(b.read_text())
    with contextlib.redirect_stdout(io.StringIO()) as out: load_split(b, 'test', 32, cache_dir=cb, progress=False)
    assert 'is stale (dataset differ)' in out.getvalue(), out.getvalue()

def test_image_store_rows_equal_the_in_memory_path_and_limit_reads_the_whole_cache(tmp_path):
    ds = _jpeg_dataset(tmp_path/'ds', 10)
    full = load_split(ds, 'test', 24, resize='crop', cache_dir=tmp_path/'c', workers=2, progress=False)
    mem = load_split(ds, 'test', 24, resize='crop', cache=False, progress=False)
    assert torch.equal(full.images[:], mem.images) and full.images.shape == (10, 3, 24, 24)
    idx = torch.tensor([7, 0, 7, 3])
    assert torch.equal(full.images[idx], mem.images[idx]) and torch.equal(full.images[-1], mem.images[-1])
    part = load_split(ds, 'test', 24, resize='crop', limit=4, cache_dir=tmp_path/'c', progress=False)
    assert part.images.path == full.images.path and torch.equal(part.images[:], mem.images[:4])
    assert len(list((tmp_path/'c').iterdir())) == 1

def test_chain_matches_open_clip_transform(photo_set, tmp_path):
    "Cached uint8 -> OpenCLIPImage's normalisation equals open_clip's own eval transform (create_model_and_transforms), on the photos."
    import open_clip
    from itr_nb.encoders import tiny_open_clip, OpenCLIPImage
    d, files = photo_set
    oc = tiny_open_clip(tmp_path/'oc')
    _, _, tf = open_clip.create_model_and_transforms(f'local-dir:{oc}')
    enc = OpenCLIPImage(str(oc))
    pre = image_preprocess(f'open_clip:{oc}')
    assert (pre.size, pre.resize, pre.crop_offset, pre.interpolation) == (32, 'crop', 'round', 'bicubic')
    data = load_split(d/'dataset.json', 'test', preprocess=pre, cache_dir=tmp_path/'cache', progress=False)
    std = enc.std.float()
    ours = (data.images[:].float() / 255 - enc.mean.float()) / std
    ref = torch.stack([tf(Image.open(d/f)) for f in files])
    assert ours.shape == ref.shape
    assert _worst(ours, ref, std) <= 1 + 1e-3, _worst(ours, ref, std)
