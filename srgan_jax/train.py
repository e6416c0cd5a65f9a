"""Training: the loop that runs the compiled step, checkpoints, evaluates and logs.

Follow it from `train_and_evaluate`: the config is checked (`validate_config`), the models
are built once (`models.build`), the step is compiled for the mesh
(`train_step.CompiledStep`), the state is restored from the run folder or made fresh
(`run_folder`), then the loop: a batch, a step, and at their intervals metrics,
previews, checkpoints and evaluations. Evaluation measures; the loop decides what to
keep in best/.
"""

import functools
import os
import signal
import time
from typing import Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec as P

from srgan_jax import (degradation, evaluate, images as image_io, input_pipeline,
                       metrics_writer, model_file, quality, run_folder, train_step, weights)
from srgan_jax.models import build, vgg


def validate_config(config) -> build.Models:
  """Fails at start-up, before any compile, on settings that cannot work together.

  Returns the run's models, built here once: the modules check their own settings
  (scale, conv forms) as they are built.
  """
  metrics = quality.check_names(config.eval.metrics)
  if config.eval.best_metric not in metrics:
    raise ValueError(f'config.eval.best_metric must be one of config.eval.metrics '
                     f'{metrics}, got {config.eval.best_metric!r}')
  models = build.build_models(config)
  scale, crop = config.generator.scale, config.data.hr_crop_size
  if crop % scale:
    raise ValueError(f'config.data.hr_crop_size ({crop}) must be a multiple of the scale ({scale})')
  pad = config.degradation.crop_pad_size
  if config.degradation.kind == 'realesrgan' and pad and (pad < crop or pad % scale):
    raise ValueError(f'config.degradation.crop_pad_size ({pad}) must be 0 or a multiple of the '
                     f'scale ({scale}) of at least config.data.hr_crop_size ({crop})')
  if not 0 <= config.degradation.clean_prob <= 1:
    raise ValueError(f'config.degradation.clean_prob must be in [0, 1], got '
                     f'{config.degradation.clean_prob}')
  for field, low in (('train.batch_size', 1), ('train.num_steps', 1),
                     ('train.log_every_steps', 1), ('train.checkpoint_every_steps', 1),
                     ('train.keep_checkpoints', 1), ('data.hr_crop_size', 1),
                     ('generator.features', 1), ('train.image_every_steps', 0),
                     ('train.time_budget_s', 0), ('eval.every_steps', 0),
                     ('eval.max_images', 0), ('data.num_shards', 0),
                     ('loss.adversarial_start_step', 0), ('loss.content_weight', 0),
                     ('loss.adversarial_weight', 0), ('loss.tv_weight', 0),
                     ('loss.pixel_weight', 0), ('loss.phase_weight', 0)):
    section, key = field.split('.')
    if config[section][key] < low:
      raise ValueError(f'config.{field} must be at least {low}, got {config[section][key]}')
  num_devices = jax.device_count()
  if config.train.batch_size % num_devices:
    raise ValueError(f'config.train.batch_size ({config.train.batch_size}) must be a multiple '
                     f'of the device count ({num_devices})')
  if not 0 <= config.train.ema_decay < 1:
    raise ValueError(f'config.train.ema_decay must be in [0, 1), got {config.train.ema_decay}')
  return models


def vgg_params_for(config) -> tuple[dict, str]:
  """(VGG19 params, their source) for the content loss; ({}, 'random') for the pixel loss.

  Raises `weights.MissingWeightsError`, naming the file and the fetch command, when the
  converted weights are not there: before anything compiles.
  """
  if config.loss.content == 'pixel':
    return {}, 'random'
  if config.vgg.allow_random_weights:
    logging.warning('VGG19 has RANDOM weights (config.vgg.allow_random_weights): the '
                    'perceptual loss is meaningless; use this for mechanics tests only')
    return vgg.random_params(), 'random'
  if config.vgg.source not in vgg.SOURCES:
    raise ValueError(f'config.vgg.source must be one of {vgg.SOURCES}, got {config.vgg.source!r}')
  name = f'vgg19_{config.vgg.source}'
  arrays = weights.load(name, config.vgg.cache_dir, config.vgg.params_path)
  return weights.nested(arrays), config.vgg.source


