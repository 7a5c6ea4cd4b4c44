"""``reproduce --check``: the comparison rule on hand-made metrics, and the whole check on the smoke
profile (a reference run into a temporary reports folder, an unchanged rerun that passes, a perturbed
metric that is reported and fails)."""
import copy
import json

from earlyexit import reproduce
from earlyexit.reproduce import compare_metrics, compare_reports, training_counts

ENV = {"machine": "x86_64", "cpu": "some CPU", "threads": 2, "torch": "2.x", "python": "3.11"}


def body(**metrics):
    return {"notebook": "00_primer", "profile": "cpu", "environment": dict(ENV), "protocol": {},
            "metrics": metrics, "claims": [], "comparisons": []}


def moved(rows):
    return {r["path"] for r in rows if r["beyond"]}


def test_same_machine_must_be_bit_identical():
    a = body(exit_accuracy_test=[0.8019, 0.882], maxprob_threshold=0.6, train_seconds=800.0)
    b = copy.deepcopy(a)
    b["metrics"]["exit_accuracy_test"][1] = 0.883
    b["metrics"]["train_seconds"] = 700.0          # timings are never compared
    b["environment"]["python"] = "3.12"            # nor the environment
    rule, rows = compare_metrics(a, b)
    assert rule == "exact" and moved(rows) == {"metrics.exit_accuracy_test.1"}


def test_a_paper_row_that_quotes_a_timing_is_not_compared():
    a = body()
    a["comparisons"] = [{"quantity": "vgg13 batch-1 speed-up t_plain/t - 1", "paper": 44.0, "ours": 89.6},
                        {"quantity": "plain test accuracy", "paper": 75.4, "ours": 85.9}]
    b = copy.deepcopy(a)
    b["comparisons"][0]["ours"] = 109.7
    b["comparisons"][1]["ours"] = 85.8
    assert moved(compare_metrics(a, b)[1]) == {"comparisons.1.ours"}


def test_another_machine_within_tolerance_and_seed_spread():
    # the fresh-clone example: 88.30 vs 88.20, 79.99 vs 80.19, threshold 0.625 vs 0.6
    a = body(exit_accuracy_test=[0.8019, 0.882], maxprob_threshold=0.6, backbone_MMACs=57.5,
             seed_spread={"maxprob_threshold": 0.0144})
    b = copy.deepcopy(a)
    b["environment"]["cpu"] = "another CPU"
    b["metrics"].update(exit_accuracy_test=[0.7999, 0.883], maxprob_threshold=0.625)
    rule, rows = compare_metrics(a, b)
    assert rule == "tolerance" and moved(rows) == set() and len(rows) == 3
    b["metrics"]["maxprob_threshold"] = 0.7                    # beyond 3 standard deviations over seeds
    b["metrics"]["exit_accuracy_test"] = [0.78, 0.883, 0.5]    # exit 1 two points lower; a list grew
    assert moved(compare_metrics(a, b)[1]) == {"metrics.maxprob_threshold", "metrics.exit_accuracy_test.0",
                                               "metrics.exit_accuracy_test.2", "metrics.exit_accuracy_test#len"}
    del b["environment"]["cpu"]                                # unknown CPU: never "the same machine"
    assert compare_metrics(b, b)[0] == "tolerance"


def test_training_counts(tmp_path):
    log = tmp_path / "uses.jsonl"
    lines = [{"run": "a", "reused": True}, {"run": "b", "reused": False}, {"run": "b", "reused": True},
             {"run": "a", "reused": True}]
    log.write_text("".join(json.dumps(x) + "\n" for x in lines))
    assert training_counts(log) == (1, 1)
    assert training_counts(tmp_path / "none.jsonl") == (0, 0)


def test_check_on_the_smoke_profile(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("EARLYEXIT_OUTPUT", str(tmp_path / "committed"))
    assert reproduce.main(["--profile", "smoke", "--only", "00"]) == 0
    committed = tmp_path / "committed" / "reports" / "smoke"
    reference = committed / "00_primer_metrics.json"
    before = reference.read_text()
    capsys.readouterr()

    scratch = tmp_path / "rerun"
    monkeypatch.chdir(tmp_path)      # a relative --scratch means the caller's folder, not the kernel's notebooks/
    assert reproduce.main(["--profile", "smoke", "--only", "00", "--check", "--scratch", "rerun"]) == 0
    out = capsys.readouterr().out
    assert "check passed" in out and "0 moved beyond it, 0 moved within it" in out
    assert "0 trained, 2 reused from the cache" in out          # the rerun trained nothing
    assert reference.read_text() == before                        # the committed reports are untouched
    fresh = scratch / "reports" / "smoke"
    assert (fresh / "00_primer_metrics.json").exists() and (fresh / "00_primer.ipynb").exists()

    perturbed = json.loads(before)
    perturbed["metrics"]["exit_accuracy_test"][-1] += 0.05
    reference.write_text(json.dumps(perturbed))
    assert compare_reports(committed, fresh, ["00_primer"]) == 1
    out = capsys.readouterr().out
    assert "1 moved beyond it" in out
    assert "MOVED metrics.exit_accuracy_test.9" in out and "(-0.05, allowed 0)" in out
