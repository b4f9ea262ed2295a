"""The embedded benchmark's backgrounds are smooth colour gradients; its objects are not. `foreground` fits a plane to
each image's border (where no object reaches: every object's circumcircle lies inside the image) and keeps the pixels
that stand out from it. It uses the images alone, never a caption or the generator's scene."""
import torch, torch.nn.functional as F

def foreground(x, # images [B,3,H,W] in [0,1]
               thresh:float=0.09, # a pixel is foreground when a channel differs from the plane by more (3x3 average)
               fill:float=0.5): # what the background becomes
    "(x with its background replaced by `fill`, foreground mask [B,1,H,W]) from a per-channel plane fitted to the border."
    B, C, H, W = x.shape
    v, u = torch.meshgrid(torch.linspace(-1, 1, H, dtype=x.dtype), torch.linspace(-1, 1, W, dtype=x.dtype), indexing='ij')
    ring = torch.zeros(H, W, dtype=torch.bool); ring[[0, -1]] = True; ring[:, [0, -1]] = True
    A = torch.stack([torch.ones_like(u), u, v], -1)                     # [H,W,3]: 1, u, v
    coef = x[..., ring] @ torch.linalg.pinv(A[ring]).T                  # least squares on the border pixels: [B,C,3]
    d = (x - torch.einsum('hwk,bck->bchw', A, coef)).abs().amax(1, keepdim=True)
    mask = ((F.avg_pool2d(d, 3, 1, 1) > thresh) & (d > thresh)).to(x.dtype)   # the 3x3 average keeps sensor noise (sd 8/255) out
    return x * mask + fill * (1 - mask), mask
