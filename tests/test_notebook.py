"""Runs notebooks/colab_tpu.ipynb top to bottom on the CPU with the test config."""

import os

import pytest

from tests.conftest import REPO

nbformat = pytest.importorskip('nbformat')
nbclient = pytest.importorskip('nbclient')


@pytest.mark.slow
def test_colab_notebook_runs_on_cpu(tmp_path):
  path = os.path.join(REPO, 'notebooks', 'colab_tpu.ipynb')
  notebook = nbformat.read(path, as_version=4)
  parameters = notebook.cells[1]
  assert parameters.source.startswith('# Parameters')
  parameters.source += (f"\nCONFIG = 'configs/test.py'\nWORKDIR = {str(tmp_path / 'run')!r}"
                        "\nOVERRIDES = []\nFETCH_VGG = False")
  client = nbclient.NotebookClient(notebook, timeout=600, kernel_name='python3',
                                   resources={'metadata': {'path': os.path.join(REPO, 'notebooks')}})
  client.execute()
  outputs = '\n'.join(o.get('text', '') for cell in notebook.cells if cell.cell_type == 'code'
                      for o in cell.get('outputs', []))
  assert 'cpu' in outputs and 'devices:' in outputs
  assert 'comparison images' in outputs
  assert os.path.exists(tmp_path / 'run' / 'checkpoints' / '6')
  assert any(o.get('output_type') == 'display_data' for o in notebook.cells[5].outputs)
