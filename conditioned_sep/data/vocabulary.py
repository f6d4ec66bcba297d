"""The finer stems datasets can hold below MUSDB18's four: the parts that ``other`` is made of.

A rendered song (:mod:`conditioned_sep.data.render`) and a MoisesDB track (:mod:`conditioned_sep.data.moisesdb`)
both give ``other`` as the exact sum of these parts, so a model can be asked for ``piano`` as well as for ``other``.
"""

from __future__ import annotations

from ..stems import STEMS

OTHER_PARTS: tuple[str, ...] = ("piano", "guitar", "keys", "strings", "winds", "synth")
"""The parts of ``other``: piano (acoustic and electric pianos), guitar (and other plucked strings), keys (organs,
clavinet, harpsichord, mallets), strings (bowed, solo and ensembles), winds (brass, reeds, flutes), synth (leads,
pads)."""

FINE_STEMS: tuple[str, ...] = STEMS + OTHER_PARTS
"""Every stem name a fine-grained dataset can answer: the four coarse stems, then the parts of ``other``."""

COARSE_OF: dict[str, str] = {**{stem: stem for stem in STEMS}, **{part: "other" for part in OTHER_PARTS}}
"""The coarse stem each fine stem belongs to (a coarse stem belongs to itself)."""
