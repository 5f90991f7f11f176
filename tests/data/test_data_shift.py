"""Distribution shift (shift.py): determinism, shape, severity monotonicity, and each corruption against an
obvious reference (torch.rot90, torch.roll, an index loop, rotate-then-standardize)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from vision_files import write_mnist_family

import ntkbayes.data as data
from ntkbayes.data import SEVERITY_PARAMS, ShiftKind, shifted
from ntkbayes.data.shift import rotate_images
from ntkbayes.data.splits import make_splits


@pytest.fixture(scope="module")
def digits():
    return data.load("digits", seed=0)


@pytest.fixture(scope="module")
def sequences():
    """Random walks (N, 40) packaged as a sequence dataset, like mnist1d."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 40)).cumsum(1) / 3
    y = np.arange(400) % 2
    return make_splits("walks", x, y, seed=0, standardize=False, info={"modality": "sequence"})


def _mean_change(ds, kind, seed=0):
    return [float((shifted(ds, kind, s, seed) - ds.test.x).abs().mean()) for s in range(6)]


@pytest.mark.parametrize("kind", ["gaussian_noise", "rotation"])
def test_deterministic_shape_and_monotone_on_digits(digits, kind):
    a, b, c = shifted(digits, kind, 3, seed=1), shifted(digits, kind, 3, seed=1), shifted(digits, kind, 3, seed=2)
    assert a.shape == digits.test.x.shape and a.dtype == torch.float32
    assert torch.equal(a, b) and not torch.equal(a, c)
    change = _mean_change(digits, kind)
    assert change[0] == 0 and all(x < y for x, y in zip(change, change[1:])), change


@pytest.mark.parametrize("kind", ["shift", "roll", "gaussian_noise"])
def test_deterministic_shape_and_monotone_on_sequences(sequences, kind):
    a, b = shifted(sequences, kind, 2, seed=4), shifted(sequences, kind, 2, seed=4)
    assert a.shape == sequences.test.x.shape and torch.equal(a, b)
    change = _mean_change(sequences, kind)
    assert change[0] == 0 and all(x < y for x, y in zip(change, change[1:])), change


def test_gaussian_noise_std_matches_the_table(digits):
    for severity, std in enumerate(SEVERITY_PARAMS[ShiftKind.GAUSSIAN_NOISE], start=1):
        noise = shifted(digits, "gaussian_noise", severity, seed=0) - digits.test.x
        assert float(noise.std()) == pytest.approx(std, rel=0.03)
        assert abs(float(noise.mean())) < 0.03 * std


def test_severity_zero_is_an_unchanged_copy(digits):
    out = shifted(digits, ShiftKind.ROTATION, 0, seed=0)
    assert torch.equal(out, digits.test.x) and out.data_ptr() != digits.test.x.data_ptr()
    assert torch.equal(shifted(digits, "gaussian_noise", 0, seed=0, split="val"), digits.val.x)


def test_rotation_by_90_degrees_equals_rot90(digits):
    """Severity 5 = ±90°: every image equals torch.rot90 of itself one way or the other; both signs occur."""
    x = digits.test.x.reshape(-1, 1, 8, 8)
    out = shifted(digits, "rotation", 5, seed=0).reshape(-1, 1, 8, 8)
    left, right = torch.rot90(x, 1, (2, 3)), torch.rot90(x, -1, (2, 3))
    is_left = (out - left).abs().amax((1, 2, 3)) < 1e-4
    is_right = (out - right).abs().amax((1, 2, 3)) < 1e-4
    assert bool((is_left | is_right).all()) and 0 < int(is_left.sum()) < len(x)


