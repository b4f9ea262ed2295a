"""Teacher diagnostics for the embedded benchmark (issue 18): how well each candidate uni-modal teacher's cosine
similarity separates the oracle's positives (ROC AUC on the validation split, `itr_nb.cusa.teacher_auc`).

    .venv/bin/python bench/teachers.py            # writes runs/teachers/auc.json, prints the table

Allowed teachers see one modality only and never the image-caption pairing. Rows marked `bound` use what the
benchmark's generator knows (its synonym table, each image's objects, each caption's parse) and are not teachers:
they bound what a teacher's cosine similarity could reach with perfect perception.
"""
import itertools, json, time
from pathlib import Path
import numpy as np, torch, torch.nn.functional as F
from sklearn.feature_extraction.text import TfidfVectorizer, ENGLISH_STOP_WORDS
from itr_nb.core import atomic_write, runs_root, data_root
from itr_nb.splits import load_split
from itr_nb.synth import ensure_benchmark, SYN, STOP
from itr_nb.cusa import teacher_auc
from itr_nb.encoders import EfficientNetLite0, minilm_path

rows = []
def row(side, teacher, kind, fn):
    t = time.perf_counter(); auc = teacher_auc(fn(), rel[side]); rows.append(dict(side=side, teacher=teacher, kind=kind, auc=round(auc, 4), secs=round(time.perf_counter() - t, 1)))
    print(f"{side:4s} {kind:8s} {teacher:55s} AUC {auc:.3f}", flush=True)

va = load_split(ensure_benchmark()/'dataset.json', 'val', 64, progress=False)
rel = dict(i2i=va.rel['i2i'], t2t=va.rel['t2t'])
x = va.images[:].float() / 255

# images
row('i2i', 'raw pixels, 16 x 16', 'allowed', lambda: F.interpolate(x, size=16, mode='area').flatten(1))
def hist(levels):
    q = (x * (levels - 1e-3)).long(); idx = (q[:, 0] * levels + q[:, 1]) * levels + q[:, 2]
    return torch.stack([torch.bincount(i.flatten(), minlength=levels ** 3) for i in idx]).float().sqrt()
row('i2i', 'colour histogram, 6 levels per channel (sqrt)', 'allowed', lambda: hist(6))
eff = EfficientNetLite0().eval()
def eff_feats(size, block=None, images=None):
    m, out, images = eff.model, [], x if images is None else images
    with torch.no_grad():
        for b in range(0, len(images), 200):
            xi = images[b:b + 200]
            if size != 64: xi = F.interpolate(xi, size=(size, size), mode='bilinear', align_corners=False)
            if block is None: out.append(eff(xi).global_); continue
            h = m._swish(m._bn0(m._conv_stem(xi * 2 - 1)))
            for blk in m._blocks[:block]: h = blk(h)
            out.append(h.mean((2, 3)))
    return torch.cat(out)
for size in (64, 128, 224): row('i2i', f'ImageNet EfficientNet-Lite0 at {size} px, 1280-d head', 'allowed', lambda: eff_feats(size))
for block in (6, 11): row('i2i', f'ImageNet EfficientNet-Lite0 at 64 px, block {block} average', 'allowed', lambda: eff_feats(64, block))
# the background is a smooth gradient: replaced by grey first (itr_nb.cusa.foreground), from the image alone
from itr_nb.cusa import foreground, ForegroundColours
xf = foreground(x)[0]
row('i2i', 'colour histogram of the foreground, 6 levels per channel (sqrt): the fg-colours teacher', 'allowed', lambda: ForegroundColours()(x).global_)
row('i2i', 'ImageNet EfficientNet-Lite0 at 128 px on the foreground, 1280-d head', 'allowed', lambda: eff_feats(128, images=xf))
from itr_nb.encoders import SmallCNN
from safetensors.torch import load_file
for f in sorted((runs_root()/'teachers').glob('simclr-*.json')):   # bench/ssl_teacher.py's teachers
    cfg = json.loads(f.read_text())['args']; w = data_root()/'teachers'/f'{f.stem}.safetensors'
    if not w.exists(): print(f'{f.stem}: {w} missing (run bench/ssl_teacher.py --name {cfg["name"]} again)'); continue
    enc = SmallCNN(tuple(int(v) for v in cfg['widths'].split(',')), extra=1); enc.load_state_dict(load_file(str(w))); enc.eval()
    inp = foreground(x, cfg['fg'])[0] if cfg['fg'] else x
    with torch.no_grad(): row('i2i', f"SimCLR on the pretraining images, {cfg['steps']} steps{', foreground' if cfg['fg'] else ''} ({f.stem})", 'allowed',
                              lambda: torch.cat([enc(inp[b:b + 500]).global_ for b in range(0, len(inp), 500)]))


