"""``meanfield animate`` and ``meanfield plot`` on tiny files: frames, sizes, formats, live files, bad input."""

import subprocess
import sys
import textwrap
import time

import h5py
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from recorded import statuses

import meanfield as mf
from meanfield.cli import main
from meanfield.config.loading import parse_scenario
from meanfield.pictures.movie import movie_size, write_movie

TINY = textwrap.dedent(
    """\
    name: tiny
    seed: 1
    data: {task: teacher_student, dim: 2, n_train: 32, n_test: 16, teacher: {width: 2}}
    model: {width: 24, activation: relu, init: {symmetric: true}}
    runs:
      rich: mean_field
      lazy: {parameterization: {preset: lazy, alpha: 10}}
      ntk: {solver: ntk, kernel: empirical}
    train: {t_end: 1.0, integrator: {method: euler, dt: 0.05}}
    record: {every: 0.25}
    """
)
SNAPSHOTS = 5  # t = 0, 0.25, ..., 1


def simulate(path, *overrides):
    mf.simulate(parse_scenario(TINY, overrides=list(overrides)), path).close()
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return simulate(tmp_path_factory.mktemp("tiny") / "tiny.h5")


def invoke(*args):
    return CliRunner().invoke(main, ["-q", *map(str, args)])


def gif_frames(path):
    """Every frame of a GIF, composited, as RGB arrays."""
    with Image.open(path) as im:
        frames = []
        for i in range(im.n_frames):
            im.seek(i)
            frames.append(np.asarray(im.convert("RGB")))
        return frames


def test_gif_has_a_frame_per_snapshot_and_moves(tiny, tmp_path):
    out = tmp_path / "movie.gif"
    result = write_movie(tiny, out, dpi=50, trails=True)
    frames = gif_frames(out)
    assert result.frames == len(frames) == SNAPSHOTS
    assert frames[0].shape[1::-1] == movie_size(2, 50)  # rich and lazy, side by side
    assert np.any(frames[0] != frames[-1])


def test_every_and_runs_choose_frames_and_panels(tiny, tmp_path):
    out = tmp_path / "rich.gif"
    result = invoke("animate", tiny, "-o", out, "--runs", "rich", "--every", "3")
    assert result.exit_code == 0, result.output
    frames = gif_frames(out)
    assert len(frames) == 3  # snapshots 0 and 3, and the last one
    assert frames[0].shape[1::-1] == movie_size(1, 100)


def test_mp4_has_a_frame_per_snapshot(tiny, tmp_path):
    imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg", reason="MP4 needs the video extra (imageio-ffmpeg)")
    out = tmp_path / "movie.mp4"
    write_movie(tiny, out, dpi=50)
    reader = imageio_ffmpeg.read_frames(str(out))
    meta = next(reader)
    frames = [np.frombuffer(frame, np.uint8) for frame in reader]
    assert tuple(meta["size"]) == movie_size(2, 50)
    assert len(frames) == SNAPSHOTS
    assert np.any(frames[0] != frames[-1])


def test_mp4_without_the_extra_is_a_clear_error(tiny, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)  # as if not installed
    result = invoke("animate", tiny, "-o", tmp_path / "movie.mp4")
    assert result.exit_code == 2 and "imageio-ffmpeg" in result.output and "meanfield[video]" in result.output


@pytest.mark.parametrize("suffix", [".png", ".pdf", ".svg"])
def test_plot_writes_each_format(tiny, tmp_path, suffix):
    out = tmp_path / f"summary{suffix}"
    result = invoke("plot", tiny, "-o", out)
    assert result.exit_code == 0, result.output
    assert out.stat().st_size > 1000
    if suffix == ".png":
        with Image.open(out) as im:
            assert im.size[0] > 600


def test_plot_refuses_an_unknown_format(tiny, tmp_path):
    result = invoke("plot", tiny, "-o", tmp_path / "summary.jpg")
    assert result.exit_code == 2 and ".png, .pdf, .svg" in result.output


