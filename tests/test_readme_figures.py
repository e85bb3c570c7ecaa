"""benchmarks/readme_figures.py: the marker rewrite, the rendering, the check, and that the
README's generated figures were not edited by hand. Nothing here runs the demo or the suite."""
import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("readme_figures", REPO / "benchmarks" / "readme_figures.py")
rf = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(rf)

MACHINE = {"cpu": "Some CPU", "isa": "AVX512", "cores": 2, "usable_cores": 2, "memory_gb": 31.2, "load": 1.5,
           "os": "Linux x86_64", "python": "3.11.7", "torch": "2.13.0"}
DEMO = {"command": "camser demo", "ua": 0.7691, "wa": 0.7512, "folds": 3, "wall_s": 301.4, "cpu_s": 288.0,
        "threads": 1, "date": "2026-12-05", "commit": "abcdef1234", "machine": MACHINE}
TESTS = {"collected": 709, "date": "2026-12-05", "commit": "abcdef1234",
         "suite": {"passed": 270, "skipped": 1, "tests": 271, "wall_s": 1920.0, "date": "2026-12-04",
                   "note": "recorded by hand"}}


def page(demo=DEMO, tests=TESTS) -> str:
    return (f"# title\n\nbefore\n<!-- figures:demo {rf.encode(demo)} -->\n{rf.render_demo(demo)}\n"
            f"<!-- /figures:demo -->\nbetween\n\n<!-- figures:tests {rf.encode(tests)} -->\n"
            f"{rf.render_tests(tests)}\n<!-- /figures:tests -->\nafter\n")


def test_replace_block_rewrites_one_block_and_keeps_the_rest():
    text = page()
    new = dict(DEMO, ua=0.5)
    out = rf.replace_block(text, "demo", new, rf.render_demo(new))
    assert "UA **50.0 %**" in out and "UA **76.9 %**" not in out
    assert rf.read_blocks(out)["demo"][0] == new
    assert rf.read_blocks(out)["tests"] == rf.read_blocks(text)["tests"]
    assert out.split("<!-- figures:demo")[0] == text.split("<!-- figures:demo")[0]
    assert out.split("<!-- /figures:demo -->")[1] == text.split("<!-- /figures:demo -->")[1]
    assert rf.replace_block(out, "demo", DEMO, rf.render_demo(DEMO)) == text     # and back


def test_a_block_starts_empty_and_takes_its_data():
    text = "a\n<!-- figures:demo -->\n<!-- /figures:demo -->\nb\n"
    assert rf.read_blocks(text) == {"demo": ({}, "")}
    out = rf.replace_block(text, "demo", DEMO, "x")
    assert out.startswith("a\n<!-- figures:demo {") and out.endswith("-->\nx\n<!-- /figures:demo -->\nb\n")


def test_data_cannot_close_the_html_comment():
    data = dict(DEMO, machine=dict(MACHINE, cpu="odd -- name -->"))
    assert "--" not in rf.encode(data)
    out = rf.replace_block(page(), "demo", data, "body")
    assert rf.read_blocks(out)["demo"] == (data, "body\n")


@pytest.mark.parametrize("text, message", [
    ("<!-- figures:demo -->\nx\n", "without its closing"),
    ("<!-- figures:demo -->\nx\n<!-- /figures:demo -->\n<!-- figures:demo -->\ny\n<!-- /figures:demo -->\n",
     "twice"),
])
def test_broken_markers_are_errors(text, message):
    with pytest.raises(ValueError, match=message):
        rf.read_blocks(text)


def test_replacing_a_missing_block_is_an_error():
    with pytest.raises(ValueError, match="no <!-- figures:tests"):
        rf.replace_block("<!-- figures:demo -->\n<!-- /figures:demo -->\n", "tests", TESTS, "x")


