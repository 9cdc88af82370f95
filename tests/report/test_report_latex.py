"""results.tex (frn_det/report/latex.py): booktabs tables of the box and mask AP and their
paired differences, from the numbers of results.md; compiled when pdflatex is installed."""
import json
import re
import shutil
import subprocess

import pytest

from frn_det.report import write_report
from frn_det.report.latex import tex_escape

DOCUMENT = r"""\documentclass{article}
\usepackage{booktabs}
\begin{document}
\input{results.tex}
\end{document}
"""


@pytest.fixture(scope="module")
def report(mask_sweep):
    paths = write_report([mask_sweep])
    return paths["tex"].read_text(), json.loads(paths["json"].read_text()), json.loads(paths["comparisons"].read_text())


def _rows(tex: str, label: str) -> dict:
    body = tex.split(f"\\label{{{label}}}")[1].split(r"\midrule")[1].split(r"\bottomrule")[0]
    rows = {}
    for line in body.strip().splitlines():
        assert line.endswith(r" \\"), line
        cells = [c.strip() for c in line[:-3].split(" & ")]
        rows[cells[0]] = cells[1:]
    return rows


def test_tables_carry_the_report_numbers_with_intervals_and_marks(report):
    tex, runs, comparisons = report
    box, mask = _rows(tex, "tab:box-ap"), _rows(tex, "tab:mask-ap")
    frn = next(r for r in runs if r["norm"] == "frn")
    assert box["frn"][0] == f"{frn['AP']:.1f} {{\\scriptsize [{frn['AP_lo']:.1f}, {frn['AP_hi']:.1f}]}}"
    assert mask["frn"][0] == (f"{frn['mask_AP']:.1f} {{\\scriptsize [{frn['mask_AP_lo']:.1f}, "
                              f"{frn['mask_AP_hi']:.1f}]}}")
    assert box["gn"] == [box["gn"][0], "diverged@37"] and box["bn"][1] == "--"  # ims 2 and 4
    diff = _rows(tex, "tab:box-ap-diff")["frn $-$ bn"][0]
    d = next(x for x in comparisons["differences"] if (x["norm"], x["baseline"]) == ("frn", "bn"))
    assert d["lo"] > 0  # excludes 0, but with one seed: a dagger, no star, as in results.md
    assert diff == f"{d['value']:+.1f} {{\\scriptsize [{d['lo']:+.1f}, {d['hi']:+.1f}]}}$^{{\\dagger}}$"
    assert "tab:mask-ap-diff" in tex


def test_structure_is_a_valid_booktabs_document(report):
    tex = report[0]
    for env in ("table", "tabular"):
        assert tex.count(f"\\begin{{{env}}}") == tex.count(f"\\end{{{env}}}") == 4
    assert tex.count(r"\toprule") == tex.count(r"\midrule") == tex.count(r"\bottomrule") == 4
    for spec, body in re.findall(r"\\begin\{tabular\}\{(\w+)\}(.*?)\\end\{tabular\}", tex, re.S):
        rows = [line for line in body.splitlines() if line.endswith(r"\\") and "multicolumn" not in line]
        assert rows and all(line.count(" & ") == len(spec) - 1 for line in rows), body
    # No TeX special left unescaped outside the markup frn-det writes itself.
    text = re.sub(r"\\[a-zA-Z]+|\\[%&_#$]|\$[^$]*\$|[{}\[\]]", "", tex.split("\n", 2)[2])
    assert not re.search(r"[%&_#^~]", text.replace(" & ", " ")), text


def test_special_characters_are_escaped():
    assert tex_escape("gn_ws 50% & #1") == r"gn\_ws 50\% \& \#1"


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="no TeX engine (pdflatex) installed")
def test_results_tex_compiles_with_a_plain_article_preamble(report, tmp_path):
    (tmp_path / "results.tex").write_text(report[0])
    (tmp_path / "doc.tex").write_text(DOCUMENT)
    proc = subprocess.run(["pdflatex", "-halt-on-error", "-interaction=nonstopmode", "doc.tex"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert (tmp_path / "doc.pdf").read_bytes()[:5] == b"%PDF-"
