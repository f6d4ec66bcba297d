"""Separation models behind one interface (:class:`SeparationModel`), chosen by their config's ``arch``.

    >>> from conditioned_sep.models import ConditionedUNet, build_model, config_from_dict
    >>> model = ConditionedUNet.from_preset("tiny")
    >>> twin = build_model(config_from_dict(model.config.to_dict()))  # same architecture and config

To add an architecture: a module with its config (a :class:`SeparationConfig` whose ``arch`` field has a new
default) and its model (a :class:`SeparationModel`), and one row in :data:`ARCHITECTURES`.
"""

from __future__ import annotations

from typing import Any

from .bandsplit import BANDSPLIT_FILM_PLACES, BANDSPLIT_PRESETS, BandSplitConfig, BandSplitRoFormer
from .base import SeparationConfig, SeparationModel
from .unet import FILM_PLACES, PRESETS, ConditionedUNet, DownBlock, ModelConfig, UNetConfig, UpBlock

ARCHITECTURES: dict[str, tuple[type[SeparationConfig], type[SeparationModel]]] = {
    UNetConfig.arch: (UNetConfig, ConditionedUNet),
    BandSplitConfig.arch: (BandSplitConfig, BandSplitRoFormer),
}
"""``arch`` -> (config class, model class)."""

PRESETS_BY_ARCH: dict[str, dict[str, dict[str, Any]]] = {
    UNetConfig.arch: PRESETS,
    BandSplitConfig.arch: BANDSPLIT_PRESETS,
}
"""``arch`` -> its named presets (config field values); every architecture has ``tiny``, ``small`` and ``full``."""

LEGACY_ARCH = UNetConfig.arch
"""The architecture of configs written before ``arch`` existed (format-1 checkpoints): the U-Net."""


def config_from_dict(data: dict[str, Any]) -> SeparationConfig:
    """A config from its plain dict (:meth:`SeparationConfig.to_dict`); the ``arch`` key picks the class (missing:
    the U-Net, so old checkpoints load). Unknown architectures and fields are a ValueError."""
    arch = data.get("arch", LEGACY_ARCH)
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown model arch {arch!r}; this library knows {sorted(ARCHITECTURES)} "
                         "(a newer conditioned-sep may know more)")
    config_class, _ = ARCHITECTURES[arch]
    return config_class.from_dict(data)


def build_model(config: SeparationConfig) -> SeparationModel:
    """The (untrained) model of ``config``'s architecture."""
    _, model_class = ARCHITECTURES[config.arch]
    return model_class(config)


def from_preset(arch: str, preset: str, **overrides: Any) -> SeparationModel:
    """The (untrained) model of architecture ``arch`` at its preset ``preset`` with config field ``overrides``,
    e.g. ``from_preset("bandsplit", "tiny", conditioned=False, target="bass")``. Unknown names are a ValueError."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown model arch {arch!r}; choose one of {sorted(ARCHITECTURES)}")
    _, model_class = ARCHITECTURES[arch]
    return model_class.from_preset(preset, **overrides)  # type: ignore[attr-defined]  # each model class has one


__all__ = [
    "ARCHITECTURES", "BANDSPLIT_FILM_PLACES", "BANDSPLIT_PRESETS", "BandSplitConfig", "BandSplitRoFormer",
    "FILM_PLACES", "PRESETS", "PRESETS_BY_ARCH", "ConditionedUNet", "DownBlock", "ModelConfig", "SeparationConfig",
    "SeparationModel", "UNetConfig", "UpBlock", "build_model", "config_from_dict", "from_preset",
]
