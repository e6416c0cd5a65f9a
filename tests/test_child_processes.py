"""Processes the library starts end with it (`srgan_jax.child_processes`); the Grain
workers and prepare's writers of a SIGKILLed run are checked in test_records.py."""

import os
import signal
import subprocess
import sys

from tests.conftest import REPO, assert_all_end_within, descendants


def test_a_command_started_bound_ends_when_its_starter_is_killed(tmp_path):
  script = ('import subprocess, sys; from srgan_jax import child_processes; '
            'child = subprocess.Popen(child_processes.bound_command(["sleep", "300"])); '
            'print(child.pid, flush=True); child.wait()')
  starter = subprocess.Popen([sys.executable, '-c', script], cwd=REPO, stdout=subprocess.PIPE,
                             text=True)
  try:
    child = int(starter.stdout.readline())
    found = descendants(starter.pid)
    assert child in found
    starter.send_signal(signal.SIGKILL)
    starter.wait(timeout=60)
  finally:
    starter.kill()
  assert_all_end_within(found, 10)


def test_a_child_whose_parent_died_before_it_was_bound_ends_itself():
  """The race: the parent pid recorded before the spawn is no longer the parent."""
  not_the_parent = 1  # init: not this test's process.
  result = subprocess.run(
      [sys.executable, '-c', 'from srgan_jax import child_processes; '
       f'child_processes.end_with_parent({not_the_parent}); print("still running")'],
      cwd=REPO, capture_output=True, text=True, timeout=120)
  assert result.returncode == -signal.SIGKILL and 'still running' not in result.stdout
  # With its real parent recorded, it goes on.
  result = subprocess.run(
      [sys.executable, '-c', 'from srgan_jax import child_processes; '
       f'child_processes.end_with_parent({os.getpid()}); print("still running")'],
      cwd=REPO, capture_output=True, text=True, timeout=120)
  assert result.returncode == 0 and 'still running' in result.stdout
