"""The quickstart keeps its promise (README, scenarios/quickstart.yaml): the rich run learns the
teacher and generalises far better than the lazy and ntk runs from the same particles, its
neurons gather on the teacher neurons of their own sign, the lazy run stays put, and the
movie shows it in the teacher plane."""

import numpy as np
import pytest

import meanfield as mf
from meanfield.pictures.movie import check_projection


def own_sign_mass(frame, teacher, cosine=0.9) -> float:
    """The fraction of the output mass |a_i| |w_i| on neurons within ``cosine`` of a teacher
    neuron w*_j whose output weight a*_j has the sign of a_i: what the movie shows as dots of
    one colour on the ray of a star of that colour."""
    norms = np.linalg.norm(frame.W, axis=1)
    cos = frame.W @ teacher.W.T / (norms[:, None] * np.linalg.norm(teacher.W, axis=1))
    nearest = cos.argmax(axis=1)
    on = (cos.max(axis=1) >= cosine) & (np.sign(frame.a) == np.sign(teacher.a[nearest]))
    mass = np.abs(frame.a) * norms
    return float(mass[on].sum() / mass.sum())


@pytest.fixture(scope="module")
def quickstart():
    with mf.simulate("quickstart", progress=False) as trajectory:
        yield trajectory


@pytest.mark.slow
def test_rich_learns_what_lazy_and_ntk_cannot(quickstart):
    final = {name: quickstart[name].final() for name in ("rich", "lazy", "ntk")}
    loss = {name: values["loss_test"] for name, values in final.items()}
    assert loss["rich"] <= loss["lazy"] / 5 and loss["rich"] <= loss["ntk"] / 5, loss
    assert loss["rich"] <= quickstart["ntk"].constants["loss_test_limit"] / 5  # not even t -> infinity helps ntk
    alignment = {name: final[name]["teacher_alignment"] for name in ("rich", "lazy")}
    assert alignment["rich"] > 0.8 and alignment["rich"] > alignment["lazy"] + 0.4, alignment
    assert final["lazy"]["displacement_w"] < 0.05 < 1.0 < final["rich"]["displacement_w"]


@pytest.mark.slow
def test_rich_neurons_gather_on_the_teacher_and_lazy_ones_stay_put(quickstart):
    teacher = quickstart.data.teacher
    start = own_sign_mass(quickstart["rich"].frame(0), teacher)
    rich = own_sign_mass(quickstart["rich"].frame(len(quickstart["rich"].times) - 1), teacher)
    lazy = own_sign_mass(quickstart["lazy"].frame(len(quickstart["lazy"].times) - 1), teacher)
    assert start < 0.05 and lazy < 0.05 and rich > 0.5, (start, rich, lazy)
    assert check_projection("auto", quickstart.data.X_train.shape[1], teacher.W) == "teacher"
