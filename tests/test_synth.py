"Tests of the embedded benchmark: determinism, the oracle on hand-built scenes, relevance against brute force, loader."
import itertools
from pathlib import Path
import numpy as np, pytest
from PIL import Image
from itr_nb.core import load_json, load_relevance
from itr_nb.data import load_karpathy
from itr_nb.synth import build_benchmark, ensure_benchmark, describes, caption_facts, MARGIN, SYN

SIZES = dict(n_train=8, n_val=4, n_test=30, image_size=32, captions_per_image=5, progress=False)

@pytest.fixture(scope='module')
def built(tmp_path_factory):
    d = tmp_path_factory.mktemp('synth')
    return build_benchmark(d/'a', seed=0, **SIZES), build_benchmark(d/'b', seed=0, workers=1, **SIZES), build_benchmark(d/'c', seed=1, **SIZES)

def files(d): return {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob('*')) if p.is_file()}

def test_same_seed_same_bytes_other_seed_differs(built):
    a, b, c = map(files, built)
    assert sorted(a) == sorted(b) and len(a) == 42 + 3 + 6  # images, 3 json files, masks and relevance per split
    for k in a: assert a[k] == b[k], k           # 2 workers and 1 worker give the same bytes
    assert a['dataset.json'] != c['dataset.json'] and a['images/00000.png'] != c['images/00000.png']

# hand-built scenes and captions: what each should give is worked out by hand
def obj(shape, colour, x, y, size='small', texture='plain'): return dict(shape=shape, colour=colour, size=size, texture=texture, x=x, y=y)
def cap(*ents, rels=(), count=None): return dict(entities=list(ents), relations=[list(r) for r in rels], count=count)
SCENE = dict(objects=[obj('circle', 'red', 0.2, 0.5), obj('square', 'blue', 0.7, 0.3, 'large', 'striped'), obj('star', 'green', 0.2 + MARGIN / 2, 0.9)])

@pytest.mark.parametrize('c, want', [
    (cap({'shape': 'circle', 'colour': 'red'}), True),
    (cap({'shape': 'heart'}), False),                                                   # absent object
    (cap({'shape': 'circle', 'colour': 'green'}), False),                               # wrong colour
    (cap({'shape': 'square', 'size': 'small'}), False),                                 # wrong size
    (cap({'colour': 'blue'}), True),                                                    # partial caption
    (cap({'shape': 'square'}, {'shape': 'star'}), True),                                # partial, two objects
    (cap({'shape': 'circle'}, {'shape': 'circle'}), False),                             # one object cannot be two
    (cap({'shape': 'circle'}, {'shape': 'square'}, rels=[(0, 'left', 1)]), True),
    (cap({'shape': 'circle'}, {'shape': 'square'}, rels=[(0, 'right', 1)]), False),     # wrong relation
    (cap({'shape': 'circle'}, {'shape': 'square'}, rels=[(0, 'bigger', 1)]), False),
    (cap({'shape': 'circle'}, {'shape': 'star'}, rels=[(0, 'left', 1)]), False),        # within the margin: not left
    (cap({'shape': 'circle'}, {'shape': 'star'}, rels=[(1, 'right', 0)]), False),       # ... nor right
    (cap({'shape': 'circle'}, {'shape': 'star'}, rels=[(0, 'above', 1)]), True),
    (cap({'texture': 'striped'}, {}, {}, rels=[(0, 'above', 1), (1, 'left', 2)]), False),  # circle is not left of star (margin)
    (cap({'texture': 'striped'}, count=3), True),
    (cap({'texture': 'striped'}, count=2), False),
])
def test_oracle_hand_built(c, want): assert describes(c, SCENE) == want

def test_caption_facts():
    c = cap({'shape': 'circle', 'size': 'large'}, {}, rels=[(0, 'below', 1)], count=2)
    assert caption_facts(c) == [('attr', 0, 'shape', 'circle'), ('attr', 0, 'size', 'large'), ('rel', 0, 'below', 1), ('count', 2)]

def brute(d, split):
    "Relevance by calling `describes` on every pair, and i2i / t2t by their definitions, with loops."
    ims = [a for a in load_json(d/'annotations.json')['images'] if a['split'] == split]
    caps = [(i, c) for i, a in enumerate(ims) for c in a['captions']]
    R = np.array([[describes(c, a) for _, c in caps] for a in ims])
    own = np.array([i for i, _ in caps])
    A = np.array([[R[j, own == i].any() for j in range(len(ims))] for i in range(len(ims))])
    T = np.array([[R[own[d_], c_] and R[own[c_], d_] for d_ in range(len(caps))] for c_ in range(len(caps))])
    return ims, R, A & A.T, T

@pytest.mark.parametrize('split', ['test', 'val'])
def test_relevance_matches_brute_force(built, split):
    ims, R, I, T = brute(built[0], split)
    rel = load_relevance(built[0]/f'relevance_{split}.npz')
    assert (rel['i2t'].toarray() == R).all() and (rel['i2i'].toarray() == I).all() and (rel['t2t'].toarray() == T).all()
    own = np.repeat(np.arange(len(ims)), 5)
    assert R[own, np.arange(len(own))].all()    # every caption describes its own image
    if split == 'test': assert R.sum(0).max() > 1   # and some describe other images too

def test_tags_masks_and_loader(built):
    d = built[0]
    kd = load_karpathy(d/'dataset.json')
    s = kd.split('test')
    assert len(s.image_paths) == 30 and len(s.captions) == 150 and all(p.exists() for p in s.image_paths)
    assert Image.open(s.image_paths[0]).size == (32, 32)
    assert (np.asarray(s.txt2img) == np.repeat(np.arange(30), 5)).all()
    ann = [a for a in load_json(d/'annotations.json')['images'] if a['split'] == 'test']
    masks = np.load(d/'masks_test.npz')['masks']
    assert masks.shape == (30, 32, 32) and masks.dtype == np.uint8
    words = lambda o: {w for a in ('shape', 'colour', 'size', 'texture') for v in SYN.get(o[a], [o[a]]) for w in v.split()}
    for a, m, j in zip(ann, masks, range(30)):
        assert set(np.unique(m)) <= set(range(len(a['objects']) + 1))
        for c, raw in zip(a['captions'], [kd.images[i]['sentences'] for i in [a['imgid']]][0]):
            for t in c['tags']:
                assert raw['tokens'][t['token']] == t['word']
                if t['object'] is not None:   # an attribute or shape word of the object it points to, or a generic noun
                    assert t['word'] in words(a['objects'][t['object']]) | {'shape', 'object', 'thing', 'figure'}, (raw['raw'], t)

def test_ensure_reuses_and_rebuilds(tmp_path):
    kw = dict(n_train=2, n_val=1, n_test=2, image_size=16, progress=False, workers=1)
    d = ensure_benchmark(tmp_path/'s', **kw)
    t = (d/'dataset.json').stat().st_mtime_ns
    assert ensure_benchmark(tmp_path/'s', **kw) == d and (d/'dataset.json').stat().st_mtime_ns == t   # reused
    ensure_benchmark(tmp_path/'s', **(kw | dict(seed=5)))                                                # stale: rebuilt
    assert load_json(d/'meta.json')['seed'] == 5 and (d/'dataset.json').stat().st_mtime_ns != t
