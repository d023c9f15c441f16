"""Write the selection benchmark into docs/selection.md from finished study folders.

    python scripts/make_selection.py \
        --round dev=ff64d0b:runs/studies/mnist1d-noisy,runs/studies/digits \
        --round confirm-1=7fbbd0e:runs/studies/mnist1d,runs/studies/blobs \
        --candidates proxy-full,val-nll

Every number comes from the studies' results.json. Each ``--round NAME=COMMIT:FOLDER,FOLDER``
is one round of studies, given in the order they were run, with the commit that fixed its
study configs (the development round is the one the rules were looked at on; the others
confirm). The block lists the rounds in order, with a summary table over all studies and one
per round; the four target figures (``ckptkd.report.budget.default_targets``) of the default
policy, of ``last`` and of each ``--candidates`` policy; the verdict on distilling over all
studies; the regret against the selection budget over the studies that ran a
``budget_sweep`` (a plot, written to docs/img/regret_vs_budget.png beside the doc, and its
table); and each study's table. The block replaces what stands between the benchmark markers
of the doc (``--doc``, default docs/selection.md); the text around it holds no numbers.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from ckptkd.config import SelectConfig
from ckptkd.report.budget import default_targets, plot_regret_vs_budget, regret_vs_budget, render_budget, \
    render_targets, swept
from ckptkd.report.selection import render_study, render_summary, render_verdict_summary, summary

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "selection.md"
START, END = "<!-- benchmark:start -->", "<!-- benchmark:end -->"
PLOT = Path("img") / "regret_vs_budget.png"  # beside the doc


def load(folder: str) -> dict:
    path = Path(folder) / "results.json"
    if not path.exists():
        print(f"make_selection.py: error: {folder} has no results.json; finish the study first", file=sys.stderr)
        raise SystemExit(2)
    return json.loads(path.read_text())


def parse_round(text: str) -> tuple[str, str, list[str]]:
    """``NAME=COMMIT:FOLDER,FOLDER`` as (name, commit, folders)."""
    name, sep, rest = text.partition("=")
    commit, sep2, folders = rest.partition(":")
    studies = [f for f in folders.split(",") if f]
    if not (sep and sep2 and name and commit and studies):
        raise argparse.ArgumentTypeError(f"expected NAME=COMMIT:FOLDER[,FOLDER...], got {text!r}")
    return name, commit, studies


def block(rounds: list[tuple[str, str, list[str]]], studies: dict[str, dict], candidates: list[str], doc: Path,
          command: str) -> str:
    """The benchmark block; ``studies`` maps each round's folders to their results.json."""
    every = list(studies.values())
    default = SelectConfig().policy
    parts = [START, "", f"This section was written by `{command}`.", "", "Rounds, in the order they were run:", ""]
    parts += [f"{i}. **{name}** (commit `{commit}`): {', '.join(studies[f]['config']['name'] for f in folders)}"
              for i, (name, commit, folders) in enumerate(rounds, 1)]
    parts += ["", "### Across all studies", "", render_summary(summary(every)), ""]
    if len(rounds) > 1:
        for name, commit, folders in rounds:
            parts += [f"### Round {name} only (commit `{commit}`: "
                      f"{', '.join(studies[f]['config']['name'] for f in folders)})", "",
                      render_summary(summary([studies[f] for f in folders])), ""]
    policies = list(dict.fromkeys([default, "last", *candidates]))
    parts += [f"### The four targets over all {len(every)} studies", "",
              f"The default (`{default}`), `last`{' and the candidates' if candidates else ''}: each target's worst "
              "study. The cost is the spend in distillations as the budget counts it (sample passes); the tables "
              "above give the wall-time cost.", "",
              render_targets([default_targets(every, p) for p in policies]), "",
              render_verdict_summary(every), ""]
    parts += budget_section(every, [default, "last", "val-nll-1se"], doc)
    parts += [render_study(results, folder) for folder, results in studies.items()]
    return "\n".join(parts + [END])


def budget_section(studies: list[dict], references: list[str], doc: Path) -> list[str]:
    """The regret-against-budget plot (written beside ``doc``) and its table, over the studies
    with a budget sweep."""
    references = list(dict.fromkeys(references))
    with_sweep = swept(studies)
    head = ["### Regret against the selection budget", ""]
    if not with_sweep:
        return head + [f"None of the {len(studies)} studies ran a `budget_sweep`, so the plot is not drawn.", ""]
    rows = regret_vs_budget(studies)
    plot_regret_vs_budget(rows, references, doc.parent / PLOT, len(with_sweep))
    names = ", ".join(r["config"]["name"] for r in with_sweep)
    return head + [f"Over the {len(with_sweep)} of {len(studies)} studies that ran a `budget_sweep` ({names}); "
                   f"flat references: {', '.join(f'`{p}`' for p in references)}.", "",
                   f"![regret against the selection budget]({PLOT.as_posix()})", "",
                   render_budget(rows, references), ""]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--round", type=parse_round, action="append", default=[], dest="rounds",
                    metavar="NAME=COMMIT:FOLDER,FOLDER",
                    help="one round of studies, with the commit of its configs; repeat in the order they were run")
    ap.add_argument("--candidates", default="", metavar="A,B,C",
                    help="policies whose four target figures are given beside the default's and last's")
    ap.add_argument("--doc", type=Path, default=DOC, help="the markdown file with the benchmark markers")
    args = ap.parse_args()
    if not args.rounds:
        ap.error("give at least one --round NAME=COMMIT:FOLDER[,FOLDER...]")
    names = [name for name, _, _ in args.rounds]
    if len(set(names)) < len(names):
        ap.error(f"--round names must be distinct, got {', '.join(names)}")
    candidates = [c for c in args.candidates.split(",") if c]
    studies = {f: load(f) for _, _, folders in args.rounds for f in folders}
    measured = {p for r in studies.values() for p in r.get("selection", {})}
    for c in candidates:
        if c not in measured:
            ap.error(f"--candidates names {c!r}, which no study measured; use one of {', '.join(sorted(measured))}")
    command = "python scripts/make_selection.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    text = args.doc.read_text()
    if START not in text:
        text = text.replace("<!-- benchmark -->", f"{START}\n{END}") if "<!-- benchmark -->" in text \
            else f"{text.rstrip()}\n\n{START}\n{END}\n"
    head, rest = text.split(START, 1)
    tail = rest.split(END, 1)[1]
    (args.doc.parent / PLOT.parent).mkdir(parents=True, exist_ok=True)
    args.doc.write_text(head + block(args.rounds, studies, candidates, args.doc, command) + tail)
    print(f"wrote the benchmark of {len(studies)} studies in {len(args.rounds)} rounds into {args.doc}")


if __name__ == "__main__":
    main()
