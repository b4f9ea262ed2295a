"bench/_foreground.py: the background-removal step of the image teachers in bench/teachers.py and bench/ssl_teacher.py."
import sys
from pathlib import Path
import numpy as np, torch
sys.path.insert(0, str(Path(__file__).parents[1]/'bench'))
from _foreground import foreground

def test_plane_background_square_by_hand():
    "A linear gradient per channel and one flat square: the mask is the square, exactly, and the rest becomes the fill."
    H = 32; v, u = torch.meshgrid(torch.linspace(0, 1, H, dtype=torch.float64), torch.linspace(0, 1, H, dtype=torch.float64), indexing='ij')
    x = torch.stack([0.3 + 0.2 * u, 0.4 + 0.1 * v, 0.5 - 0.2 * u + 0.1 * v]).unsqueeze(0).clone()
    x[:, :, 10:20, 12:22] = torch.tensor([0.9, 0.1, 0.1], dtype=torch.float64).view(1, 3, 1, 1)
    want = torch.zeros(H, H); want[10:20, 12:22] = 1
    y, m = foreground(x, fill=0.25)
    assert torch.equal(m[0, 0].float(), want)
    assert torch.equal(y[0, :, 10:20, 12:22], x[0, :, 10:20, 12:22]) and (y[0][:, want == 0] == 0.25).all()

def test_agrees_with_the_generators_label_maps():
    "On rendered scenes (sensor noise included) the mask finds the objects the generator drew, against its own label map."
    from itr_nb.synth import make_image
    imgs, labs = zip(*[(img, lab) for img, lab in (make_image(0, i, 64)[2:] for i in range(40))])
    x = torch.as_tensor(np.stack(imgs)).permute(0, 3, 1, 2).double() / 255
    m, truth = foreground(x)[1][:, 0] > 0, torch.as_tensor(np.stack(labs)) > 0
    hit = (m & truth).sum().item()
    assert hit / m.sum().item() > 0.85 and hit / truth.sum().item() > 0.85, (hit / m.sum().item(), hit / truth.sum().item())
