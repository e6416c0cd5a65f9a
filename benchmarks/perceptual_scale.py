"""Does Real-ESRGAN's perceptual loss, computed on the Keras VGG19, weigh what it weighs on
torchvision's weights? Per-layer mean |SR - HR| of pre-ReLU features.

  python benchmarks/perceptual_scale.py --model=real_srresnet --images=baboon,comic,lenna

Real-ESRGAN's loss is L1 on torchvision VGG19's conv1_2, conv2_2, conv3_4, conv4_4 and
conv5_4 before their ReLU (weights 0.1, 0.1, 1, 1, 1), input [0, 1] over ImageNet's std;
`configs/real_srgan_291.py` computes it on the Keras VGG19 (input 0..255) with the features
divided by 57.5. torchvision's VGG19 weights are not among the fetchable ones, its VGG16
is (trained the same way, with the same input): the script prints both networks'
per-layer distances for the same SR/HR pairs (SR by --model from Set14's official LR, top
left --crop pixels), at VGG16's matching layers (conv1_2, conv2_2, conv3_3, conv4_3,
conv5_3), and the weighted sums.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax.numpy as jnp
import numpy as np

from benchmarks import common
from configs import real_srgan_291
from srgan_jax import images, model_file, upscale, weights
from srgan_jax.models import lpips, vgg


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--model', default='real_srresnet', help='model file or pretrained name')
  parser.add_argument('--data', default=os.path.join(common.SHARED_DATA, 'sr_benchmarks', 'Set14'))
  parser.add_argument('--images', default='baboon,comic,lenna')
  parser.add_argument('--crop', type=int, default=192, help='HR side of the compared corner')
  parser.add_argument('--cache_dir', default='', help='fetched weights (default: the cache)')
  args = common.parse_args(parser)
  loss = real_srgan_291.get_config().loss
  layers = vgg.layers_for_loss(loss.content)
  keras_net = vgg.VGG19Features(layers, after_activation=False)
  keras_params = weights.nested(weights.load('vgg19_keras', args.cache_dir))
  vgg16 = lpips.VGG16Features(before_relu=True)
  vgg16_params = weights.nested(weights.load('vgg16_torchvision', args.cache_dir))
  upscaler = upscale.load_upscaler(model_file.resolve(args.model))
  keras_sum, vgg16_sum = np.zeros(len(layers)), np.zeros(len(layers))
  names = args.images.split(',')
  for name in names:
    hr = images.read_rgb(os.path.join(args.data, 'HR', f'{name}.png'))
    sr = upscaler(images.read_rgb(os.path.join(args.data, 'LR_bicubic', 'X4', f'{name}x4.png')))
    pair = [jnp.asarray(x[None, :args.crop, :args.crop] / 127.5 - 1, jnp.float32) for x in (sr, hr)]
    a, b = (keras_net.apply({'params': keras_params}, vgg.preprocess(x, 'keras')) for x in pair)
    keras_sum += [float(jnp.mean(jnp.abs(s - h))) * loss.vgg_feature_scale for s, h in zip(a, b)]
    a, b = (vgg16.apply({'params': vgg16_params}, vgg.preprocess(x, 'torchvision'))
            for x in pair)
    vgg16_sum += [float(jnp.mean(jnp.abs(s - h))) for s, h in zip(a, b)]
  keras_mean, vgg16_mean = keras_sum / len(names), vgg16_sum / len(names)
  layer_weights = np.asarray(loss.vgg_layer_weights)
  for layer, k, t in zip(layers, keras_mean, vgg16_mean):
    common.emit({'layer': layer, 'keras_vgg19_scaled': k, 'torchvision_vgg16': t})
  common.emit({'layer': 'weighted_sum', 'keras_vgg19_scaled': float(layer_weights @ keras_mean),
               'torchvision_vgg16': float(layer_weights @ vgg16_mean),
               'ratio': float(layer_weights @ keras_mean / (layer_weights @ vgg16_mean))})


if __name__ == '__main__':
  main()
