"""The demo page: what it computes (no browser), then the page itself in headless Chromium."""

import os
import shutil
import socket
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from srgan_jax import demo, evaluate, images, model_file, upscale
from tests.conftest import REPO

CHROMIUM = '/usr/bin/chromium'


@pytest.fixture(scope='module')
def tiny_model(tmp_path_factory):
  """A model file of the tests' small G with random weights."""
  from configs import test as test_config
  from srgan_jax.models import build
  g_config = test_config.get_config().generator
  generator = build.generator_from_config(g_config, jnp.float32)
  variables = generator.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 3)))
  path = str(tmp_path_factory.mktemp('model') / 'tiny.npz')
  model_file.write(path, g_config, variables, step=7, data='test')
  return path


def _photo(path, shape=(24, 30, 3), seed=0):
  Image.fromarray(np.random.default_rng(seed).integers(0, 256, shape).astype(np.uint8)).save(path)
  return str(path)


def _cli_output(model, photo, folder):
  assert upscale.main([f'--model={model}', photo, f'--output={folder}']) == 0
  return images.read_rgb(os.path.join(folder, os.path.splitext(os.path.basename(photo))[0]
                                      + '_x4.png'))


def test_the_page_gives_the_command_lines_pixels_and_says_what_is_wrong(tiny_model, tmp_path):
  page = demo.Page({'tiny': tiny_model}, max_pixels=40 * 40, tile=16, output_dir=str(tmp_path))
  photo = _photo(tmp_path / 'photo.png')
  bicubic, sr, output, status = page.run(photo, 'tiny')
  np.testing.assert_array_equal(images.read_rgb(output), _cli_output(tiny_model, photo,
                                                                     str(tmp_path / 'cli')))
  np.testing.assert_array_equal(sr, images.read_rgb(output))
  assert bicubic.shape == sr.shape == (96, 120, 3)
  assert 'photo.png: 30x24 -> 120x96 with tiny in' in status
  whole = open(photo, 'rb').read()
  (tmp_path / 'cut.png').write_bytes(whole[:len(whole) // 2])
  with pytest.raises(ValueError, match='cannot read cut.png'):
    page.run(str(tmp_path / 'cut.png'), 'tiny')
  big = _photo(tmp_path / 'big.png', (41, 40, 3))
  with pytest.raises(ValueError, match="big.png is 40x41 = 1,640 pixels, over this page's "
                                       "limit of 1,600 \\(--max_pixels\\)"):
    page.run(big, 'tiny')
  # The page still works after both.
  assert page.run(photo, 'tiny')[1].shape == (96, 120, 3)


def test_without_a_model_the_demo_says_so(monkeypatch, tmp_path):
  monkeypatch.setattr(model_file, 'PRETRAINED_DIR', str(tmp_path))
  with pytest.raises(SystemExit):
    demo.main(['--port=1'])


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _browser_or_skip():
  missing = [what for what, ok in (('Debian chromium at ' + CHROMIUM, os.path.exists(CHROMIUM)),
                                   ('playwright', _importable('playwright')),
                                   ('gradio', _importable('gradio'))) if not ok]
  if missing:
    message = f'the browser test needs {", ".join(missing)} (.ci/run installs them)'
    if os.environ.get('CI', '').lower() == 'true':
      pytest.fail(message)
    pytest.skip(message)


def _importable(name):
  import importlib.util
  return importlib.util.find_spec(name) is not None


@pytest.mark.slow
def test_the_page_in_a_browser(tiny_model, tmp_path):
  """Headless Chromium: upload a PNG, download the result (4x, the CLI's pixels); a
  truncated file shows the error; a third, good upload still works."""
  _browser_or_skip()
  from playwright.sync_api import sync_playwright
  port = _free_port()
  server = subprocess.Popen(
      [sys.executable, '-m', 'srgan_jax.demo', f'--model={tiny_model}', f'--port={port}',
       '--tile=16'], cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO, GRADIO_ANALYTICS_ENABLED='False'),
      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  good = _photo(tmp_path / 'good.png')
  other = _photo(tmp_path / 'other.png', (20, 16, 3), seed=1)
  whole = open(good, 'rb').read()
  (tmp_path / 'truncated.png').write_bytes(whole[:len(whole) // 2])
  try:
    url = f'http://127.0.0.1:{port}'
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
      try:
        socket.create_connection(('127.0.0.1', port), timeout=1).close()
        break
      except OSError:
        assert server.poll() is None, server.stdout.read()[-3000:]
        time.sleep(0.5)
    with sync_playwright() as p:
      browser = p.chromium.launch(executable_path=CHROMIUM, args=[
          '--no-sandbox', '--disable-gpu', '--disable-background-networking',
          '--disable-component-update', '--disable-sync', '--no-first-run'])
      page = browser.new_page(accept_downloads=True)
      page.goto(url)

      def upscale_in_page(path):
        page.locator('#photo input[type=file]').set_input_files(path)
        page.locator(f'#photo td[aria-label="{os.path.basename(path)}"]').wait_for(timeout=30_000)
        page.get_by_role('button', name='Upscale').click()

      def clear_upload():
        # The upload's own clear (its X). The drop zone is rebuilt after it, so a file set
        # before the old file's row is gone would go to an input that is being replaced.
        page.locator('#photo').get_by_label('Clear').click()
        page.locator('#photo td').first.wait_for(state='detached', timeout=30_000)

      def download(name):
        page.locator(f'#download td[aria-label="{name}"]').wait_for(timeout=120_000)
        with page.expect_download() as info:
          page.locator('#download a[data-testid="download-link"]').click()
        target = str(tmp_path / 'downloads' / name)
        info.value.save_as(target)
        return images.read_rgb(target)

      upscale_in_page(good)
      got = download('good_x4.png')
      assert got.shape == (96, 120, 3)
      np.testing.assert_array_equal(got, _cli_output(tiny_model, good, str(tmp_path / 'cli')))
      page.locator('#status', has_text='good.png: 30x24 -> 120x96').wait_for(timeout=30_000)
      page.screenshot(path=str(tmp_path / 'page.png'))

      clear_upload()
      upscale_in_page(str(tmp_path / 'truncated.png'))
      page.get_by_text('cannot read truncated.png').first.wait_for(timeout=60_000)

      clear_upload()
      upscale_in_page(other)
      assert download('other_x4.png').shape == (80, 64, 3)
      browser.close()
  finally:
    server.terminate()
    try:
      server.wait(timeout=20)
    except subprocess.TimeoutExpired:
      server.kill()


def test_upscale_without_a_model_uses_the_pretrained_srresnet(tiny_model, tmp_path, monkeypatch):
  """No --model: pretrained/srresnet_x4.npz, the same pixels as naming that file; a name
  picks a pretrained file; a missing one is named."""
  monkeypatch.setattr(model_file, 'PRETRAINED_DIR', str(tmp_path / 'pretrained'))
  (tmp_path / 'pretrained').mkdir()
  shutil.copy(tiny_model, tmp_path / 'pretrained' / 'srresnet_x4.npz')
  photo = _photo(tmp_path / 'photo.png')
  monkeypatch.chdir(tmp_path)
  assert upscale.main([photo]) == 0  # Into ./upscaled/.
  default = images.read_rgb(str(tmp_path / 'upscaled' / 'photo_x4.png'))
  named = _cli_output(str(tmp_path / 'pretrained' / 'srresnet_x4.npz'), photo,
                      str(tmp_path / 'named'))
  np.testing.assert_array_equal(default, named)
  np.testing.assert_array_equal(_cli_output('srresnet', photo, str(tmp_path / 'by_name')), named)
  # The page opens on a model given on its command line, and lists a pretrained one once.
  pretrained = str(tmp_path / 'pretrained' / 'srresnet_x4.npz')
  assert list(demo.model_choices([tiny_model], []).items()) == [
      (tiny_model, tiny_model), ('srresnet (pretrained)', pretrained)]
  assert demo.model_choices(['srresnet'], []) == {'srresnet': pretrained}
  assert demo.model_choices([], []) == {'srresnet (pretrained)': pretrained}
  # The model for photos says what it is for.
  shutil.copy(tiny_model, tmp_path / 'pretrained' / 'real_x4.npz')
  assert demo.model_choices([], [])['real (pretrained: for JPEGs, phone and web photos)'] == \
      str(tmp_path / 'pretrained' / 'real_x4.npz')
  # evaluate takes the name as a model file, not as a run folder to write into.
  (tmp_path / 'Mini' / 'HR').mkdir(parents=True)
  Image.fromarray(np.tile(images.read_rgb(photo), (2, 2, 1))).save(tmp_path / 'Mini' / 'HR' / 'a.png')
  assert evaluate.main(['--model=srresnet', f'--data={tmp_path}/Mini', '--metrics=psnr_y']) == 0
  assert not (tmp_path / 'pretrained' / 'eval').exists()
  with pytest.raises(SystemExit):
    upscale.main(['--model=srgan_mse', photo])
  with pytest.raises(FileNotFoundError, match="pretrained model 'srgan_mse' is not at"):
    model_file.resolve('srgan_mse')
