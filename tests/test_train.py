import functools
import json
import logging as std_logging
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

from srgan_jax import degradation, losses, run_folder, train, train_step
from srgan_jax.models import build, vgg
from tests.conftest import REPO, phase_means_by_scipy, run_python, train_straight_and_resumed


def _init(config, seed=0):
  return train_step.init_state(config, build.build_models(config), jax.random.PRNGKey(seed))


def _step(config, adversarial, vgg_source='random'):
  return train_step.make_train_step(config, build.build_models(config), adversarial, vgg_source)


def _fixed_batch(config, seed=0):
  crop = config.data.hr_crop_size
  rng = np.random.default_rng(seed)
  # Smooth random images: learnable in a few steps, unlike white noise.
  coarse = rng.integers(0, 256, (config.train.batch_size, crop // 8, crop // 8, 3)).astype(np.float64)
  hr = np.stack([degradation.resize_numpy(c, 8.0) for c in coarse])
  return jnp.asarray(np.clip(np.round(hr), 0, 255).astype(np.uint8))


def _run_steps(config, adversarial, steps, vgg_params=None, vgg_source='random'):
  state = jax.jit(functools.partial(_init, config))()
  step = jax.jit(_step(config, adversarial, vgg_source))
  hr = _fixed_batch(config)
  history = []
  for _ in range(steps):
    state, metrics = step(state, hr, vgg_params if vgg_params is not None else {})
    history.append(jax.device_get(metrics))
  return state, history


def test_srresnet_step_lowers_pixel_loss(tiny_config):
  tiny_config.loss.adversarial_weight = 0.0
  state, history = _run_steps(tiny_config, False, 30)
  assert history[-1]['content_loss'] < 0.5 * history[0]['content_loss']
  assert int(state.step) == 30
  assert state.d_params == {}


def test_perceptual_loss_of_several_layers_is_their_weighted_sum(tiny_config):
  """Real-ESRGAN's form of the content loss (L1 on several VGG19 layers before their ReLU,
  weighted, plus an L1 pixel term) and the phase term, as the step computes them, against
  the same sum taken layer by layer in numpy from single-layer VGG19s (each checked against
  Keras in test_vgg) and the phase means by scipy."""
  config = tiny_config
  config.loss.content = 'vgg12,vgg22,vgg34'
  config.loss.vgg_layer_weights = (0.1, 0.5, 1.0)
  config.loss.criterion = 'l1'
  config.loss.vgg_after_activation = False
  config.loss.vgg_feature_scale = 1 / 50
  config.loss.pixel_weight = 0.3
  config.loss.phase_weight = 2.0
  config.loss.adversarial_weight = 0.0
  models = build.build_models(config)
  state = _init(config)
  params = vgg.random_params(0)
  hr = _fixed_batch(config)
  _, metrics = jax.jit(_step(config, False))(state, hr, params)

  lr = degradation.downscale_uint8_batch(hr, 4, True)
  sr, _ = models.generator.apply({'params': state.g_params, 'batch_stats': state.g_batch_stats},
                                 lr, train=True, mutable=['batch_stats'])
  target = hr.astype(jnp.float32) / 127.5 - 1
  content = 0.0
  for layer, weight in (('conv1_2', 0.1), ('conv2_2', 0.5), ('conv3_4', 1.0)):
    features = vgg.VGG19Features((layer,), after_activation=False)
    (a,), (b,) = (features.apply({'params': params}, vgg.preprocess(x, 'random'))
                  for x in (sr, target))
    content += weight * np.mean(np.abs(np.asarray(a, np.float64) - np.asarray(b)) / 50)
  pixel = np.mean(np.abs(np.asarray(sr, np.float64) - np.asarray(target)))
  phase = np.mean([np.square(127.5 * (phase_means_by_scipy(a) - phase_means_by_scipy(b)))
                   for a, b in zip(np.asarray(sr), np.asarray(target))])
  assert float(metrics['content_loss']) == pytest.approx(content, rel=1e-4)
  assert float(metrics['pixel_loss']) == pytest.approx(pixel, rel=1e-4)
  assert float(metrics['phase_loss']) == pytest.approx(phase, rel=1e-3)
  assert float(metrics['g_loss']) == pytest.approx(content + 0.3 * pixel + 2 * phase, rel=1e-4)


@pytest.mark.slow
def test_srgan_step_lowers_content_and_discriminator_losses(tiny_config):
  tiny_config.loss.content = 'vgg22'
  params = vgg.random_params(0)
  _, history = _run_steps(tiny_config, True, 30, params)
  first, last = history[0], history[-1]
  assert last['content_loss'] < 0.7 * first['content_loss']
  assert last['d_loss'] < first['d_loss']
  assert set(first) >= {'d_real', 'd_fake', 'adversarial_loss', 'pixel_mse', 'learning_rate'}


@pytest.mark.slow
def test_regrouped_conv_forms_train_like_direct_ones(tiny_config, monkeypatch):
  """subpixel4 changes how G's output conv runs, not what a step computes.

  One step's gradients are compared tightly (SGD at rate 1 makes each update the
  gradient itself); losses after a few Adam steps at a tolerance float32 keeps: the forms
  sum in another order, and Adam's normalised steps carry that rounding on.
  """
  tiny_config.loss.content = 'vgg22'
  params = vgg.random_params(0)
  histories, updates = {}, {}
  for form in ('direct', 'subpixel4'):
    tiny_config.generator.output_conv = form
    _, histories[form] = _run_steps(tiny_config, True, 3, params)
    with monkeypatch.context() as patch:
      patch.setattr(train_step, 'build_optimizer', lambda opt: optax.sgd(1.0))
      before = _init(tiny_config)
      after, _ = jax.jit(_step(tiny_config, True))(before, _fixed_batch(tiny_config), params)
    updates[form] = jax.tree.map(lambda a, b: np.asarray(a) - np.asarray(b),
                                 (after.g_params, after.d_params),
                                 (before.g_params, before.d_params))
  for got, want in zip(histories['subpixel4'], histories['direct']):
    for name in ('g_loss', 'd_loss', 'content_loss', 'adversarial_loss'):
      np.testing.assert_allclose(got[name], want[name], rtol=2e-3, err_msg=name)
  paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(updates['direct'])]
  for path, got, want in zip(paths, jax.tree.leaves(updates['subpixel4']),
                             jax.tree.leaves(updates['direct'])):
    assert np.abs(want).max() > 0, path  # Every parameter has a gradient (no dead biases).
    # Each leaf's relative L2 error: float32 sums in another order, through BatchNorm's
    # backward, move single entries by up to 3% of their own size and a whole leaf by up
    # to 2.3e-3 (a PReLU slope, jax 0.6.2); a wrong kernel tap would be off by the
    # gradient itself.
    error = np.linalg.norm(got - want) / np.linalg.norm(want)
    assert error < 1e-2, (path, error)


@pytest.mark.slow
def test_single_forward_step_equals_direct_gradient(tiny_config):
  """The vjp-reuse step gives G the gradient of the whole loss, D updated first."""
  config = tiny_config
  state = _init(config)
  # Plain SGD makes each update the gradient itself (Adam's first step is its sign).
  sgd = optax.sgd(1.0)
  state = state.replace(g_tx=sgd, d_tx=sgd, g_opt_state=sgd.init(state.g_params),
                        d_opt_state=sgd.init(state.d_params))
  hr_uint8 = _fixed_batch(config)
  new_state, _ = jax.jit(_step(config, True))(state, hr_uint8, {})

  models = build.build_models(config)
  generator, discriminator = models.generator, models.discriminator
  hr = hr_uint8.astype(jnp.float32) / 127.5 - 1
  lr = degradation.downscale_uint8_batch(hr_uint8, 4)
  sr_of = lambda p: generator.apply({'params': p, 'batch_stats': state.g_batch_stats}, lr,
                                    train=True, mutable=['batch_stats'])[0]
  d_apply = lambda p, bs, x: discriminator.apply({'params': p, 'batch_stats': bs}, x, train=True,
                                                 mutable=['batch_stats'])
  sr = sr_of(state.g_params)

  def d_loss(p):
    real, upd = d_apply(p, state.d_batch_stats, hr)
    fake, upd = d_apply(p, upd['batch_stats'], sr)
    return losses.discriminator_bce(real, fake), upd['batch_stats']

  d_grads, d_bs = jax.grad(d_loss, has_aux=True)(state.d_params)
  d_updates, _ = state.d_tx.update(d_grads, state.d_opt_state, state.d_params)
  d_params = optax.apply_updates(state.d_params, d_updates)

  def g_loss(p):
    out = sr_of(p)
    fake, _ = d_apply(d_params, d_bs, out)
    return losses.pixel_mse(out, hr) + 1e-3 * losses.generator_adversarial(fake)

  g_grads = jax.grad(g_loss)(state.g_params)
  g_updates, _ = state.g_tx.update(g_grads, state.g_opt_state, state.g_params)
  expected = optax.apply_updates(state.g_params, g_updates)
  for a, b in zip(jax.tree.leaves(new_state.g_params), jax.tree.leaves(expected)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)
  for a, b in zip(jax.tree.leaves(new_state.d_params), jax.tree.leaves(d_params)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)
  moved = sum(float(np.abs(np.asarray(a) - np.asarray(b)).sum())
              for a, b in zip(jax.tree.leaves(expected), jax.tree.leaves(state.g_params)))
  assert moved > 1e-3  # The comparison is between real updates, not two no-ops.


def test_ema_follows_params(tiny_config):
  tiny_config.train.ema_decay = 0.5
  tiny_config.loss.adversarial_weight = 0.0
  state = _init(tiny_config)
  new, _ = jax.jit(_step(tiny_config, False))(state, _fixed_batch(tiny_config), {})
  for e, p0, p1 in zip(*(jax.tree.leaves(t) for t in
                         (new.g_ema_params, state.g_params, new.g_params))):
    np.testing.assert_allclose(np.asarray(e), 0.5 * np.asarray(p0) + 0.5 * np.asarray(p1), atol=1e-7)


@pytest.mark.slow
def test_checkpoint_round_trip(tiny_config, tmp_path):
  state, _ = _run_steps(tiny_config, True, 2)
  with run_folder.checkpoint_manager(str(tmp_path / 'ckpt'), 2) as manager:
    manager.save(2, args=ocp.args.StandardSave(state))
    manager.wait_until_finished()
    abstract = jax.eval_shape(lambda: _init(tiny_config))
    restored = manager.restore(2, args=ocp.args.StandardRestore(abstract))
  # Static fields (the optimisers) come from the target; compare the arrays by path.
  paths = lambda t: [p for p, _ in jax.tree_util.tree_leaves_with_path(t)]
  assert paths(restored) == paths(state)
  for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(state)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def _params(state):
  return [np.asarray(x) for x in jax.tree.leaves(jax.device_get(state))]


@pytest.mark.parametrize('packed', [False, True])
@pytest.mark.slow
def test_resumed_run_ends_with_the_same_parameters(tiny_config, tmp_path, caplog, packed,
                                                   monkeypatch):
  tiny_config.eval.sets = ()
  # The state as the CPU passes it (a pytree) and as accelerators do (packed).
  monkeypatch.setattr(train_step, 'packs_state', lambda: packed)
  tiny_config.train.num_steps = 8
  tiny_config.train.checkpoint_every_steps = 4
  straight, resumed = train_straight_and_resumed(tiny_config, str(tmp_path), stop_at=4)
  for a, b in zip(_params(straight), _params(resumed)):
    np.testing.assert_array_equal(a, b)
  steps = [json.loads(l)['step'] for l in open(tmp_path / 'resumed' / 'metrics.jsonl')]
  assert steps == [2, 4, 6, 8]
  # Run again once finished: said, and nothing changes.
  with caplog.at_level(std_logging.WARNING):
    again = train.train_and_evaluate(tiny_config, str(tmp_path / 'resumed'))
  assert 'is already at step 8, config.train.num_steps is 8: nothing to train' in caplog.text
  for a, b in zip(_params(straight), _params(again)):
    np.testing.assert_array_equal(a, b)
  assert [json.loads(l)['step'] for l in open(tmp_path / 'resumed' / 'metrics.jsonl')] == steps


@pytest.mark.parametrize('packed', [False, True])
@pytest.mark.slow
def test_nan_stops_with_step_and_keeps_last_good_checkpoint(tiny_config, tmp_path, packed,
                                                            monkeypatch):
  tiny_config.eval.sets = ()
  monkeypatch.setattr(train_step, 'packs_state', lambda: packed)
  tiny_config.train.num_steps = 12
  tiny_config.train.checkpoint_every_steps = 4
  tiny_config.train.log_every_steps = 1
  # From step 4 the learning rate is 1e30: the parameters overflow within a step or two.
  tiny_config.optimizer.lr_decay_steps = (4,)
  tiny_config.optimizer.lr_decay_factor = 1e33
  with pytest.raises(train.NonFiniteLossError, match=r'not finite at step (5|6|7)\b'):
    train.train_and_evaluate(tiny_config, str(tmp_path))
  tree, step = run_folder.restore_raw(str(tmp_path))
  assert step == 4
  assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(tree['g_params']))