def _is_model_file(path: str) -> bool:
  return path in model_file.PRETRAINED or os.path.isfile(path)


def generator_to_start_from(path: str) -> tuple[dict, int]:
  """G's {'g_params', 'g_batch_stats', 'g_ema_params'} and step from a run folder, a model
  file, or a pretrained model's name ('srresnet'). Raises FileNotFoundError or ValueError
  naming what is missing or wrong."""
  if not _is_model_file(path):
    return run_folder.restore_generator(path)
  _, variables, info = model_file.read(model_file.resolve(path))
  # A model file holds the params inference uses (a run's EMA): training goes on from them.
  return {'g_params': variables['params'], 'g_batch_stats': variables['batch_stats'],
          'g_ema_params': variables['params']}, info['step']


def init_generator_from(state: train_step.TrainState, path: str) -> train_step.TrainState:
  """Copies G's params, batch stats and EMA from another run or a model file (SRGAN from
  SRResNet)."""
  tree, step = generator_to_start_from(path)
  replaced = {}
  for key in run_folder.GENERATOR_KEYS:
    source, target = tree[key], getattr(state, key)
    if jax.tree.map(np.shape, source) != jax.tree.map(np.shape, target):
      raise ValueError(f'the generator in {path} (step {step}) does not match this config: '
                       f'{key} differs in structure or shape')
    replaced[key] = jax.tree.map(
        lambda s, t: jax.device_put(jnp.asarray(s, t.dtype), t.sharding), source, target)
  logging.info('initialised G from %s (step %d)', path, step)
  return state.replace(**replaced)


class NonFiniteLossError(FloatingPointError):
  """A loss became NaN or inf; the message gives the step."""


class _StopRequest:
  """Turns SIGTERM/SIGINT into a request that the loop honours after the current step.

  A second SIGINT (Ctrl-C again, e.g. during a long compile) raises KeyboardInterrupt at
  once; the checkpoints already written stay complete (Orbax finalises a step atomically).
  A signal the process was started ignoring stays ignored, as Python leaves it: a job that a
  shell starts in the background ignores the Ctrl-C meant for the foreground. On exit each
  handler found is put back.
  """

  def __init__(self):
    self.requested = False
    self._previous = {}

  def __enter__(self):
    for sig in (signal.SIGTERM, signal.SIGINT):
      if signal.getsignal(sig) is signal.SIG_IGN:
        continue
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


