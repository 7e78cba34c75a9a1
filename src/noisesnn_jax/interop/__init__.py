"""Interoperability: NIR graphs both ways (:mod:`.nir`, :mod:`.nir_import`), serialized StableHLO
(:mod:`.export`) and Flax NNX (:mod:`.nnx_bridge`)."""
