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


def test_timings_keep_the_latest_run_of_each_notebook_and_bench_prints_them(tmp_path, monkeypatch):
    from earlyexit.benchmark import notebook_minutes
    from earlyexit.reproduce import record_timings
    monkeypatch.setenv("EARLYEXIT_OUTPUT", str(tmp_path))
    row = {"status": "ok", "trained": 1, "reused": 0}
    record_timings("smoke", [{"notebook": "00_primer", "minutes": 1.0, **row},
                             {"notebook": "05_benchmark", "minutes": 2.0, **row}])
    record_timings("smoke", [{"notebook": "05_benchmark", "minutes": 0.5, **row}])   # a rerun of one notebook
    rows = notebook_minutes()
    smoke = {r["notebook"]: r for r in rows if r["profile"] == "smoke"}
    assert smoke["00_primer"]["seconds"] == 60.0 and smoke["05_benchmark"]["seconds"] == 30.0
    assert smoke["05_benchmark"]["cpu"] and smoke["05_benchmark"]["threads"]
    assert [r["notebook"] for r in rows if r["profile"] == "cpu"] == ["not run here: make reproduce PROFILE=cpu"]


def test_tables_show_every_rows_columns():
    from earlyexit.reproduce import _table
    text = _table([{"profile": "smoke", "notebook": "not run here"}, {"profile": "cpu", "notebook": "00", "seconds": 69.2}])
    header, _, last = text.splitlines()
    assert header.split() == ["profile", "notebook", "seconds"] and last.split() == ["cpu", "00", "69.20"]
