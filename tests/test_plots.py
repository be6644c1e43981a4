"""The demo's plot (issue 17): legend colours match the bars, error bars and axes say what
they show."""

import io

import numpy


def test_demo_plot_legend_matches_the_bars_and_axes_are_labelled(monkeypatch):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import to_rgba

    from jablate import demo

    rs = numpy.random.RandomState(0)
    groups = {"motif": (rs.uniform(0.8, 1, 8), rs.uniform(0, 0.3, (8, 5))),
              "control": (rs.uniform(0.8, 1, 8), rs.uniform(0.8, 1, (8, 5)))}
    figures = []
    monkeypatch.setattr(plt, "close", lambda figure=None: figures.append(figure))
    demo._plot_demo(io.BytesIO(), groups, {"motif": 30, "control": 70}, 6, "png")
    (figure,) = figures
    left, right = figure.axes
    bars = [patch.get_facecolor() for patch in right.patches]
    legend = {text.get_text(): handle.get_facecolor() for text, handle in zip(
        right.get_legend().get_texts(), right.get_legend().legend_handles)}
    # every bar's colour is in the legend, under the name of what it shows
    assert legend["before"] == bars[0] == bars[1]
    assert legend["after shuffling the motif region"] == bars[2] == to_rgba("tab:red")
    assert legend["after shuffling the control region"] == bars[3] == to_rgba("tab:blue")
    assert "error bars" in right.get_title() and "error bars" in left.get_title()
    assert "GATA score" in right.get_ylabel() and "GATA score" in left.get_xlabel()
    plt.close(figure)