@pytest.mark.parametrize("dim", [1, 50])
def test_other_dimensions_animate(tmp_path, dim):
    path = simulate(tmp_path / f"d{dim}.h5", f"data.dim={dim}", "model.width=8")
    frames = gif_frames(write_movie(path, tmp_path / "movie.gif", dpi=40).output)
    assert len(frames) == SNAPSHOTS and np.any(frames[0] != frames[-1])
    if dim == 50:  # no teacher: the principal plane of the final rich particles
        with h5py.File(path, "r+") as h5:
            del h5["data/teacher"]
        frames = gif_frames(write_movie(path, tmp_path / "pca.gif", dpi=40).output)
        assert len(frames) == SNAPSHOTS


def test_a_file_with_only_an_ntk_run_is_plotted_not_animated(tmp_path):
    path = simulate(tmp_path / "ntk.h5", "runs={ntk: {solver: ntk}}")
    result = invoke("animate", path, "-o", tmp_path / "movie.gif")
    assert result.exit_code == 2
    assert "no particle trajectory to animate" in result.output and "meanfield plot" in result.output
    assert not (tmp_path / "movie.gif").exists()
    assert invoke("plot", path, "-o", tmp_path / "ntk.png").exit_code == 0


def test_bad_choices_are_usage_errors(tiny, tmp_path):
    result = invoke("animate", tiny, "--runs", "ntk")
    assert result.exit_code == 2 and "run 'ntk' has no particle trajectory" in result.output
    result = invoke("animate", tiny, "--runs", "nope")
    assert result.exit_code == 2 and "no run 'nope'" in result.output
    result = invoke("animate", tiny, "-o", tmp_path / "movie.avi")
    assert result.exit_code == 2 and ".gif, .mp4" in result.output
    with h5py.File(tiny, "r") as h5:
        assert "data/teacher" in h5  # so --projection teacher works; pca needs nothing
    assert invoke("animate", tiny, "-o", tmp_path / "pca.gif", "--projection", "pca").exit_code == 0


@pytest.mark.parametrize("command", ["animate", "plot"])
def test_a_file_that_is_not_ours_is_a_usage_error(tmp_path, command):
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as h5:
        h5["x"] = 1
    result = invoke(command, foreign, "-o", tmp_path / ("out.gif" if command == "animate" else "out.png"))
    assert result.exit_code == 2 and "not a meanfield trajectory file" in result.output
    result = invoke(command, tmp_path / "missing.h5")
    assert result.exit_code == 2 and "no such file" in result.output


WRITER = textwrap.dedent(
    """\
    import sys, time
    import meanfield as mf
    from meanfield.config.loading import parse_scenario

    class Slow:  # a progress bar that makes the simulation take a few seconds
        def __init__(self, *args): pass
        def __enter__(self): return self
        def __exit__(self, *exc): pass
        def update_state(self, state): time.sleep(0.1)

    mf.simulate(parse_scenario(sys.stdin.read()), sys.argv[1], progress=Slow)
    """
)


@pytest.mark.slow
def test_follow_draws_a_live_file_until_its_runs_complete(tmp_path):
    path, out = tmp_path / "live.h5", tmp_path / "live.gif"
    simulate(tmp_path / "warm.h5")  # compile the kernels first, so the writer below is slow only by its sleeps
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdin=subprocess.PIPE, text=True)
    writer.stdin.write(TINY)
    writer.stdin.close()
    try:
        deadline = time.monotonic() + 60
        while not _has_runs(path):
            assert time.monotonic() < deadline and writer.poll() is None, "the simulation never started"
            time.sleep(0.05)
        follow = subprocess.run([sys.executable, "-m", "meanfield.cli", "-v", "animate", str(path), "-o", str(out),
                                 "--follow"], capture_output=True, text=True, timeout=120)
        assert writer.wait(timeout=60) == 0
    finally:
        writer.kill()
    assert follow.returncode == 0, follow.stderr
    assert "waiting for the simulation" in follow.stderr  # it did meet the file unfinished
    assert len(gif_frames(out)) == SNAPSHOTS
    assert set(statuses(path).values()) == {"complete"}


