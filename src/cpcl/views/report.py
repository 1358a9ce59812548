"""What a run shows a person: the per-epoch log line, the results table and the training curves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cpcl.io import atomic_save

METRIC_COLUMNS = (("rank1", "R1"), ("rank5", "R5"), ("rank10", "R10"), ("mAP", "mAP"), ("mINP", "mINP"),
                  ("rSum", "rSum"))
# a split of pairs without identities (EvalSplit.report): each caption retrieving its own image
PAIR_COLUMNS = (("pair-R1", "pair R1"), ("pair-mAP", "pair mAP"))


def epoch_summary(row: dict[str, Any]) -> str:
    """One log line for an epoch's row of ``metrics.jsonl``."""
    val = f", val R1 {row['val']['rank1']:.2f} mAP {row['val']['mAP']:.2f}" if "val" in row else ""
    if "label_free" in row:  # held-out pairs, no identity read
        val += f", pair R1 {row['label_free']['pair-R1']:.2f} mAP {row['label_free']['pair-mAP']:.2f}"
    times = ", ".join(f"{k} {v:.1f}s" for k, v in row["time"].items() if isinstance(v, float))
    backed = (f"; backed off to epoch {row['backed_off']['restored_epoch']}'s weights, instance loss alone from here"
              if "backed_off" in row else "")
    return (f"epoch {row['epoch']}: loss {row['loss']:.4f}, {row['pairs_per_s']:.0f} pairs/s{val}"
            f"{_pseudo_summary(row.get('pseudo'))}{backed}; time {times}")


def _pseudo_summary(stats: dict[str, Any] | None) -> str:
    if not stats:
        return ""
    text = (f"; clusters img {stats['image_clusters']} txt {stats['text_clusters']}, outliers img "
            f"{100 * stats['image_outliers']:.0f}% txt {100 * stats['text_outliers']:.0f}%")
    if "image_recovered" in stats:
        text += f", OPLM recovered img {stats['image_recovered']} txt {stats['text_recovered']}"
    if "image_stability" in stats:
        text += f", stability img {stats['image_stability']:.2f} txt {stats['text_stability']:.2f}"
    if "agreement" in stats:
        text += f", img-txt agreement {stats['agreement']:.2f}"
    if "image_pair_precision" in stats:
        text += (f", pair precision img {100 * stats['image_pair_precision']:.0f}% "
                 f"txt {100 * stats['text_pair_precision']:.0f}%")
    return text


def results_table(rows: dict[str, dict[str, Any]], title: str = "") -> str:
    """A Markdown table of retrieval metrics, one row per model: the identity metrics, or — for rows of a split
    without identities (:meth:`~cpcl.evaluation.evaluate.EvalSplit.report`) — the pair scores."""
    columns = METRIC_COLUMNS if all("rank1" in m for m in rows.values()) else PAIR_COLUMNS
    head = ("| model | " + " | ".join(name for _, name in columns) + " |\n|---|" + "---:|" * len(columns) + "\n")
    body = "".join(f"| {name} | " + " | ".join(f"{m[key]:.2f}" for key, _ in columns) + " |\n"
                   for name, m in rows.items())
    return (f"{title}\n\n" if title else "") + head + body


def plot_curves(history: list[dict[str, Any]], zero_shot: dict[str, Any] | None, path: Path) -> None:
    """Loss, val R1/mAP and (when clustering) pseudo-label statistics per epoch, as a PNG."""
    if not history:
        return
    import matplotlib.pyplot as plt

    fig = curves_figure(history, zero_shot)
    atomic_save(path, lambda f: fig.savefig(f, format="png", dpi=100))
    plt.close(fig)


def curves_figure(history: list[dict[str, Any]], zero_shot: dict[str, Any] | None):
    """The figure of :func:`plot_curves`: every panel on one epoch axis (0 = before training)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    pseudo_rows = [r for r in history if r.get("pseudo") and "image_clusters" in r["pseudo"]]
    fig, axes = plt.subplots(1, 3 if pseudo_rows else 2, figsize=(15 if pseudo_rows else 10, 3.6))
    ax_loss, ax_val = axes[0], axes[1]
    ax_loss.plot([r["epoch"] for r in history], [r["loss"] for r in history], marker="o", label="total")
    ax_loss.set(xlabel="epoch", ylabel="train loss", title="training loss")
    val_rows = [r for r in history if "val" in r]
    if val_rows:
        start = [(0, zero_shot)] if zero_shot else []
        points = start + [(r["epoch"], r["val"]) for r in val_rows]
        for key in ("rank1", "mAP"):
            ax_val.plot([e for e, _ in points], [m[key] for _, m in points], marker="o", label=key)
        ax_val.set(xlabel="epoch (0: before training)", ylabel="%", title="val retrieval")
        ax_val.legend()
    if pseudo_rows:
        _pseudo_panel(axes[2], pseudo_rows)
    for row in history:  # cluster.backoff_patience: where the run left the pseudo labels
        if "backed_off" in row:
            ax_val.axvline(row["epoch"] + 0.5, color="grey", linestyle=":",
                           label=f"backed off (epoch {row['backed_off']['restored_epoch']}'s weights)")
            ax_val.legend()
    last = max(r["epoch"] for r in history)
    for ax in axes:
        ax.set_xlim(-0.3, last + 0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    return fig


def _pseudo_panel(ax, rows: list[dict[str, Any]]) -> None:
    """Outlier shares and pair precision (%) on the left axis, cluster counts of both modalities on the right."""
    epochs = [r["epoch"] for r in rows]
    for key, style in (("image_outliers", "-"), ("text_outliers", "--"), ("image_pair_precision", "-"),
                       ("text_pair_precision", "--")):
        if key in rows[0]["pseudo"]:
            ax.plot(epochs, [100 * r["pseudo"].get(key, float("nan")) for r in rows], style, marker="o",
                    label=key.replace("_", " "))
    ax.set(xlabel="epoch", ylabel="%", title="pseudo labels (precision: held-out ids, report only)")
    twin = ax.twinx()
    for key, style in (("image_clusters", ":"), ("text_clusters", "-.")):
        twin.plot(epochs, [r["pseudo"][key] for r in rows], style, color="k", marker=".",
                  label=key.replace("_", " "))
    twin.set_ylabel("clusters")
    handles, labels = ax.get_legend_handles_labels()
    twin_handles, twin_labels = twin.get_legend_handles_labels()
    ax.legend(handles + twin_handles, labels + twin_labels, fontsize=7, loc="lower left")
