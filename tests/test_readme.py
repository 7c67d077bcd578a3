"""Every Python block of the user guide, moved from the README into the docs (the notebook
walk-through of docs/getting_started.md, then docs/sweeps.md and docs/file_format.md, the
README's order), runs, in order, in one namespace, as a notebook would run them; and what the
walk-through's comments say is what it gives."""

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"
PAGES = ("getting_started.md", "sweeps.md", "file_format.md")
BLOCKS = [(page, block) for page in PAGES
          for block in re.findall(r"```python\n(.*?)```", (DOCS / page).read_text(), flags=re.S)]


@pytest.fixture(scope="module")
def notebook(tmp_path_factory):
    """The namespace after running every block in a fresh directory."""
    import os

    cwd, directory = os.getcwd(), tmp_path_factory.mktemp("readme")
    os.chdir(directory)
    namespace = {"__name__": "__main__", "directory": directory}  # as in a notebook, or a script run
    try:
        for number, (page, block) in enumerate(BLOCKS, 1):
            exec(compile(block, f"docs/{page}, Python block {number}", "exec"), namespace)
        yield namespace
    finally:
        os.chdir(cwd)


def test_the_docs_have_the_walk_through():
    blocks = [block for _, block in BLOCKS]
    assert len(blocks) >= 4
    assert "mf.simulate(sc)" in blocks[0] and "mf.sweep(" in "".join(blocks)


@pytest.mark.slow
def test_every_python_block_runs_and_says_what_it_gives(notebook):
    mf, rich = notebook["mf"], notebook["rich"]
    assert (rich.status, rich.predicted_regime, rich.attrs["eta_w"]) == ("complete", "rich", 256.0)
    assert notebook["sc"].model.width == 256 and list(notebook["sc"].runs) == ["rich", "lazy"]
    loss = rich.measure("loss_test")  # the walk-through's `loss` (a later block reuses the name)
    assert 0.05 < loss.sel(time=10.0).item() < 0.08 and 0.0015 < loss.isel(time=-1).item() < 0.003
    assert loss.time[-1].item() == 50.0
    data = notebook["sc"].data  # the shapes the comment states: (n_train, dim), (teacher width, dim)
    assert (data.n_train, data.dim, data.teacher.width) == (1024, 20, 4)
    tree = notebook["tree"]
    assert 0.02 < tree["lazy"]["displacement_w"].isel(time=-1).item() < 0.04
    assert 1.6 < tree["rich"]["displacement_w"].isel(time=-1).item() < 2.0
    directory = notebook["directory"]
    assert all((directory / name).stat().st_size > 0 for name in ("q.h5", "q.png", "q.gif"))
    rows = {row.run: row for row in notebook["analysis"].rows}
    assert -0.6 < rows["ntk"].fit.exponent < -0.4 and abs(rows["mean_field"].fit.exponent) < 0.05
    assert rows["ntk"].fit.exponent_ci[1] < -0.1 and max(map(abs, rows["mean_field"].fit.exponent_ci)) < 0.1
    assert (rows["ntk"].regime, rows["ntk"].words) == ("linear", "lazy")
    assert (rows["mean_field"].regime, rows["mean_field"].words) == ("critical", "rich")
    assert -0.6 < notebook["fit"].exponent < -0.4  # the last block's fit of the mean over seeds
    table = mf.open_sweep(directory / "wt").table
    assert len(table) == 12 and table.groupby("model.width")["seed"].nunique().tolist() == [4, 4, 4]
