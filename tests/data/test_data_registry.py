"""Registry, options and errors of ``ntkbayes.data``: names, describe(), unknown names/options, missing files."""

from __future__ import annotations

import inspect

import pytest

import ntkbayes.data as data
from ntkbayes.data import DataMissingError
from ntkbayes.errors import UserError

EXPECTED = {"moons", "spirals", "digits", "mnist1d", "breast_cancer", "wine",
            "mnist", "fashion_mnist", "kmnist", "cifar10", "cifar100", "svhn"}


def test_available_lists_every_dataset_sorted():
    names = data.available()
    assert set(names) == EXPECTED
    assert names == sorted(names)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_describe_matches_loader_signature_and_has_id_classes(name):
    opts = data.describe(name)
    assert opts["id_classes"] is None  # every dataset: all classes in-distribution by default
    assert "standardize" in opts
    sig = inspect.signature(data._REGISTRY[name].loader)
    kw = [p for p in sig.parameters.values() if p.kind is inspect.Parameter.KEYWORD_ONLY]
    assert list(opts) == [p.name for p in kw]
    opts["id_classes"] = [0]  # describe returns a copy
    assert data.describe(name)["id_classes"] is None


def test_vision_default_ood_pairs_follow_benchmarks():
    assert data.describe("mnist")["ood"] == ["fashion_mnist", "kmnist"]
    assert data.describe("fashion_mnist")["ood"] == ["mnist", "kmnist"]
    assert data.describe("cifar10")["ood"] == ["svhn", "cifar100"]


def test_unknown_dataset_is_a_value_error_naming_it():
    with pytest.raises(ValueError, match="unknown dataset 'nope'.*moons"):
        data.load("nope")
    with pytest.raises(UserError, match="'nope'"):
        data.describe("nope")


def test_unknown_option_is_a_value_error_naming_it():
    with pytest.raises(ValueError, match="dataset 'moons': unknown option.*bogus"):
        data.load("moons", bogus=1)


@pytest.mark.parametrize(
    "name, option, value",
    [("moons", "n", 5), ("moons", "noise", -1.0), ("spirals", "turns", 0), ("digits", "id_classes", "01"),
     ("digits", "id_classes", [0]), ("wine", "standardize", "zscore"), ("wine", "val_fraction", 1.5),
     ("digits", "n_noise", 0), ("digits", "flatten", "no")],
)
def test_bad_option_values_are_value_errors_naming_dataset(name, option, value):
    with pytest.raises(ValueError, match=f"dataset '{name}'"):
        data.load(name, **{option: value})


def test_bad_seed():
    with pytest.raises(ValueError, match="seed"):
        data.load("moons", seed=-1)


def test_duplicate_registration_is_an_error():
    with pytest.raises(ValueError, match="registered twice"):
        data.register("moons", family="synthetic")(lambda root, seed, download: None)


def test_data_missing_error_is_file_not_found_and_user_error(tmp_path):
    with pytest.raises(DataMissingError) as info:
        data.load("mnist", root=tmp_path)
    err = info.value
    assert isinstance(err, FileNotFoundError) and isinstance(err, UserError)
    path = tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte"
    assert err.path == str(path)
    msg = str(err)
    assert str(path) in msg and "--download" in msg and "download=True" in msg
