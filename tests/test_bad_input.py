"""Bad input, one test per case of the README's table: each is refused with an ItrError whose message names the file
and the field (run with -s to see the messages)."""
import json, shutil
from pathlib import Path
import numpy as np, pytest, torch
from itr_nb.core import ItrError

ROOT = Path(__file__).resolve().parents[1]

def _raises(case, fn, *needles):
    "Call `fn`, expect ItrError containing every needle; print the message for the README table."
    with pytest.raises(ItrError) as e: fn()
    msg = str(e.value)
    for n in needles: assert str(n) in msg, f'{n!r} not in {msg!r}'
    print(f'\n[{case}] {msg}')
    return msg

@pytest.fixture
def bench(tiny_benchmark, tmp_path):
    "A private copy of the tiny benchmark, free to damage."
    shutil.copytree(Path(tiny_benchmark).parent, tmp_path/'synth')
    return tmp_path/'synth'/'dataset.json'

def _val_entry(ds, k=0):
    d = json.loads(ds.read_text()); ims = [im for im in d['images'] if im['split'] == 'val']
    return d, ims[k]

# 1. malformed or truncated Karpathy JSON
def test_truncated_and_malformed_karpathy_json(bench):
    from itr_nb.data import load_karpathy
    text = bench.read_text()
    bench.write_text(text[:len(text) // 2])                           # truncated mid-file
    _raises('truncated JSON', lambda: load_karpathy(bench), str(bench), 'malformed JSON at line')
    d = json.loads(text); del d['images'][4]['sentences']; bench.write_text(json.dumps(d))
    _raises('entry without sentences', lambda: load_karpathy(bench), str(bench), "images[4]: field 'sentences' missing")
    d = json.loads(text); d['images'][2]['split'] = 'tset'; bench.write_text(json.dumps(d))
    _raises('unknown split', lambda: load_karpathy(bench), str(bench), "images[2].split = 'tset'")
    bench.write_text(json.dumps({'imgs': []}))
    _raises('not a Karpathy file', lambda: load_karpathy(bench), str(bench), "field 'images' missing")

# 2. a missing image, 3. a corrupt image
def test_missing_and_corrupt_image(bench):
    from itr_nb.retrieval import load_split
    from itr_nb.data import load_karpathy
    _, im = _val_entry(bench, 3)
    img = load_karpathy(bench).image_path(im)
    img.unlink()
    _raises('missing image', lambda: load_split(bench, 'val', 32, progress=False), f'image not found: {img}', f"imgid {im['imgid']} of split val")
    img.write_bytes(b'\x89PNG\r\n\x1a\n' + b'\x00garbage' * 10)
    _raises('corrupt image', lambda: load_split(bench, 'val', 32, progress=False), f'unreadable image {img}', f"imgid {im['imgid']} of split val")

# 4. an empty caption
def test_empty_caption(bench):
    from itr_nb.data import load_karpathy
    d = json.loads(bench.read_text()); d['images'][7]['sentences'][2]['raw'] = ' ?! '
    bench.write_text(json.dumps(d))
    _raises('empty caption', lambda: load_karpathy(bench), str(bench), 'images[7].sentences[2].raw is empty', d['images'][7]['filename'])

# 5. a similarity matrix of the wrong shape or holding NaN (through `itr-nb eval`)
def test_similarity_matrix_wrong_shape_or_nan(tiny_benchmark, tmp_path, capsys):
    from itr_nb.cli import main
    sim = tmp_path/'sim.npy'
    np.save(sim, np.zeros((150, 30), np.float32))                     # captions x images: transposed
    assert main(['eval', str(sim), '--gt', str(tiny_benchmark)]) == 2
    err = capsys.readouterr().err
    for n in (str(sim), str(tiny_benchmark), 'similarity matrix has shape 150 x 30, but the ground truth has 150 captions (is it transposed?'): assert n in err, err
    print('\n[wrong shape]', err.strip())
    s = np.random.default_rng(0).standard_normal((30, 150)).astype(np.float32); s[4, 9] = np.nan; np.save(sim, s)
    assert main(['eval', str(sim), '--gt', str(tiny_benchmark)]) == 2
    err = capsys.readouterr().err
    assert str(sim) in err and 'similarity matrix holds NaN or inf (first in row 4)' in err, err
    print('[NaN]', err.strip())
    from itr_nb.metrics import evaluate
    _raises('NaN, API', lambda: evaluate(s, np.repeat(np.arange(30), 5)), 'holds NaN or inf (first in row 4)')

# 6. an unknown or wrongly typed notebook parameter
def test_unknown_or_wrongly_typed_parameter():
    from itr_nb.experiment import check_params
    tpl = ROOT/'experiments'/'train_eval.ipynb'
    _raises('unknown parameter', lambda: check_params(tpl, dict(epochz=3)), "train_eval.ipynb: unknown parameter 'epochz' (known:")
    _raises('wrongly typed parameter', lambda: check_params(tpl, dict(epochs='ten')), "train_eval.ipynb: parameter 'epochs' must be int, got 'ten' (str)")

# 7. a model path that is not there
@pytest.mark.parametrize('make, what', [
    (lambda: __import__('itr_nb.encoders', fromlist=['x']).text_encoder('hf:/no/such/bert'), 'text model'),
    (lambda: __import__('itr_nb.encoders', fromlist=['x']).image_encoder('clip:/no/such/bert'), 'CLIP model'),
    (lambda: __import__('itr_nb.encoders', fromlist=['x']).image_encoder('timm:resnet18', weights='/no/such/bert'), 'timm weights for resnet18'),
    (lambda: __import__('itr_nb.cusa', fromlist=['x']).Teacher('st:/no/such/bert', 'text').encoder, 'sentence-transformers model'),
    (lambda: __import__('itr_nb.cusa', fromlist=['x']).Teacher('hf:/no/such/bert', 'image').encoder, 'vision model')])
def test_missing_local_model_is_named(make, what):
    _raises(f'missing model ({what})', make, f'{what} not found locally: /no/such/bert', 'never downloads')

# 8. a checkpoint from another configuration
def test_checkpoint_from_another_configuration(tmp_path):
    from itr_nb.retrieval import build_model, ModelConfig
    from itr_nb.train import save_checkpoint, load_checkpoint
    from dataclasses import asdict
    a = build_model(ModelConfig(dim=16))
    save_checkpoint(tmp_path/'best.safetensors', dict(model=a), asdict(ModelConfig(dim=16)))
    b = build_model(ModelConfig(dim=32))
    _raises('checkpoint of another configuration', lambda: load_checkpoint(tmp_path/'best.safetensors', dict(model=b), asdict(ModelConfig(dim=32))),
            str(tmp_path/'best.safetensors'), 'was saved with another configuration: dim = 16 there, 32 here')
    _raises('checkpoint that does not fit (no configuration given)', lambda: load_checkpoint(tmp_path/'best.safetensors', dict(model=b)),
            str(tmp_path/'best.safetensors'), "weights of 'model' do not fit this model")
    _raises('missing checkpoint', lambda: load_checkpoint(tmp_path/'none.safetensors', dict(model=b)), f"checkpoint not found: {tmp_path/'none.safetensors'}")

# 9. a teacher cache from another dataset
def test_teacher_cache_from_another_dataset_is_not_used(tiny_benchmark, tmp_path, capsys):
    "A cache made for dataset A, put where dataset B's cache goes, is named as stale and rebuilt, never read."
    from itr_nb.retrieval import load_split
    from itr_nb.synth import build_benchmark
    from itr_nb.cusa import Teacher, teacher_features
    other = build_benchmark(tmp_path/'other', seed=5, n_train=8, n_val=30, n_test=8, image_size=32, workers=1, progress=False)/'dataset.json'
    A, B = load_split(tiny_benchmark, 'val', 32, progress=False), load_split(other, 'val', 32, progress=False)
    teachers = lambda: (Teacher('small-cnn', 'image'), Teacher('small-transformer', 'text'))
    torch.manual_seed(0); fa, ta = teacher_features(A, tiny_benchmark, *teachers(), cache_dir=tmp_path/'a', progress=False)
    torch.manual_seed(0); fb, tb = teacher_features(B, other, *teachers(), cache_dir=tmp_path/'b', progress=False)   # B's own
    a_files = sorted((tmp_path/'a').iterdir())
    for fa_file in a_files:                                                     # A's image-teacher file under B's name
        if fa_file.name.startswith('text-'): continue
        fb_file = next(f for f in (tmp_path/'b').iterdir() if f.name.split('_', 2)[-1] == fa_file.name.split('_', 2)[-1])
        shutil.copy(fa_file, fb_file)
    # the text teacher's caption table: A's rows under B's table name, beside B's caption list
    pick = lambda d: next(f for f in sorted(d.iterdir()) if f.name.startswith('text-') and f.suffix == '.safetensors')
    shutil.copy(pick(tmp_path/'a'), pick(tmp_path/'b'))
    capsys.readouterr()
    torch.manual_seed(0); fb2, tb2 = teacher_features(B, other, *teachers(), cache_dir=tmp_path/'b', progress=False)
    out = capsys.readouterr().out
    assert 'is stale (' in out and 'content' in out and 'dataset' in out and str(tmp_path/'b') in out, out
    assert out.count('is stale (') == 2 and 'captions' in out, out   # the caption table too, named by what differs
    print('\n[teacher cache of another dataset]', out.strip().splitlines()[0])
    assert torch.equal(fb2, fb) and torch.equal(tb2, tb) and not torch.equal(fb2[:5], fa[:5])
