"""The stochastic report's tables from a small synthetic measurement (the numbers themselves are measured by
`sdm-verify stochastic`; here: the table logic, the equal-NFE selection and the figure)."""

from sdm_verify.report import stochastic


def data():
    curve = dict(kind="sde", nfe=[16, 32, 64], w2=[0.4, 0.2, 0.1])
    ode = dict(kind="ode", nfe=[32, 64, 128], w2=[0.3, 0.05, 0.01])
    row = dict(name="ddpm", weak_claim=1.0, strong_claim=None, source="Lu et al. 2022", weak="0.94 [0.84, 1.03]",
               weak_errors=[0.4, 0.2, 0.1], strong="—", mixture="0.92", mixture_floor=0.008, nfe_per_step=1,
               params={})
    return dict(rows=[row], curves={"ddpm": curve, "heun": ode},
                curves_1d={"ddpm": {**curve, "floor": 0.03}, "heun": ode}, ns=[16, 32, 64],
                perturbed={"offset": {"ddpm": dict(kind="sde", w2=[0.5, 0.48])}})


def test_equal_nfe_takes_the_largest_budget_that_fits():
    d = data()
    assert stochastic._at_nfe(d["curves"]["ddpm"], 40) == 0.2
    assert stochastic._at_nfe(d["curves"]["heun"], 16) is None


def test_markdown_marks_the_best_method_per_budget():
    text = stochastic.markdown(data())
    assert "| ddpm | 1 | 0.94 [0.84, 1.03] |" in text
    assert "| heun | ODE | — | 0.3 | **0.05** | **0.01** |" in text  # heun wins at 64 and 128 NFE
    assert "| ddpm | SDE | **0.4** | **0.2** | 0.1 | 0.1 |" in text  # the only one at 16, the better one at 32
    assert "sampling bias is ~0.03" in text and "| offset | ddpm | SDE | 0.5 | 0.48 |" in text


def test_figure_is_written(tmp_path):
    stochastic.figure(data(), tmp_path / "f.png")
    assert (tmp_path / "f.png").stat().st_size > 1000
