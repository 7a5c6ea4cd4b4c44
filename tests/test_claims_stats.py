"""Verdicts follow the interval rule; paper numbers come from the CSVs; bootstrap and seed intervals."""
import pytest
import torch

from functools import partial

from earlyexit.studies import claims as claims_module
from earlyexit.studies import report
from earlyexit.studies.claims import VERDICTS, claims_table, paper_number
from earlyexit.stats import bootstrap_mean, median_interval, paired_bootstrap, seed_interval

claim = partial(claims_module.claim, statement_source="Paper, Sec. 1: \"x beats y\"",
                threshold_source="the paper's direction")


@pytest.mark.parametrize("interval, claimed, verdict", [
    ((0.5, 1.5), "greater", VERDICTS[0]), ((-1.0, -0.2), "greater", VERDICTS[1]), ((-0.5, 0.5), "greater", VERDICTS[2]),
    ((-1.0, -0.2), "less", VERDICTS[0]), ((0.2, 1.0), "less", VERDICTS[1]), ((-0.5, 0.5), "less", VERDICTS[2])])
def test_verdict_follows_the_interval(interval, claimed, verdict):
    c = claim("x beats y", "x - y", sum(interval) / 2, claimed=claimed, interval=interval, evidence="bootstrap")
    assert c.verdict == verdict
    assert claims_table([c])["verdict"].tolist() == [verdict]


def test_claim_without_interval_must_say_why_and_only_deterministic_ones_are_decided():
    with pytest.raises(ValueError, match="evidence"):
        claim("x", "y", 1.0)
    c = claim("cost within 10% of budget", "largest relative error", 0.04, claimed="less", than=0.10,
              evidence="deterministic: every budget checked", deterministic=True)
    assert c.verdict == VERDICTS[0]
    one_seed = claim("x beats y", "x - y", 5.0, evidence="one seed: no interval across trainings")
    assert one_seed.verdict == VERDICTS[2]                 # a wide margin is not evidence without an interval
    with pytest.raises(ValueError, match="deterministic"):
        claim("x", "y", 1.0, interval=(0.5, 1.5), deterministic=True)
    assert claim("x", "y", None, evidence="not measurable").verdict == VERDICTS[2]


def test_every_row_names_its_sources_and_only_paper_rows_speak_for_the_paper():
    with pytest.raises(TypeError):
        claims_module.claim("x", "y", 1.0, interval=(0.5, 1.5))
    with pytest.raises(ValueError, match="statement_source"):
        claim("x", "y", 1.0, interval=(0.5, 1.5), statement_source=" ")
    with pytest.raises(ValueError, match="our reading"):       # our reading must be labelled as such
        claim("x", "y", 1.0, interval=(0.5, 1.5), statement_source="our reading: x should beat y")
    with pytest.raises(ValueError, match="role"):
        claim("x", "y", 1.0, interval=(0.5, 1.5), role="headline")
    ours = claim("x", "y", -1.0, interval=(-1.5, -0.5), statement_source="our reading: x should beat y",
                 role="our reading")
    variant = claim("x", "y", -1.0, interval=(-1.5, -0.5), role="sensitivity")
    paper = claim("x", "y", -1.0, interval=(-1.5, -0.5))
    assert ours.verdict == variant.verdict == paper.verdict == "not supported"
    assert paper.label == "not supported"
    assert ours.label == "does not hold (our reading row)" and "not supported" not in variant.label
    table = claims_table([paper, variant, ours])
    assert table["verdict"].tolist() == ["not supported", "does not hold (sensitivity row)",
                                         "does not hold (our reading row)"]
    assert table["threshold from"].tolist() == ["the paper's direction"] * 3


def test_summary_shows_sources_roles_and_counts_only_paper_rows(tmp_path, monkeypatch):
    monkeypatch.setattr(report, "reports_dir", lambda profile: tmp_path)
    rows = [claim("x", "y", -1.0, interval=(-1.5, -0.5)),
            claim("x", "y", -1.0, interval=(-1.5, -0.5), statement_source="our reading: z", role="our reading")]
    report.save_metrics("01_x", "cpu", {}, claims=rows)
    text = report.write_summary("cpu").read_text()
    assert "Paper rows: 0 supported, 1 not supported, 0 inconclusive at this budget" in text
    assert "1 our-reading rows" in text and "does not hold (our reading row)" in text
    assert "our reading: z" in text and "the paper's direction" in text


def test_paper_numbers_are_read_with_their_source():
    n = paper_number("differentiable_branching", table=1, dataset="cifar10", backbone="vgg13", method="proposed")
    assert n.value == pytest.approx(87.11) and n.unit == "%" and "Table 1" in n.source
    with pytest.raises(ValueError, match="rows"):
        paper_number("differentiable_branching", table=1, dataset="cifar10")
    with pytest.raises(ValueError, match="0 rows"):   # no row left before the last column is matched
        paper_number("differentiable_branching", dataset="mnist", backbone="vgg13", method="proposed")
    with pytest.raises(ValueError, match="known"):
        paper_number("no_such_paper")


