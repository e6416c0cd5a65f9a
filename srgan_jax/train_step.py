"""The train state, the step function, and the step compiled for a mesh.

`make_train_step` is the pure step (state, HR batch, VGG params) -> (state, metrics).
`CompiledStep` is the one way anything runs it (the training loop, the benchmarks, the
tests): it builds or takes the state on the mesh, jits the step with shardings and a
donated state, and hands back the current state when asked.

Parallelism: one `Mesh` over every device of every process, axis 'data'. The HR batch is
sharded along its first axis, the state is replicated; XLA inserts the gradient
all-reduce. BatchNorm statistics are those of the global batch (the mean over the
sharded axis is a cross-device reduction), so N devices compute what 1 device would.
"""

import functools
from typing import Any, Callable, Optional

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from srgan_jax import degradation, losses, packing, real_degradation
from srgan_jax.models import build, discriminator as discriminator_lib, vgg


@flax.struct.dataclass
class TrainState:
  """Everything a run needs to continue, as one pytree (the checkpoint).

  `d_*` are empty dicts when the discriminator is off (SRResNet). `g_ema_params` is the
  exponential moving average of `g_params` (equal to them when `ema_decay` is 0).
  """
  step: jax.Array  # int32 scalar: updates done so far.
  rng: jax.Array  # PRNG key data (uint32 [2]); per-step keys are fold_in(rng, step).
  g_params: Any
  g_batch_stats: Any
  g_ema_params: Any
  g_opt_state: Any
  d_params: Any
  d_batch_stats: Any
  d_opt_state: Any
  # Real-ESRGAN's pool of past training pairs ({} when config.degradation.pool_size is 0):
  # {'lr': [P, h, w, 3], 'target': [P, H, W, 3] float32, 'filled': int32 pairs held}.
  pool: Any
  g_tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)
  d_tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)


def learning_rate_schedule(opt_config) -> optax.Schedule:
  """Constant, multiplied by `lr_decay_factor` at each of `lr_decay_steps`."""
  return optax.piecewise_constant_schedule(
      opt_config.learning_rate,
      {int(step): opt_config.lr_decay_factor for step in opt_config.lr_decay_steps})


def build_optimizer(opt_config) -> optax.GradientTransformation:
  return optax.adam(learning_rate_schedule(opt_config), b1=opt_config.b1, b2=opt_config.b2)


