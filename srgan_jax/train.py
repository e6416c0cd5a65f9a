"""Training: one state pytree, one jitted step, the loop, checkpoints and metrics.

Follow it from `train_and_evaluate`: models and optimisers from the config
(`build_models`, `build_optimizers`), the state (`init_state`, built abstractly first
so that Orbax restores into its shape), the step (`make_train_step`), then the loop.
On accelerators the loop passes the state to the step packed into one array per dtype
(`packing`), and unpacks it to save, evaluate and preview; checkpoints hold the pytree.

Parallelism: one `Mesh` over every device of every process, axis 'data'. The HR batch is
sharded along its first axis, the state is replicated; XLA inserts the gradient
all-reduce. BatchNorm statistics are those of the global batch (the mean over the
sharded axis is a cross-device reduction), so N devices compute what 1 device would.
"""

import functools
import json
import os
import signal
from typing import Any, Callable, Optional

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
from absl import logging
from etils import epath
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from srgan_jax import degradation, input_pipeline, losses, metrics_writer, packing
from srgan_jax.models import Discriminator, Generator, VGG19Features, vgg
from srgan_jax.models import discriminator as discriminator_lib

DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}
CONTENT_LOSSES = ('pixel', 'vgg22', 'vgg54')


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
  g_tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)
  d_tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)


def uses_discriminator(config) -> bool:
  return config.loss.adversarial_weight > 0


def build_models(config):
  """(generator, discriminator or None, VGG features or None) for this config."""
  dtype = DTYPES[config.train.compute_dtype]
  generator = generator_from_config(config.generator, dtype)
  discriminator = (Discriminator(features=tuple(config.discriminator.features),
                                 dense_features=config.discriminator.dense_features,
                                 dtype=dtype) if uses_discriminator(config) else None)
  vgg_features = None
  if config.loss.content != 'pixel':
    vgg_features = VGG19Features(output_layer=vgg.layer_for_loss(config.loss.content),
                                 after_activation=config.loss.vgg_after_activation,
                                 dtype=dtype)
  return generator, discriminator, vgg_features


def generator_from_config(g_config, dtype=jnp.float32) -> Generator:
  """The generator a `config.generator` describes (training, evaluation and inference)."""
  # Run folders saved before `output_conv` existed used the direct form.
  return Generator(num_blocks=g_config.num_blocks, features=g_config.features,
                   scale=g_config.scale, output_conv=g_config.get('output_conv', 'direct'),
                   dtype=dtype)


def learning_rate_schedule(opt_config) -> optax.Schedule:
  """Constant, multiplied by `lr_decay_factor` at each of `lr_decay_steps`."""
  return optax.piecewise_constant_schedule(
      opt_config.learning_rate,
      {int(step): opt_config.lr_decay_factor for step in opt_config.lr_decay_steps})


def build_optimizer(opt_config) -> optax.GradientTransformation:
  return optax.adam(learning_rate_schedule(opt_config), b1=opt_config.b1, b2=opt_config.b2)


STATE_FORMS = ('auto', 'packed', 'tree')


def uses_packed_state(config) -> bool:
  """Whether the loop passes the state packed (`packing`), by `config.train.state_form`.

  'auto' packs on accelerators and not on the CPU, as measured (benchmarks/RESULTS.md):
  on an H200 each array passed costs the host microseconds, and packed, the SRResNet
  step took 4.28 ms instead of 8.85; on 2 CPU cores copying the state into one array
  costs more than passing its arrays (the quickstart's step: 73 ms packed, 63 ms as a
  pytree; the paper's SRGAN step at batch 2: 1.04 to 1.07 s against 0.80 to 0.89 s).
  TPUs get the GPU's choice, unmeasured.
  """
  form = config.train.state_form
  return form == 'packed' or (form == 'auto' and jax.default_backend() != 'cpu')