def _all_processes_agree(flag: bool) -> bool:
  """True if any process says so (a collective: every process must call it)."""
  if jax.process_count() == 1:
    return flag
  return bool(multihost_utils.process_allgather(np.array(flag)).any())


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str
                       ) -> train_step.TrainState:
  """Trains (or resumes) the run in `workdir` and evaluates it; returns the final state."""
  started = time.monotonic()  # config.train.time_budget_s counts from here.
  models = validate_config(config)
  if '://' in workdir:
    raise ValueError(
        f'workdir {workdir} is a URL, but the run folder is written through the file system '
        f'(config, metrics, TensorBoard, checkpoints): give a path that every process sees, '
        f'e.g. a bucket mounted with Cloud Storage FUSE (gcsfuse) or an NFS share')
  workdir = os.path.abspath(workdir)
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise NotADirectoryError(f'workdir {workdir} is a file, not a folder')
  run_folder.check_resumable(config, workdir)
  is_writer = jax.process_index() == 0
  if is_writer:
    os.makedirs(workdir, exist_ok=True)
    run_folder.save_config(config, workdir)

  # VGG weights first: a missing file must stop the run before anything compiles.
  vgg_params, vgg_source = vgg_params_for(config)
  manager = run_folder.checkpoint_manager(os.path.join(workdir, run_folder.CHECKPOINTS),
                                          config.train.keep_checkpoints)
  evaluator = writer = best = None
  try:
    latest = manager.latest_step()
    if config.init_from and latest is None:  # Needed: stop before loading data.
      if _is_model_file(config.init_from):
        model_file.read(model_file.resolve(config.init_from))
      else:
        run_folder.locate_checkpoint(config.init_from)
    # Evaluation sets are small: a bad one stops the run before the training data is read.
    if config.eval.sets:
      evaluator = evaluate.TrainingEvaluator(config.eval, models.generator, workdir)
      best = run_folder.BestCheckpoint(workdir)
    # The data next: a missing or damaged shard must stop the run before anything compiles.
    mesh = train_step.make_mesh()
    batches = input_pipeline.TrainBatches(config.data, config.train.batch_size, config.seed,
                                          NamedSharding(mesh, P('data')), config.degradation)
    step_fn = train_step.CompiledStep(config, models, mesh, vgg_params, vgg_source)
    if latest is not None:
      step_fn.set_state(run_folder.restore_state(manager, latest, step_fn.abstract_state))
      logging.info('resumed from %s at step %d', manager.directory, latest)
    else:
      step_fn.init(jax.random.PRNGKey(config.seed))
      if config.init_from:
        step_fn.set_state(init_generator_from(step_fn.state, config.init_from))
      elif build.uses_discriminator(config) and not config.loss.adversarial_start_step:
        logging.warning('config.init_from is empty: the SRGAN generator starts from scratch, '
                        'not from an SRResNet-MSE run as in the paper')
    state = step_fn.state
    start_step = int(state.step)
    num_steps = config.train.num_steps
    if start_step >= num_steps:
      logging.warning('%s is already at step %d, config.train.num_steps is %d: nothing to train; '
                      'raise num_steps to go on', workdir, start_step, num_steps)
    logging.info('generator: %s parameters (%d blocks, %d channels, x%d)',
                 f'{train_step.count_params(state.g_params):,}', config.generator.num_blocks,
                 config.generator.features, config.generator.scale)
    if models.discriminator is not None:
      logging.info('discriminator: %s parameters',
                   f'{train_step.count_params(state.d_params):,}')
    logging.info('devices: %d (%d processes), global batch %d; the state travels %s',
                 jax.device_count(), jax.process_count(), config.train.batch_size,
                 'packed' if step_fn.packed else 'as a pytree')
    del state  # The step holds the state; `step_fn.state` gives a fresh copy when needed.

    writer = metrics_writer.MetricsWriter(workdir, enabled=is_writer, truncate_after=start_step)
    train_config = config.train
    history = []  # (step, device metrics) since the last check.
    timer = metrics_writer.RateTimer(start_step, num_steps, train_config.batch_size)

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

    def keep_if_best(step, state, results):
      """The loop's policy: best/ holds G at the best value of config.eval.best_metric."""
      name = evaluate.dataset_name(config.eval.sets[0])
      metric = config.eval.best_metric
      value = results.get(f'eval/{name}/{metric}')
      if value is None:
        return
      record = best.record
      higher = quality.METRICS[metric].higher_is_better
      if (record is None or record.get('metric') != metric
          or (value > record['value'] if higher else value < record['value'])):
        best.save(step, {k: getattr(state, k) for k in run_folder.GENERATOR_KEYS},
                  {'metric': metric, 'dataset': name, 'value': value})

    degrade_batch = jax.jit(functools.partial(train_step.degrade, config))
    with _StopRequest() as stop:
      for step, batch in batches.iterate(start_step, num_steps):
        metrics = step_fn(batch.hr, adversarial=models.discriminator is not None
                          and step >= config.loss.adversarial_start_step, kernels=batch.kernels)
        history.append((step + 1, metrics))
        done = step + 1
        at_log = done % train_config.log_every_steps == 0
        # Hosts agree on stopping (a request, or the time budget) only at log steps.
        out_of_time = bool(train_config.time_budget_s) and (
            time.monotonic() - started > train_config.time_budget_s)
        stop_now = (stop.requested or out_of_time) if jax.process_count() == 1 else (
            at_log and _all_processes_agree(stop.requested or out_of_time))
        is_last = done == num_steps or (stop_now and not stop.requested)
        if at_log or is_last:
          fetched = check_finite()
          averaged = {k: float(np.mean([m[k] for _, m in fetched if k in m]))
                      for k in fetched[-1][1]}
          averaged.update(timer.rates(done))
          # Images the data replaced since the last log line (undecodable records...):
          # counted as a scalar, named in metrics.jsonl.
          replaced = batches.take_substituted()
          averaged['substituted_images'] = len(replaced)
          writer.write_scalars(done, averaged,
                               notes={'substituted': replaced} if replaced else None)
          logging.info('%s', timer.progress_line(done, averaged))
        preview = train_config.image_every_steps and (
            done % train_config.image_every_steps == 0 or is_last)
        checkpoint = done % train_config.checkpoint_every_steps == 0 or is_last or stop_now
        evaluation = evaluator is not None and (
            (config.eval.every_steps and done % config.eval.every_steps == 0) or is_last)
        if preview or checkpoint or evaluation:
          state = step_fn.state
          if preview:
            # The LR this step trained on: the same key and kernels as inside the step.
            lr, target = degrade_batch(jax.random.fold_in(state.rng, step), batch.hr,
                                       batch.kernels)
            writer.write_images(done, preview_images(models.generator, state, lr, target))
          if checkpoint:
            save(done, state)
          if evaluation:
            results = evaluator.run(
                {'params': state.g_ema_params, 'batch_stats': state.g_batch_stats}, done)
            writer.write_scalars(done, results)
            keep_if_best(done, state, results)
          del state
        if stop_now:
          if out_of_time and not stop.requested:
            logging.warning('stopped at step %d: config.train.time_budget_s (%g s) is spent',
                            done, train_config.time_budget_s)
          else:
            logging.warning('stopped at step %d on request; rerun the same command to resume',
                            done)
          break
  finally:
    # Also on errors (in set-up, NaN, a bad batch): finish the saves already started, so
    # the last good checkpoint is complete on disk, and release every thread started.
    manager.wait_until_finished()
    manager.close()
    for resource in (writer, best):
      if resource is not None:
        resource.close()
  return step_fn.state


