"""Child processes that end when their parent dies, however it dies.

A SIGKILLed trainer runs no handler of its own, so its Grain workers, `prepare`'s shard
writers and the commands the library runs (`weights fetch`'s pip) would be reparented to
init and keep running (on a preemptible host that restarts the same command, each
preemption would leak them). The binding therefore lives in the child, at its start:

- Linux: `prctl(PR_SET_PDEATHSIG, SIGKILL)`: the kernel kills the child when its parent
  goes. The parent may already have died between the spawn and that call, so the child
  then compares the parent pid recorded before the spawn with `os.getppid()` and ends
  itself if they differ. (The kernel's "parent" is the thread that started the child:
  every spawn in this project comes from a thread that lives as long as the children do,
  Grain's iterator threads and the pool's submitting thread.)
- Elsewhere (macOS): a daemon thread that polls the parent pid and ends the child when it
  changes.

multiprocessing's resource tracker, which the trainer and its workers share, reads a pipe
that they all hold open; it ends by itself when the last of them is gone.

A normal stop (end of run, SIGTERM, Ctrl-C) still shuts children down as before: this only
adds an end when the parent is gone.
"""

import ctypes
import multiprocessing
import os
import signal
import sys
import threading
import time

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
_POLL_SECONDS = 1.0


def end_with_parent(parent_pid: int) -> None:
  """Binds this process's lifetime to its parent, which had `parent_pid` before the spawn.

  Ends this process at once if that parent is already gone.
  """
  if sys.platform.startswith('linux'):
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
      raise OSError(ctypes.get_errno(), 'prctl(PR_SET_PDEATHSIG) failed')
  else:
    threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True,
                     name='end-with-parent').start()
  if os.getppid() != parent_pid:  # The parent died before the binding: nobody would kill us.
    os.kill(os.getpid(), signal.SIGKILL)


def _watch_parent(parent_pid: int) -> None:
  while os.getppid() == parent_pid:
    time.sleep(_POLL_SECONDS)
  os.kill(os.getpid(), signal.SIGKILL)


def end_multiprocessing_child_with_parent(*_) -> None:
  """`end_with_parent` for a process started by `multiprocessing` (any arguments ignored,
  so that it serves as a pool's initializer or a Grain worker_init_fn); a process that
  multiprocessing did not start has no recorded parent and is left as it is."""
  parent = multiprocessing.parent_process()
  if parent is not None:
    end_with_parent(parent.pid)  # The pid the parent recorded before it spawned us.


def bound_command(command: list[str]) -> list[str]:
  """`command` (an argv for `subprocess`) made to end with this process, on Linux.

  A small Python wrapper binds itself to this process (its pid recorded now) and then
  replaces itself with `command`; the kernel's binding survives exec. Elsewhere `command`
  is returned as it is: a watching thread would not survive exec.
  """
  if not sys.platform.startswith('linux'):
    return list(command)
  return [sys.executable, '-m', 'srgan_jax.child_processes', str(os.getpid()), '--', *command]


def _main(argv: list[str]) -> None:
  """python -m srgan_jax.child_processes PARENT_PID -- COMMAND...: see `bound_command`."""
  if len(argv) < 3 or argv[1] != '--':
    raise SystemExit('usage: python -m srgan_jax.child_processes PARENT_PID -- COMMAND...')
  end_with_parent(int(argv[0]))
  os.execvp(argv[2], argv[2:])


if __name__ == '__main__':
  _main(sys.argv[1:])
