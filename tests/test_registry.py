"""Method registry: self-registration, duplicate names, create() validation, entry points."""

import pytest

import ntkbayes as nb
from ntkbayes.methods.base import Method


def test_duplicate_name_is_an_error():
    class _A(Method):
        name = "_registry_test_a"

        def __init__(self, k: int = 1):
            self.k = k

    with pytest.raises(ValueError, match="registered twice"):

        class _B(Method):
            name = "_registry_test_a"

    assert "_registry_test_a" in nb.methods.available()
    m = nb.methods.create("_registry_test_a", k=3)
    assert m.get_params() == {"k": 3}
    with pytest.raises(ValueError, match="unknown parameter"):
        nb.methods.create("_registry_test_a", j=1)
    with pytest.raises(ValueError, match="unknown method"):
        nb.methods.create("no_such_method")
    with pytest.raises(nb.methods.NotFittedError):
        m.predict(__import__("torch").zeros(2, 2))


def test_subclass_declares_only_its_keywords_and_inherits_the_rest():
    from ntkbayes.methods.map import MAP

    class _Smoothed(MAP):
        name = "_registry_test_smoothed"

        def __init__(self, *, extra: int = 2, **kwargs):
            super().__init__(**kwargs)
            self.extra = extra

    defaults = _Smoothed.param_defaults()
    assert list(defaults)[0] == "extra" and set(MAP.param_defaults()) < set(defaults)
    assert _Smoothed.family == "map"                          # inherited; a new name alone makes no new family
    m = nb.methods.create("_registry_test_smoothed", label_smoothing=0.1, width=8, extra=3)
    assert m.get_params()["label_smoothing"] == 0.1 and m.extra == 3 and m.width == 8


@pytest.mark.parametrize("key, value, message", [
    ("mode", "bogus", "expected one of ['network', 'linearized', 'kernel'], got 'bogus'"),
    ("width", "wide", "expected an integer, got string 'wide'"),
    ("members", 0, "expected an integer ≥ 1, got 0"),
    ("members", 2.0, "expected an integer, got float 2.0"),
    ("weight_decay", -1, "expected a number ≥ 0, got -1.0"),
    ("label_smoothing", True, "expected a number, got boolean True"),
    ("no_such_key", 1, "not a parameter of method 'ntk_ensemble'"),
])
def test_check_param_messages_are_one_line_without_the_key(key, value, message):
    cls = nb.methods.get("ntk_ensemble")
    with pytest.raises(ValueError) as exc:
        cls.check_param(key, value)
    text = str(exc.value)
    assert text.startswith(message) and "\n" not in text and key not in text


def test_check_param_normalizes():
    cls = nb.methods.get("ntk_ensemble")
    from ntkbayes.methods.ntk_ensemble import Mode

    assert cls.check_param("mode", Mode.KERNEL) == "kernel" and cls.check_param("mode", "kernel") == "kernel"
    assert cls.check_param("weight_decay", 1) == 1.0 and isinstance(cls.check_param("weight_decay", 1), float)
    assert cls.check_param("weight_decay_grid", [1, 1e-3]) == [1.0, 1e-3]
    assert cls.check_param("tol", None) is None
    with pytest.raises(ValueError, match="method 'ntk_ensemble' mode: expected one of"):
        nb.methods.create("ntk_ensemble", mode="bogus")


def test_family_defaults_to_the_name():
    class _Fam(Method):
        name = "_registry_test_family"

    assert _Fam.family == "_registry_test_family"
    assert nb.methods.get("ntk_ensemble").family == "ntk" and nb.methods.get("temperature").family == "map"


def test_unreadable_annotations_accept_any_value():
    from typing import Any

    class _Loose(Method):
        name = "_registry_test_loose"

        def __init__(self, *, a: Any = None, b: "NoSuchType" = 1, c=None):  # noqa: F821
            self.a, self.b, self.c = a, b, c

    assert _Loose.check_param("a", {"x": 1}) == {"x": 1}
    assert _Loose.check_param("b", "text") == "text"                   # unresolved annotation: not checked
    assert _Loose.check_param("c", [1, 2]) == [1, 2]