def init_state(config, models: build.Models, rng: jax.Array) -> TrainState:
  """Fresh parameters and optimiser states (pure: run it under jit or eval_shape)."""
  g_rng, d_rng, state_rng = jax.random.split(rng, 3)
  crop = config.data.hr_crop_size
  lr_shape = (1, crop // config.generator.scale, crop // config.generator.scale, 3)
  g_vars = models.generator.init(g_rng, jnp.zeros(lr_shape, jnp.float32), train=False)
  g_tx = build_optimizer(config.optimizer)
  d_tx = build_optimizer(config.optimizer)
  d_params, d_batch_stats, d_opt_state = {}, {}, {}
  if models.discriminator is not None:
    d_vars = models.discriminator.init(d_rng, jnp.zeros((1, crop, crop, 3), jnp.float32),
                                       train=False)
    d_params, d_batch_stats = d_vars['params'], d_vars['batch_stats']
    d_opt_state = d_tx.init(d_params)
  return TrainState(
      step=jnp.zeros((), jnp.int32), rng=state_rng,
      g_params=g_vars['params'], g_batch_stats=g_vars['batch_stats'],
      g_ema_params=g_vars['params'], g_opt_state=g_tx.init(g_vars['params']),
      d_params=d_params, d_batch_stats=d_batch_stats, d_opt_state=d_opt_state,
      pool=empty_pool(config), g_tx=g_tx, d_tx=d_tx)


def pool_size(config) -> int:
  """Pairs in the training pair pool: config.degradation.pool_size with the real-world
  degradation (a multiple of the global batch), else 0."""
  size = config.degradation.pool_size if config.degradation.kind == 'realesrgan' else 0
  if size % config.train.batch_size:
    raise ValueError(f'config.degradation.pool_size={size} must be a multiple of '
                     f'config.train.batch_size={config.train.batch_size}')
  return size


def empty_pool(config) -> dict:
  size = pool_size(config)
  if not size:
    return {}
  crop, scale = config.data.hr_crop_size, config.generator.scale
  return {'lr': jnp.zeros((size, crop // scale, crop // scale, 3), jnp.float32),
          'target': jnp.zeros((size, crop, crop, 3), jnp.float32),
          'filled': jnp.zeros((), jnp.int32)}


def exchange_with_pool(pool: dict, lr, target, key):
  """Real-ESRGAN's training pair pool (`_dequeue_and_enqueue`): one batch's degradation
  shares its random scale and modes, so pairs are mixed across batches. Until the pool is
  full, the batch enters it in order and trains as drawn; then the pool is shuffled, its
  first B pairs train, and the batch's pairs take their places.

  Returns (pool, lr, target) of the same shapes.
  """
  batch, size = lr.shape[0], pool['lr'].shape[0]

  def fill(pool):
    start = pool['filled']
    return ({'lr': jax.lax.dynamic_update_slice_in_dim(pool['lr'], lr, start, 0),
             'target': jax.lax.dynamic_update_slice_in_dim(pool['target'], target, start, 0),
             'filled': start + batch}, lr, target)

  def swap(pool):
    order = jax.random.permutation(key, size)
    held_lr, held_target = pool['lr'][order], pool['target'][order]
    return ({'lr': held_lr.at[:batch].set(lr), 'target': held_target.at[:batch].set(target),
             'filled': pool['filled']}, held_lr[:batch], held_target[:batch])

  return jax.lax.cond(pool['filled'] >= size, swap, fill, pool)


def random_pair_crops(key: jax.Array, lr: jax.Array, target: jax.Array, lr_size: int):
  """A random lr_size x lr_size window of each LR and the target's window over it (BasicSR's
  `paired_random_crop`, drawn per sample): the training crop out of a degraded larger one.

  Args:
    lr: [B, h, w, C]; target: [B, s h, s w, C].

  Returns:
    [B, lr_size, lr_size, C], [B, s lr_size, s lr_size, C]; the inputs if already that size.
  """
  batch, height, width, channels = lr.shape
  if (height, width) == (lr_size, lr_size):
    return lr, target
  scale = target.shape[1] // height
  top_key, left_key = jax.random.split(key)
  top = jax.random.randint(top_key, (batch,), 0, height - lr_size + 1)
  left = jax.random.randint(left_key, (batch,), 0, width - lr_size + 1)

  def cut(lr, target, top, left):
    side = lr_size * scale
    return (jax.lax.dynamic_slice(lr, (top, left, 0), (lr_size, lr_size, channels)),
            jax.lax.dynamic_slice(target, (top * scale, left * scale, 0), (side, side, channels)))

  return jax.vmap(cut)(lr, target, top, left)


def degrade(config, key: jax.Array, hr_uint8: jax.Array, kernels: Optional[jax.Array]):
  """The step's LR and target from HR, by `config.degradation.kind`.

  Args:
    key: the step's key, fold_in(state.rng, state.step) (the real-world draws).
    hr_uint8: [B, H, W, 3] uint8: the training crops, or for 'realesrgan' with
      config.degradation.crop_pad_size the larger crops (H = W = crop_pad_size) that are
      degraded before the training crop is cut from the pair.
    kernels: [B, 3, 21, 21] float32 for 'realesrgan' (`Batch.kernels`), else None.

  Returns:
    lr [B, c/s, c/s, 3] float32 in [0, 1]; target [B, c, c, 3] float32 in [-1, 1] (HR, or
    its USM-sharpened form when the real-world degradation sharpens); c is
    config.data.hr_crop_size.
  """
  scale = config.generator.scale
  kind = config.degradation.kind
  if kind == 'bicubic':
    lr = degradation.downscale_uint8_batch(hr_uint8, scale, config.data.quantize_lr)
    return lr, hr_uint8.astype(jnp.float32) / 127.5 - 1.0
  if kind == 'realesrgan':
    if kernels is None:
      raise ValueError("config.degradation.kind='realesrgan' needs each batch's blur kernels "
                       '(input_pipeline.Batch.kernels)')
    lr, target = real_degradation.degrade_uint8_batch(key, hr_uint8, kernels,
                                                      config.degradation, scale)
    lr, target = random_pair_crops(jax.random.fold_in(key, 2), lr, target,
                                   config.data.hr_crop_size // scale)
    if config.degradation.clean_prob:
      # Some samples keep the paper's bicubic LR (of the target), so the model also learns
      # to leave clean detail alone. Computed for every sample: shapes stay static.
      clean = degradation.downscale_uint8_batch(jnp.round(target * 255.0), scale,
                                                config.data.quantize_lr)
      chosen = jax.random.uniform(jax.random.fold_in(key, 3), (lr.shape[0],))
      lr = jnp.where((chosen < config.degradation.clean_prob)[:, None, None, None], clean, lr)
    return lr, target * 2.0 - 1.0
  raise ValueError(f"config.degradation.kind must be 'bicubic' or 'realesrgan', got {kind!r}")


def make_train_step(config, models: build.Models, adversarial: bool,
                    vgg_source: str = 'random') -> Callable:
  """Returns step(state, hr, vgg_params, kernels) -> (state, metrics); not yet jitted.

  Args of the returned function:
    state: TrainState.
    hr: [B, crop, crop, 3] uint8 HR crops (the global batch, sharded).
    vgg_params: frozen VGG19 params ({} for the pixel loss); an argument, so they are
      never baked into the compiled program as constants.
    kernels: [B, 3, 21, 21] float32 blur kernels of the real-world degradation, or None.

  G's forward runs once: its vjp is kept, D is updated on (HR, stop_gradient(SR)), and
  the gradient of G's loss with respect to SR (content + adversarial through the
  updated D) is pulled back through the same vjp.
  """
  generator, discriminator, vgg_features = (models.generator, models.discriminator,
                                            models.vgg_features)
  if adversarial and discriminator is None:
    raise ValueError('an adversarial step needs a discriminator (loss.adversarial_weight > 0)')
  loss_config = config.loss
  schedule = learning_rate_schedule(config.optimizer)
  ema_decay = config.train.ema_decay

  def step_fn(state: TrainState, hr_uint8: jax.Array, vgg_params, kernels=None):
    # `hr` is the target: the HR crop, or its sharpened form (real-world degradation).
    step_key = jax.random.fold_in(state.rng, state.step)
    lr, hr = degrade(config, step_key, hr_uint8, kernels)
    pool = state.pool
    if pool:
      pool, lr, hr = exchange_with_pool(pool, lr, hr, jax.random.fold_in(step_key, 1))

    def g_forward(g_params):
      sr, updates = generator.apply(
          {'params': g_params, 'batch_stats': state.g_batch_stats}, lr, train=True,
          mutable=['batch_stats'])
      return sr, updates['batch_stats']

    sr, g_vjp, g_batch_stats = jax.vjp(g_forward, state.g_params, has_aux=True)
    metrics = {}

    d_params, d_batch_stats, d_opt_state = state.d_params, state.d_batch_stats, state.d_opt_state
    if adversarial:
      fake = jax.lax.stop_gradient(sr)

      def d_loss_fn(params):
        real_logits, fake_logits, new_stats = discriminator_lib.apply_to_real_and_fake(
            discriminator, params, d_batch_stats, hr, fake)
        loss = losses.discriminator_bce(real_logits, fake_logits)
        return loss, (new_stats, real_logits, fake_logits)

      (d_loss, (d_batch_stats, real_logits, fake_logits)), d_grads = jax.value_and_grad(
          d_loss_fn, has_aux=True)(d_params)
      d_updates, d_opt_state = state.d_tx.update(d_grads, d_opt_state, d_params)
      d_params = optax.apply_updates(d_params, d_updates)
      metrics.update(d_loss=d_loss, d_real=jnp.mean(nn.sigmoid(real_logits)),
                     d_fake=jnp.mean(nn.sigmoid(fake_logits)))

    if vgg_features is not None:
      hr_features = vgg_features.apply({'params': vgg_params},
                                       vgg.preprocess(hr, vgg_source))
    layer_weights = build.vgg_layer_weights(config)

    def sr_loss_fn(sr):
      terms = {}
      if vgg_features is None:
        terms['content_loss'] = losses.pixel_distance(sr, hr, loss_config.criterion)
      else:
        sr_features = vgg_features.apply({'params': vgg_params}, vgg.preprocess(sr, vgg_source))
        terms['content_loss'] = sum(
            weight * losses.feature_distance(s, h, loss_config.vgg_feature_scale,
                                             loss_config.criterion)
            for weight, s, h in zip(layer_weights, sr_features, hr_features))
        terms['pixel_mse'] = jax.lax.stop_gradient(losses.pixel_mse(sr, hr))
      total = loss_config.content_weight * terms['content_loss']
      if loss_config.pixel_weight:
        terms['pixel_loss'] = losses.pixel_distance(sr, hr, loss_config.criterion)
        total = total + loss_config.pixel_weight * terms['pixel_loss']
      if loss_config.phase_weight:
        terms['phase_loss'] = losses.phase_loss(sr, hr)
        total = total + loss_config.phase_weight * terms['phase_loss']
      if adversarial:
        # D in training mode, as in the D step; its batch-stat updates here are dropped.
        fake_logits, _ = discriminator.apply(
            {'params': d_params, 'batch_stats': d_batch_stats}, sr, train=True,
            mutable=['batch_stats'])
        terms['adversarial_loss'] = losses.generator_adversarial(fake_logits)
        total = total + loss_config.adversarial_weight * terms['adversarial_loss']
      if loss_config.tv_weight:
        terms['tv_loss'] = losses.total_variation(sr)
        total = total + loss_config.tv_weight * terms['tv_loss']
      return total, terms

    (g_loss, terms), sr_grad = jax.value_and_grad(sr_loss_fn, has_aux=True)(sr)
    (g_grads,) = g_vjp(sr_grad)
    g_updates, g_opt_state = state.g_tx.update(g_grads, state.g_opt_state, state.g_params)
    g_params = optax.apply_updates(state.g_params, g_updates)
    g_ema_params = jax.tree.map(lambda e, p: ema_decay * e + (1.0 - ema_decay) * p,
                                state.g_ema_params, g_params)
    metrics.update(terms, g_loss=g_loss, learning_rate=schedule(state.step),
                   psnr_rgb=10.0 * jnp.log10(4.0 / jnp.maximum(losses.pixel_mse(sr, hr), 1e-12)))
    new_state = state.replace(
        step=state.step + 1, g_params=g_params, g_batch_stats=g_batch_stats,
        g_ema_params=g_ema_params, g_opt_state=g_opt_state, d_params=d_params,
        d_batch_stats=d_batch_stats, d_opt_state=d_opt_state, pool=pool)
    return new_state, metrics

  return step_fn


def make_mesh() -> Mesh:
  return Mesh(np.asarray(jax.devices()), ('data',))


def packs_state() -> bool:
  """Whether `CompiledStep` packs the state by default: on accelerators, not on the CPU."""
  return jax.default_backend() != 'cpu'


def count_params(tree) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))


class CompiledStep:
  """The train step compiled for a mesh, with the state it advances.

  Args:
    config: the run's config.
    models: `build.build_models(config)`.
    mesh: `make_mesh()`; the batch is sharded over its 'data' axis, the state replicated.
    vgg_params: frozen VGG19 params ({} for the pixel loss).
    vgg_source: their input convention ('keras', 'torchvision' or 'random').
    packed: how the state travels between calls. Every array passed to a compiled call
      costs the host microseconds, and the state is hundreds of arrays: on an accelerator
      that cost rivals the step's kernels, so there the state travels packed into one
      array per dtype (`packing`); on the CPU the copy into one array costs more than it
      saves. None (the default) chooses so (benchmarks/README.md); both compute the
      same step.

  Use: `init(rng)` or `set_state(state)`, then `step(hr, adversarial)` per batch; `state`
  is a fresh TrainState (safe to save or evaluate while later steps run).
  """

  def __init__(self, config, models: build.Models, mesh: Mesh, vgg_params=None,
               vgg_source: str = 'random', packed: Optional[bool] = None):
    self.config, self.models, self.vgg_source = config, models, vgg_source
    self.packed = packs_state() if packed is None else packed
    replicated = NamedSharding(mesh, P())
    self.batch_sharding = NamedSharding(mesh, P('data'))
    self._init = functools.partial(init_state, config, models)
    abstract = jax.eval_shape(self._init, jax.random.PRNGKey(0))
    self._state_sharding = jax.tree.map(lambda _: replicated, abstract)
    # The restore target: shapes, dtypes and where each array goes.
    self.abstract_state = jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), abstract,
        self._state_sharding)
    vgg_params = jax.device_put(vgg_params or {}, replicated)
    state_packing, vgg_packing = ((packing.Packing(abstract), packing.Packing(vgg_params))
                                  if self.packed else (packing.NoPacking(), packing.NoPacking()))
    self._pack = jax.jit(state_packing.pack, out_shardings=replicated)
    self._unpack = jax.jit(state_packing.unpack, out_shardings=self._state_sharding)
    self._vgg_params = jax.jit(vgg_packing.pack, out_shardings=replicated)(vgg_params)
    self._jit = lambda adversarial: jax.jit(
        packing.packed_step(make_train_step(config, models, adversarial, vgg_source),
                            state_packing, vgg_packing),
        in_shardings=(replicated, self.batch_sharding, replicated, self.batch_sharding),
        out_shardings=(replicated, replicated), donate_argnums=(0,))
    self._steps = {}  # adversarial -> jitted step, built on first use.
    self._loop_state = None

  def init(self, rng: jax.Array):
    """Starts from fresh parameters."""
    self.set_state(jax.jit(self._init, out_shardings=self._state_sharding)(rng))

  def set_state(self, state: TrainState):
    """Continues from `state` (restored, or changed by the caller); it is not modified."""
    self._loop_state = self._pack(state)

  @property
  def state(self) -> TrainState:
    """The current state: new arrays, which later steps cannot touch."""
    return self._unpack(self._loop_state)

  def __call__(self, hr: jax.Array, adversarial: bool = False,
               kernels: Optional[jax.Array] = None) -> dict:
    """One step on the global HR batch [B, crop, crop, 3] uint8 (and, for the real-world
    degradation, its kernels [B, 3, 21, 21]); returns device metrics."""
    if adversarial not in self._steps:
      self._steps[adversarial] = self._jit(adversarial)
    self._loop_state, metrics = self._steps[adversarial](self._loop_state, hr, self._vgg_params,
                                                         kernels)
    return metrics
