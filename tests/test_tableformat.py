"""Notebook tables: no row-number column, at most two decimals (small values keep two digits), accuracies
given as fractions shown in % with the unit in the header, cells never cut."""
import pandas as pd

from earlyexit.macs import mac_table
from earlyexit.multiexit import MultiExitNet
from earlyexit.backbones import build_backbone
from earlyexit.tableformat import html_table, number, readable


def test_numbers_have_two_decimals_or_two_significant_digits():
    assert [number(v) for v in (94.6616, 0.25, 10.4, 0.0154, 0.001, 0.0, -0.0337)] == \
        ["94.66", "0.25", "10.40", "0.015", "0.001", "0.00", "-0.034"]


def test_accuracy_fractions_are_shown_in_percent_and_nothing_else_is():
    frame = pd.DataFrame({"val acc": [0.8566, 0.5], "accuracy (%)": [85.66, 50.0], "MACs / plain": [0.5, 1.0],
                          "ensemble accuracy": [0.9, 1.2]})
    shown = readable(frame)
    assert list(shown.columns) == ["val acc (%)", "accuracy (%)", "MACs / plain", "ensemble accuracy"]
    assert shown["val acc (%)"].tolist() == [85.66, 50.0]
    assert frame["val acc"].tolist() == [0.8566, 0.5]          # the frame itself keeps fractions


def test_html_leaves_out_row_numbers_but_keeps_a_named_index_and_whole_cells():
    long = "x" * 200 + " 12.345"
    html = html_table(pd.DataFrame({"claim": [long], "val acc": [0.8566]}))
    assert "<th>0</th>" not in html and long in html and "85.66" in html
    named = html_table(pd.DataFrame({"v": [1.0]}, index=pd.Index(["exit 1"], name="exit")))
    assert "exit 1" in named


def test_mac_table_numbers_exits_and_stages_from_one():
    net = MultiExitNet(build_backbone("vgg_small", width=0.125))
    rows = mac_table(net).rows()
    assert [r["exit"] for r in rows] == list(range(1, net.num_exits + 1))
    assert rows[0]["after stage"] == 1 and rows[-1]["cumulative MACs (% of backbone)"] > 99


def test_a_frame_can_list_accuracy_columns_whose_names_do_not_say_it():
    frame = pd.DataFrame({"plain": [0.7406], "proposed MACs / plain": [0.51]})
    frame.attrs["percent"] = ["plain"]
    shown = readable(frame)
    assert list(shown.columns) == ["plain (%)", "proposed MACs / plain"] and shown["plain (%)"][0] == 74.06