# When one read fails, Orbax closes its event loop while its other reads are still under
# way; their late callbacks then raise "Event loop is closed", which Python only reports.
@pytest.mark.filterwarnings('ignore::pytest.PytestUnraisableExceptionWarning')
@pytest.mark.slow
def test_damaged_checkpoint_is_named_with_the_step_to_fall_back_to(tiny_config, tmp_path):
  tiny_config.eval.sets = ()
  tiny_config.train.num_steps = 6
  tiny_config.train.checkpoint_every_steps = 3
  train.train_and_evaluate(tiny_config, str(tmp_path))
  # Cut every data file of step 6 short, as a full disk or a bad copy would.
  damaged = {}
  for root, _, files in os.walk(tmp_path / 'checkpoints' / '6'):
    if os.path.basename(root) == 'd':
      for name in files:
        path = os.path.join(root, name)
        os.truncate(path, 10)
        damaged[path] = 10
  assert damaged
  message = (r'checkpoint step 6 in .*checkpoints cannot be read \(.*6/default.*\): if its '
             r'files are damaged, move '
             r'.*checkpoints/6 out of .*checkpoints \(nothing is deleted\) to use step 3')
  tiny_config.train.num_steps = 9
  with pytest.raises(run_folder.UnreadableCheckpointError, match=message):
    train.train_and_evaluate(tiny_config, str(tmp_path))
  with pytest.raises(run_folder.UnreadableCheckpointError, match=message):
    run_folder.restore_raw(str(tmp_path))
  assert {p: os.path.getsize(p) for p in damaged} == damaged  # Left as it was found.
  bare = run_folder.unreadable_checkpoint(str(tmp_path / 'checkpoints'), 6, KeyError())
  assert 'cannot be read (KeyError: ): if its files are damaged' in str(bare)
  # The remedy the message gives works: the run goes on from step 3.
  os.rename(tmp_path / 'checkpoints' / '6', tmp_path / 'step6_damaged')
  assert int(train.train_and_evaluate(tiny_config, str(tmp_path)).step) == 9
  assert run_folder.locate_checkpoint(str(tmp_path))[1] == 9


