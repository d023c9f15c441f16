"""Write the selection benchmark into docs/selection.md from finished study folders.

    python scripts/make_selection.py --dev runs/studies/mnist1d runs/studies/digits \
        --confirm runs/studies/mnist1d-noisy runs/studies/mnist1d-memorise

Every number comes from the studies' results.json. ``--dev`` studies are the ones the
candidate rules were looked at on; ``--confirm`` studies were run after the default was
fixed, to confirm it; ``--latest`` ones are confirmation studies of the latest round, which
also get a summary table of their own. The tables replace what stands between the benchmark
markers of docs/selection.md; the hand-written text around them holds no numbers.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ckptkd.report.selection import render_study, render_summary, summary

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "selection.md"
START, END = "<!-- benchmark:start -->", "<!-- benchmark:end -->"


def load(folder: str) -> dict:
    return json.loads((Path(folder) / "results.json").read_text())


def block(dev: list[str], confirm: list[str], latest: list[str]) -> str:
    confirm = confirm + latest
    studies = {f: load(f) for f in dev + confirm}
    parts = [START, "", f"This section was written by `python scripts/make_selection.py {' '.join(sys.argv[1:])}`.", "",
             "### Across all studies", "", render_summary(summary(list(studies.values()))), ""]
    if dev and confirm:
        groups = [("development studies only", dev), ("confirmation studies only", confirm)]
        if latest:
            groups.append(("latest confirmation round only", latest))
        for label, group in groups:
            parts += [f"### Across the {label} ({', '.join(studies[f]['config']['name'] for f in group)})", "",
                      render_summary(summary([studies[f] for f in group])), ""]
    parts += [render_study(results, folder) for folder, results in studies.items()]
    return "\n".join(parts + [END])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dev", nargs="*", default=[], help="studies the rules were developed on")
    ap.add_argument("--confirm", nargs="*", default=[], help="studies run to confirm the default")
    ap.add_argument("--latest", nargs="*", default=[],
                    help="confirmation studies of the latest round, also summarised on their own")
    args = ap.parse_args()
    text = DOC.read_text()
    if START not in text:
        text = text.replace("<!-- benchmark -->", f"{START}\n{END}") if "<!-- benchmark -->" in text \
            else f"{text.rstrip()}\n\n{START}\n{END}\n"
    head, rest = text.split(START, 1)
    tail = rest.split(END, 1)[1]
    DOC.write_text(head + block(args.dev, args.confirm, args.latest) + tail)
    n = len(args.dev) + len(args.confirm) + len(args.latest)
    print(f"wrote the benchmark of {n} studies into {DOC.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