def test_rotation_commutes_with_channel_standardization(digits):
    """Rotating standardized images with the standardized black fill = rotating raw images, then standardizing."""
    prep = digits.info["preprocessing"]
    mu, sd = prep["mean"][0], prep["std"][0]
    x = digits.test.x[:50].reshape(-1, 1, 8, 8).double()
    deg = torch.linspace(-80, 80, 50, dtype=torch.float64)
    got = rotate_images(x, deg, torch.tensor([-mu / sd], dtype=torch.float64))
    ref = (rotate_images(x * sd + mu, deg) - mu) / sd
    # bilinear weights sum to 1, so the affine map commutes exactly; rounding: a few ulps of each pixel in raw
    # units (|x|·sd + |μ|), divided by sd, over the 4-term interpolation and the un/standardization
    bound = 64 * torch.finfo(torch.float64).eps * (float(x.abs().max()) + abs(mu) / sd)
    torch.testing.assert_close(got, ref, atol=bound, rtol=0)
    # and shifted() applies exactly ± the tabulated angle per image
    out = shifted(digits, "rotation", 2, seed=3)[:50].reshape(-1, 1, 8, 8).double()
    fill = torch.tensor([-mu / sd], dtype=torch.float64)
    plus, minus = rotate_images(x, torch.full((50,), 30.0), fill), rotate_images(x, torch.full((50,), -30.0), fill)
    match = torch.minimum((out - plus).abs().amax((1, 2, 3)), (out - minus).abs().amax((1, 2, 3)))
    assert float(match.max()) < 1e-5


def test_rotation_of_unflattened_digits_and_vision_images(tmp_path):
    ds = data.load("digits", seed=0, flatten=False)
    assert shifted(ds, "rotation", 1, seed=0).shape == ds.test.x.shape
    write_mnist_family(tmp_path, "mnist")
    flat = data.load("mnist", root=tmp_path, ood=[], flatten=True, val_fraction=0.2)
    out = shifted(flat, "rotation", 4, seed=0)
    assert out.shape == (30, 784) and not torch.equal(out, flat.test.x)
    xs, ys = torch.cat([flat.train.x, flat.val.x]).numpy(), torch.cat([flat.train.y, flat.val.y]).numpy()
    plain = make_splits("plain", xs, ys, seed=0, standardize=False, val_fraction=0.5, test_fraction=0.3)
    assert shifted(plain, "rotation", 1, seed=0, image_shape=(1, 28, 28)).shape == plain.test.x.shape


def test_roll_and_shift_match_index_references(sequences):
    x = sequences.test.x
    for kind in ("roll", "shift"):
        k = SEVERITY_PARAMS[ShiftKind(kind)][2]
        out = shifted(sequences, kind, 3, seed=5)
        signs = []
        for row, o in zip(x, out):
            if kind == "roll":
                cands = {s: torch.roll(row, s * k) for s in (1, -1)}
            else:
                cands = {s: torch.stack([row[min(max(i - s * k, 0), 39)] for i in range(40)]) for s in (1, -1)}
            sign = [s for s, c in cands.items() if torch.equal(o, c)]
            assert sign, kind
            signs.append(sign[0])
        assert set(signs) == {1, -1}


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"kind": "blur", "severity": 1}, "unknown shift kind 'blur'"),
        ({"kind": "rotation", "severity": 6}, "severity must be an int in 0..5"),
        ({"kind": "rotation", "severity": 1.0}, "severity"),
        ({"kind": "rotation", "severity": True}, "severity"),
        ({"kind": "roll", "severity": 1}, "needs sequences"),
        ({"kind": "rotation", "severity": 1, "split": "ood"}, "split"),
    ],
)
def test_bad_arguments(digits, kwargs, match):
    with pytest.raises(ValueError, match=match):
        shifted(digits, seed=0, **kwargs)


def test_rotation_refused_without_images_or_with_per_feature_standardization():
    with pytest.raises(ValueError, match="rotation needs images"):
        shifted(data.load("wine"), "rotation", 1, seed=0)
    with pytest.raises(ValueError, match="standardize='channel'"):
        shifted(data.load("digits", standardize="feature"), "rotation", 1, seed=0)
    assert shifted(data.load("digits", standardize="none"), "rotation", 1, seed=0).shape == (450, 64)
