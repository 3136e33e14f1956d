"""The capacity study's pieces (ndmsolve.studies.capacity) on tiny settings: the paired gaps,
the equal-parameter widening, F's departure, the references, the −ELBO estimator against a
known answer, and one cell run twice (the second from its cache)."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import ndmsolve as nd
from ndmsolve.objectives import nelbo_estimate
from ndmsolve.studies import capacity as cap
from ndmsolve.train import train

D64 = torch.float64
TINY = dict(
    kinds=("ndm", "ndm_small", "ndm_tb"),
    transform=8,
    transform_small=4,
    x_features=0,
    n_train=256,
    lr=4e-3,
    ema_decay=0.9,
    steps=6,
    batch_size=16,
    warmup_steps=1,
    n_eval=32,
    draws=2,
    pilot_rows=64,
)


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def test_paired_gap_is_mean_of_per_seed_differences():
    a = {0: 3.0, 1: 5.0, 2: 4.0, 7: 100.0}
    b = {0: 2.5, 1: 4.0, 2: 4.5, 9: -100.0}
    g, se, seeds = cap.paired_gap(a, b)
    d = [0.5, 1.0, -0.5]  # seed by seed; seeds 7 and 9 have no partner
    assert seeds == [0, 1, 2]
    assert g == pytest.approx(sum(d) / 3)
    m = sum(d) / 3
    assert se == pytest.approx(math.sqrt(sum((v - m) ** 2 for v in d) / 2 / 3))
    # pairing matters: the unpaired difference of means over all seeds is not the gap
    assert g != pytest.approx(sum(a.values()) / 4 - sum(b.values()) / 4)
    with pytest.raises(ValueError, match="share no seed"):
        cap.paired_gap({0: 1.0}, {1: 1.0})


@settings(max_examples=60, deadline=None)
@given(
    a=st.integers(1, 9),
    b=st.integers(0, 50),
    start=st.integers(1, 20),
    target=st.integers(1, 200_000),
)
def test_equal_param_size_is_the_closest(a, b, start, target):
    count = lambda s: a * s * s + b * s  # noqa: E731  (increasing, like a width's count)
    s = cap.equal_param_size(target, count, start)
    assert s >= start
    best = min(abs(count(k) - target) for k in range(start, s + 3))
    assert abs(count(s) - target) == best


def test_equal_param_ddpm_matches_the_ndm():
    for image, size, cfg in ((False, 6, TINY), (True, 2, TINY | {"transform": 4})):
        ndm = cap.build_model("ndm", size, image, cfg, 0)
        w = cap.equal_param_size(
            cap.n_params(ndm),
            lambda s: cap.n_params(cap.build_model("ddpm", s, image, cfg, 0)),
            size,
        )
        ddpm = cap.build_model("ddpm", w, image, cfg, 0)
        narrower = cap.build_model("ddpm", w - 1, image, cfg, 0)
        assert w > size
        gap = abs(cap.n_params(ddpm) - cap.n_params(ndm))
        assert gap <= abs(cap.n_params(narrower) - cap.n_params(ndm))


class _Const(torch.nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = torch.tensor(c)

    def forward(self, x, t):
        return self.c.expand_as(x)


def test_transform_departure_closed_form():
    sched = nd.LinearLogSNR(-12.0, 12.0)
    pred = cap.build_model("ddpm", 4, False, TINY, 0).predictor
    x = torch.randn(50, 2)
    ddpm = nd.NDM(pred, None, sched, data_shape=(2,))
    assert cap.transform_departure(ddpm, x) == 0.0
    # F = x + t·(0.3, −0.4): |F − x|² per coordinate averages t²·0.125 over coordinates
    ndm = nd.NDM(pred, nd.ResidualTransform(_Const([0.3, -0.4])), sched, data_shape=(2,))
    ts = (0.2, 0.6, 1.0)
    want = math.sqrt(sum(t * t for t in ts) / 3 * (0.09 + 0.16) / 2)
    assert cap.transform_departure(ndm, x, ts) == pytest.approx(want, rel=1e-6)


def test_references():
    h, se = cap.toy_entropy("checkerboard")
    assert h == pytest.approx(math.log(32)) and se == 0.0
    # eight well-separated Gaussians (6 std apart): log 8 + the entropy of one Gaussian
    h, se = cap.toy_entropy("eight_gaussians", n=100_000)
    one = 1 + math.log(2 * math.pi) + 2 * math.log(0.5 / math.sqrt(2))
    assert abs(h - (math.log(8) + one)) < 4 * se + 2e-3
    with pytest.raises(ValueError, match="name must be one of"):
        cap.toy_entropy("rings")
    # every training pixel at level 0 (n images): p(0) = (n + 1)/(n + 17) per pixel
    n = 5
    tr = torch.zeros(n, 1, 8, 8)
    te = torch.zeros(2, 1, 8, 8)
    te[1, 0, 0, 0] = 3  # one pixel at a level never seen: p = 1/(n + 17)
    got = cap.independent_pixel_nats(tr, te)
    p0 = (n + 1) / (n + 17)
    assert got[0].item() == pytest.approx(-64 * math.log(p0))
    assert got[1].item() == pytest.approx(-63 * math.log(p0) + math.log(n + 17))


def test_nelbo_estimator_known_answer_and_trained_vs_untrained():
    """Gaussian data with the exact denoiser: E[−ELBO] = the entropy (the bound is tight up
    to the end points at log-SNR ±12); an untrained MLP DDPM is far above it, and training it
    lowers its −ELBO by many paired standard errors."""
    sched = nd.LinearLogSNR(-12.0, 12.0)
    cov = torch.tensor([[[0.8, 0.3], [0.3, 0.5]]], dtype=D64)
    gm = nd.GaussianMixture(torch.ones(1, dtype=D64), torch.tensor([[0.5, -1.0]], dtype=D64), cov)
    entropy = 0.5 * torch.logdet(2 * math.pi * math.e * cov[0]).item()
    x = gm.sample(3000, generator=torch.Generator().manual_seed(0))
    exact = nd.NDM(nd.ExactPredictor(gm, sched), None, sched)
    est = nelbo_estimate(exact, x, draws=4, generator=1, pilot_rows=4000)
    m, se = est.mean().item(), est.std().item() / math.sqrt(len(est))
    assert abs(m - entropy) < 4 * se + 0.02, (m, se, entropy)

    xf = x.float()
    model = cap.build_model("ddpm", 16, False, TINY, 0)
    before = nelbo_estimate(model, xf, draws=4, generator=1, pilot_rows=4000)
    res = train(model, xf, steps=150, batch_size=128, lr=1e-2, generator=0, progress=False)
    after = nelbo_estimate(res.ema_model, xf, draws=4, generator=1, pilot_rows=4000)
    d = (after - before).double()
    assert d.mean().item() < -10 * d.std().item() / math.sqrt(len(d))
    assert before.mean().item() > entropy + 0.5  # untrained: far above the bound


def test_run_cell_and_summarize(tmp_path, monkeypatch):
    cells = {"checkerboard": {4: {}}}
    for seed in (0, 1):
        cells["checkerboard"][4][seed] = cap.run_cell(
            "checkerboard", 4, seed, TINY, tmp_path, log=lambda s: None
        )
    rec = cells["checkerboard"][4][0]
    assert set(rec) == {
        "ddpm",
        "ddpm_params",
        *cap.NDM_KINDS,
        *(f"ddpm_cpu_{k}" for k in cap.NDM_KINDS),
    }
    assert rec["ddpm"]["f_departure"] == 0.0 and rec["ndm"]["f_departure"] > 0.0
    assert rec["ddpm"]["params"] < rec["ndm"]["params"]
    assert abs(rec["ddpm_params"]["params"] - rec["ndm"]["params"]) < rec["ddpm"]["params"]
    for k in cap.NDM_KINDS:
        cpu = rec[f"ddpm_cpu_{k}"]
        assert cpu["steps"] >= TINY["steps"] and cpu["cpu_s"] >= rec["ddpm"]["cpu_s"]
        assert len(rec[k]["per_point"]) == TINY["n_eval"]
    # the second call trains nothing: every record comes from the cache
    monkeypatch.setattr(cap, "train", lambda *a, **k: pytest.fail("retrained a cached run"))
    again = cap.run_cell("checkerboard", 4, 0, TINY, tmp_path, log=lambda s: None)
    assert again == rec
    cfg = {"seeds": (0, 1), "sets": {"checkerboard": TINY | {"sizes": (4,)}}}
    assert cap.run_cells(cfg, tmp_path, cached_only=True, log=lambda s: None) == cells
    table = cap.summarize(cells)["checkerboard"]["4"]
    g = table["gaps"]["equal_steps:ndm"]
    want = [
        cells["checkerboard"][4][s]["ndm"]["nelbo"] - cells["checkerboard"][4][s]["ddpm"]["nelbo"]
        for s in (0, 1)
    ]
    assert g["gap"] == pytest.approx(sum(want) / 2) and g["seeds"] == [0, 1]
    # per seed: the paired difference over the same points equals the difference of means
    assert g["per_seed"]["1"][0] == pytest.approx(want[1], abs=1e-4)
    assert g["per_seed"]["1"][1] > 0
    assert table["models"]["ndm"]["seeds"] == [0, 1]
    assert table["gaps"]["equal_cpu:ndm_tb"]["vs"] == "ddpm_cpu_ndm_tb"


def test_restrict_cuts_sets_seeds_and_sizes():
    cfg = {"seeds": (0, 1, 2), "sets": {"a": {"sizes": (4, 8)}, "b": {"sizes": (4,)}}}
    assert cap.restrict(cfg) == cfg
    cut = cap.restrict(cfg, sets="b", seeds="2", sizes="16,4")
    assert cut == {"seeds": (2,), "sets": {"b": {"sizes": (16, 4)}}}
    with pytest.raises(ValueError, match=r"sets must name data sets in \['a', 'b'\]"):
        cap.restrict(cfg, sets="a,c")


def test_bad_kind_is_named():
    with pytest.raises(ValueError, match="kind must be"):
        cap.build_model("vae", 4, False, TINY, 0)
