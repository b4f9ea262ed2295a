"itr_nb.cusa.foreground (the fg-colours teacher's background removal) on rendered scenes, against the generator's label maps."
import numpy as np, torch
from itr_nb.cusa import foreground

def test_agrees_with_the_generators_label_maps():
    "Sensor noise, anti-aliasing and textures included, the mask finds the objects the generator drew."
    from itr_nb.synth import make_image
    imgs, labs = zip(*[(img, lab) for img, lab in (make_image(0, i, 64)[2:] for i in range(40))])
    x = torch.as_tensor(np.stack(imgs)).permute(0, 3, 1, 2).double() / 255
    m, truth = foreground(x)[1][:, 0] > 0, torch.as_tensor(np.stack(labs)) > 0
    hit = (m & truth).sum().item()
    assert hit / m.sum().item() > 0.85 and hit / truth.sum().item() > 0.85, (hit / m.sum().item(), hit / truth.sum().item())

def test_fg_colours_is_a_cusa_teacher(tiny_benchmark, tmp_path):
    "The spec fg-colours reaches teacher_features and gives the histogram ForegroundColours computes on the split's images."
    from itr_nb.cusa import teacher_features, ForegroundColours
    from itr_nb.splits import load_split
    va = load_split(tiny_benchmark, 'val', 32, progress=False)
    fi, ft = teacher_features(va, tiny_benchmark, 'fg-colours', 'minilm', cache_dir=tmp_path, progress=False, device='cpu')
    assert fi.shape == (va.n_images, 216) and ft.shape[0] == va.n_captions
    ref = ForegroundColours()(va.images[:].double() / 255).global_
    assert torch.allclose(fi.double(), ref.double(), atol=1e-6)   # square roots of pixel counts
