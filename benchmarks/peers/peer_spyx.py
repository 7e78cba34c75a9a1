"""Spyx (JAX/flax.nnx): the demo CNN with stateless layers on ``[T*B, ...]``, each IF layer scanned
over time with ``spyx.nn.run`` (``jax.lax.scan``), arctan surrogate from ``spyx.axn``.

``spyx.nn.IF`` fires on the potential *before* adding the step's input (one step of delay per
layer, so with 4 layers nothing reaches the readout at T <= 4); ``SpyxIF`` (in
:func:`_spyx_classes`) subclasses it to fire on ``v + x`` of the same step, like the other two
peers and noisesnn-jax.
"""

from __future__ import annotations

import functools
import math
from typing import Any

from noisesnn_jax import timing

from .common import (
    BN_EPS,
    BN_MOMENTUM_TORCH,
    CHANNELS,
    FEATURES,
    LEARNING_RATE,
    NUM_CLASSES,
    POOL_AFTER,
    THRESHOLD,
    V_INIT,
    version,
)

NAME = DIST = "spyx"
REQUIRES = ("jax", "flax.nnx", "optax", "spyx.nn", "spyx.axn")
INSTALL = "pip install spyx"


def api_problem() -> str | None:
    """None if the installed Spyx has the flax.nnx API (``spyx.nn.IF``, ``spyx.nn.run``), else why not."""
    import spyx.nn
    if not hasattr(spyx.nn, "IF") or not hasattr(spyx.nn, "run"):
        return "spyx has no spyx.nn.IF / spyx.nn.run (pre-1.0 Haiku API); needs spyx>=1.0 (flax.nnx)"
    return None