# what the generator knows, as bags of attribute conjunctions: every subset of an object's (a caption entity's)
# attributes is a feature, weighted by its size; caption relations as (attribute, relation, attribute); the count
annotations = json.loads((ensure_benchmark()/'annotations.json').read_text())['images']
byfile = {a['filename']: a for a in annotations}
scenes = [byfile[Path(p).name] for p in va.split.image_paths]
def conjunctions(objs, relations=(), count=None, orders=4):
    r = {}
    for o in objs:
        ks = sorted(k for k in ('shape', 'colour', 'size', 'texture') if k in o)
        for n in range(1, min(orders, len(ks)) + 1):
            for c in itertools.combinations(ks, n): r[(c, tuple(o[k] for k in c))] = r.get((c, tuple(o[k] for k in c)), 0) + n
    for a, rel_, b in relations:
        for fa in sorted((k, v) for k, v in objs[a].items() if k in ('shape', 'colour', 'size', 'texture')):
            for fb in sorted((k, v) for k, v in objs[b].items() if k in ('shape', 'colour', 'size', 'texture')): r[(fa, rel_, fb)] = r.get((fa, rel_, fb), 0) + 1
    if count is not None: r[('count', count)] = 1
    return r
def bags(rows):
    vocab = {f: i for i, f in enumerate(sorted({f for r in rows for f in r}, key=repr))}
    m = torch.zeros(len(rows), len(vocab))
    for i, r in enumerate(rows):
        for f, v in r.items(): m[i, vocab[f]] = v
    return m
row('i2i', "each image's objects, as the generator drew them: single attributes only", 'bound', lambda: bags([conjunctions(s['objects'], orders=1) for s in scenes]))
row('i2i', "each image's objects, as the generator drew them: attribute conjunctions", 'bound', lambda: bags([conjunctions(s['objects']) for s in scenes]))

# captions
caps = va.split.captions
from sentence_transformers import SentenceTransformer
st = SentenceTransformer(str(minilm_path()), device='cpu')
row('t2t', 'MiniLM (all-MiniLM-L6-v2)', 'allowed', lambda: st.encode(caps, convert_to_tensor=True, batch_size=256))
sw = set(ENGLISH_STOP_WORDS)
row('t2t', 'MiniLM on content words (generic English stop words out)', 'allowed',
    lambda: st.encode([' '.join(w for w in c.split() if w not in sw) or c for c in caps], convert_to_tensor=True, batch_size=256))
tfidf = lambda texts, **kw: torch.tensor(TfidfVectorizer(**kw).fit_transform(texts).toarray(), dtype=torch.float32)
row('t2t', 'TF-IDF, words', 'allowed', lambda: tfidf(caps))
row('t2t', 'TF-IDF, words and bigrams', 'allowed', lambda: tfidf(caps, ngram_range=(1, 2)))
row('t2t', 'TF-IDF, generic English stop words out', 'allowed', lambda: tfidf(caps, stop_words=list(sw)))
canon = sorted(((s, k) for k, ss in SYN.items() for s in ss), key=lambda t: -len(t[0]))
def canonical(c):
    c = f' {c} '
    for s, k in canon: c = c.replace(f' {s} ', f" {k.replace(' ', '_')} ")
    return c.strip()
row('t2t', "TF-IDF with the generator's synonyms resolved and its stop words out", 'bound', lambda: tfidf([canonical(c) for c in caps], stop_words=list(STOP)))
parsed = [c for s in scenes for c in sorted(s['captions'], key=lambda c: c['sentid'])]
assert len(parsed) == len(caps) and all(caps[i].lower().replace('.', '').split()[t['token']] == t['word'] for i, c in enumerate(parsed) for t in c['tags']), \
    'annotations.json captions are not in the order of the val split'
row('t2t', "each caption's parse, as the generator wrote it (conjunctions, relations, count)", 'bound',
    lambda: bags([conjunctions(c['entities'], c.get('relations', []), c.get('count')) for c in parsed]))

out = runs_root()/'teachers'; out.mkdir(parents=True, exist_ok=True)
with atomic_write(out/'auc.json') as f: f.write(json.dumps(rows, indent=1))
print(f"wrote {out/'auc.json'}")