def validate_config(config):
  """Fails at start-up, before any compile, on settings that cannot work together."""
  for field, choices in (('loss.content', CONTENT_LOSSES), ('train.compute_dtype', tuple(DTYPES)),
                         ('train.state_form', STATE_FORMS),
                         ('eval.best_metric', ('psnr_y', 'ssim_y'))):
    section, key = field.split('.')
    if config[section][key] not in choices:
      raise ValueError(f'config.{field} must be one of {choices}, got {config[section][key]!r}')
  build_models(config)  # The modules check their own settings (scale, conv forms).
  scale, crop = config.generator.scale, config.data.hr_crop_size
  if crop % scale:
    raise ValueError(f'config.data.hr_crop_size ({crop}) must be a multiple of the scale ({scale})')
  for field, low in (('train.batch_size', 1), ('train.num_steps', 1),
                     ('train.log_every_steps', 1), ('train.checkpoint_every_steps', 1),
                     ('train.keep_checkpoints', 1), ('data.hr_crop_size', 1),
                     ('generator.features', 1), ('train.image_every_steps', 0),
                     ('eval.every_steps', 0), ('eval.max_images', 0), ('data.num_shards', 0),
                     ('loss.adversarial_start_step', 0), ('loss.content_weight', 0),
                     ('loss.adversarial_weight', 0), ('loss.tv_weight', 0)):
    section, key = field.split('.')
    if config[section][key] < low:
      raise ValueError(f'config.{field} must be at least {low}, got {config[section][key]}')
  num_devices = jax.device_count()
  if config.train.batch_size % num_devices:
    raise ValueError(f'config.train.batch_size ({config.train.batch_size}) must be a multiple '
                     f'of the device count ({num_devices})')
  if not 0 <= config.train.ema_decay < 1:
    raise ValueError(f'config.train.ema_decay must be in [0, 1), got {config.train.ema_decay}')


def init_state(config, rng: jax.Array) -> TrainState:
  """Fresh parameters and optimiser states (pure: run it under jit or eval_shape)."""
  generator, discriminator, _ = build_models(config)
  g_rng, d_rng, state_rng = jax.random.split(rng, 3)
  crop = config.data.hr_crop_size
  lr_shape = (1, crop // config.generator.scale, crop // config.generator.scale, 3)
  g_vars = generator.init(g_rng, jnp.zeros(lr_shape, jnp.float32), train=False)
  g_tx = build_optimizer(config.optimizer)
  d_tx = build_optimizer(config.optimizer)
  d_params, d_batch_stats, d_opt_state = {}, {}, {}
  if discriminator is not None:
    d_vars = discriminator.init(d_rng, jnp.zeros((1, crop, crop, 3), jnp.float32), train=False)
    d_params, d_batch_stats = d_vars['params'], d_vars['batch_stats']
    d_opt_state = d_tx.init(d_params)
  return TrainState(
      step=jnp.zeros((), jnp.int32), rng=state_rng,
      g_params=g_vars['params'], g_batch_stats=g_vars['batch_stats'],
      g_ema_params=g_vars['params'], g_opt_state=g_tx.init(g_vars['params']),
      d_params=d_params, d_batch_stats=d_batch_stats, d_opt_state=d_opt_state,
      g_tx=g_tx, d_tx=d_tx)


def make_train_step(config, adversarial: bool, vgg_source: str = 'random') -> Callable:
  """Returns step(state, hr, vgg_params) -> (state, metrics); not yet jitted.

  Args of the returned function:
    state: TrainState.
    hr: [B, crop, crop, 3] uint8 HR crops (the global batch, sharded).
    vgg_params: frozen VGG19 params ({} for the pixel loss); an argument, so they are
      never baked into the compiled program as constants.

  G's forward runs once: its vjp is kept, D is updated on (HR, stop_gradient(SR)), and
  the gradient of G's loss with respect to SR (content + adversarial through the
  updated D) is pulled back through the same vjp.
  """
  generator, discriminator, vgg_features = build_models(config)
  loss_config = config.loss
  scale = config.generator.scale
  schedule = learning_rate_schedule(config.optimizer)
  quantize = config.data.quantize_lr
  ema_decay = config.train.ema_decay

  def step_fn(state: TrainState, hr_uint8: jax.Array, vgg_params):
    hr = hr_uint8.astype(jnp.float32) / 127.5 - 1.0
    lr = degradation.downscale_uint8_batch(hr_uint8, scale, quantize)

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

    def sr_loss_fn(sr):
      terms = {}
      if vgg_features is None:
        terms['content_loss'] = losses.pixel_mse(sr, hr)
      else:
        sr_features = vgg_features.apply({'params': vgg_params}, vgg.preprocess(sr, vgg_source))
        terms['content_loss'] = losses.feature_mse(sr_features, hr_features,
                                                   loss_config.vgg_feature_scale)
        terms['pixel_mse'] = jax.lax.stop_gradient(losses.pixel_mse(sr, hr))
      total = loss_config.content_weight * terms['content_loss']
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
        d_batch_stats=d_batch_stats, d_opt_state=d_opt_state)
    return new_state, metrics

  return step_fn


def count_params(tree) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))


