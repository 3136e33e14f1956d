"""``ndmsolve likelihood``'s progress: log lines when stderr is not a terminal, a bar when it is;
and the default number of ELBO draws."""

import sys

import torch

import ndmsolve as nd
from ndmsolve.commands import likelihood as lik_cmd
from ndmsolve.fields import MLP


def _cfg(**kw):
    cfg = {o.name: o.default for o in lik_cmd.OPTIONS}
    cfg.update(rtol=1e-2, atol=1e-2, trace="exact", elbo_draws=2, batch_size=4, **kw)
    return cfg


def _model():
    torch.manual_seed(0)
    return nd.NDM(MLP(2, hidden=8, depth=1), schedule=nd.LinearLogSNR(-8.0, 8.0), data_shape=(2,))


def test_log_lines_per_batch_when_not_a_terminal(capsys):
    x = torch.randn(10, 2, generator=torch.Generator().manual_seed(0))
    res = lik_cmd.evaluate(_model(), x, None, _cfg(), torch.device("cpu"))
    err = capsys.readouterr().err.splitlines()
    assert res["batches"] == 3
    assert err[0].startswith("likelihood: 10 points in batches of 4 (3 here)")
    assert "ELBO (2 draws of t per point)" in err[0]
    done = [line for line in err if " done (" in line]
    assert [line.split(" done")[0] for line in done] == [
        f"likelihood: batch {k}/3" for k in (1, 2, 3)
    ]
    assert "(10 points," in done[-1]
    ode = sum(res["ode_per_point"]) / 10
    assert f"running ODE {ode:.4f}" in done[-1]


def test_a_bar_and_no_log_lines_on_a_terminal(capsys, monkeypatch):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    x = torch.randn(6, 2, generator=torch.Generator().manual_seed(0))
    lik_cmd.evaluate(_model(), x, None, _cfg(), torch.device("cpu"))
    err = capsys.readouterr().err
    assert "batch 1/2 done" not in err and "6 points in batches" not in err
    assert "2/2" in err  # tqdm's counter


def test_default_elbo_draws():
    opt = {o.name: o for o in lik_cmd.OPTIONS}["elbo_draws"]
    assert opt.default == lik_cmd.ELBO_DRAWS >= 8
