"""ntkbayes.seeding: one derivation function, deterministic and platform-independent."""

import pytest

from ntkbayes.seeding import derive_seed, member_seeds


def test_derive_seed_is_deterministic_and_spreads():
    assert derive_seed(1, 2) == derive_seed(1, 2)
    assert derive_seed(1, 2) != derive_seed(1, "2") != derive_seed(2, 1)
    assert len({derive_seed(0, "init", k) for k in range(1000)} | {derive_seed(1, "init", k) for k in range(1000)}) \
        == 2000                                                 # no seed·1000 + k collisions between runs
    assert all(0 <= derive_seed(s, "x") < 2**63 for s in (-5, 0, 3, 2**70))


def test_derive_seed_value_is_pinned():
    # blake2b of the canonical words: a change here changes every stored result
    assert member_seeds(0, 3) == [derive_seed(0, "init", k) for k in range(3)]
    assert derive_seed(0) == 6450899586159507901


def test_bad_keys_are_rejected():
    with pytest.raises(TypeError, match="int or str"):
        derive_seed(0, 1.5)
