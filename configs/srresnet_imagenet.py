"""SRResNet-MSE as the paper trained it: ImageNet photos, read from prepared records.

  python -m srgan_jax.prepare --source=folder:/data/imagenet/train --output=/data/imagenet_records
  python main.py --config=configs/srresnet_imagenet.py --workdir=runs/srresnet_imagenet \
      --config.data.source=records:/data/imagenet_records

The paper trained on 350 thousand ImageNet images (random 96x96 HR crops, batch 16, Adam
at 1e-4 for 10^6 steps). Those are about 200 GB decoded, so they are prepared once into
ArrayRecord shards (most ImageNet photos are smaller than the 480-pixel sub-images and stay
whole; those under 96 pixels are skipped) and read at random as training goes, each
process reading only its own rows: host memory stays at the read buffers, and step 0
starts within seconds, whatever the set's size. The SRGAN phase reads the same records:
configs/srgan.py with --config.data.source=records:DIR and --config.init_from=this run.
`SRGAN_JAX_RECORDS` sets the default folder. Expected: the paper's 32.05 dB / 0.9019 on
Set5 and 28.49 / 0.8184 on Set14 (x4). Measured: not yet run at this length.
"""

import os

from configs import srresnet


def get_config():
  config = srresnet.get_config()
  config.data.source = 'records:' + os.environ.get('SRGAN_JAX_RECORDS', 'records/imagenet')
  # Decoding per use: workers keep the step fed (benchmarks/input_pipeline.py measures the
  # rate per worker against what a GPU step consumes).
  config.data.num_workers = 8
  config.data.prefetch_batches = 2
  return config
