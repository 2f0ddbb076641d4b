"""The declared constraints: what they accept, what they refuse and what the message says."""

from __future__ import annotations

import math

import pytest

from physnode.constraints import AnyOf, Boolean, Interval, Optional, Options, validate
from physnode.errors import InvalidInputError


@pytest.mark.parametrize(
    ("constraint", "good", "bad"),
    [
        (Options(("i", "pi")), ["i", "pi"], ["pid", "", None, 1]),
        (Interval(int, 0, None), [0, 1, 10**9], [-1, 1.0, True, None, "1"]),
        (Interval(float, 0, None, closed="neither"), [1e-300, 1, 2.5], [0, 0.0, -1, math.inf]),
        (Interval(float, 0, 1, closed="left"), [0, 0.5], [1, 1.0, -0.1, math.nan]),
        (Interval(float, 0, 1, closed="right"), [1, 0.5], [0, 1.5]),
        (Boolean(), [True, False], [0, 1, "yes", None]),
        (Optional(Interval(float, 0, None, closed="neither")), [None, 1.0], [0.0, math.inf]),
        (Optional(Interval(float, 0, None, closed="neither"), inf_ok=True), [math.inf], [-1.0]),
        (AnyOf(Options(("auto",)), Interval(float, 0, None)), ["auto", 0, 0.5], ["a", -1, None]),
    ],
)
def test_accepts_and_refuses(constraint, good, bad) -> None:
    for value in good:
        assert constraint.check("x", value) is value
    for value in bad:
        with pytest.raises(InvalidInputError, match=r"^x must be "):
            constraint.check("x", value)


def test_message_names_the_choices_and_the_value() -> None:
    with pytest.raises(InvalidInputError) as info:
        Options(("aca", "adjoint")).check("grad", "acab")
    assert str(info.value) == "grad must be one of ['aca', 'adjoint']; got 'acab'"
    with pytest.raises(InvalidInputError, match=r"lr must be a finite number > 0; got -1"):
        Interval(float, 0, None, closed="neither").check("lr", -1)
    with pytest.raises(InvalidInputError, match=r"an integer in \[1, 3\]; got 4"):
        Interval(int, 1, 3).check("n", 4)


def test_validate_labels_and_skips_absent_keys() -> None:
    constraints = {"safety": Interval(float, 0, 1, closed="neither"), "seminorm": Boolean()}
    validate({"safety": 0.9}, constraints)  # seminorm absent: nothing to check
    with pytest.raises(InvalidInputError, match=r"^options\['seminorm'\] must be True or False"):
        validate({"seminorm": 1}, constraints, label=lambda k: f"options[{k!r}]")
