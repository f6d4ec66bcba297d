"""Named recipes (``train.py --recipe NAME``): the recipe's settings become the defaults, options given beside it
win, its model overrides reach the conditioned model and its dedicated twins alike; ``--compile`` is an option."""

from __future__ import annotations

import argparse

import pytest
import torch

from conditioned_sep import cli
from conditioned_sep.recipe import RECIPES, TrainConfig


def _configs(argv: list[str]) -> list[TrainConfig]:
    parser = argparse.ArgumentParser()
    cli.add_train_arguments(parser)
    return cli.train_configs(cli._parse_with_recipe(parser, argv))


def test_shipped_recipe_sets_its_settings_and_overrides_for_every_model():
    recipe = RECIPES["shipped"]
    configs = _configs(["--recipe", "shipped", "--all"])
    assert [c.target for c in configs] == [None, "vocals", "drums", "bass", "other"]
    for config in configs:
        for key, value in recipe.options.items():
            if key in ("steps", "time_limit") and config.target is None:  # equal compute: 4 x a dedicated model's
                assert getattr(config, key) == 4 * value
            else:
                assert getattr(config, key) == value, key
        assert config.model_overrides == recipe.model_overrides  # the dedicated twins share the backbone


def test_an_option_beside_the_recipe_wins_and_film_options_stay_conditioned_only():
    configs = _configs(["--recipe", "shipped", "--all", "--batch-size", "4", "--steps", "7", "--film", "complex"])
    assert {c.batch_size for c in configs} == {4}
    assert configs[0].steps == 28 and configs[1].steps == 7
    assert configs[0].model_overrides == {**RECIPES["shipped"].model_overrides, "film": "complex"}
    assert "film" not in configs[1].model_overrides


def test_without_a_recipe_the_defaults_are_the_configs():
    (config,) = _configs([])
    assert config.batch_size == TrainConfig.__dataclass_fields__["batch_size"].default
    assert config.model_overrides == {}


def test_unknown_recipe_and_compile_choice_are_usage_errors(capsys):
    assert cli.run("train", ["--recipe", "nope"]) == 2
    assert "invalid choice: 'nope'" in capsys.readouterr().err
    assert cli.run("train", ["--compile", "sometimes"]) == 2
    assert "invalid choice: 'sometimes'" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["on", "off", "auto"])
def test_compile_option_reaches_the_config(value):
    (config,) = _configs(["--compile", value])
    assert config.compile == value


def test_shipped_recipe_builds_the_shipped_architecture():
    from conditioned_sep.recipe import build_model

    (config,) = _configs(["--recipe", "shipped"])
    model = build_model(config)
    assert model.config.channels == RECIPES["shipped"].model_overrides["channels"]
    assert model.num_parameters < 12.5e6  # fp16 storage within the package's 25 MB


def test_dropout_option_reaches_every_model_beside_the_recipe_and_refuses_a_rate_outside_0_1():
    from conditioned_sep.recipe import build_model

    configs = _configs(["--recipe", "shipped", "--all", "--dropout", "0"])
    for config in configs:  # conditioned model and dedicated twins share the backbone
        assert config.model_overrides == {**RECIPES["shipped"].model_overrides, "dropout": 0.0}
    model = build_model(configs[0])
    assert model.config.dropout == 0.0
    assert not any(isinstance(m, torch.nn.Dropout) for m in model.modules())
    assert any(isinstance(m, torch.nn.Dropout) for m in build_model(_configs(["--recipe", "shipped"])[0]).modules())
    (bandsplit,) = _configs(["--arch", "bandsplit", "--preset", "tiny", "--dropout", "0.1"])
    assert build_model(bandsplit).config.dropout == 0.1
    for bad in ("1", "-0.1"):
        with pytest.raises(cli.TrainingError, match="--dropout is a rate from 0 up to"):
            _configs(["--dropout", bad])
    assert cli.run("train", ["--dropout", "1.5"]) == 2
