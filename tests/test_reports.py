"""Reports and the index as a reader meets them: parameters once, one conclusion, no reprs, the claims on one
screen with badge and key number, no dead links, readable tables, progress on the console (fast unit tests)."""

import io
import json
import time
from pathlib import Path

import pandas as pd
import pytest
from report_checks import IndexPage, check_report, dead_links

from wsae_utils.run import reportkit as rk
from wsae_utils.run.claims_index import effect_of, ordered_columns, table_html, verdict_figure, write_index
from wsae_utils.run.console_tee import ConsoleTee, compact
from wsae_utils.run.results import CLAIMS, claim, claims_table

# -- reportkit -------------------------------------------------------------------------------------------------


def test_parameter_rows_mark_what_the_run_changed():
    defaults = {"out_dir": "results/dev/x", "steps": 3000, "lr": 1e-3, "wp": {"n": 34}, "seeds": [0, 1]}
    injected = {"out_dir": "results/toy/x", "steps": 3000, "lr": 2e-3, "seeds": (0, 1, 2)}
    rows = {r["name"]: r for r in rk.parameter_rows(defaults, injected)}
    assert set(rows) == set(defaults)
    assert rows["lr"]["changed"] and rows["lr"]["value"] == "0.002" and rows["lr"]["default"] == "0.001"
    assert not rows["steps"]["changed"], "an injected value equal to the default is not a change"
    assert rows["seeds"]["changed"] and rows["seeds"]["value"] == "[0, 1, 2]"  # a tuple shows as a list, no repr
    assert not rows["wp"]["changed"] and rows["wp"]["value"] == '{"n": 34}'
    assert rows["out_dir"]["workflow"] and not rows["lr"]["workflow"]


def test_run_parameters_round_trip_through_the_environment(monkeypatch):
    monkeypatch.setenv(rk.PARAMS_ENV, rk.parameters_env({"a": 1, "b": [1, 2]}, {"b": (3,)}))
    assert rk.run_parameters() == {"a": 1, "b": [3]}
    monkeypatch.delenv(rk.PARAMS_ENV)
    assert rk.run_parameters() == {}


def test_conclusion_owns_one_heading_and_is_never_empty():
    c = claim("toy-wsae", "t", "n", "not reproduced", "w", key_number="k", paper="p",
              effect={"name": "Δ", "points": [{"label": "a", "value": 0.1, "lo": 0.0, "hi": 0.2}], "paper": None})
    text = rk.conclusion([c], "what it means")
    assert text.count("## Conclusion") == 1 and text.index("what it means") < text.index("not reproduced")
    assert rk.conclusion(summary="only a summary").startswith("## Conclusion\n\nonly a summary")
    with pytest.raises(ValueError, match="empty heading"):
        rk.conclusion([], "  ")


# -- report checks (the checker must fail on planted problems) -------------------------------------------------
GOOD = """<html><body><div class="wsae-header"><details class="wsae-params"><summary>Parameters</summary><table>
<tr><th>parameter</th></tr><tr class="wsae-changed"><td>lr</td></tr></table></details></div>
<h1>Report</h1><div class="jp-RenderedMarkdown"><p>prose</p></div>
<div class="jp-OutputArea-output"><table><tr><td>1</td></tr></table></div>
<h2>Conclusion</h2><div class="jp-RenderedMarkdown"><p>the claim, the numbers, the verdict</p></div></body></html>"""


@pytest.mark.parametrize("change,problem", [
    (None, None),
    (("<h2>Conclusion</h2>", "<h2>Conclusion</h2><h2>Conclusion</h2>"), "2 'Conclusion' headings"),
    (("the claim, the numbers, the verdict", ""), "the conclusion is empty"),
    (("<p>prose</p>", "<p>saved to PosixPath('results/x.csv')</p>"), "Python repr"),
    (("<p>prose</p>", "<p>γ² = Var^{2α}</p>"), "raw TeX"),
    (("<div class=\"jp-OutputArea-output\"><table>", "<div><table>"), "outside a scrolling container"),
    (("<details class=\"wsae-params\">", "<details class=\"wsae-params\" open>"), "not folded"),
    (("<h1>Report</h1>", "<h1>Report</h1><details class=\"wsae-params\"></details>"), "exactly once"),
    (("</body>", "<h2>More</h2><p>x</p></body>"), "not the last section"),
])
def test_report_checker_catches_planted_problems(change, problem):
    page = GOOD if change is None else GOOD.replace(*change)
    problems = check_report(page)
    if problem is None:
        assert problems == []
    else:
        assert any(problem in p for p in problems), problems