# ----------------------------------------------------------------------------- checkpoints


def checkpoint_manager(directory: str, keep: int) -> ocp.CheckpointManager:
  return ocp.CheckpointManager(
      os.path.abspath(directory),
      options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True))


def find_checkpoint_dir(path: str) -> str:
  """The Orbax checkpoint folder of a run folder, or `path` itself if it is one."""
  candidate = os.path.join(path, 'checkpoints')
  return candidate if os.path.isdir(candidate) else path


def locate_checkpoint(path: str, step: Optional[int] = None) -> tuple[str, int]:
  """(checkpoint folder, step) that `path` and `step` name; see `restore_raw`.

  Raises FileNotFoundError naming the folder if it holds no such checkpoint.
  """
  directory = find_checkpoint_dir(os.path.abspath(path))
  name = os.path.basename(directory)
  if name.isdigit() and os.path.exists(os.path.join(directory, '_CHECKPOINT_METADATA')):
    # A step folder (RUN/checkpoints/<step>): its parent is the manager's folder.
    directory, step = os.path.dirname(directory), int(name) if step is None else step
  if not os.path.isdir(directory):
    raise FileNotFoundError(f'no checkpoint folder at {path}')
  # Finalised steps only; unlike a read-only CheckpointManager, this logs nothing.
  steps = ocp.utils.checkpoint_steps(directory)
  if not steps:
    raise FileNotFoundError(f'{directory} holds no checkpoint')
  step = max(steps) if step is None else step
  if step not in steps:
    raise FileNotFoundError(f'{directory} has no checkpoint for step {step}; it has {sorted(steps)}')
  return directory, step


class UnreadableCheckpointError(ValueError):
  """A finalised checkpoint step cannot be read: files in it are damaged or missing."""


def unreadable_checkpoint(directory: str, step: int, error: Exception) -> UnreadableCheckpointError:
  """The error for a step that fails to restore, saying how to go on without losing it."""
  while error.__cause__ is not None:  # The innermost error names the file that failed.
    error = error.__cause__
  cause = (str(error).splitlines() or [''])[0][:300]  # Some errors carry no message.
  others = sorted(s for s in ocp.utils.checkpoint_steps(directory) if s != step)
  folder = os.path.join(directory, str(step))
  # The cause is shown first: an error that is not about the files (e.g. out of device
  # memory) should not be mistaken for damage.
  if others:
    remedy = (f'if its files are damaged, move {folder} out of {directory} (nothing is '
              f'deleted) to use step {others[-1]}, the latest of the others there ({others})')
  else:
    remedy = (f'it is the only step there; if its files are damaged, move {folder} out of '
              f'{directory} to start afresh')
  return UnreadableCheckpointError(
      f'checkpoint step {step} in {directory} cannot be read ({type(error).__name__}: '
      f'{cause}): {remedy}')


def restore_raw(path: str, step: Optional[int] = None,
                keys: Optional[tuple[str, ...]] = None) -> tuple[dict, int]:
  """Restores (part of) a checkpoint as nested dicts of numpy arrays, with no target.

  Args:
    path: a run folder (holding checkpoints/), a checkpoint folder, or one step's folder.
    step: which step; default the latest (or the step of a step folder).
    keys: top-level fields of the state to read (e.g. only the generator's); default all.
      Only these are read from disk.

  Returns:
    (tree, step). Raises FileNotFoundError naming the folder if it holds no checkpoint.
  """
  directory, step = locate_checkpoint(path, step)
  item = os.path.join(directory, str(step), 'default')
  # The handler reads the tree's metadata only (the checkpointer would also look for,
  # and warn about, step metadata inside the item folder, where Orbax never writes it).
  try:
    tree_meta = ocp.PyTreeCheckpointHandler().metadata(epath.Path(item))
  except Exception as e:  # Any failure to read a finalised step means it is damaged.
    raise unreadable_checkpoint(directory, step, e) from e
  tree_meta = dict(getattr(tree_meta, 'tree', tree_meta))
  if keys is not None:
    missing = [k for k in keys if k not in tree_meta]
    if missing:
      raise ValueError(f'{item} has no {missing}: not a srgan_jax training checkpoint')
    tree_meta = {k: tree_meta[k] for k in keys}
  restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree_meta)
  try:
    tree = ocp.PyTreeCheckpointer().restore(item, args=ocp.args.PyTreeRestore(
        item=tree_meta, restore_args=restore_args, partial_restore=keys is not None))
  except Exception as e:
    raise unreadable_checkpoint(directory, step, e) from e
  return tree, step


