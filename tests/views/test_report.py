"""What a run shows: the results table and the curves."""


from cpcl.views.report import curves_figure, results_table


def _history():
    pseudo = lambda e: {"image_clusters": 10 + e, "text_clusters": 20 + e, "image_outliers": 0.3,  # noqa: E731
                        "text_outliers": 0.2, "image_pair_precision": 0.5, "text_pair_precision": 0.6}
    val = {"rank1": 30.0, "mAP": 33.0}
    return [{"epoch": e, "loss": 5.0 - e, "val": val, "pseudo": pseudo(e)} for e in (1, 2, 3)]


def test_curves_share_one_epoch_axis_and_show_both_cluster_counts():
    fig = curves_figure(_history(), {"rank1": 10.0, "mAP": 12.0})
    loss, val, pseudo = fig.axes[:3]
    assert loss.get_xlim() == val.get_xlim() == pseudo.get_xlim()
    assert loss.get_xlim()[0] < 0 < 3 < loss.get_xlim()[1]  # epoch 0 (zero-shot) and the last one on all
    labels = [t.get_text() for t in pseudo.get_legend().get_texts()]
    assert "image clusters" in labels and "text clusters" in labels
    twin = fig.axes[3]
    assert [list(line.get_ydata()) for line in twin.get_lines()] == [[11, 12, 13], [21, 22, 23]]


def test_results_table():
    table = results_table({"a": {"rank1": 1, "rank5": 2, "rank10": 3, "mAP": 4, "mINP": 5, "rSum": 6}}, "t")
    assert table == ("t\n\n| model | R1 | R5 | R10 | mAP | mINP | rSum |\n|---|---:|---:|---:|---:|---:|---:|\n"
                     "| a | 1.00 | 2.00 | 3.00 | 4.00 | 5.00 | 6.00 |\n")
