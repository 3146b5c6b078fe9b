"""Ray plumbing shared by every workload the kit sends to Ray.

  with raycluster.connect(address, num_cpus) as ray:
    task = ray.remote(fn).options(num_cpus=1, max_retries=3,
                                  runtime_env={"env_vars": thread_env(1)})
    raycluster.run_tasks(ray, [task.remote(x) for x in xs], on_done)

Clusters. `address=None` starts a Ray instance on this machine only
(`ray.init(address="local", ...)`, never a cluster named by RAY_ADDRESS) and
stops it afterwards; `address="HEAD:PORT"` (or "auto") joins a cluster
started with `ray start --head` or KubeRay. A "HOST:PORT" address is checked
first with a bounded-time handshake (`check_head`): nothing listening, or a
listener that does not speak gRPC (HTTP/2), fails in seconds with one error
line instead of Ray's minutes of retries. If Ray is already initialised in
this process it is used as is. Ray is optional: `pip install -e '.[ray]'`;
without it every entry point raises `RayUnavailableError`.

Workers import TensorFlow quietly before any task is unpickled, and a task's
`thread_env` sets its worker's TensorFlow/OMP threads, so the tasks Ray
packs onto a node never oversubscribe its cores. `run_tasks` waits for tasks
in completion order and, on any error or Ctrl-C, cancels the rest and waits
for them to stop (a write in flight removes its temporary file).
"""

import os
import socket
import struct
from typing import Any, Callable, Dict, Optional

from heldout_tf.core import errors

INSTALL_HINT = "pip install -e '.[ray]'"
DEFAULT_MAX_RETRIES = 3
HANDSHAKE_SECONDS = 10.0

# An HTTP/2 client connection preface and an empty SETTINGS frame; a gRPC
# server (Ray's GCS) answers with its own SETTINGS frame.
_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_H2_SETTINGS = 0x4
_H2_EMPTY_SETTINGS = struct.pack(">I", 0)[1:] + bytes([_H2_SETTINGS, 0]) + (
    struct.pack(">I", 0))


class RayUnavailableError(errors.HeldoutError, ImportError):
  """Ray is not installed, or the cluster cannot be reached."""


def import_ray():
  """The `ray` module, or `RayUnavailableError` with the install hint."""
  try:
    import ray  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise RayUnavailableError(
        f"the Ray engine needs the 'ray' package ({e}): {INSTALL_HINT}"
    ) from None
  return ray


def _head_error(address: str, port: str, why: str) -> RayUnavailableError:
  return RayUnavailableError(
      f"cannot reach a Ray head at {address} ({why}): start it there with "
      f"`ray start --head --port={port}`, or omit --ray_address to run on "
      "this machine")


def check_head(address: str, timeout: Optional[float] = None):
  """Fails fast unless a gRPC server answers at a "host:port" address.

  Opens a TCP connection and sends an HTTP/2 preface; Ray's head (a gRPC
  server) answers with a SETTINGS frame. No answer within `timeout`
  seconds, a refused connection or another protocol raise
  `RayUnavailableError` naming the address. "auto" and other forms are
  left to Ray. `timeout` defaults to `HANDSHAKE_SECONDS`.
  """
  timeout = HANDSHAKE_SECONDS if timeout is None else timeout
  host, _, port = address.rpartition(":")
  if not host or not port.isdigit() or "://" in address:
    return
  try:
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
      s.settimeout(timeout)
      s.sendall(_H2_PREFACE + _H2_EMPTY_SETTINGS)
      header = b""
      while len(header) < 9:
        chunk = s.recv(9 - len(header))
        if not chunk:
          break
        header += chunk
  except socket.timeout:
    raise _head_error(address, port, f"no answer within {timeout:g} s: not "
                      "a Ray head") from None
  except OSError as e:
    raise _head_error(address, port,
                      errors.describe_os_error(e)) from None
  if len(header) < 9 or header[3] != _H2_SETTINGS:
    raise _head_error(address, port, "the listener there does not speak "
                      "gRPC: not a Ray head")


def quiet_env() -> Dict[str, str]:
  """Workers' TensorFlow start-up lines hidden (the user's choice kept)."""
  return {"TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL",
                                                 "2")}


def thread_env(num_threads: int) -> Dict[str, str]:
  """Environment of a worker whose TensorFlow uses `num_threads` threads.

  Given as the task's `runtime_env`, so Ray starts (and reuses) workers per
  thread count: a worker never keeps another call's thread setting.
  """
  n = str(max(1, int(num_threads)))
  return dict(quiet_env(), TF_NUM_INTRAOP_THREADS=n, TF_NUM_INTEROP_THREADS=n,
              OMP_NUM_THREADS=n)


class connect:  # pylint: disable=invalid-name
  """`with connect(address, num_cpus) as ray:` Ray initialised (unless it
  was already), shut down on exit if this object started it."""

  def __init__(self, address: Optional[str] = None,
               num_cpus: Optional[int] = None):
    self._address, self._num_cpus = address, num_cpus
    self._started = False

  def __enter__(self):
    ray = import_ray()
    if ray.is_initialized():
      return ray
    # Each worker imports TensorFlow quietly before any task is unpickled
    # (unpickling a task imports the pipeline, and so TensorFlow).
    env = {"env_vars": quiet_env(),
           "worker_process_setup_hook": "heldout_tf.cli.quiet_tensorflow"}
    try:
      if self._address:
        check_head(self._address)
        ray.init(address=self._address, runtime_env=env,
                 log_to_driver=True, configure_logging=False)
      else:
        # "local": a new instance of this machine only, even if RAY_ADDRESS
        # names a cluster (it is never joined implicitly).
        ray.init(address="local", num_cpus=self._num_cpus,
                 include_dashboard=False, runtime_env=env,
                 configure_logging=False)
    except (ConnectionError, TimeoutError, ValueError) as e:
      where = self._address or "a local Ray instance"
      raise RayUnavailableError(f"cannot start or join {where}: {e}") from e
    self._started = True
    return ray

  def __exit__(self, *exc):
    if self._started:
      import_ray().shutdown()


def get(ray, ref):
  """`ray.get(ref)`, re-raising a task's kit error as itself."""
  try:
    return ray.get(ref)
  except ray.exceptions.RayTaskError as e:
    if isinstance(e.cause, errors.HeldoutError):
      raise e.cause from None
    raise


def cancel(ray, refs, settle_seconds: float = 30.0):
  """Cancels `refs` and waits (up to `settle_seconds`) for them to stop.

  Cancelling raises KeyboardInterrupt inside each running task, so a write
  in flight removes its temporary file; waiting means that when the driver
  returns, no task of this call still writes.
  """
  for ref in refs:
    try:
      ray.cancel(ref)
    except Exception:  # pylint: disable=broad-except
      pass  # Already finished or gone.
  if refs:
    ray.wait(refs, num_returns=len(refs), timeout=settle_seconds)


def run_tasks(ray, refs: list, on_done: Callable[[Any, Any], None]):
  """Waits for `refs` in completion order, calling `on_done(ref, result)`
  for each; on any error or interrupt cancels the rest and re-raises."""
  pending = list(refs)
  try:
    while pending:
      ready, pending = ray.wait(pending, num_returns=1)
      for ref in ready:
        on_done(ref, get(ray, ref))
  except BaseException:
    cancel(ray, pending)
    raise
