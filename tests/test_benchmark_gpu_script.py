"""benchmarks/gpu.py, case 5, is run on a borrowed GPU for a few minutes at most: its dry run
(every row on the CPU, tiny sizes) keeps it from rotting between loans, and checks that the
rows it compares agree with tangermeme."""

import re

from conftest import require


def test_the_gpu_script_runs_dry_and_its_rows_agree_with_tangermeme():
    require("tangermeme")
    require("bpnetlite")
    from benchmarks import gpu

    text, targets = gpu.run(dry=True, log=lambda line: None)
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
