"FAISS top-K against a brute-force ranking (ties included) and torch.topk; approximate indexes' recall against exact."
import numpy as np, pytest, torch, torch.nn.functional as F
from itr_nb.core import ItrError
from itr_nb.search import topk, torch_topk, build_index, search_index, recall_at_k

def _brute(q, g, k):
    "Scores in int64 (exact), every item ranked by (score desc, index asc) with a Python sort."
    S = q.astype(np.int64) @ g.astype(np.int64).T
    order = [sorted(range(len(g)), key=lambda j: (-S[r, j], j))[:k] for r in range(len(q))]
    return S, np.array([[S[r, j] for j in o] for r, o in enumerate(order)]), np.array(order)

@pytest.mark.parametrize('index', ['torch', 'exact'])
def test_exact_topk_with_ties_matches_brute_force(index):
    rng = np.random.default_rng(0)
    g = rng.integers(-2, 3, (500, 8)).astype(np.float32)     # small integers: exact products, many exact ties
    g[100:110] = g[3]                                         # and whole duplicated rows
    q = np.concatenate([g[[3, 50]], rng.integers(-2, 3, (30, 8))]).astype(np.float32)
    S, s_ref, i_ref = _brute(q, g, 10)
    s, i = topk(torch.from_numpy(q), torch.from_numpy(g), 10, index=index)
    assert np.array_equal(s.numpy(), s_ref.astype(np.float32))           # the same K scores, in order
    tv = torch.from_numpy(q @ g.T).topk(10, dim=1).values
    assert torch.equal(s, tv)                                             # torch.topk of the matrix product agrees
    for r in range(len(q)):
        kth = s_ref[r, -1]
        above = set(i_ref[r][s_ref[r] > kth])
        assert above == set(i[r].numpy()[s[r].numpy() > kth])            # everything strictly above the K-th is found
        assert all(S[r, j] == kth for j in i[r].numpy()[s[r].numpy() == kth])   # the rest are genuine ties
        assert len(set(i[r].tolist())) == 10
        for a in range(9):                                                # ties ordered by gallery index
            if s[r, a] == s[r, a + 1]: assert i[r, a] < i[r, a + 1]

# float32 inner products of unit vectors in d dimensions: |fl(<q,g>) - <q,g>| <= d * u * sum_i |q_i g_i| <= d * u
# (u = 2^-24, sum |q_i g_i| <= |q| |g| = 1). Two float32 paths (FAISS's BLAS, torch's) each lie within that of the
# float64 value, so their rankings may swap only items whose float64 scores are closer than twice the bound.
F32_DOT = lambda d: d * 2.0**-24

@pytest.mark.parametrize('index', ['exact', 'torch'])
def test_float_topk_against_float64_ranking(index):
    g0 = torch.Generator().manual_seed(1)
    Q, G = F.normalize(torch.randn(50, 32, generator=g0), dim=-1), F.normalize(torch.randn(5000, 32, generator=g0), dim=-1)
    S = Q.double() @ G.double().T                                         # the reference ranking, in float64
    k, tol = 20, 2 * F32_DOT(32)
    s, i = topk(Q, G, k, index=index)
    assert (s - S.gather(1, i)).abs().max() <= F32_DOT(32)                # each score is the pair's inner product
    assert (s[:, :-1] >= s[:, 1:]).all() and all(len(set(r)) == k for r in i.tolist())
    kth = S.topk(k, dim=1).values[:, -1:]
    got = S.gather(1, i)
    assert (got >= kth - tol).all()                                       # nothing below the K-th but near-ties
    must = S > kth + tol                                                  # clearly inside the top K: must be found
    assert all(set(m.nonzero().flatten().tolist()) <= set(r) for m, r in zip(must, i.tolist()))
    s2, i2 = topk(Q, G, k, index='auto', faiss_above=1000 if index == 'exact' else 10**9)   # auto: FAISS past the threshold
    assert torch.equal(i2, i) and torch.equal(s2, s)                      # the same path gives the same bits

def _clustered(n, d=32, nq=200, seed=0):
    g0 = torch.Generator().manual_seed(seed)
    c = torch.randn(64, d, generator=g0)
    G = F.normalize(c[torch.randint(64, (n,), generator=g0)] + 0.5 * torch.randn(n, d, generator=g0), dim=-1)
    Q = F.normalize(c[torch.randint(64, (nq,), generator=g0)] + 0.5 * torch.randn(nq, d, generator=g0), dim=-1)
    return Q, G

def test_approximate_recall_against_exact(capsys):
    Q, G = _clustered(20000)
    exact = (Q @ G.T).topk(10, dim=1).indices
    ivf = build_index(G, 'ivf', nlist=64)
    assert recall_at_k(search_index(ivf, Q, 10, nprobe=64)[1], exact) == 1.0   # every cell visited: exact
    r_ivf = recall_at_k(search_index(ivf, Q, 10, nprobe=4)[1], exact)
    r_hnsw = recall_at_k(topk(Q, G, 10, index='hnsw', hnsw_m=16, ef_search=64)[1], exact)
    with capsys.disabled(): print(f"\nrecall@10 against exact, 20,000 clustered items: IVF nlist 64 nprobe 4 {r_ivf:.3f}, HNSW M 16 ef 64 {r_hnsw:.3f}")
    assert 0.5 < r_ivf <= 1 and 0.9 < r_hnsw <= 1

def test_bad_input_is_named():
    Q, G = _clustered(100, nq=3)
    with pytest.raises(ItrError, match='queries have 32 dimensions but the gallery has 16'): topk(Q, G[:, :16], 5)
    with pytest.raises(ItrError, match='k = 101, but the gallery has 100 items'): topk(Q, G, 101, index='exact')
    G[5, 0] = float('nan')
    with pytest.raises(ItrError, match=r'gallery holds NaN or inf \(first in row 5\)'): topk(Q, G, 5)
    with pytest.raises(ItrError, match='queries must be 2-D'): torch_topk(Q[0], G, 5)
