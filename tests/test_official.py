"""Each paper's recipe (experiments/official/*.yaml) runs end to end, unmodified, for one step on the CPU: tiny random
models of the same families (CLIP and open_clip saved in their own layouts, a BERT, a sentence-transformers folder) and
tiny data in the same formats (a Karpathy JSON with JPEG images, a precomp folder with boxes), overriding only paths,
sizes and step counts."""
import json, shutil
from pathlib import Path
import numpy as np, pytest, torch
from PIL import Image
from itr_nb.experiment import load_recipe, resolve_run, run_template

OFFICIAL = Path(__file__).resolve().parents[1]/'experiments'/'official'
RECIPES = sorted(p.name for p in OFFICIAL.glob('*.yaml'))
PATHS = {'dataset', 'eval_dataset', 'image_root', 'image_encoder', 'text_encoder', 'image_teacher', 'text_teacher', 'cache_dir'}
SIZES = {'dim', 'image_size', 'teacher_size', 'workers', 'threads'}
STEPS = {'epochs', 'ttd_epochs', 'limit_train', 'limit_eval'}

@pytest.fixture(scope='module')
def tiny(tmp_path_factory, tiny_benchmark):
    "Tiny random models in their families' own folder layouts, and the tiny benchmark as JPEGs and as a precomp folder."
    from transformers import AutoTokenizer, BertConfig, BertModel
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer import modules as models
    from itr_nb.encoders import tiny_clip, tiny_open_clip, minilm_path
    from itr_nb.data import load_karpathy
    from itr_nb.precomp import save_precomp
    d = tmp_path_factory.mktemp('official')
    tok = AutoTokenizer.from_pretrained(minilm_path())
    tiny_clip(d/'clip'); tok.save_pretrained(d/'clip')
    tiny_open_clip(d/'open_clip')
    torch.manual_seed(0)   # 7 layers, so that cutting to 6 cuts
    BertModel(BertConfig(hidden_size=32, num_hidden_layers=7, num_attention_heads=2, intermediate_size=37)).save_pretrained(d/'bert')
    tok.save_pretrained(d/'bert')
    SentenceTransformer(modules=[models.Transformer(str(d/'bert')), models.Pooling(32, 'mean')], device='cpu').save(str(d/'st'))
    js = json.loads(Path(tiny_benchmark).read_text())      # the benchmark as a plain corpus: JPEGs, no annotations
    (d/'jpeg'/'images').mkdir(parents=True)
    for im in js['images']:
        jpg = Path(im['filename']).with_suffix('.jpg').name
        Image.open(Path(tiny_benchmark).parent/im['filepath']/im['filename']).convert('RGB').save(d/'jpeg'/'images'/jpg, quality=90)
        im['filename'] = jpg
    (d/'jpeg'/'dataset.json').write_text(json.dumps(js))
    kd, rng = load_karpathy(tiny_benchmark), np.random.default_rng(0)
    for name, split in (('train', 'train'), ('dev', 'val'), ('test', 'test'), ('testall', 'test')):
        s = kd.split(split); n = len(s.image_paths)
        xy = rng.uniform(0, 20, (n, 6, 2)); boxes = np.concatenate([xy, xy + rng.uniform(1, 20, (n, 6, 2))], -1)
        save_precomp(d/'precomp', name, rng.standard_normal((n, 6, 32)).astype(np.float32), s.raw_captions, boxes=boxes, sizes=np.tile([[40, 40]], (n, 1)))
    return d

def _overrides(name, d, tmp):
    "Paths, sizes and step counts only: the tiny models and data stand in for the real ones."
    if name.startswith('cusa'):
        return dict(dataset=d/'jpeg'/'dataset.json', image_root='', image_encoder=f"clip:{d/'clip'}", text_encoder=f"clip:{d/'clip'}",
                    image_teacher=f"open_clip:{d/'open_clip'}", text_teacher=f"st:{d/'st'}", cache_dir=tmp/'cusa',
                    dim=16, image_size=32, teacher_size=32, workers=0, epochs=1, limit_train=26, limit_eval=10)   # 130 captions: one step of 128
    if name.startswith('tgdt'):
        return dict(dataset=f"precomp:{d/'precomp'}" + ('@testall' if 'coco' in name else ''), text_encoder=f"hf:{d/'bert'}",
                    dim=64, threads=1, workers=0, epochs=1, limit_train=8, limit_eval=10)                          # 40 captions: one step
    if name.startswith('ttd'):
        return dict(dataset=d/'jpeg'/'dataset.json', image_root='', image_encoder=f"clip:{d/'clip'}", text_encoder=f"clip:{d/'clip'}",
                    dim=16, image_size=32, workers=0, epochs=1, ttd_epochs=1, limit_train=26, limit_eval=10)
    raise AssertionError(f'no overrides for {name}')

def test_every_recipe_is_covered_and_names_its_source():
    assert {'cusa_clip_b32_flickr30k.yaml', 'cusa_clip_b32_coco.yaml', 'tgdt_flickr30k.yaml', 'tgdt_coco.yaml', 'ttd_clip.yaml'} <= set(RECIPES)
    for name in RECIPES:
        r = load_recipe(OFFICIAL/name)
        assert r['source'] and (OFFICIAL/name).read_text().startswith('#'), name
        assert r['template'] in ('cusa', 'tgdt', 'ttd'), name

@pytest.mark.parametrize('name', RECIPES)
def test_recipe_runs_one_step(name, tiny, tmp_path):
    ov = _overrides(name, tiny, tmp_path)
    assert set(ov) <= PATHS | SIZES | STEPS, set(ov) - PATHS - SIZES - STEPS
    before = (OFFICIAL/name).read_bytes()
    tpl, params = resolve_run(OFFICIAL/name, [(k, json.dumps(str(v)) if isinstance(v, (str, Path)) else str(v)) for k, v in ov.items()])   # as -p k v
    recipe = load_recipe(OFFICIAL/name)['params']
    for k, v in recipe.items():                            # everything not overridden is the recipe's own value
        if k not in ov: assert params[k] == v, k
    st = run_template(tpl, params, tmp_path/'run', progress=False)
    assert st['status'] == 'ok', st.get('error')
    m = json.loads((tmp_path/'run'/'metrics.json').read_text())
    assert (OFFICIAL/name).read_bytes() == before
    if name.startswith('tgdt'):
        assert 0 <= m['two_stage_rsum'] <= 600 and m['n_images'] == 10
        cfg = json.loads((tmp_path/'run'/'best.json').read_text())['train']
        assert (cfg['optimizer'], cfg['schedule'], cfg['step_every'], cfg['grad_clip']) == ('adam', 'step', 20, 2.0)
        from safetensors import safe_open
        with safe_open(str(tmp_path/'run'/'best.safetensors'), 'pt') as f: keys = set(f.keys())
        layers = {k.split('encoder.layer.')[1].split('.')[0] for k in keys if 'text_enc.model.encoder.layer.' in k}
        assert layers == {str(i) for i in range(6)}                                          # BERT cut to 6 of its 7 layers
        assert any('image_enc.enc.layers.3.' in k for k in keys) and any('img_tr.enc2.' in k for k in keys)   # precomp:4, two stages
    elif name.startswith('cusa'):
        assert 0 <= m['rsum'] <= 600 and m['best_epoch'] == 1
        h = json.loads((tmp_path/'run'/'history.json').read_text())
        assert len(h) == 1 and h[0]['train_csa'] > 0 and h[0]['train_usa'] > 0
    else:
        assert 0 <= m['after_rsum'] <= 600 and 0 <= m['theta'] <= 1
