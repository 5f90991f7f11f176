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
