"""codex_ci.secret: a Secret never prints its value, however it is formatted, logged, copied or pickled."""

from __future__ import annotations

import copy
import logging
import pickle

import pytest

from codex_ci.secret import Secret

VALUE = "CANARY-secret-value"


def test_repr_str_and_format_never_reveal() -> None:
    secret = Secret(VALUE)
    assert repr(secret) == "Secret([secure])"
    assert str(secret) == "[secure]"
    assert f"{secret}" == "[secure]"
    assert f"{secret!r}" == "Secret([secure])"
    assert f"{secret:>30}" == "[secure]"
    assert format(secret, "s") == "[secure]"
    assert "{}".format(secret) == "[secure]"  # noqa: UP032 - every formatting path, on purpose
    assert "%s" % secret == "[secure]"  # noqa: UP031
    assert "%r" % (secret,) == "Secret([secure])"  # noqa: UP031
    assert repr([secret, {"k": secret}]) == "[Secret([secure]), {'k': Secret([secure])}]"


def test_reveal_returns_the_value() -> None:
    assert Secret(VALUE).reveal() == VALUE


def test_logging_shows_no_value(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="codex_ci"):
        logging.getLogger("codex_ci").info("token %s, again %r", Secret(VALUE), Secret(VALUE))
    assert caplog.messages == ["token [secure], again Secret([secure])"]


def test_has_no_instance_dict_to_dump() -> None:
    secret = Secret(VALUE)
    with pytest.raises(TypeError):
        vars(secret)


def test_equality_and_hash_by_value() -> None:
    assert Secret(VALUE) == Secret(VALUE)
    assert Secret(VALUE) != Secret(VALUE + "x")
    assert hash(Secret(VALUE)) == hash(Secret(VALUE))
    assert len({Secret(VALUE), Secret(VALUE), Secret("other-value")}) == 2


def test_never_equal_to_its_plain_string() -> None:
    assert Secret(VALUE) != VALUE
    assert VALUE != Secret(VALUE)  # noqa: SIM300 - the reflected comparison, on purpose
    assert Secret(VALUE) not in [VALUE]


@pytest.mark.parametrize(("value", "truth"), [("x", True), (VALUE, True), ("", False)])
def test_bool_is_whether_there_is_a_value(value: str, truth: bool) -> None:
    assert bool(Secret(value)) is truth


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_pickling_is_refused(protocol: int) -> None:
    with pytest.raises(TypeError, match="^Secret values are not picklable$") as caught:
        pickle.dumps(Secret(VALUE), protocol=protocol)
    assert VALUE not in str(caught.value)


@pytest.mark.parametrize("copier", [copy.copy, copy.deepcopy])
def test_copying_is_refused_like_pickling(copier: object) -> None:
    with pytest.raises(TypeError, match="^Secret values are not picklable$"):
        copier(Secret(VALUE))  # type: ignore[operator]
