"""benchmarks/gpu.py, case 5, is run on a borrowed GPU for a few minutes at most: its dry run
(every row on the CPU, tiny sizes) keeps it from rotting between loans, and checks that the
rows it compares agree with tangermeme."""

import re

from conftest import require


def test_the_gpu_script_runs_dry_and_its_rows_agree_with_tangermeme():
    require("tangermeme")
    require("bpnetlite")
    from benchmarks import gpu

    published = []
    text, targets = gpu.run(dry=True, log=lambda line: None, publish=published.append)
    # after each row, the section so far (a run cut off by its time limit keeps its rows)
    assert [t.count("\n### ") for t in published] == [1, 2, 3, 4, 5, 6]
    assert all("**partial**" in t for t in published) and "**partial**" not in text
    assert published[-1].split("wall")[0] == text.split("wall")[0]
    for row in ("### A. `ablate`", "### B. `ablate_annotations`", "### C. `deep_lift_shap`",
                "### D. `saturation_mutagenesis`", "### E. Precision",
                "### F. `ablate(func=deep_lift_shap)`"):
        assert row in text
    differences = [float(d) for d in re.findall(r"max relative difference (?:to tangermeme )?"
                                                 r"([0-9.]+e[+-][0-9]+)", text)]
    assert len(differences) == 4 and max(differences) < 1e-4, differences
    # on the CPU, XLA's default float32 precision is full precision
    assert "max |diff| / max |highest| = 0.00e+00" in text
    assert len(targets) == 9 and all("not judged (dry run)" in t for t in targets)


def test_the_gpu_script_reruns_chosen_rows_and_refuses_e_without_a():
    require("tangermeme")
    require("bpnetlite")
    import pytest

    from benchmarks import gpu

    with pytest.raises(ValueError, match="E only with A"):
        gpu.run(dry=True, log=lambda line: None, rows_wanted="E")
    text, targets = gpu.run(dry=True, log=lambda line: None, rows_wanted="C")
    assert [line for line in text.split("\n") if line.startswith("### ")] == [
        "### C. `deep_lift_shap`, 2 × 500 bp, 3 references, count head"]
    assert "--rows C" in text and len(targets) == 1