GENERATOR_KEYS = ('g_params', 'g_batch_stats', 'g_ema_params')


def init_generator_from(state: TrainState, path: str) -> TrainState:
  """Copies G's params, batch stats and EMA from another run (SRGAN from SRResNet)."""
  tree, step = restore_raw(path, keys=GENERATOR_KEYS)
  replaced = {}
  for key in GENERATOR_KEYS:
    source, target = tree[key], getattr(state, key)
    source_shapes = jax.tree.map(np.shape, source)
    target_shapes = jax.tree.map(np.shape, target)
    if source_shapes != target_shapes:
      raise ValueError(f'the generator in {path} (step {step}) does not match this config: '
                       f'{key} differs in structure or shape')
    replaced[key] = jax.tree.map(
        lambda s, t: jax.device_put(jnp.asarray(s, t.dtype), t.sharding), source, target)
  logging.info('initialised G from %s (step %d)', path, step)
  return state.replace(**replaced)


def save_config(config, workdir: str):
  path = os.path.join(workdir, 'config.json')
  tmp = f'{path}.tmp'
  with open(tmp, 'w') as f:
    f.write(config.to_json_best_effort(indent=2))
  os.replace(tmp, path)


def load_config(workdir: str) -> ml_collections.ConfigDict:
  """The config a run saved in its workdir."""
  path = os.path.join(workdir, 'config.json')
  if not os.path.exists(path):
    raise FileNotFoundError(f'{path} not found: not a srgan_jax run folder')
  with open(path) as f:
    try:
      return ml_collections.ConfigDict(json.load(f))
    except json.JSONDecodeError as e:
      raise ValueError(f'{path} is not valid JSON ({e}): the run folder\'s config is damaged') from e


# Fields that decide the shapes in a checkpoint: a resumed run must keep them.
_SHAPE_FIELDS = ('generator.num_blocks', 'generator.features', 'generator.scale',
                 'discriminator.features', 'discriminator.dense_features',
                 'loss.adversarial_weight', 'data.hr_crop_size')


def check_resumable(config, workdir: str):
  """Before touching a workdir that holds checkpoints, checks the config still fits them."""
  if not os.path.isdir(os.path.join(workdir, 'checkpoints')) or not os.path.exists(
      os.path.join(workdir, 'config.json')):
    return
  saved = load_config(workdir)
  for field in _SHAPE_FIELDS:
    section, key = field.split('.')
    old, new = saved[section].get(key), config[section][key]
    if isinstance(old, (list, tuple)):
      old, new = list(old), list(new)
    if field == 'loss.adversarial_weight':
      old, new = bool(old), bool(new)  # Only whether D exists matters.
    if old != new:
      raise ValueError(
          f'{workdir} holds checkpoints of a run with {field}={old}, but this config has '
          f'{new}: use another --workdir, or the same {field} to resume')


# ----------------------------------------------------------------------------- the loop


class NonFiniteLossError(FloatingPointError):
  """A loss became NaN or inf; the message gives the step."""


class _StopRequest:
  """Turns SIGTERM/SIGINT into a request that the loop honours after the current step.

  A second SIGINT (Ctrl-C again, e.g. during a long compile) raises KeyboardInterrupt at
  once; the checkpoints already written stay complete (Orbax finalises a step atomically).
  """

  def __init__(self):
    self.requested = False
    self._previous = {}

  def __enter__(self):
    for sig in (signal.SIGTERM, signal.SIGINT):
      try:
        self._previous[sig] = signal.signal(sig, self._handle)
      except ValueError:  # Not the main thread (e.g. a notebook worker): no handler.
        pass
    return self

  def _handle(self, signum, frame):
    if self.requested and signum == signal.SIGINT:
      raise KeyboardInterrupt
    logging.warning('received signal %d: saving a checkpoint and stopping after this step '
                    '(Ctrl-C again to stop now)', signum)
    self.requested = True

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)


def _first_nonfinite(history: list) -> Optional[tuple[int, str]]:
  for step, metrics in history:
    for name, value in metrics.items():
      if not np.isfinite(value):
        return step, name
  return None


