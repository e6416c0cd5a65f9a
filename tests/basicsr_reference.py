"""BasicSR 1.4.2's degradation modules, loaded by path as the references of
srgan_jax.real_degradation.

`import basicsr` would import every architecture and dataset, and its data package imports
`torchvision.transforms.functional_tensor`, which current torchvision no longer has (and
torchvision cannot load beside the CPU torch build the tests use). The three modules the
degradation needs are loaded from the installed package's files instead, with that one
import provided: `rgb_to_grayscale` as torchvision documents it (ITU-R 601-2 luma,
0.2989 R + 0.587 G + 0.114 B).

Skips (naming the install line) when torch, OpenCV or basicsr are not installed, and fails
under CI=true, where .ci/run installs them (`tests.conftest.import_reference`).
"""

import importlib.util
import os
import sys
import types

from tests.conftest import import_reference, reference_missing


def _stub_torchvision():
  if 'torchvision.transforms.functional_tensor' in sys.modules:
    return

  def rgb_to_grayscale(img, num_output_channels=1):
    r, g, b = img.unbind(dim=-3)
    gray = (0.2989 * r + 0.587 * g + 0.114 * b).to(img.dtype).unsqueeze(dim=-3)
    return gray.expand(img.shape) if num_output_channels == 3 else gray

  module = types.ModuleType('torchvision.transforms.functional_tensor')
  module.rgb_to_grayscale = rgb_to_grayscale
  sys.modules.setdefault('torchvision', types.ModuleType('torchvision'))
  sys.modules.setdefault('torchvision.transforms', types.ModuleType('torchvision.transforms'))
  sys.modules['torchvision.transforms.functional_tensor'] = module


def load(*relative_paths):
  """Modules of the installed basicsr by path, e.g. load('data/degradations.py')."""
  import_reference('torch')
  import_reference('cv2')
  spec = importlib.util.find_spec('basicsr')  # Found, not imported (see above).
  if spec is None:
    reference_missing('basicsr')
  root = list(spec.submodule_search_locations)[0]
  _stub_torchvision()
  modules = []
  for relative in relative_paths:
    name = 'basicsr_reference_' + relative.replace('/', '_')[:-3]
    if name not in sys.modules:
      module_spec = importlib.util.spec_from_file_location(name, os.path.join(root, relative))
      module = importlib.util.module_from_spec(module_spec)
      module_spec.loader.exec_module(module)
      sys.modules[name] = module
    modules.append(sys.modules[name])
  return modules if len(modules) > 1 else modules[0]