# -- index -----------------------------------------------------------------------------------------------------
@pytest.fixture
def index_run(tmp_path):
    """A planted results folder: two claims tested by one report, the other sections switched off."""
    res = tmp_path / "results"
    (res / "toy" / "wsae" / "figures").mkdir(parents=True)
    (res / "toy" / "wsae" / "report.html").write_text("<html></html>")
    (res / "summary" / "figures").mkdir(parents=True)
    (res / "summary" / "report.html").write_text("<html></html>")
    found = [{**claim("toy-wsae", "paired test", "all the numbers", "not reproduced", key_number="ΔL_GT +0.07 "
                      "[+0.02, +0.12]", paper="clearly lower (no number)",
                      effect={"name": "Δ", "points": [{"label": "S=0.5", "value": 0.07, "lo": 0.02, "hi": 0.12}],
                              "paper": None}),
              "report": "../toy/wsae/report.html", "report_label": "Toy: WSAE"},
             {**claim("toy-fig2", "ratio test", "n_eff numbers", "reproduced", key_number="ratio 0.46 [0.4, 0.5]",
                      effect={"name": "ratio", "points": [{"label": "a", "value": 0.46, "lo": 0.4, "hi": 0.5}],
                              "paper": None, "threshold": 0.5}),
              "report": "../toy/wsae/report.html", "report_label": "Toy: WSAE"}]
    claims = claims_table(found)
    claims.to_csv(res / "summary" / "claims.csv", index=False)
    claims = pd.read_csv(res / "summary" / "claims.csv", keep_default_na=False)
    fig = verdict_figure(claims)
    fig.savefig(res / "summary" / "figures" / "verdicts.png")
    table = res / "tables" / "toy_wsae.csv"
    table.parent.mkdir()
    pd.DataFrame({"source": ["x"] * 60, "d_L_GT_rel": range(60), "kind": ["tied_topk"] * 60,
                  "sparsity": [0.5] * 60}).to_csv(table, index=False)
    write_index(res / "index.html", "planted", claims,
                [("Toy model", [("Toy: WSAE", str(res / "toy/wsae/report.html"))])], tables=[("Toy WSAE", str(table))],
                figures=[], verdict_png=str(res / "summary/figures/verdicts.png"), not_run=["Language model", "Vision"])
    return res


def test_index_answers_every_claim_in_one_row_with_badge_and_key_number(index_run):
    text = (index_run / "index.html").read_text()
    page = IndexPage(text)
    assert list(page.rows) == list(CLAIMS), "one row per claim of the paper, in registry order"
    assert {cid: row["badge"] for cid, row in page.rows.items()} == {
        cid: {"toy-wsae": "not reproduced", "toy-fig2": "reproduced"}.get(cid, "not run") for cid in CLAIMS}
    assert all(row["key"].strip() for row in page.rows.values())
    assert "ΔL_GT +0.07 [+0.02, +0.12]" in page.rows["toy-wsae"]["key"]
    assert page.rows["lm-fidelity"]["key"] == "section not run in this config"
    assert dead_links(text, index_run) == []
    (index_run / "toy" / "wsae" / "report.html").unlink()  # the checker must see a dead link
    assert set(dead_links(text, index_run)) == {"toy/wsae/report.html"}
    assert "nan" not in " ".join(page.hrefs)
    assert text.count("not run: the section is switched off") == 2
    assert "verdicts.png" in text


def test_index_tables_are_paginated_with_identifying_columns_first(index_run):
    text = (index_run / "index.html").read_text()
    table = text[text.index("<table id='table-0'"):]
    header = table[:table.index("</thead>")]
    assert header.index(">kind<") < header.index(">sparsity<") < header.index(">d_L_GT_rel<")
    assert ">source<" not in header, "file paths are not a reader's column"
    assert "page 1 of 3" in text and table.count(" hidden>") == 35
    assert ordered_columns(["x", "mean", "layer", "source"]) == ["layer", "mean", "x"]


def test_effect_parsing_and_figure_without_effects():
    assert effect_of("") is None and effect_of("{bad") is None and effect_of('{"points": []}') == {"points": []}
    claims = claims_table([])  # every claim "not run": the figure says so instead of failing
    assert len(verdict_figure(claims).axes) == len(CLAIMS)
    assert "data-page='0'" in table_html(pd.DataFrame({"a": [1.23456789]}), "t") and "1.235" in table_html(
        pd.DataFrame({"a": [1.23456789]}), "t")


# -- console progress ------------------------------------------------------------------------------------------
def test_console_tee_prints_changed_progress_at_a_bounded_rate(tmp_path):
    log = tmp_path / "run.log"
    log.write_text("executing x\n")
    out = io.StringIO()
    tee = ConsoleTee(log, "results/lm/acts", interval=0.01, stream=out, quiet_after=3)
    assert tee.poll() is None, "no progress yet: nothing printed"
    with open(log, "a") as f:
        f.write("cells:  10%|#         | 4/40 [00:02<00:18,  2.0cell/s]\n")
        f.write("\rLM activation pass:  45%|####5     | 44.0k/98.3k [02:10<02:40, 338tok/s]")
    msg = tee.poll()
    assert msg == "cells 10% 4/40 · LM activation pass: 45% 44.0k/98.3k [02:10<02:40, 338tok/s]"
    assert out.getvalue().startswith("[results/lm/acts] cells 10% 4/40")
    assert tee.poll() is None, "unchanged progress is not printed again"
    time.sleep(0.05)
    assert "no new progress" in tee.poll()
    assert compact("a:  5%|#    | 1/20 [00:01<00:19]") == "a: 5% 1/20 [00:01<00:19]"


def test_save_figure_records_its_caption(tmp_path):
    import matplotlib.pyplot as plt

    from wsae_utils.run.claims_index import figure_captions
    from wsae_utils.run.plots import save_figure

    fig, _ = plt.subplots()
    save_figure(fig, tmp_path, "a_plot", caption="what it shows")
    save_figure(fig, tmp_path, "b_plot")
    assert json.loads((tmp_path / "figures" / "captions.json").read_text()) == {"a_plot": "what it shows"}
    assert [c for c, _ in figure_captions(tmp_path / "figures")] == ["what it shows", "b plot"]
    assert Path(figure_captions(tmp_path / "figures")[0][1]).name == "a_plot.png"
