"""Ray for `edgevit tune`: start a local instance (--workers K) or join one (--ray-address).

A local instance listens on 127.0.0.1 only, without the dashboard, and is stopped when
the study ends (``ray.shutdown()``). An address is probed with a plain TCP connect first:
`ray.init` on an address nobody answers retries for a long time, and the user should get
one line, not a hang, before any trial runs.
"""
from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator

from edgevit.errors import EdgevitError
from edgevit.tune.locks import RAY_NAMESPACE

PROBE_TIMEOUT_S = 5.0


def probe(address: str) -> None:
    """HOST:PORT (or ray://HOST:PORT) must accept a TCP connection; 'auto' is left to Ray."""
    if address == "auto":
        return
    hostport = address.removeprefix("ray://")
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise EdgevitError(f"--ray-address {address}: expected HOST:PORT, ray://HOST:PORT or auto",
                           "give the address `ray start --head` printed (e.g. 10.0.0.5:6379)")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=PROBE_TIMEOUT_S):
            pass
    except OSError as exc:
        raise EdgevitError(f"--ray-address {address}: unreachable ({exc.strerror or exc})",
                           "start the cluster (`ray start --head`) or fix the address; or run without Ray") from None


@contextlib.contextmanager
def ray_session(workers: int, address: str | None, verbose: bool) -> Iterator[str]:
    """Yields the address of the Ray cluster's GCS (127.0.0.1:PORT for a local instance)."""
    try:
        import ray
    except ImportError:
        raise EdgevitError("Ray is not installed", "install the tune extra (make install), or use --storage workers") from None
    # the trial code must not pick up a CUDA device or spawn a thread pool per core on a
    # shared machine: Ray gives each 1-CPU task OMP_NUM_THREADS=1
    kwargs = {"include_dashboard": False, "namespace": RAY_NAMESPACE, "log_to_driver": verbose,
              "configure_logging": verbose}
    try:
        if address:
            ray.init(address=address, **kwargs)
        else:
            with _loopback_only():
                ray.init(num_cpus=workers, num_gpus=0, _node_ip_address="127.0.0.1", object_store_memory=256 * 2**20,
                         **kwargs)
    except Exception as exc:  # ConnectionError, RuntimeError, version mismatch: one line, exit 2
        raise EdgevitError(f"Ray {'at ' + address if address else '(local instance)'}: cannot start or join: "
                           f"{str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__}",
                           "check the address and that the cluster runs the same Ray and Python versions") from None
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()  # stops the local instance's processes; only disconnects from a cluster


@contextlib.contextmanager
def _loopback_only() -> Iterator[None]:
    """Ray resolves 127.0.0.1 to the machine's network address unless its single-node
    switch is set (then every Ray process, workers included, binds and talks on 127.0.0.1).
    The switch is read from the environment by Ray's processes and once at import here."""
    from ray._private import ray_constants

    before_env, before_flag = os.environ.get(_SINGLE_NODE), ray_constants.ENABLE_RAY_CLUSTER
    os.environ[_SINGLE_NODE] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = before_flag
        if before_env is None:
            os.environ.pop(_SINGLE_NODE, None)
        else:
            os.environ[_SINGLE_NODE] = before_env


_SINGLE_NODE = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