def make_mesh() -> Mesh:
  return Mesh(np.asarray(jax.devices()), ('data',))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> TrainState:
  """Trains (or resumes) the run in `workdir` and evaluates it; returns the final state."""
  from srgan_jax import evaluate  # Evaluation imports training helpers; import late.

  validate_config(config)
  if '://' in workdir:
    raise ValueError(
        f'workdir {workdir} is a URL, but the run folder is written through the file system '
        f'(config, metrics, TensorBoard, checkpoints): give a path that every process sees, '
        f'e.g. a bucket mounted with Cloud Storage FUSE (gcsfuse) or an NFS share')
  workdir = os.path.abspath(workdir)
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise NotADirectoryError(f'workdir {workdir} is a file, not a folder')
  check_resumable(config, workdir)
  is_writer = jax.process_index() == 0
  if is_writer:
    os.makedirs(workdir, exist_ok=True)
    save_config(config, workdir)

  # VGG weights first: a missing file must stop the run before anything compiles.
  vgg_params, vgg_source = {}, 'random'
  if config.loss.content != 'pixel':
    vgg_params, vgg_source = vgg.resolve_params(config.vgg)
    if vgg_source == 'random':
      logging.warning('VGG19 has RANDOM weights (config.vgg.allow_random_weights): the '
                      'perceptual loss is meaningless; use this for mechanics tests only')
  manager = checkpoint_manager(os.path.join(workdir, 'checkpoints'), config.train.keep_checkpoints)
  evaluator = writer = None
  try:
    latest = manager.latest_step()
    if config.init_from and latest is None:
      locate_checkpoint(config.init_from)  # A fresh run needs it: stop before loading data.
    mesh = make_mesh()
    replicated = NamedSharding(mesh, P())
    batch_sharding = NamedSharding(mesh, P('data'))
    vgg_params = jax.device_put(vgg_params, replicated)

    # Evaluation sets are small: a bad one stops the run before the training data is read.
    evaluator = evaluate.TrainingEvaluator(config, workdir) if config.eval.sets else None
    batches = input_pipeline.TrainBatches(config.data, config.train.batch_size, config.seed,
                                          batch_sharding)

    init_fn = functools.partial(init_state, config)
    rng = jax.random.PRNGKey(config.seed)
    abstract_state = jax.eval_shape(init_fn, rng)
    state_sharding = jax.tree.map(lambda _: replicated, abstract_state)
    if latest is not None:
      target = jax.tree.map(
          lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), abstract_state,
          state_sharding)
      try:
        state = manager.restore(latest, args=ocp.args.StandardRestore(target))
      except Exception as e:  # Shapes were checked against config.json: the files are damaged.
        raise unreadable_checkpoint(str(manager.directory), latest, e) from e
      logging.info('resumed from %s at step %d', manager.directory, latest)
    else:
      state = jax.jit(init_fn, out_shardings=state_sharding)(rng)
      if config.init_from:
        state = init_generator_from(state, config.init_from)
      elif uses_discriminator(config) and not config.loss.adversarial_start_step:
        logging.warning('config.init_from is empty: the SRGAN generator starts from scratch, '
                        'not from an SRResNet-MSE run as in the paper')
    start_step = int(state.step)
    if start_step >= config.train.num_steps:
      logging.warning('%s is already at step %d, config.train.num_steps is %d: nothing to train; '
                      'raise num_steps to go on', workdir, start_step, config.train.num_steps)

    logging.info('generator: %s parameters (%d blocks, %d channels, x%d)',
                 f'{count_params(state.g_params):,}', config.generator.num_blocks,
                 config.generator.features, config.generator.scale)
    if uses_discriminator(config):
      logging.info('discriminator: %s parameters', f'{count_params(state.d_params):,}')
    logging.info('devices: %d (%d processes), global batch %d', jax.device_count(),
                 jax.process_count(), config.train.batch_size)

    # Between steps the state travels packed, one array per dtype, on accelerators, and as
    # its pytree on the CPU (`uses_packed_state`). The state is replicated: `replicated`
    # shards either form.
    state_packing, vgg_packing = packing.packings(uses_packed_state(config), abstract_state,
                                                  vgg_params)
    unpack_state = jax.jit(state_packing.unpack, out_shardings=state_sharding)
    loop_state = jax.jit(state_packing.pack, out_shardings=replicated)(state)
    del state  # Its arrays are freed; the loop unpacks a fresh one when it needs one.
    loop_vgg_params = jax.jit(vgg_packing.pack, out_shardings=replicated)(vgg_params)
    jit_step = lambda adversarial: jax.jit(
        packing.packed_step(make_train_step(config, adversarial, vgg_source), state_packing,
                            vgg_packing),
        in_shardings=(replicated, batch_sharding, replicated),
        out_shardings=(replicated, replicated), donate_argnums=(0,))
    content_step = jit_step(False)
    gan_step = jit_step(True) if uses_discriminator(config) else None
    adversarial_from = config.loss.adversarial_start_step

    writer = metrics_writer.MetricsWriter(workdir, enabled=is_writer, truncate_after=start_step)
    num_steps = config.train.num_steps
    train_config = config.train
    history = []  # (step, device metrics) since the last check.
    timer = metrics_writer.RateTimer(start_step, num_steps, config.train.batch_size)

    def check_finite():
      nonlocal history
      # One call for the whole window: its transfers overlap instead of taking turns.
      fetched = jax.device_get(history)
      history = []
      bad = _first_nonfinite(fetched)
      if bad is not None:
        raise NonFiniteLossError(
            f'{bad[1]} is not finite at step {bad[0]}; stopping. The last good checkpoint '
            f'(step {manager.latest_step()}) in {manager.directory} is untouched.')
      return fetched

    def save(step, state):
      check_finite()
      manager.save(step, args=ocp.args.StandardSave(state), force=True)

    with _StopRequest() as stop:
      for step, hr in batches.iterate(start_step, num_steps):
        use_gan = gan_step is not None and step >= adversarial_from
        loop_state, metrics = (gan_step if use_gan else content_step)(
            loop_state, hr, loop_vgg_params)
        history.append((step + 1, metrics))
        done = step + 1
        is_last = done == num_steps
        if done % train_config.log_every_steps == 0 or is_last:
          fetched = check_finite()
          averaged = {k: float(np.mean([m[k] for _, m in fetched if k in m]))
                      for k in fetched[-1][1]}
          averaged.update(timer.rates(done))
          writer.write_scalars(done, averaged)
          logging.info('%s', timer.progress_line(done, averaged))
        preview = train_config.image_every_steps and (
            done % train_config.image_every_steps == 0 or is_last)
        checkpoint = done % train_config.checkpoint_every_steps == 0 or is_last
        evaluation = evaluator and (
            (config.eval.every_steps and done % config.eval.every_steps == 0) or is_last)
        if preview or checkpoint or evaluation:
          # New arrays (a jitted call's outputs): the next step cannot touch them.
          state = unpack_state(loop_state)
        if preview:
          writer.write_images(done, preview_images(config, state, hr))
        if checkpoint:
          save(done, state)
        if evaluation:
          results = evaluator.run(state, done)
          writer.write_scalars(done, results)
        stop_now = stop.requested
        if jax.process_count() > 1 and done % train_config.log_every_steps == 0:
          stop_now = bool(multihost_utils.process_allgather(np.array(stop_now)).any())
        elif jax.process_count() > 1:
          stop_now = False  # Hosts agree on stopping only at log steps.
        if stop_now and not is_last:
          if not checkpoint:  # At a checkpoint step the save above holds this step already.
            save(done, unpack_state(loop_state))
          logging.warning('stopped at step %d on request; rerun the same command to resume', done)
          break
  finally:
    # Also on errors (in set-up, NaN, a bad batch): finish the saves already started, so
    # the last good checkpoint is complete on disk, and release every thread started.
    manager.wait_until_finished()
    manager.close()
    if writer:
      writer.close()
    if evaluator:
      evaluator.close()
  return unpack_state(loop_state)


