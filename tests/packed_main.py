"""main.py with the train state packed, as accelerators pass it (the CPU passes the pytree).

  python tests/packed_main.py --config=... --workdir=...   (main.py's flags)
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app

import main
from srgan_jax import train_step

if __name__ == '__main__':
  train_step.packs_state = lambda: True
  app.run(main.main)