def test_paired_bootstrap_cancels_shared_noise_and_covers_the_difference():
    g = torch.Generator().manual_seed(0)
    a = (torch.rand(10000, generator=g) < 0.80).double()
    b = a.clone()
    b[:100] = 1 - b[:100]                        # b differs from a on 1% of images
    diff, lo, hi = paired_bootstrap(a, b)
    assert lo <= diff <= hi and hi - lo < 0.01   # far narrower than two independent 0.4-point errors
    mean, lo, hi = bootstrap_mean(a)
    assert lo < 0.80 < hi


def test_seed_interval_is_a_t_interval():
    mean, lo, hi = seed_interval([0.80, 0.82, 0.81])
    assert mean == pytest.approx(0.81) and hi - mean == pytest.approx(4.303 * 0.01 / 3 ** 0.5)
    with pytest.raises(ValueError):
        seed_interval([0.8])


def test_median_interval_takes_order_statistics_and_covers_the_median_as_promised():
    assert median_interval(range(1, 10)) == (5.0, 2.0, 8.0)          # 1 - 2 (1 + 9) / 512 = 0.961
    assert median_interval(range(1, 32))[1:] == (10.0, 22.0)          # B(31, 1/2): P(B <= 9) = 0.015
    assert all(v != v for v in median_interval([1.0, 2.0, 3.0, 4.0, 5.0])[1:])   # 5 values cannot reach 95%
    with pytest.raises(ValueError):
        median_interval([])
    g = torch.Generator().manual_seed(0)            # a skewed distribution: exponential, median log 2
    draws = -torch.rand(2000, 11, generator=g, dtype=torch.float64).log()
    covered = sum(lo <= 0.6931 <= hi for _, lo, hi in (median_interval(d.tolist()) for d in draws))
    assert 0.95 <= covered / 2000 <= 1.0 - 0.003   # n = 11: [x_(2), x_(10)], coverage 0.988


def test_weighted_bootstrap_of_a_mean_is_the_bootstrap_mean_and_recomputes_any_statistic():
    from earlyexit.stats import bootstrap_weighted
    values = torch.rand(300, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ours = bootstrap_weighted(lambda w: w @ values / len(values), len(values), draws=500, seed=3)
    assert ours == pytest.approx(bootstrap_mean(values, draws=500, seed=3), abs=1e-12)
    drawn_max = lambda w: torch.where(w > 0, values, -torch.inf).max(1).values  # noqa: E731
    top, lo, hi = bootstrap_weighted(drawn_max, len(values), draws=200)
    assert top == pytest.approx(values.max().item()) and lo <= hi <= top


def test_smoke_rows_give_no_verdict(tmp_path, monkeypatch):
    monkeypatch.setattr(report, "reports_dir", lambda profile: tmp_path)
    row = claim("x", "y", 1.0, interval=(0.5, 1.5))
    assert claims_table([row], profile="smoke")["verdict"].tolist() == ["n/a (smoke)"]
    assert claims_table([row], profile="cpu")["verdict"].tolist() == ["supported"]
    report.save_metrics("01_x", "smoke", {}, claims=[row])
    text = report.write_summary("smoke").read_text()
    assert "test the plumbing" in text and "**n/a (smoke)**" in text and "**supported**" not in text


def test_seed_estimate_gives_an_interval_only_across_trainings():
    from earlyexit.stats import seed_estimate
    assert seed_estimate([2.0]) == (2.0, None)
    mean, interval = seed_estimate([1.0, 2.0, 3.0])
    assert (mean, interval) == (seed_interval([1.0, 2.0, 3.0])[0], seed_interval([1.0, 2.0, 3.0])[1:])


def test_seed_intervals_are_clipped_to_the_valid_range():
    from earlyexit.stats import seed_estimate, seed_interval
    values = [0.02, 0.95, 0.5]                      # a wild spread over 3 seeds: the t interval passes 0 and 1
    mean, lo, hi = seed_interval(values)
    assert lo < 0 and hi > 1
    mean_c, (lo_c, hi_c) = seed_estimate(values, bounds=(0.0, 1.0))
    assert mean_c == mean and (lo_c, hi_c) == (0.0, 1.0)


def test_summary_and_claims_table_show_two_decimals_and_whole_numbers_whole(tmp_path, monkeypatch):
    monkeypatch.setattr(report, "reports_dir", lambda profile: tmp_path)
    rows = [claim("x", "y", 2.69812, interval=(-0.50281, 5.89912), unit="points"),
            claim("x", "z", 0.015634, interval=(-3.7e-05, 0.0313), unit="AUROC"),
            claim("x", "w", 0.0, unit="images", deterministic=True, evidence="a property of the rule")]
    report.save_metrics("01_x", "cpu", {}, claims=rows)
    text = report.write_summary("cpu").read_text()
    assert "2.70 [-0.50, 5.90] points" in text and "0.016 [-3.7e-05, 0.031] AUROC" in text and "| 0 images |" in text
    assert claims_table(rows)["ours (95% interval)"].tolist()[:2] == ["2.70 [-0.50, 5.90] points",
                                                                       "0.016 [-3.7e-05, 0.031] AUROC"]