def preview_images(config, state: TrainState, hr_uint8: jax.Array, count: int = 4) -> np.ndarray:
  """Rows of [LR nearest-upscaled | bicubic | SR | HR] for the first `count` crops, uint8."""
  from srgan_jax.upscale import to_uint8  # upscale imports this module; import late.
  hr = np.asarray(multihost_utils.process_allgather(hr_uint8, tiled=True))[:count] \
      if jax.process_count() > 1 else np.asarray(hr_uint8[:count])
  scale = config.generator.scale
  generator, _, _ = build_models(config)
  lr = np.asarray(degradation.downscale_uint8_batch(jnp.asarray(hr), scale, True))
  sr = generator.apply({'params': jax.device_get(state.g_ema_params),
                        'batch_stats': jax.device_get(state.g_batch_stats)}, lr, train=False)
  sr = to_uint8(np.asarray(sr))
  lr_uint8 = np.round(lr * 255).astype(np.uint8)
  nearest = lr_uint8.repeat(scale, axis=1).repeat(scale, axis=2)
  bicubic = np.stack([degradation.resize_numpy(x, scale) for x in lr_uint8])
  rows = [np.concatenate(parts, axis=1) for parts in zip(nearest, bicubic, sr, hr)]
  return np.concatenate(rows, axis=0)
