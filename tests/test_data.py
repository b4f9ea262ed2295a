"The Karpathy loader on a hand-written file and broken variants of it."
import copy, json
import numpy as np, pytest
from PIL import Image
from itr_nb.core import ItrError
from itr_nb.data import load_karpathy, check_images, PairDataset, ImageDataset

GOOD = {'dataset': 'hand', 'images': [
    {'filepath': 'val2014', 'filename': 'a.jpg', 'imgid': 10, 'split': 'test', 'sentids': [0, 1],
     'sentences': [{'raw': 'Two dogs play.', 'sentid': 0}, {'raw': 'Dogs, playing!', 'sentid': 1}]},
    {'filepath': 'val2014', 'filename': 'b.jpg', 'imgid': 11, 'split': 'restval',
     'sentences': [{'raw': 'A cat.'}]},
    {'filepath': 'train2014', 'filename': 'c.jpg', 'imgid': 12, 'split': 'train',
     'sentences': [{'raw': 'A bird'}, {'raw': 'a small bird'}]},
    {'filepath': 'val2014', 'filename': 'd.jpg', 'imgid': 13, 'split': 'test',
     'sentences': [{'raw': f'caption {k}'} for k in range(7)]}]}

@pytest.fixture
def root(tmp_path):
    for im in GOOD['images']:
        (tmp_path/im['filepath']).mkdir(exist_ok=True)
        Image.new('RGB', (6, 5), (9, 99, 199)).save(tmp_path/im['filepath']/im['filename'])
    return tmp_path

def write(root, d, name='dataset_coco.json'):
    (root/name).write_text(json.dumps(d)); return root/name

def test_good_file(root):
    kd = load_karpathy(write(root, GOOD))
    s = kd.split('test')
    assert s.imgids == [10, 13] and len(s.captions) == 9
    assert s.captions[:2] == ['two dogs play', 'dogs playing']
    assert s.txt2img.tolist() == [0, 0] + [1]*7
    assert s.image_paths[1] == root/'val2014'/'d.jpg'
    # COCO evaluation keeps the first five captions of an image that has more
    s5 = kd.split('test', max_captions_per_image=5)
    assert s5.txt2img.tolist() == [0, 0, 1, 1, 1, 1, 1] and s5.raw_captions[-1] == 'caption 4'
    assert [list(o) for o in s5.img2txt] == [[0, 1], [2, 3, 4, 5, 6]]
    tr = kd.split('train', join_restval=True)
    assert sorted(tr.imgids) == [11, 12]
    assert kd.split('train').imgids == [12]
    x, cap, i = PairDataset(s5)[3]
    assert x.shape == (3, 5, 6) and cap == 'caption 1' and i == 1
    assert abs(x[1, 0, 0].item() - 99/255) <= 3/255  # JPEG is lossy
    assert check_images(kd, s) == 2

BROKEN = [
    (lambda d: None, 'text', '{"images": [{"filename": ', 'malformed JSON at line 1'),
    (lambda d: d['images'][2].pop('imgid'), 'json', None, "images[2]: field 'imgid' missing"),
    (lambda d: d['images'][1].pop('sentences'), 'json', None, "images[1]: field 'sentences' missing"),
    (lambda d: d['images'][3]['sentences'][4].update(raw='  ,. '), 'json', None, 'images[3].sentences[4].raw is empty'),
    (lambda d: d['images'][0]['sentences'][1].pop('raw'), 'json', None, 'images[0].sentences[1].raw missing'),
    (lambda d: d['images'][0].update(split='testing'), 'json', None, "images[0].split = 'testing'"),
    (lambda d: d.pop('images'), 'json', None, "field 'images' missing"),
]

@pytest.mark.parametrize('mutate,kind,text,msg', BROKEN)
def test_broken_files(root, mutate, kind, text, msg):
    if kind == 'text': p = root/'dataset_coco.json'; p.write_text(text)
    else:
        d = copy.deepcopy(GOOD); mutate(d); p = write(root, d)
    with pytest.raises(ItrError) as e: load_karpathy(p)
    assert msg in str(e.value) and 'dataset_coco.json' in str(e.value)

def test_missing_file(tmp_path):
    with pytest.raises(ItrError, match='not found.*nope.json'): load_karpathy(tmp_path/'nope.json')

def test_missing_image(root):
    kd = load_karpathy(write(root, GOOD)); s = kd.split('test')
    (root/'val2014'/'d.jpg').unlink()
    with pytest.raises(ItrError, match=r'imgid 13 not found.*d\.jpg'): check_images(kd, s)
    with pytest.raises(ItrError, match=r'image not found.*d\.jpg'): ImageDataset(s)[1]

def test_truncated_image(root):
    kd = load_karpathy(write(root, GOOD)); s = kd.split('test')
    p = root/'val2014'/'a.jpg'
    p.write_bytes(p.read_bytes()[:40])
    with pytest.raises(ItrError, match=r'imgid 10 unreadable.*a\.jpg'): check_images(kd, s)
    with pytest.raises(ItrError, match=r'unreadable image.*a\.jpg'): ImageDataset(s)[0]

def test_unknown_split(root):
    with pytest.raises(ItrError, match='unknown split'): load_karpathy(write(root, GOOD)).split('dev')
