"""The figure files every picture command writes: the formats by suffix, and a UsageError
naming the file for a wrong suffix or a file that cannot be written."""

from __future__ import annotations

from pathlib import Path

import pytest
from matplotlib.figure import Figure

from meanfield.errors import UsageError
from meanfield.pictures.figures import FORMATS, check_figure_path, save_figure


def test_check_figure_path_takes_the_formats_and_names_the_file_otherwise(tmp_path):
    assert FORMATS == (".png", ".pdf", ".svg")
    assert check_figure_path(str(tmp_path / "a.PNG")) == tmp_path / "a.PNG"
    with pytest.raises(UsageError, match=r"a\.jpg: cannot write \.jpg; use one of \.png, \.pdf, \.svg"):
        check_figure_path(tmp_path / "a.jpg")
    with pytest.raises(UsageError, match="cannot write a file without suffix"):
        check_figure_path(tmp_path / "a")


@pytest.mark.parametrize("suffix", FORMATS)
def test_save_figure_writes_each_format(tmp_path, suffix):
    fig = Figure()
    fig.subplots().plot([0, 1], [1, 0])
    path = save_figure(fig, tmp_path / f"line{suffix}")
    assert isinstance(path, Path) and path.stat().st_size > 0


def test_save_figure_into_a_missing_directory_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match=r"missing/a\.png: cannot write the figure \("):
        save_figure(Figure(), tmp_path / "missing" / "a.png")
