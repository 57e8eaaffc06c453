"""A frozen description of a synthworld over a random taxonomy: what benchmarks and the
pretraining of their starting point (:mod:`taxonlens.train.pretrain`) build and cache by."""

from __future__ import annotations

from dataclasses import dataclass

from taxonlens.synthworld.world import SynthWorld, random_taxonomy


@dataclass(frozen=True)
class WorldSpec:
    """The synthworld :meth:`SynthWorld.create` builds over ``random_taxonomy(n_species, seed)``
    with ``images_per_species`` photos of ``size`` pixels, ``nuisance`` and a ``novel_fraction``
    of the species held out (split ``novel``)."""

    n_species: int = 8
    images_per_species: int = 15
    novel_fraction: float = 0.25
    size: int = 32
    nuisance: float = 0.2
    seed: int = 0

    def create(self) -> SynthWorld:
        """The world (in memory; ``.write(folder)`` writes it)."""
        return SynthWorld.create(random_taxonomy(self.n_species, self.seed), self.n_species, self.images_per_species,
                                 self.novel_fraction, self.size, self.seed, self.nuisance)


__all__ = ["WorldSpec"]
