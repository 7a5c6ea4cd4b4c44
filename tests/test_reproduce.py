"""The batch runner refuses bad profiles, notebooks and parameters at once; dry runs build every model."""
import pytest

from earlyexit import reproduce as R
from earlyexit.profiles import PROFILES


def test_unknown_profile_is_one_clear_line(capsys):
    assert R.main(["--profile", "gpu-cluster"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown profile 'gpu-cluster'" in err[0]


def test_unknown_notebook(capsys):
    assert R.main(["--profile", "smoke", "--only", "99"]) == 2
    assert "unknown notebook" in capsys.readouterr().err


def test_unknown_parameter_in_a_profile(monkeypatch, capsys):
    monkeypatch.setitem(PROFILES, "00_primer", {"smoke": {"epochz": 1}})
    assert R.main(["--profile", "smoke", "--only", "00"]) == 2
    assert "unknown parameter(s) ['epochz']" in capsys.readouterr().err


def test_negative_epochs_in_a_profile_fail_in_dry_run(monkeypatch, capsys):
    monkeypatch.setitem(PROFILES, "00_primer", {"smoke": {"epochs": -3}})
    assert R.main(["--profile", "smoke", "--only", "00", "--dry-run"]) == 2
    assert "epochs must be >= 0" in capsys.readouterr().err


@pytest.mark.parametrize("profile", ["smoke", "cpu", "paper"])
def test_dry_run_builds_every_model_of_every_profile(profile, capsys):
    assert R.main(["--profile", profile, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "built" in out
    for nb in R.notebooks().values():
        assert nb.stem in out


def test_profiles_only_name_existing_notebooks_and_profiles():
    stems = {p.stem for p in R.notebooks().values()}
    assert set(PROFILES) <= stems
    for per_profile in PROFILES.values():
        assert set(per_profile) <= set(R.PROFILE_NAMES)