def test_rendering():
    assert rf.render_demo(DEMO).split("\n") == [
        "**`camser demo`** (2026-12-05, commit abcdef1234):",
        "- cross-validated UA **76.9 %**, WA 75.1 % over 3 leave-one-session-out folds (chance 25 %)",
        "- 5 min 01 s wall, 288 CPU-seconds, torch and numpy's BLAS on 1 thread",
        "- machine: Some CPU (AVX512), 2 cores, 31 GB, load average 1.5 at the start; Linux x86_64, "
        "Python 3.11.7, torch 2.13.0"]
    assert rf.render_tests(TESTS).split("\n") == [
        "**Test suite** (2026-12-05, commit abcdef1234): **709 tests** collected.",
        "- the last full run recorded here: 270 passed, 1 skipped in 32 min 00 s (2026-12-04, 271 tests then; "
        "recorded by hand)"]
    assert [rf.duration(s) for s in (56.4, 99, 100, 3599, 3600 + 125)] == ["56 s", "99 s", "1 min 40 s",
                                                                          "59 min 59 s", "1 h 02 min"]


def test_the_avx2_rerun_is_rendered_and_checked():
    avx2 = {"ua": 0.694, "wa": 0.697, "wall_s": 130.0, "env": {"ATEN_CPU_CAPABILITY": "avx2"}}
    demo = dict(DEMO, avx2=avx2)
    assert ("\n- the same machine with the kernels held to AVX2 (`ATEN_CPU_CAPABILITY=avx2`): UA **69.4 %**, "
            "WA 69.7 % (2 min 10 s)\n- machine: ") in rf.render_demo(demo)
    text = page(demo)
    assert rf.check(text, {"demo": demo}) == []
    assert rf.check(text, {"demo": DEMO}) == []                 # not measured (no AVX-512 here): not compared
    assert rf.check(text, {"demo": dict(demo, avx2=dict(avx2, ua=0.70))}) == [
        "figures:demo: ua held to AVX2 is 70.0 here, 69.4 in the README"]


def test_parse_suite():
    assert rf.parse_suite("...\n270 passed, 1 skipped in 1921.33s (0:32:01)\n") == \
        {"passed": 270, "skipped": 1, "tests": 271, "wall_s": 1921.33}
    out = rf.parse_suite("== 1 passed in 1.00s ==\nmore\n===== 3 failed, 2 passed, 1 error in 5.50s =====\n")
    assert out == {"failed": 3, "passed": 2, "error": 1, "tests": 5, "wall_s": 5.5}
    with pytest.raises(ValueError):
        rf.parse_suite("collected 3 items\n")


def test_check_compares_the_numbers_not_the_times(capsys):
    text = page()
    assert rf.check(text, {"demo": dict(DEMO, wall_s=999.0, cpu_s=1.0), "tests": dict(TESTS)}) == []
    assert rf.check(text, {"demo": dict(DEMO, ua=0.7686)}) == []           # same at one decimal
    problems = rf.check(text, {"demo": dict(DEMO, ua=0.71, machine=dict(MACHINE, isa="AVX2")),
                               "tests": dict(TESTS, collected=710)})
    assert problems == ["figures:demo: ua is 71.0 here, 76.9 in the README (recorded with another isa: AVX512;"
                        " the demo's numbers depend on them)",
                        "figures:tests: 710 tests collected, the README says 709"]
    edited = text.replace("UA **76.9 %**", "UA **80.0 %**")
    assert rf.check(edited, {}) == ["figures:demo: the text was edited by hand (rerun the script to regenerate it)"]


def test_the_readme_figures_are_generated_not_typed():
    """The README's figure blocks hold what the script rendered (rerun the script rather than
    editing them); the measurements themselves are `readme_figures.py --check`'s job."""
    blocks = rf.read_blocks((REPO / "README.md").read_text())
    assert set(rf.MEASUREMENTS) <= set(blocks)
    assert rf.stale_blocks((REPO / "README.md").read_text()) == []
