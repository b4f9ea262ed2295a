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
