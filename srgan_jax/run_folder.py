"""Run folders: what training writes and evaluation, inference and export read.

A run folder holds
  config.json       the run's config (the generator is rebuilt from it);
  checkpoints/<N>/  Orbax checkpoints of the whole train state (`train_step.TrainState`);
  best/<N>/         the generator only (params, batch statistics, EMA) at the best
                    evaluation, and best/best.json saying which step, metric and value;
  metrics.jsonl, tensorboard/, eval/   written by the loop and the evaluation.

Readers take a run folder, its checkpoints/ or best/ folder, or one step's folder.
A step that exists but cannot be read is reported with the step it can fall back to;
nothing is deleted.
"""

import json
import os
from typing import Any, Optional

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from srgan_jax.models import build

CONFIG_FILE = 'config.json'
CHECKPOINTS = 'checkpoints'
BEST = 'best'
BEST_RECORD = 'best.json'
# What inference needs of a train state; a best/ checkpoint holds only these.
GENERATOR_KEYS = ('g_params', 'g_batch_stats', 'g_ema_params')


def write_json(path: str, obj):
  """Writes JSON atomically: a crash leaves the old file or the new one, never half."""
  tmp = f'{path}.tmp'
  with open(tmp, 'w') as f:
    json.dump(obj, f, indent=1)
  os.replace(tmp, path)


def save_config(config: ml_collections.ConfigDict, workdir: str):
  path = os.path.join(workdir, CONFIG_FILE)
  tmp = f'{path}.tmp'
  with open(tmp, 'w') as f:
    f.write(config.to_json_best_effort(indent=2))
  os.replace(tmp, path)


def load_config(workdir: str) -> ml_collections.ConfigDict:
  """The config a run saved in its folder."""
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    raise FileNotFoundError(f'{path} not found: not a srgan_jax run folder')
  with open(path) as f:
    try:
      return ml_collections.ConfigDict(json.load(f))
    except json.JSONDecodeError as e:
      raise ValueError(f'{path} is not valid JSON ({e}): the run folder\'s config is damaged') from e


def find_run_dir(path: str) -> str:
  """The run folder (holding config.json) of a run folder or any checkpoint folder in it."""
  probe = os.path.abspath(path)
  for _ in range(4):
    if os.path.exists(os.path.join(probe, CONFIG_FILE)):
      return probe
    probe = os.path.dirname(probe)
  raise FileNotFoundError(f'no {CONFIG_FILE} in {path} or the folders above it: not a srgan_jax run')


def checkpoint_manager(directory: str, keep: int) -> ocp.CheckpointManager:
  return ocp.CheckpointManager(
      os.path.abspath(directory),
      options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True))


def locate_checkpoint(path: str, step: Optional[int] = None) -> tuple[str, int]:
  """(checkpoint folder, step) that `path` and `step` name; see `restore_raw`.

  Raises FileNotFoundError naming the folder if it holds no such checkpoint.
  """
  directory = os.path.abspath(path)
  if os.path.isdir(os.path.join(directory, CHECKPOINTS)):
    directory = os.path.join(directory, CHECKPOINTS)
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


def _tree_metadata(directory: str, step: int) -> dict:
  item = os.path.join(directory, str(step), 'default')
  # The handler reads the tree's metadata only (the checkpointer would also look for,
  # and warn about, step metadata inside the item folder, where Orbax never writes it).
  try:
    tree_meta = ocp.PyTreeCheckpointHandler().metadata(epath.Path(item))
  except Exception as e:  # Any failure to read a finalised step means it is damaged.
    raise unreadable_checkpoint(directory, step, e) from e
  return dict(getattr(tree_meta, 'tree', tree_meta))


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
  tree_meta = _tree_metadata(directory, step)
  if keys is not None:
    missing = [k for k in keys if k not in tree_meta]
    if missing:
      raise ValueError(f'{os.path.join(directory, str(step))} has no {missing}: not a '
                       f'srgan_jax checkpoint')
    tree_meta = {k: tree_meta[k] for k in keys}
  restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree_meta)
  item = os.path.join(directory, str(step), 'default')
  try:
    tree = ocp.PyTreeCheckpointer().restore(item, args=ocp.args.PyTreeRestore(
        item=tree_meta, restore_args=restore_args, partial_restore=keys is not None))
  except Exception as e:
    raise unreadable_checkpoint(directory, step, e) from e
  return tree, step


def restore_generator(path: str, step: Optional[int] = None) -> tuple[dict, int]:
  """G's params, batch statistics and EMA params from any checkpoint, for inference.

  Checkpoints written while convolutions before a BatchNorm still had biases load too:
  each bias is folded into its BN's running mean (`build.fold_biases_into_batch_norm`),
  from the EMA params, which inference uses, so that their output is unchanged.

  Returns:
    ({'g_params', 'g_batch_stats', 'g_ema_params'}: nested dicts of numpy arrays, step).
  """
  tree, step = restore_raw(path, step, keys=GENERATOR_KEYS)
  ema, stats = build.fold_biases_into_batch_norm(tree['g_ema_params'], tree['g_batch_stats'])
  params, _ = build.fold_biases_into_batch_norm(tree['g_params'], tree['g_batch_stats'])
  return {'g_params': params, 'g_batch_stats': stats, 'g_ema_params': ema}, step


