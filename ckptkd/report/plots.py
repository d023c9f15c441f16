"""Matplotlib figures of an analysis: the information plane and the score against epoch."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from ..io import write_error  # noqa: E402


def information_plane(rows: list[dict], ax, color_key: str = "epoch", label: str = "epoch"):
    """I(X;F) against I(Y;F), points coloured by ``color_key`` and joined in epoch order."""
    xs, ys = [r["ixf"] for r in rows], [r["iyf"] for r in rows]
    ax.plot(xs, ys, "-", color="0.7", zorder=1)
    pts = ax.scatter(xs, ys, c=[r[color_key] for r in rows], cmap="viridis", zorder=2, s=40)
    for r in rows:
        ax.annotate(str(r["epoch"]), (r["ixf"], r["iyf"]), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_xlabel("I(X;F) [nats]")
    ax.set_ylabel("I(Y;F) [nats]")
    ax.set_title("information plane")
    bar = ax.figure.colorbar(pts, ax=ax, label=label)
    if color_key == "epoch":
        bar.locator = MaxNLocator(integer=True)
        bar.update_ticks()


def integer_ticks(axis) -> None:
    """Ticks at whole numbers only on ``axis`` (epochs: never 12.5)."""
    axis.set_major_locator(MaxNLocator(integer=True))


def score_vs_epoch(rows: list[dict], ax):
    epochs = [r["epoch"] for r in rows]
    ax.plot(epochs, [r["score"] for r in rows], "o-", label="Algorithm 1 score")
    ax.set_xlabel("epoch")
    integer_ticks(ax.xaxis)
    ax.set_ylabel("score")
    best = max(rows, key=lambda r: r["score"])
    ax.axvline(best["epoch"], color="C0", ls=":", lw=1)
    if all(r.get("teacher_acc") is not None for r in rows):
        twin = ax.twinx()
        twin.plot(epochs, [100 * r["teacher_acc"] for r in rows], "s--", color="C1", label="teacher val acc")
        twin.set_ylabel("teacher val accuracy [%]", color="C1")
    ax.set_title("score and teacher accuracy")


def save_figure(fig, path: Path) -> Path:
    """Write ``fig`` to ``path`` whole or not at all (a temporary file, then a rename), and close it."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.png")
    try:
        fig.savefig(tmp)
        tmp.replace(path)
    except OSError as e:  # a read-only or full folder
        tmp.unlink(missing_ok=True)
        raise write_error(path, e) from None
    finally:
        plt.close(fig)
    return path


def plot_analysis(rows: list[dict], folder: Path) -> list[Path]:
    """Write information_plane.png and score.png into ``folder``; return their paths."""
    paths = []
    for name, draw in (("information_plane.png", information_plane), ("score.png", score_vs_epoch)):
        fig, ax = plt.subplots(figsize=(5.5, 4), dpi=110)
        draw(rows, ax)
        fig.tight_layout()
        paths.append(save_figure(fig, Path(folder) / name))
    return paths