def preview_images(generator, state: train_step.TrainState, lr: jax.Array, target: jax.Array,
                   count: int = 4) -> np.ndarray:
  """Rows of [LR nearest-upscaled | bicubic | SR | target] for the first `count` crops, uint8.

  Args:
    lr: [B, h, w, 3] float32 in [0, 1], the step's LR (`train_step.degrade`).
    target: [B, H, W, 3] float32 in [-1, 1], what G is trained to produce.
  """
  gather = lambda x: np.asarray(multihost_utils.process_allgather(x, tiled=True))[:count] \
      if jax.process_count() > 1 else np.asarray(x[:count])
  lr, target = gather(lr), image_io.to_uint8(gather(target))
  scale = generator.scale
  sr = generator.apply({'params': jax.device_get(state.g_ema_params),
                        'batch_stats': jax.device_get(state.g_batch_stats)}, lr, train=False)
  sr = image_io.to_uint8(np.asarray(sr))
  lr_uint8 = np.round(lr * 255).astype(np.uint8)
  nearest = lr_uint8.repeat(scale, axis=1).repeat(scale, axis=2)
  bicubic = np.stack([degradation.resize_numpy(x, scale) for x in lr_uint8])
  rows = [np.concatenate(parts, axis=1) for parts in zip(nearest, bicubic, sr, target)]
  return np.concatenate(rows, axis=0)