def _leaf_paths(tree) -> set:
  return {jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(tree)}


def restore_state(manager: ocp.CheckpointManager, step: int, abstract_state: Any) -> Any:
  """The whole train state of `step`, restored into `abstract_state`'s shapes and shardings.

  A checkpoint of another layout (an earlier version's biases before BatchNorm) is named
  as such, with what still works; damaged files are reported by `unreadable_checkpoint`.
  """
  directory = str(manager.directory)
  saved = _tree_metadata(directory, step)
  # The params decide the layout (the optimiser states follow them): compared as dicts.
  for key in ('g_params', 'd_params'):
    have, want = _leaf_paths(saved.get(key, {})), _leaf_paths(getattr(abstract_state, key))
    if have == want:
      continue
    extra, missing = sorted(have - want), sorted(want - have)
    if extra and not missing and all(p.endswith("['bias']") for p in extra):
      raise ValueError(
          f'checkpoint step {step} in {directory} was written by an earlier srgan_jax, whose '
          f'convolutions before BatchNorm had biases ({len(extra)} in {key}, e.g. '
          f'{key}{extra[0]}). It still loads for evaluation, upscaling, export and as '
          f'--config.init_from (each bias folded into its running mean, which gives the '
          f'same output), but its optimiser states cannot be resumed: train in a new '
          f'--workdir with --config.init_from={os.path.dirname(directory)}')
    raise ValueError(f'checkpoint step {step} in {directory} holds another {key} layout '
                     f'(extra {extra[:3]}, missing {missing[:3]}): use another --workdir')
  # A field with no arrays that the checkpoint lacks (the training pair pool when off, in a
  # checkpoint written before it existed) keeps its empty value; the rest is restored.
  fields = {name: getattr(abstract_state, name) for name in abstract_state.__dataclass_fields__
            if abstract_state.__dataclass_fields__[name].metadata.get('pytree_node', True)}
  target = {name: value for name, value in fields.items()
            if name in saved or jax.tree.leaves(value)}
  try:
    restored = manager.restore(step, args=ocp.args.StandardRestore(target))
  except Exception as e:  # Shapes were checked against config.json: the files are damaged.
    raise unreadable_checkpoint(directory, step, e) from e
  return abstract_state.replace(**restored)


# Fields that decide the shapes in a checkpoint: a resumed run must keep them.
_SHAPE_FIELDS = ('generator.num_blocks', 'generator.features', 'generator.scale',
                 'discriminator.features', 'discriminator.dense_features',
                 'loss.adversarial_weight', 'data.hr_crop_size', 'degradation.pool_size')


def check_resumable(config, workdir: str):
  """Before touching a workdir that holds checkpoints, checks the config still fits them."""
  if not os.path.isdir(os.path.join(workdir, CHECKPOINTS)) or not os.path.exists(
      os.path.join(workdir, CONFIG_FILE)):
    return
  saved = load_config(workdir)
  for field in _SHAPE_FIELDS:
    section, key = field.split('.')
    # A field that an earlier version's config.json lacks had its default's meaning then.
    old, new = saved.get(section, {}).get(key, 0), config[section].get(key, 0)
    if isinstance(old, (list, tuple)):
      old, new = list(old), list(new)
    if field == 'loss.adversarial_weight':
      old, new = bool(old), bool(new)  # Only whether D exists matters.
    if old != new:
      raise ValueError(
          f'{workdir} holds checkpoints of a run with {field}={old}, but this config has '
          f'{new}: use another --workdir, or the same {field} to resume')


class BestCheckpoint:
  """WORKDIR/best/: the generator at the best evaluation so far, and its record.

  The loop decides what is best; this keeps it. `record` is None or
  {'step', 'metric', 'dataset', 'value'}. Call `save` on every process (Orbax writes
  collectively); the record is written by process 0 only.
  """

  def __init__(self, workdir: str):
    self.directory = os.path.join(workdir, BEST)
    self.record_path = os.path.join(self.directory, BEST_RECORD)
    self._manager = checkpoint_manager(self.directory, keep=1)
    self.record = None
    if os.path.exists(self.record_path):
      with open(self.record_path) as f:
        self.record = json.load(f)

  def save(self, step: int, generator: dict, record: dict):
    """generator: {'g_params', 'g_batch_stats', 'g_ema_params'} as arrays."""
    self._manager.save(step, args=ocp.args.StandardSave(generator), force=True)
    self._manager.wait_until_finished()
    self.record = {'step': step, **record}
    if jax.process_index() == 0:
      write_json(self.record_path, self.record)

  def close(self):
    self._manager.wait_until_finished()
    self._manager.close()
