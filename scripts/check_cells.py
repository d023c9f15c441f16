"""Re-run some finished cells of a study from scratch and compare them with the stored results.

    python scripts/check_cells.py runs/studies/mnist1d 4

Picks the cells with a seeded random choice, trains each again into a temporary folder (with
the same code path as the study: one torch thread, the shared teacher-output cache where the
study used it) and prints whether the test accuracy is exactly the same.
"""
from __future__ import annotations

import json
import random
import sys
import tempfile
from pathlib import Path

import torch
import yaml

from ckptkd.config import StudyConfig, from_dict
from ckptkd.study.cells import Cell, run_cell


def main(folder: str, count: int) -> None:
    root = Path(folder)
    results = json.loads((root / "results.json").read_text())
    cfg = from_dict(StudyConfig, results["config"])
    torch.set_num_threads(1)
    picked = random.Random(0).sample(results["students"], count)
    same = 0
    with tempfile.TemporaryDirectory() as tmp:
        for r in picked:
            cell_cfg = yaml.safe_load((root / "cells" / r["cell"] / "config.yaml").read_text())["cell"]
            cell = Cell(**{**cell_cfg, "teachers": tuple(cell_cfg["teachers"])})
            again = run_cell(cell, cfg, Path(tmp), "cpu", root / "cache")
            same += again["acc"] == r["acc"]
            print(f"{r['cell']:<32} stored {100 * r['acc']:.2f}  again {100 * again['acc']:.2f}  "
                  f"{'same' if again['acc'] == r['acc'] else 'DIFFERENT'}")
    print(f"{same} of {count} re-run cells reproduce the stored accuracy exactly")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 4)
