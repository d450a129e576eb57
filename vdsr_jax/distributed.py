"""One training run over several processes (hosts): `jax.distributed.initialize` before any device is used.

JAX runs one process per host. Once initialised, `jax.devices()` lists every process's devices, so the
`data` mesh of `train_step` spans all hosts, its psum is the cross-host all-reduce (gloo on CPU, JAX's
default; NCCL on GPU; the interconnect on TPU), and orbax coordinates checkpoint writes through the same
service. Every process runs the same command; process 0 alone logs and writes files other than checkpoints.

Settings, first found wins: the `--coordinator_address`, `--num_processes`, `--process_id` flags, then the
environment variables JAX_COORDINATOR_ADDRESS (which JAX reads too), JAX_NUM_PROCESSES and JAX_PROCESS_ID.
Any of them, or `--distributed`, makes the run multi-process; whatever is left unset JAX detects itself on
a Cloud TPU pod slice, under SLURM (`srun`), Open MPI (`mpirun`) and on Kubernetes. With none of them the
run is one process and nothing is initialised.

The persistent compilation cache (`JAX_COMPILATION_CACHE_DIR`) is turned off for runs of several processes on
CPU devices, with one `note:` line from process 0: there its keys differ from process to process (the CPU
topology's fingerprint is part of the key; measured under jax 0.10.2 and 0.12.1) and only process 0 writes
entries, so on a restart process 0 loads its cached programs while the others compile theirs afresh. Under
jax 0.12.1 the first train step's collective then never completes and the run hangs. GPU and TPU runs keep
the cache (JAX keys those programs the same in every process).
"""
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from vdsr_jax.errors import DistributedError

ENVIRONMENT = {"coordinator_address": "JAX_COORDINATOR_ADDRESS", "num_processes": "JAX_NUM_PROCESSES",
               "process_id": "JAX_PROCESS_ID"}


def define_flags() -> None:
    """The command-line flags; a CLI calls this, so that importing the module defines none."""
    from absl import flags

    flags.DEFINE_string("coordinator_address", None,
                        "host:port of process 0, the same for every process (env JAX_COORDINATOR_ADDRESS)")
    flags.DEFINE_integer("num_processes", None, "processes in the run (env JAX_NUM_PROCESSES)")
    flags.DEFINE_integer("process_id", None, "this process's rank, 0 … num_processes-1 (env JAX_PROCESS_ID)")
    flags.DEFINE_bool("distributed", False, "join a multi-process run whose settings JAX detects (Cloud TPU "
                      "pod slice, SLURM, Open MPI, Kubernetes); implied by --coordinator_address, --num_processes, "
                      "--process_id")


def initialize_from_flags() -> bool:
    from absl import flags

    values = flags.FLAGS
    return initialize(values.coordinator_address, values.num_processes, values.process_id,
                      detect=values.distributed)


def _name(setting: str) -> str:
    return f"--{setting} ({ENVIRONMENT[setting]})"


def _setting(setting: str, value, environ):
    """The flag's value, else the environment's (an int for the counts)."""
    if value is not None:
        return value
    text = environ.get(ENVIRONMENT[setting], "").strip()
    if not text or setting == "coordinator_address":
        return text or None
    try:
        return int(text)
    except ValueError:
        raise DistributedError(f"{_name(setting)} must be an integer, not {text!r}") from None


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, detect: bool = False, environ=os.environ) -> bool:
    """Join the multi-process run these settings (or the environment) describe; False for a one-process run.

    Must run before anything touches a device. Bad settings raise DistributedError before connecting.
    """
    address = _setting("coordinator_address", coordinator_address, environ)
    count = _setting("num_processes", num_processes, environ)
    rank = _setting("process_id", process_id, environ)
    if not detect and (address, count, rank) == (None, None, None):
        return False
    if count is not None and count < 1:
        raise DistributedError(f"{_name('num_processes')} must be ≥ 1, not {count}")
    if rank is not None and (rank < 0 or count is not None and rank >= count):
        raise DistributedError(f"{_name('process_id')} must be in 0 … {_name('num_processes')} - 1, not {rank}")
    if address is not None and not address.rpartition(":")[2].isdigit():
        raise DistributedError(f"{_name('coordinator_address')} must be host:port, not {address!r}")
    try:
        jax.distributed.initialize(address, count, rank)
    except (ValueError, TypeError, RuntimeError) as e:  # settings left incomplete, coordinator not reached
        raise DistributedError(f"cannot join the multi-process run: {e} (see --coordinator_address, "
                               "--num_processes, --process_id in --helpfull)") from None
    _keep_compilation_cache_consistent()
    return True


def _keep_compilation_cache_consistent() -> None:
    """Turn the persistent compilation cache off where the processes would run different programs (module
    docstring); must run before the first compilation, when JAX decides whether to use the cache."""
    if jax.process_count() == 1 or jax.default_backend() != "cpu" or not jax.config.jax_compilation_cache_dir:
        return
    jax.config.update("jax_enable_compilation_cache", False)
    if jax.process_index() == 0:
        print(f"note: the persistent compilation cache ({jax.config.jax_compilation_cache_dir}) is off for this "
              "run: on CPU its keys differ between processes, so they would run different programs and the "
              "collectives would not meet", file=sys.stderr)


def local_copy(tree):
    """This process's copy of replicated global arrays, on its default device, for work that involves no
    other process (evaluation, the images process 0 writes): a computation over the global devices must be
    run by every process."""
    return jax.device_put(jax.device_get(tree))


def combine_shares(local: np.ndarray, sharding: NamedSharding) -> jax.Array:
    """The array every process's `local` share makes together, placed per `sharding` (replicated).

    Each process fills its own disjoint part of `local` (a 32-bit dtype, the same shape everywhere) and
    leaves zeros elsewhere; the shares' bit patterns are summed as uint32 across processes on the devices
    (a psum, the same all-reduce the train step uses), so the result is bit-exact, whatever the float
    values. One process: `local` itself. Device memory: a share and the result per device, transiently.
    """
    if jax.process_count() == 1:
        return jax.device_put(local, sharding)
    if local.dtype.itemsize != 4:
        raise TypeError(f"combine_shares takes 32-bit arrays, not {local.dtype}")
    by_process = sorted(jax.devices(), key=lambda d: (d.process_index, d.id))
    mesh = Mesh(np.array(by_process).reshape(jax.process_count(), -1), ("process", "local"))
    shares = jax.make_array_from_process_local_data(NamedSharding(mesh, PartitionSpec("process")),
                                                    local.view(np.uint32)[None])
    combine = jax.jit(lambda bits: jax.lax.bitcast_convert_type(bits.sum(axis=0, dtype=jnp.uint32), local.dtype),
                      out_shardings=sharding)
    return combine(shares)