@pytest.mark.parametrize('checkpoint_every_steps', [1, 3])
@pytest.mark.slow
def test_a_stop_request_saves_once_and_stops(tiny_config, tmp_path, monkeypatch,
                                             checkpoint_every_steps):
  """A stop asked for during a step that checkpoints anyway (every 1) or not (every 3)."""
  class RequestedAtOnce(train._StopRequest):
    def __enter__(self):
      super().__enter__()
      self.requested = True  # As if SIGTERM came during the first step.
      return self

  monkeypatch.setattr(train, '_StopRequest', RequestedAtOnce)
  tiny_config.eval.sets = ()
  tiny_config.train.num_steps = 6
  tiny_config.train.checkpoint_every_steps = checkpoint_every_steps
  assert int(train.train_and_evaluate(tiny_config, str(tmp_path)).step) == 1
  assert os.listdir(tmp_path / 'checkpoints') == ['1']


def check_stop_request_signals():
  """SIGTERM asks for a stop, and so does Ctrl-C, a second of which interrupts; with SIGINT
  ignored (a job started in the background) Ctrl-C stays ignored. Whatever handlers the
  process had are found again after each stop request, and at the end."""
  import signal
  found = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
  try:
    signal.signal(signal.SIGINT, signal.default_int_handler)
    with train._StopRequest() as stop:
      assert not stop.requested
      signal.raise_signal(signal.SIGTERM)
      assert stop.requested  # The loop saves and stops after the current step.
      with pytest.raises(KeyboardInterrupt):
        signal.raise_signal(signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # Restored on exit.
    assert signal.getsignal(signal.SIGTERM) is found[1]

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with train._StopRequest() as stop:
      signal.raise_signal(signal.SIGINT)  # Nothing happens.
      assert not stop.requested
      signal.raise_signal(signal.SIGTERM)
      assert stop.requested
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
  finally:
    signal.signal(signal.SIGINT, found[0])
  assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == found


def test_first_signal_asks_for_a_stop_and_a_second_ctrl_c_interrupts():
  check_stop_request_signals()


def test_stop_request_signals_in_a_process_started_with_sigint_ignored():
  """As `nohup ... &`, cron and many CI runners start the suite."""
  script = ('import signal; assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN; '
            'from tests.test_train import check_stop_request_signals as check; check(); '
            'print("ok")')
  env = dict(os.environ, PYTHONPATH=REPO)
  env.pop('XLA_FLAGS', None)
  # The shell ignores SIGINT, and exec keeps a signal ignored.
  result = subprocess.run(['sh', '-c', 'trap "" INT; exec "$0" "$@"', sys.executable, '-c',
                           script], cwd=REPO, env=env, text=True, capture_output=True,
                          timeout=300)
  assert result.returncode == 0 and 'ok' in result.stdout, result.stderr[-2000:]


@pytest.mark.parametrize('field,value,message', [
    ('train.log_every_steps', 0, 'train.log_every_steps must be at least 1, got 0'),
    ('train.checkpoint_every_steps', 0, 'checkpoint_every_steps must be at least 1'),
    ('train.batch_size', 0, 'train.batch_size must be at least 1, got 0'),
    ('eval.every_steps', -5, 'eval.every_steps must be at least 0, got -5'),
    ('loss.adversarial_weight', -1e-3, 'adversarial_weight must be at least 0'),
    ('generator.scale', 3, 'scale must be 2, 4 or 8, got 3'),
    ('data.hr_crop_size', 30, r'hr_crop_size \(30\) must be a multiple of the scale \(4\)'),
    ('loss.content', 'vgg23x', "loss.content must be 'pixel' or VGG layers.*'vgg23x'"),
    ('loss.content', 'vgg54,vgg61', "loss.content must be .*names unknown or repeated"),
    ('loss.vgg_layer_weights', (0.1, 1.0), r'needs one weight per layer of loss.content'),
    ('loss.criterion', 'L2', "loss.criterion must be one of .*'L2'"),
    ('loss.pixel_weight', 1.0, "with loss.content='pixel' set loss.content_weight instead"),
    ('loss.pixel_weight', -1.0, 'pixel_weight must be at least 0'),
    ('loss.phase_weight', -1.0, 'phase_weight must be at least 0'),
    ('train.ema_decay', 1.0, r'ema_decay must be in \[0, 1\)'),
    ('eval.best_metric', 'psnr', "best_metric must be one of .*'psnr'"),
    ('generator.output_conv', 'subpix', "output_conv must be one of .*'subpix'"),
    ('train.time_budget_s', -1, 'time_budget_s must be at least 0, got -1'),
])
def test_settings_that_cannot_work_are_named_before_compiling(tiny_config, field, value,
                                                              message):
  train.validate_config(tiny_config)  # The test config itself is fine.
  section, key = field.split('.')
  tiny_config[section][key] = value
  with pytest.raises(ValueError, match=message):
    train.validate_config(tiny_config)


def test_url_workdir_is_refused_before_anything_is_written(tiny_config, tmp_path,
                                                           monkeypatch):
  monkeypatch.chdir(tmp_path)  # os.path.abspath would have made ./gs:/bucket/run here.
  with pytest.raises(ValueError, match='gs://bucket/run is a URL.*gcsfuse'):
    train.train_and_evaluate(tiny_config, 'gs://bucket/run')
  assert os.listdir(tmp_path) == []


def test_workdir_that_is_a_file_is_refused_and_left_as_it_is(tiny_config, tmp_path):
  (tmp_path / 'run').write_text('notes')
  with pytest.raises(NotADirectoryError, match='run is a file, not a folder'):
    train.train_and_evaluate(tiny_config, str(tmp_path / 'run'))
  assert (tmp_path / 'run').read_text() == 'notes'


def test_damaged_run_config_is_named_and_left_as_it_is(tiny_config, tmp_path):
  (tmp_path / 'checkpoints').mkdir()
  (tmp_path / 'config.json').write_text('{"generator": {"num_bl')
  with pytest.raises(ValueError, match=r'config\.json is not valid JSON'):
    run_folder.load_config(str(tmp_path))
  with pytest.raises(ValueError, match=r'config\.json is not valid JSON'):
    train.train_and_evaluate(tiny_config, str(tmp_path))  # Resuming checks the saved config.
  assert (tmp_path / 'config.json').read_text() == '{"generator": {"num_bl'


@pytest.mark.slow
def test_init_from_copies_the_generator(tiny_config, tmp_path):
  tiny_config.eval.sets = ()
  tiny_config.loss.adversarial_weight = 0.0
  tiny_config.train.num_steps = 2
  pretrained = train.train_and_evaluate(tiny_config, str(tmp_path / 'srresnet'))
  state = _init(tiny_config, seed=5)
  copied = train.init_generator_from(state, str(tmp_path / 'srresnet'))
  for a, b in zip(_params(copied.g_params), _params(pretrained.g_params)):
    np.testing.assert_array_equal(a, b)
  # A model file of that run (what pretrained/ ships) gives the same generator.
  from srgan_jax import export
  export.export_run(str(tmp_path / 'srresnet'), str(tmp_path / 'g.npz'))
  from_file = train.init_generator_from(state, str(tmp_path / 'g.npz'))
  for key in ('g_params', 'g_batch_stats', 'g_ema_params'):
    for a, b in zip(_params(getattr(from_file, key)), _params(getattr(copied, key))):
      np.testing.assert_array_equal(a, b)
  tiny_config.init_from = str(tmp_path / 'g.npz')
  tiny_config.loss.adversarial_weight = 1e-3
  tiny_config.train.num_steps = 1
  resumed = train.train_and_evaluate(tiny_config, str(tmp_path / 'srgan'))
  assert int(resumed.step) == 1


def test_missing_init_from_stops_the_run_before_the_data_is_read(tiny_config, tmp_path):
  tiny_config.init_from = str(tmp_path / 'no_such_run')
  tiny_config.data.source = f'folder:{tmp_path / "no_such_data"}'  # Would fail once read.
  with pytest.raises(FileNotFoundError, match='no checkpoint folder at .*no_such_run'):
    train.train_and_evaluate(tiny_config, str(tmp_path / 'run'))


def test_missing_eval_set_stops_the_run_before_the_data_is_read(tiny_config, tmp_path):
  tiny_config.eval.sets = (str(tmp_path / 'no_such_set'),)
  tiny_config.data.source = f'folder:{tmp_path / "no_such_data"}'
  with pytest.raises(FileNotFoundError, match='no such file or folder: .*no_such_set'):
    train.train_and_evaluate(tiny_config, str(tmp_path / 'run'))


def test_set_up_errors_close_the_checkpoint_manager(tiny_config, tmp_path, monkeypatch):
  """A run that stops before its first step leaves no checkpoint manager open: its
  threads would outlive the error in a notebook that catches it."""
  closed = []
  make_manager = run_folder.checkpoint_manager

  def tracked_manager(directory, keep):
    manager = make_manager(directory, keep)
    close = manager.close
    manager.close = lambda: (closed.append(directory), close())
    return manager

  monkeypatch.setattr(run_folder, 'checkpoint_manager', tracked_manager)
  tiny_config.init_from = str(tmp_path / 'no_such_run')
  with pytest.raises(FileNotFoundError, match='no_such_run'):
    train.train_and_evaluate(tiny_config, str(tmp_path / 'run'))
  assert closed == [str(tmp_path / 'run' / 'checkpoints')]
  tiny_config.init_from = ''
  tiny_config.eval.sets = (str(tmp_path / 'no_such_set'),)
  with pytest.raises(FileNotFoundError, match='no_such_set'):
    train.train_and_evaluate(tiny_config, str(tmp_path / 'other_run'))
  assert closed[1:] == [str(tmp_path / 'other_run' / 'checkpoints')]


@pytest.mark.slow
def test_init_from_a_folder_without_checkpoint_fails(tiny_config, tmp_path):
  state = _init(tiny_config)
  (tmp_path / 'empty').mkdir()
  with pytest.raises(FileNotFoundError, match='holds no checkpoint'):
    train.init_generator_from(state, str(tmp_path / 'empty'))
  with pytest.raises(FileNotFoundError, match='no checkpoint folder'):
    train.init_generator_from(state, str(tmp_path / 'missing'))


@pytest.mark.slow
def test_eight_devices_match_one_device():
  results = {}
  for n in (1, 8):
    out = run_python(['tests/device_run.py', '3'],
                     {'XLA_FLAGS': f'--xla_force_host_platform_device_count={n}'})
    assert out.returncode == 0, out.stderr[-3000:]
    results[n] = json.loads(out.stdout.strip().splitlines()[-1])
  assert results[8]['devices'] == 8 and results[1]['devices'] == 1
  for one, eight in zip(results[1]['losses'], results[8]['losses']):
    for key in one:
      assert eight[key] == pytest.approx(one[key], rel=1e-4, abs=1e-6), key
  for a, b in zip(results[1]['params'], results[8]['params']):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_bfloat16_tracks_float32():
  runs = {}
  for dtype in ('float32', 'bfloat16'):
    out = run_python(['tests/device_run.py', '4', dtype])
    assert out.returncode == 0, out.stderr[-3000:]
    runs[dtype] = json.loads(out.stdout.strip().splitlines()[-1])['losses']
  for f32, bf16 in zip(runs['float32'], runs['bfloat16']):
    # bf16 keeps 8 bits of mantissa: losses agree to a few percent.
    assert bf16['g_loss'] == pytest.approx(f32['g_loss'], rel=0.05)
    assert bf16['d_loss'] == pytest.approx(f32['d_loss'], rel=0.05)
