"""Every field of a run, with its meaning and unit. Variants import this and override.

The defaults are the paper's SRGAN recipe (Ledig et al. 2017, x4) except where a field
says otherwise; `configs/srresnet.py` and `configs/srgan.py` are the two phases.
"""

import ml_collections

from srgan_jax import real_degradation


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()

  config.seed = 0  # Seeds parameter init, the per-step RNG and the data stream.
  # SRGAN phase: a run directory or checkpoint directory of an SRResNet run whose
  # generator (params, batch stats, EMA) initialises G, or a model file or pretrained
  # model's name (e.g. 'srresnet'). Empty: G starts from scratch.
  config.init_from = ''

  config.generator = ml_collections.ConfigDict()
  config.generator.num_blocks = 16  # Residual blocks in the SRResNet body.
  config.generator.features = 64  # Channels of the body convolutions.
  config.generator.scale = 4  # Upscaling factor: 2, 4 or 8 (repeated x2 pixel shuffle).
  # How the 9x9 output conv is computed (same params and results, speed only):
  # 'direct' on the HR grid; 'subpixel2' on the grid before the last pixel shuffle
  # (5x5, 4C -> 12 channels); 'subpixel4' on a grid 4x coarser than HR (3x3, 16C -> 48;
  # scale 4 or 8). subpixel4 made the paper-size steps faster on both a GPU and a CPU
  # (benchmarks/README.md); at scale 2 use 'subpixel2'.
  config.generator.output_conv = 'subpixel4'

  config.discriminator = ml_collections.ConfigDict()
  # Channels of the 8 conv layers; stride 2 on every second one.
  config.discriminator.features = (64, 64, 128, 128, 256, 256, 512, 512)
  config.discriminator.dense_features = 1024  # Width of the hidden dense layer.

  config.loss = ml_collections.ConfigDict()
  # Content loss: 'pixel' (on [-1, 1]) or VGG19 layers: 'vgg22', 'vgg54' (the paper's
  # phi_2,2 and phi_5,4), or several, e.g. 'vgg12,vgg22,vgg34,vgg44,vgg54' (Real-ESRGAN's).
  config.loss.content = 'vgg54'
  config.loss.content_weight = 1.0
  # One weight per VGG layer of `content`, e.g. (0.1, 0.1, 1, 1, 1); empty: 1 each.
  config.loss.vgg_layer_weights = ()
  # How content and pixel terms compare SR with HR: 'mse' (the paper) or 'l1' (ESRGAN,
  # Real-ESRGAN).
  config.loss.criterion = 'mse'
  # A pixel term beside a VGG content loss (ESRGAN and Real-ESRGAN keep one): it holds
  # colours, brightness and the pixel shuffle's 16 phases, which VGG features barely see.
  config.loss.pixel_weight = 0.0
  # Holds the x4 pixel shuffle's 16 output phases to HR's mean detail (losses.phase_loss):
  # VGG and D gradients, strided, otherwise drive them apart into a fine grid.
  config.loss.phase_weight = 0.0
  config.loss.adversarial_weight = 1e-3  # 0 turns the discriminator off (SRResNet).
  # Steps of content-only training (D frozen and untouched) before the GAN starts.
  config.loss.adversarial_start_step = 0
  config.loss.tv_weight = 0.0  # Total-variation weight on SR in [-1, 1].
  config.loss.vgg_feature_scale = 1 / 12.75  # Features are multiplied by this.
  config.loss.vgg_after_activation = True  # phi_i,j after its ReLU (paper) or before.

  config.vgg = ml_collections.ConfigDict()
  # Where the ImageNet weights came from: 'keras' or 'torchvision'
  # (`python -m srgan_jax.weights fetch vgg19_keras`). Decides the input preprocessing.
  config.vgg.source = 'keras'
  # Converted weights file (.npz). Empty: <cache_dir>/vgg19_<source>.npz.
  config.vgg.params_path = ''
  # Cache for converted weights. Empty: $SRGAN_JAX_CACHE or ~/.cache/srgan_jax.
  config.vgg.cache_dir = ''
  # Random VGG weights, for mechanics tests only; logs a warning at every start.
  config.vgg.allow_random_weights = False

  config.optimizer = ml_collections.ConfigDict()
  config.optimizer.learning_rate = 1e-4  # Same schedule for G and D.
  config.optimizer.b1 = 0.9
  config.optimizer.b2 = 0.999
  # Steps at which the learning rate is multiplied by `lr_decay_factor`.
  config.optimizer.lr_decay_steps = ()
  config.optimizer.lr_decay_factor = 0.1

  config.data = ml_collections.ConfigDict()
  # Training images: 'records:DIR' (sub-images prepared by `python -m srgan_jax.prepare`,
  # read from disk as training goes: any size), 'tfds:NAME[/CONFIG]' (a TFDS dataset as
  # ArrayRecord, read at random; prepared on first use), 'folder:PATH' (any tree of image
  # files) or 'skimage:NAME,NAME' (natural images shipped inside scikit-image); the last
  # two are decoded into memory at start-up.
  config.data.source = 'tfds:div2k/bicubic_x4'
  config.data.tfds_split = 'train'
  config.data.tfds_image_key = 'hr'  # Which feature of the TFDS records is the HR image.
  config.data.tfds_data_dir = ''  # Empty: TFDS's default (~/tensorflow_datasets).
  config.data.hr_crop_size = 96  # HR patch side in pixels; LR is this / scale.
  # Data shards; each process loads the shards its rows of the global batch use.
  # 0: one per process. The data stream depends on this, not on the process count.
  config.data.num_shards = 0
  # Bound on the decoded uint8 images a folder/skimage source keeps per process, checked
  # from the files' headers before decoding; a larger set is prepared as records.
  config.data.cache_max_bytes = 16 * 2**30
  config.data.decode_threads = 8  # Threads decoding a folder/skimage source at start-up.
  # Batches prepared ahead, each by a thread of its own (in each worker, if any).
  config.data.prefetch_batches = 2
  # Worker processes decoding records:/tfds: batches (Grain's mp_prefetch); 0: threads of
  # this process only. In-memory sources always use threads.
  config.data.num_workers = 2
  # Round LR to uint8 levels after each bicubic pass, as MATLAB does for the
  # official benchmark LR files, so that training LR looks like test LR.
  config.data.quantize_lr = True

  # How HR crops become LR inside the step: 'bicubic' (the paper: MATLAB bicubic, as the
  # benchmark LR files were made) or 'realesrgan' (Real-ESRGAN's second-order blur, resize,
  # noise and JPEG, for real photos). The other fields are that degradation's, with BasicSR's
  # names and train_realesrnet_x4plus.yml's values, each explained in
  # srgan_jax/real_degradation.py (DEFAULTS); a '2' is the second order.
  config.degradation = ml_collections.ConfigDict(
      {'kind': 'bicubic', **real_degradation.DEFAULTS})

  config.train = ml_collections.ConfigDict()
  config.train.batch_size = 16  # Global batch (all processes), in HR crops.
  config.train.num_steps = 200_000
  config.train.ema_decay = 0.0  # EMA of G's params; 0 = off (EMA equals params).
  # Convolution compute dtype: 'float32' or 'bfloat16' (params, optimiser states
  # and loss reductions stay float32).
  config.train.compute_dtype = 'float32'
  # Wall-clock budget of this invocation in seconds (compiling included): once spent,
  # the run checkpoints, evaluates and stops as at its last step. 0: no budget.
  config.train.time_budget_s = 0.0
  config.train.log_every_steps = 100
  config.train.image_every_steps = 1000
  config.train.checkpoint_every_steps = 5000
  config.train.keep_checkpoints = 3  # Most recent checkpoints kept.

  config.eval = ml_collections.ConfigDict()
  # Evaluation sets, in the same source syntax as data.source; a folder holding
  # HR/ (and LR_bicubic/X<scale>/) is read as a benchmark set.
  config.eval.sets = ()
  config.eval.every_steps = 0  # 0: only at the end of the run.
  # What to measure (srgan_jax.quality): psnr_y, ssim_y, psnr_rgb, lpips_alex, lpips_vgg,
  # niqe. The LPIPS and NIQE weights come from `python -m srgan_jax.weights fetch NAME`.
  config.eval.metrics = ('psnr_y', 'ssim_y')
  # Keeps workdir/best/ (the generator) by this metric on the first set, one of
  # eval.metrics; each metric knows whether higher or lower is better.
  config.eval.best_metric = 'psnr_y'
  # Converted weights of the metrics. Empty: $SRGAN_JAX_CACHE or ~/.cache/srgan_jax.
  config.eval.weights_dir = ''
  config.eval.max_images = 0  # Per set; 0 = all.

  return config
