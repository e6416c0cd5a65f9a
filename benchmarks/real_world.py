"""The real-world degradation's use case: bicubic-trained vs realesrgan-trained, same budget.

  python benchmarks/real_world.py --steps=8000 --pool_size=192 --out=/tmp/real_world

The two trainings can run side by side: `--kinds=bicubic` in one process and
`--kinds=realesrgan` in another, then the whole command (the same flags) scores both and
prints the table; a finished run folder is not trained again, and its train_seconds are
then this call's.

Two small SRResNets (same size, seed, images, batch and steps) on the 291 images: one on
the paper's bicubic LR, one on Real-ESRGAN's degradation. Both are scored (PSNR-Y/SSIM-Y,
the README's protocol) on Set14 degraded by the same pipeline with seed 0
(`python -m srgan_jax.degrade`, HR not sharpened) and on Set14's official bicubic LR.
The claim it measures: on degraded inputs the second model is ahead by at least 1 dB, and
on clean bicubic LR it stays within 1.5 dB of the first. Prints the table and writes
results.json to --out, with the commands, settings and machine.

The target is not USM-sharpened here (`--config.degradation.sharpen=False`): both models
are then scored against the HR they were trained to produce. `--crop_pad_size` and
`--clean_prob` set the real-world run's `config.degradation` fields of those names.
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import common  # noqa: E402
from configs import srresnet_291  # noqa: E402
from srgan_jax import degrade, evaluate, quality, train, upscale  # noqa: E402


def small_config(kind: str, steps: int, args):
  config = srresnet_291.get_config()
  config.generator.num_blocks = args.blocks
  config.generator.features = args.features
  config.train.batch_size = args.batch
  config.data.hr_crop_size = args.crop
  config.optimizer.learning_rate = args.learning_rate
  config.optimizer.lr_decay_steps = (int(steps * 0.8),)
  config.optimizer.lr_decay_factor = 0.25
  config.train.num_steps = steps
  config.train.checkpoint_every_steps = 500
  config.train.log_every_steps = 100
  config.train.image_every_steps = 0
  config.eval.sets = ()
  config.degradation.kind = kind
  config.degradation.sharpen = False
  config.degradation.pool_size = args.pool_size  # Used by the real-world run only.
  config.degradation.crop_pad_size = args.crop_pad_size  # Likewise.
  config.degradation.clean_prob = args.clean_prob
  return config


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--steps', type=int, default=3000)
  parser.add_argument('--out', default='benchmarks/out/real_world')
  parser.add_argument('--blocks', type=int, default=6)
  parser.add_argument('--features', type=int, default=32)
  parser.add_argument('--batch', type=int, default=16)
  parser.add_argument('--crop', type=int, default=64)
  parser.add_argument('--learning_rate', type=float, default=5e-4)
  parser.add_argument('--pool_size', type=int, default=0,
                      help="Real-ESRGAN's pool of past pairs (a multiple of --batch; 0: off)")
  parser.add_argument('--crop_pad_size', type=int, default=0,
                      help='HR side the real-world degradation works on before the --crop '
                           'window is cut (0: the crop itself)')
  parser.add_argument('--clean_prob', type=float, default=0.0,
                      help="the real-world run's share of samples left at bicubic LR")
  parser.add_argument('--kinds', default='bicubic,realesrgan',
                      help='the models to train now (comma list); a finished run folder is '
                           'scored again, and the table needs both')
  args = parser.parse_args()
  data = os.environ.get('SRGAN_JAX_DATA') or common.SHARED_DATA
  set14 = os.path.join(data, 'sr_benchmarks', 'Set14')
  os.makedirs(args.out, exist_ok=True)

  degraded = os.path.join(args.out, 'Set14_realesrgan_seed0')
  if not os.path.exists(os.path.join(degraded, 'degradation.json')):
    degrade.main([f'--data={set14}', f'--output={degraded}', '--seed=0'])

  results = {'command': 'python benchmarks/real_world.py ' + ' '.join(sys.argv[1:]),
             'machine': common.machine(), 'settings': vars(args), 'models': {}}
  scorer = quality.Scorer(('psnr_y', 'ssim_y'), 4)
  for kind in args.kinds.split(','):
    workdir = os.path.join(args.out, kind)
    config = small_config(kind, args.steps, args)
    started = time.monotonic()
    train.train_and_evaluate(config, workdir)
    seconds = time.monotonic() - started
    loaded = upscale.load_upscaler(workdir)
    scores = {}
    for name, spec in (('Set14 degraded (seed 0)', degraded), ('Set14 bicubic', set14)):
      means, _ = evaluate.evaluate_set(evaluate.load_eval_set(spec, 4), loaded, scorer)
      scores[name] = means
    results['models'][kind] = {'steps': args.steps, 'train_seconds': round(seconds),
                               'scores': scores}
    print(kind, json.dumps(results['models'][kind]), flush=True)
  if set(results['models']) != {'bicubic', 'realesrgan'}:
    return

  b, r = (results['models'][k]['scores'] for k in ('bicubic', 'realesrgan'))
  gain = r['Set14 degraded (seed 0)']['psnr_y'] - b['Set14 degraded (seed 0)']['psnr_y']
  clean = r['Set14 bicubic']['psnr_y'] - b['Set14 bicubic']['psnr_y']
  results['degraded_gain_db'], results['clean_difference_db'] = gain, clean
  print(f'\n{results["command"]}\n{results["machine"]}\n')
  print('| trained on | Set14 degraded (seed 0) PSNR-Y / SSIM-Y | Set14 bicubic LR PSNR-Y / SSIM-Y |')
  print('|---|---|---|')
  for kind in ('bicubic', 'realesrgan'):
    s = results['models'][kind]['scores']
    print(f'| {kind} | ' + ' | '.join(f'{s[n]["psnr_y"]:.2f} / {s[n]["ssim_y"]:.4f}' for n in s) + ' |')
  print(f'\nrealesrgan - bicubic: {gain:+.2f} dB on degraded Set14 (claim: >= +1), '
        f'{clean:+.2f} dB on clean Set14 (claim: >= -1.5)')
  with open(os.path.join(args.out, 'results.json'), 'w') as f:
    json.dump(results, f, indent=1)


if __name__ == '__main__':
  main()