def _has_runs(path):
    try:
        return bool(statuses(path))
    except Exception:  # not there yet, or half-created
        return False


def test_the_population_risk_is_drawn_as_the_loss_curve(tmp_path):
    from meanfield.pictures.figures import figure_of_measures
    from meanfield.pictures.movie import read_contents

    scenario = mf.load_scenario({
        "name": "pop", "data": {"dim": 3, "population": True, "teacher": {"width": 2}}, "model": {"width": 8},
        "runs": {"rich": "mean_field", "lazy": {"parameterization": {"preset": "lazy", "alpha": 10}}},
        "train": {"t_end": 1.0, "integrator": {"method": "euler", "dt": 0.1}}, "record": {"every": 0.5}})
    with mf.simulate(scenario) as trajectory:
        risk = trajectory["rich"].series("risk")
        fit_panel = figure_of_measures(trajectory).axes[0]
        curves = {line.get_label(): line for line in fit_panel.lines}
        assert {"rich (mean_field)", "lazy (lazy, alpha = 10)"} <= set(curves)
        np.testing.assert_array_equal(curves["rich (mean_field)"].get_ydata(), risk.value[1:])  # t > 0 on a log axis
        panel = read_contents(trajectory, ["rich"]).panels[0]
        assert panel.fit[0] == "risk" and len(panel.times) == 3
        frames = gif_frames(write_movie(trajectory, tmp_path / "pop.gif", dpi=40).output)
        assert len(frames) == 3


def test_a_teacher_in_d_above_2_is_drawn_in_its_plane_with_stars_of_its_signs(tmp_path):
    """auto picks the teacher plane; an orthonormal teacher of 5 neurons lands on a regular
    pentagon of radius sqrt(2/5); each star's face is the colour of its a*_j's sign."""
    from matplotlib.colors import to_rgba

    from meanfield.pictures.movie import NEGATIVE, POSITIVE, Movie, check_projection, read_contents

    signs = [1.0, -1.0, -1.0, 1.0, -1.0]
    path = simulate(tmp_path / "d7.h5", "data.dim=7", "model.width=8",
                    f"data.teacher={{width: 5, W: orthonormal, a: {signs}}}")
    movie = Movie(None, None, every=1, projection="auto", trails=False, dpi=40, follow=False)
    with mf.open(path) as trajectory:
        contents = read_contents(trajectory, ["rich", "lazy"])
        assert check_projection("auto", contents.dim, contents.teacher) == "teacher"
        figure = movie._figure(trajectory, contents)
    basis = figure.projection.basis
    np.testing.assert_allclose(basis @ basis.T, np.eye(2), atol=1e-12)  # an orthogonal projection
    stars = contents.teacher @ basis.T
    np.testing.assert_allclose(np.hypot(*stars.T), np.sqrt(2 / 5), rtol=1e-10)
    turns = np.diff(np.unwrap(np.arctan2(stars[:, 1], stars[:, 0])))
    np.testing.assert_allclose(np.abs(turns), 2 * np.pi / 5, rtol=1e-10)
    expected = [to_rgba(POSITIVE if a > 0 else NEGATIVE) for a in signs]
    for name in ("rich", "lazy"):
        artists = figure.panels[name].stars
        np.testing.assert_allclose(artists.get_offsets(), stars)
        np.testing.assert_allclose(artists.get_facecolors(), expected)
        assert artists in figure.moving[figure.moving.index(figure.panels[name].dots):]  # over the particles
    labels = [text.get_text() for text in figure.fig.legends[0].get_texts()]
    assert "teacher neuron, $a^*_j > 0$" in labels and "teacher neuron, $a^*_j < 0$" in labels


def test_a_teacher_of_two_neurons_is_drawn_in_its_span():
    from meanfield.pictures.movie import teacher_plane

    teacher = np.array([[1.0, 2.0, 0.0, 0.0], [0.0, 1.0, 0.0, 3.0]])
    projection = teacher_plane(teacher, lambda: None)
    np.testing.assert_allclose(np.linalg.norm(teacher @ projection.basis.T, axis=1), np.linalg.norm(teacher, axis=1))
