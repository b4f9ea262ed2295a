"""Multi-positive InfoNCE against a loop-by-loop formula, the temperature clamp, and gathering over two processes.

The comparisons run in float64 on both sides: the loss of a batch of 7 with logits up to 1/tau = 100 carries a
rounding error of about n * eps * max|logit| = 7 * 1.1e-16 * 100 < 1e-13 there (float32 would give ~1e-5, close to
any tolerance one could pick and dependent on the CPU's kernels), so 1e-10 relative decides on the formula alone."""
import math, os, tempfile
import torch, torch.nn.functional as F, torch.multiprocessing as mp
from itr_nb.losses import info_nce, Temperature, clamp_temperatures_, ContrastiveLoss, gather_batch

def brute_info_nce(x, y, ids, tau):
    "methods eq. (1.3) (nbs/01_methods.ipynb) written out with Python loops in float64."
    x, y, ids = x.double().tolist(), y.double().tolist(), ids.tolist()
    n = len(x)
    S = [[sum(a * b for a, b in zip(x[i], y[j])) / tau for j in range(n)] for i in range(n)]
    i2t = 0.
    for i in range(n):
        lse = math.log(sum(math.exp(S[i][k]) for k in range(n)))
        npos = sum(ids[i] == ids[k] for k in range(n))
        i2t += -sum((ids[i] == ids[j]) / npos * (S[i][j] - lse) for j in range(n))
    t2i = 0.
    for j in range(n):
        lse = math.log(sum(math.exp(S[k][j]) for k in range(n)))
        npos = sum(ids[j] == ids[k] for k in range(n))
        t2i += -sum((ids[i] == ids[j]) / npos * (S[i][j] - lse) for i in range(n))
    return (i2t / n + t2i / n) / 2

REL = 1e-10   # float64 rounding of the loss (see the module docstring), with three orders of margin

def batch(n=7, d=5, seed=0):
    "Unit vectors in float64; rows of one image share its embedding."
    g = torch.Generator().manual_seed(seed)
    x = F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=-1)
    y = F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=-1)
    ids = torch.tensor([3, 3, 8, 1, 1, 1, 9])[:n]
    x[1] = x[0]; x[4] = x[3]; x[5] = x[3]  # rows of the same image carry the same image embedding
    return x, y, ids

def test_info_nce_matches_brute_force_with_repeated_images():
    x, y, ids = batch()
    for tau in (0.05, 0.01, 0.1):
        want = brute_info_nce(x, y, ids, tau)
        assert abs(info_nce(x, y, ids, tau).item() - want) <= REL * want
    want = brute_info_nce(x, y, ids, 0.05) / 7
    assert abs(info_nce(x, y, ids, 0.05, scale_by_batch=True).item() - want) <= REL * want

def test_info_nce_unique_ids_is_clip_loss():
    x, y, _ = batch()
    s, t = x @ y.T / 0.07, torch.arange(7)
    ref = (F.cross_entropy(s, t) + F.cross_entropy(s.T, t)) / 2
    assert abs(info_nce(x, y, t, 0.07).item() - ref.item()) <= REL * ref.item()

def test_temperature_init_and_clamp():
    t = Temperature()
    assert abs(t().item() - 0.05) < 1e-7
    with torch.no_grad(): t.value.fill_(0.3)
    t.clamp_(); assert abs(t().item() - 0.10) < 1e-7
    loss = ContrastiveLoss()
    with torch.no_grad(): loss.temperature.value.fill_(0.001)
    clamp_temperatures_(torch.nn.ModuleList([loss])); assert abs(loss.temperature().item() - 0.01) < 1e-7
    c = Temperature(0.45, 0.1, 0.99)
    with torch.no_grad(): c.value.fill_(2.)
    assert abs(c.clamp_()().item() - 0.99) < 1e-6

def test_temperature_is_learned():
    x, y, ids = batch()
    loss = ContrastiveLoss()
    loss(x, y, ids).backward()
    assert loss.temperature.value.grad is not None and loss.temperature.value.grad.abs() > 0

def _worker(rank, world, init, out):
    import torch.distributed as dist
    dist.init_process_group('gloo', init_method=init, rank=rank, world_size=world)
    x, y, ids = batch(n=6)
    n = len(x) // world
    xl = x[rank*n:(rank+1)*n].clone().requires_grad_()
    yl = y[rank*n:(rank+1)*n].clone().requires_grad_()
    obj = ContrastiveLoss(gather_negatives=True).double()
    obj.temperature.value.data.fill_(0.05)   # float64 0.05 (float32's 0.05 is 0.05 + 7e-10)
    loss = obj(xl, yl, ids[rank*n:(rank+1)*n])
    loss.backward()
    torch.save({'loss': loss.detach(), 'gx': xl.grad, 'gy': yl.grad, 'gathered': gather_batch(torch.tensor([rank]))}, f'{out}/{rank}.pt')
    dist.destroy_process_group()

def test_gather_negatives_two_processes():
    """Each rank's loss is the full-batch loss and its local rows get the full-batch gradient (finite differences).

    Central differences of the float64 loop formula with step h = 1e-6: truncation h^2/6 times the third derivative
    (<= 1/tau^3) gives ~1e-9, rounding eps |f| / h gives ~3e-10, so the gradients agree to 1e-7; a gradient averaged
    over the two ranks instead of summed would be off by half its size (~1e-1)."""
    x, y, ids = batch(n=6)
    def fd_grad(a, which, h=1e-6):  # central finite differences of the loop formula
        g = torch.zeros_like(a, dtype=torch.float64)
        for idx in torch.cartesian_prod(torch.arange(a.shape[0]), torch.arange(a.shape[1])).tolist():
            ap, am = a.double().clone(), a.double().clone(); ap[tuple(idx)] += h; am[tuple(idx)] -= h
            f = lambda b: brute_info_nce(b, y, ids, 0.05) if which == 'x' else brute_info_nce(x, b, ids, 0.05)
            g[tuple(idx)] = (f(ap) - f(am)) / (2 * h)
        return g
    gx, gy = fd_grad(x, 'x'), fd_grad(y, 'y')
    with tempfile.TemporaryDirectory() as d:
        mp.spawn(_worker, args=(2, f'file://{d}/store', d), nprocs=2, join=True)
        for r in range(2):
            o = torch.load(f'{d}/{r}.pt')
            assert abs(o['loss'].item() - brute_info_nce(x, y, ids, 0.05)) <= REL * o['loss'].item()
            assert o['gx'].dtype == torch.float64 and (o['gx'] - gx[r*3:(r+1)*3]).abs().max() < 1e-7
            assert (o['gy'] - gy[r*3:(r+1)*3]).abs().max() < 1e-7
            assert o['gathered'].tolist() == [0, 1]

def test_gather_is_identity_without_distributed():
    t = torch.randn(3, 2)
    assert gather_batch(t) is t
