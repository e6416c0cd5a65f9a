"""Makes the README's picture of the demo page: the page with one result on it.

  python docs/demo_screenshot.py --image=../shared/data/sr_benchmarks/Set14/LR_bicubic/X4/comicx4.png \
      --output=docs/demo_page.png [--model=srresnet] [--width=900]

Starts `python -m srgan_jax.demo --model=MODEL` on a free loopback port, opens it in
headless Chromium (Debian's `chromium`, driven by Playwright), uploads the image, waits
for the result and saves a screenshot of the page scaled to `width` pixels, in 256 colours.
"""

import argparse
import io
import os
import socket
import subprocess
import sys
import time

from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--image', required=True)
  parser.add_argument('--output', default=os.path.join(REPO, 'docs', 'demo_page.png'))
  parser.add_argument('--model', default='srresnet')
  parser.add_argument('--width', type=int, default=900)
  parser.add_argument('--chromium', default='/usr/bin/chromium')
  args = parser.parse_args()
  from playwright.sync_api import sync_playwright

  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
  server = subprocess.Popen([sys.executable, '-m', 'srgan_jax.demo', f'--model={args.model}',
                             f'--port={port}'], cwd=REPO,
                            env=dict(os.environ, GRADIO_ANALYTICS_ENABLED='False'))
  try:
    deadline = time.monotonic() + 180
    while True:
      try:
        socket.create_connection(('127.0.0.1', port), timeout=1).close()
        break
      except OSError:
        if server.poll() is not None or time.monotonic() > deadline:
          sys.exit('the demo did not start')
        time.sleep(0.5)
    with sync_playwright() as p:
      browser = p.chromium.launch(executable_path=args.chromium, args=['--no-sandbox'])
      page = browser.new_page(viewport={'width': 1200, 'height': 900})
      page.goto(f'http://127.0.0.1:{port}')
      page.locator('#photo input[type=file]').set_input_files(args.image)
      name = os.path.basename(args.image)
      page.locator(f'#photo td[aria-label="{name}"]').wait_for(timeout=30_000)
      page.get_by_role('button', name='Upscale').click()
      page.locator('#status', has_text=name).wait_for(timeout=300_000)
      shot = Image.open(io.BytesIO(page.screenshot(full_page=True)))
      browser.close()
  finally:
    server.terminate()
    server.wait(timeout=30)
  height = round(shot.height * args.width / shot.width)
  small = shot.convert('RGB').resize((args.width, height), Image.LANCZOS)
  small.quantize(256).save(args.output, optimize=True)  # A palette keeps the file small.
  print(f'{args.output}: {args.width}x{height}')


if __name__ == '__main__':
  main()
