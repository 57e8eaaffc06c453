"""synthworld: a procedural tree of life whose photos every method can learn from on a CPU."""

from taxonlens.knowledge.template import describe  # the one description template of the code base
from taxonlens.synthworld.observe import observe
from taxonlens.synthworld.render import render
from taxonlens.synthworld.scene import Scene, SceneSet
from taxonlens.synthworld.shot import Shot, draw_shot
from taxonlens.synthworld.traits import TRAIT_NAMES, TRAITS, assign_genomes, attributes, synthworld_attributes
from taxonlens.synthworld.world import SynthDataset, SynthImage, SynthWorld, random_taxonomy, select_species

__all__ = [
    "TRAITS",
    "TRAIT_NAMES",
    "Scene",
    "SceneSet",
    "Shot",
    "SynthDataset",
    "SynthImage",
    "SynthWorld",
    "assign_genomes",
    "attributes",
    "describe",
    "draw_shot",
    "observe",
    "random_taxonomy",
    "render",
    "select_species",
    "synthworld_attributes",
]
