"""Operation counts: synaptic operations of the spiking network against the ANN's
multiply-accumulates, and the energy estimate."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp

from noisesnn_jax.contract import Array, SpikingModel, Variables, check_inputs

if TYPE_CHECKING:
    import flax.linen as nn


# Energy per operation at 45 nm (Horowitz, ISSCC 2014), 32-bit float: accumulate and
# multiply-accumulate, the constants SNN papers use.
ENERGY_AC_PJ = 0.9


ENERGY_MAC_PJ = 4.6


def connections(module: nn.Conv | nn.Dense, a: Array) -> Array:
    """Synaptic events of a conv/dense ``module`` on input ``a``: the number of
    (input element, output element) connections whose input is nonzero, summed over the batch
    (and over time: ``a`` may be ``[T, B, ...]``).

    With ``a`` all ones this is the layer's multiply-accumulate count (borders and strides exact).

    Args:
      module: a 2-D ``nn.Conv`` (``a`` channels-last) or an ``nn.Dense``.
      a: the layer's input: ``[B, H, W, C]`` or ``[T, B, H, W, C]`` for a conv, ``[..., F]`` for a
        dense layer.

    Returns:
      The number of events, a float32 scalar.
    """
    import flax.linen as nn

    mask = (a != 0).astype(jnp.float32)
    if not isinstance(module, nn.Dense):
        mask = mask.reshape((-1,) + mask.shape[-3:])  # leading [T, B] or [B] axes as one batch
    return _reach(module, mask)


def fanout(module: nn.Conv | nn.Dense, example_shape: tuple[int, ...]) -> Array:
    """The synapses each input element of a conv/dense ``module`` drives (borders and strides exact).

    The gradient of :func:`connections` with respect to its input mask: ``sum(mask * fanout)``
    is the layer's events on ``mask``.

    Args:
      module: a 2-D ``nn.Conv`` or an ``nn.Dense``.
      example_shape: one example's input shape: ``(H, W, C)`` for a conv, ``(F,)`` for a dense
        layer.

    Returns:
      The fan-out of each input element, of shape ``example_shape``.
    """
    ones = jnp.ones((1,) + tuple(example_shape), jnp.float32)
    return jax.grad(lambda a: _reach(module, a))(ones)[0]


def _reach(module: Any, mask: Array) -> Array:
    """Connections from the nonzero entries of a 0/1 ``mask`` (``[N, H, W, C]`` for a conv)."""
    import flax.linen as nn

    if isinstance(module, nn.Dense):
        return jnp.sum(mask) * module.features
    kh, kw = module.kernel_size
    strides = module.strides or (1, 1)
    strides = (strides, strides) if isinstance(strides, int) else tuple(strides)
    reach = jax.lax.conv_general_dilated(mask, jnp.ones((kh, kw, mask.shape[-1], 1), jnp.float32), strides,
                                         module.padding, dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return jnp.sum(reach) * module.features


def count_ops(model: SpikingModel, variables: Variables, images: Array, timesteps: int = 1) -> dict[str, Any]:
    """Operations per image: synaptic operations (accumulates) of the SNN at ``timesteps`` against
    the multiply-accumulates of the same network as an ANN, and the energy estimate.

    The first synaptic layer sees the analog image: MACs, once (its current is reused at every
    step). Every later layer sees spikes: one accumulate per nonzero input per connection, summed
    over the ``T`` steps. Energy: ``0.9 pJ`` per accumulate, ``4.6 pJ`` per MAC (45 nm,
    Horowitz 2014); neuron updates and memory traffic are not counted.

    Args:
      model: the model (:class:`~noisesnn_jax.contract.SpikingModel`).
      variables: its variables.
      images: the images ``[B, ...]`` the spikes are counted on.
      timesteps: ``T`` of the spiking network.

    Returns:
      A JSON-serializable report: ``timesteps``, ``images``, ``layers`` (each conv/dense
      layer's ``macs`` and ``sops`` per image), ``sops``, ``first_layer_macs``, ``ann_macs``,
      ``snn_energy_uj``, ``ann_energy_uj``, ``energy_ratio`` and the energy ``constants``.

    Raises:
      TypeError: ``model`` does not follow the model contract.
      ValueError: invalid ``timesteps`` or ``images``, or a model whose output is not
        ``[B, K]`` (:func:`noisesnn_jax.contract.check_inputs`).
    """
    import flax.linen as nn

    records: list[tuple[str, Any, Array]] = []

    def interceptor(next_fun, args, kwargs, context):
        mod = context.module
        if context.method_name == "__call__" and isinstance(mod, (nn.Conv, nn.Dense)):
            records.append((mod.name, mod, args[0]))
        return next_fun(*args, **kwargs)

    timesteps = check_inputs(model, variables, images, timesteps)
    images = jnp.asarray(images)
    batch = images.shape[0]
    if getattr(model, "remat", False):  # no tracing transform around the layers we record
        model = model.clone(remat=False)
    with nn.intercept_methods(interceptor):
        model.apply(variables, images, timesteps=timesteps)
    layers, total_sops, first_macs, ann_macs = {}, 0.0, 0.0, 0.0
    for i, (name, mod, a) in enumerate(records):
        example = a.shape[-1:] if isinstance(mod, nn.Dense) else a.shape[-3:]  # one image's features
        macs = float(connections(mod, jnp.ones((1,) + example, jnp.float32)))
        ann_macs += macs
        if i == 0:
            first_macs = macs
            layers[name] = {"macs": macs, "sops": 0.0}
        else:
            sops = float(connections(mod, a)) / batch
            total_sops += sops
            layers[name] = {"macs": macs, "sops": sops}
    snn_pj = ENERGY_MAC_PJ * first_macs + ENERGY_AC_PJ * total_sops
    ann_pj = ENERGY_MAC_PJ * ann_macs
    return {"timesteps": int(timesteps), "images": int(batch), "layers": layers, "sops": total_sops,
            "first_layer_macs": first_macs, "ann_macs": ann_macs, "snn_energy_uj": snn_pj * 1e-6,
            "ann_energy_uj": ann_pj * 1e-6, "energy_ratio": snn_pj / ann_pj if ann_pj else float("nan"),
            "constants": {"ac_pj": ENERGY_AC_PJ, "mac_pj": ENERGY_MAC_PJ, "node": "45 nm (Horowitz 2014)"}}