@functools.lru_cache(maxsize=1)
def _spyx_classes() -> tuple[type, type]:
    """The Spyx IF neuron (same-step firing) and the CNN module, defined once per process."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import spyx.axn
    import spyx.nn
    from flax import nnx

    class SpyxIF(spyx.nn.IF):
        """``spyx.nn.IF`` firing on this step's potential: ``m = v + x; s = H(m - theta); v = m - theta*s``."""

        def __call__(self, x: jax.Array, V: jax.Array) -> tuple[jax.Array, jax.Array]:
            m = V + x
            s = self.spike(m - self.threshold)
            return s, m - s * self.threshold

        def initial_state(self, batch_size: int) -> jax.Array:
            return jnp.full((batch_size,) + tuple(self.hidden_shape), V_INIT, jnp.float32)

    class SpyxCNN(nnx.Module):
        """Stateless layers on ``[T*B, ...]``; each IF layer scanned over time by ``spyx.nn.run``."""

        def __init__(self, seed: int = 0) -> None:
            rngs, host = nnx.Rngs(seed), np.random.default_rng(seed)

            def lecun_normal(key: Any, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
                # flax's default (truncated normal, fan-in), drawn on the host: an eager jax.random
                # initializer compiles once per shape, seconds on a loaded CPU
                w = host.standard_normal(shape)
                while (bad := np.abs(w) > 2.0).any():
                    w[bad] = host.standard_normal(int(bad.sum()))
                return jnp.asarray(w / math.sqrt(math.prod(shape[:-1])) / 0.87962566103423978, dtype)

            cins = (1,) + CHANNELS[:-1]
            self.convs = nnx.List([nnx.Conv(a, b, (3, 3), padding="SAME", use_bias=False, kernel_init=lecun_normal,
                                            rngs=rngs) for a, b in zip(cins, CHANNELS)])
            self.bns = nnx.List([nnx.BatchNorm(c, momentum=1.0 - BN_MOMENTUM_TORCH, epsilon=BN_EPS, rngs=rngs)
                                 for c in CHANNELS])
            size, shapes = 28, []
            for i, c in enumerate(CHANNELS):
                shapes.append((size, size, c))
                size = size // 2 if i in POOL_AFTER else size
            self.ifs = nnx.List([SpyxIF(s, threshold=THRESHOLD, activation=spyx.axn.arctan()) for s in shapes])
            self.readout = nnx.Linear(FEATURES, NUM_CLASSES, kernel_init=lecun_normal, rngs=rngs)

        def __call__(self, x: jax.Array, T: int, record: list | None = None) -> jax.Array:
            B = x.shape[0]
            h = jnp.broadcast_to(x[None], (T,) + x.shape).reshape((T * B,) + x.shape[1:])
            for i in range(len(CHANNELS)):
                cur = self.bns[i](self.convs[i](h))
                spikes, _ = spyx.nn.run(self.ifs[i], cur.reshape((T, B) + cur.shape[1:]))
                if record is not None:
                    record.append(spikes)
                h = spikes.reshape(cur.shape)
                if i in POOL_AFTER:
                    h = nnx.avg_pool(h, (2, 2), strides=(2, 2))
            logits = self.readout(h.reshape(T * B, -1))
            return logits.reshape(T, B, NUM_CLASSES).mean(0)

    return SpyxIF, SpyxCNN


def build_spyx(seed: int = 0) -> Any:
    """The CNN as a flax.nnx Module with Spyx IF neurons: ``(x [B,28,28,1], T) -> logits [B, 10]``."""
    return _spyx_classes()[1](seed)


def bench(batch: int, timesteps: tuple[int, ...], train_timesteps: int, repeats: int, warmup: int) -> dict:
    """Time Spyx: jitted eval inference per T, and one jitted Adam BPTT step (buffers donated)."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax
    from flax import nnx

    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(batch, 28, 28, 1)), jnp.float32)
    y = jnp.asarray(rng.integers(0, NUM_CLASSES, size=(batch,)), jnp.int32)

    model = build_spyx()
    model.eval()  # BatchNorm on running averages; the graphdef keeps the mode
    graphdef, state = nnx.split(model)
    inference = {}
    for T in timesteps:
        fn = jax.jit(lambda state, x, T=T: nnx.merge(graphdef, state)(x, T))
        inference[T] = timing.measure({"case": lambda fn=fn: jax.block_until_ready(fn(state, x))}, repeats, warmup)["case"]

    model.train()
    graphdef, params, stats = nnx.split(model, nnx.Param, nnx.BatchStat)
    tx = optax.adam(LEARNING_RATE)

    def loss_fn(variables: tuple[Any, Any], x: jax.Array, y: jax.Array) -> tuple[jax.Array, Any]:
        # params and batch stats both enter the grad trace: BatchNorm writes its running stats, and
        # nnx refuses writes to a Variable from another trace level; the stats' gradient is unused.
        m = nnx.merge(graphdef, *variables)
        logits = m(x, train_timesteps)
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
        return loss, nnx.state(m, nnx.BatchStat)

    def step(carry: tuple, x: jax.Array, y: jax.Array) -> tuple[tuple, jax.Array]:
        params, stats, opt_state = carry
        (loss, stats), (grads, _) = jax.value_and_grad(loss_fn, has_aux=True)((params, stats), x, y)
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), stats, opt_state), loss

    step = jax.jit(step, donate_argnums=0)
    box = {"c": (params, stats, tx.init(params))}

    def train_step() -> None:
        box["c"], loss = step(box["c"], x, y)
        jax.block_until_ready(loss)

    train = timing.measure({"case": train_step}, repeats, warmup)["case"]
    note = (f"jax {jax.__version__} ({jax.devices()[0].platform}), jit; stateless layers on [T*B], "
            f"IF layers scanned by spyx.nn.run (lax.scan), arctan; spyx.nn.IF subclassed to fire on the "
            f"same step's input (spyx.nn.IF fires one step late); input [B,28,28,1] fed every step")
    return {"library": NAME, "version": version(DIST), "inference_s": inference, "train_step_s": train,
            "repeats": repeats, "note": note}


def network(batch: int, timesteps: int) -> tuple[Any, int, list, int]:
    """The CNN on random images: ``(logits, learnable parameters, spikes of each IF layer, IF layers)``."""
    import jax
    import numpy as np
    from flax import nnx

    model = build_spyx()
    model.eval()
    graphdef, state = nnx.split(model)

    @jax.jit
    def run(state: Any, x: jax.Array) -> tuple[jax.Array, list]:
        record: list = []
        return nnx.merge(graphdef, state)(x, timesteps, record=record), record

    x = jax.random.normal(jax.random.key(0), (batch, 28, 28, 1))
    out, spikes = run(state, x)
    n_params = sum(int(np.prod(v.shape)) for v in jax.tree_util.tree_leaves(nnx.state(model, nnx.Param)))
    spikes = [np.asarray(s) for s in spikes]
    return np.asarray(out), n_params, spikes, len(spikes)
