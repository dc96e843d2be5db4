"""A run: one configuration in one directory, trained by one process at a time.

A run's identity is every hparam that changes its result. The directory spells the main ones
and a digest of the rest,

    <log_dir>/<dataset>/<struct>/<baseline>/k<k>/seed<seed>-<digest>/
        config.json   the run's hparams (the resume-safe ones as the last command gave them)
        lock          locked (flock) by the process training the run, and naming it
        ...           what the trainer writes: checkpoints, summaries, history, results.json

where the digest is 8 hex digits of the SHA-256 of the other result-changing hparams that differ
from their defaults (so a field added later with a default that keeps the old behaviour leaves
existing directories where they are). Every hparam is result-changing except `RESUME_SAFE`:
where files go and how often and how precisely the run is evaluated and saved. A command whose
configuration is already a run's resumes it; changed resume-safe values are allowed and logged,
and a stored configuration that differs in a result-changing hparam (a default changed in the
code, a hand-edited file) is refused.

The run directory holds only what this project writes there: a symbolic link in place of one of
its files or folders (which would make a run write outside `log_dir`) is refused, and its files
are opened with `O_NOFOLLOW`. `config.json` also records a fingerprint of the training data
(`DATA_FINGERPRINT`), so that other data behind the same `--dataset` is refused rather than mixed
into the run.

The lock is an OS lock (`fcntl.flock`) on `lock`: it dies with its holder, so a killed run
never blocks the next one, while a live holder makes a second process stop with a line naming
it. This module never imports TensorFlow, so that the command line and `reproduce.py` use it
before TensorFlow loads.

    lock = runs.open_run(hparams, log=print)  # RunError: one line for the user, exit status 2
    ...                                       # train in lock.directory
    lock.close()
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import hashlib
import json
import os
import typing

if typing.TYPE_CHECKING:
  from collections.abc import Callable, Mapping, Sequence

  from dvae import config

CONFIG = "config.json"
LOCK = "lock"
# The key of config.json that holds the data's fingerprint (`dvae.data.fingerprint`).
DATA_FINGERPRINT = "data_fingerprint"
# What a run directory may hold, by the names of its files and folders; none may be a link.
RUN_ENTRIES = (CONFIG, LOCK, "eval_history.jsonl", "results.json", "checkpoints", "summaries",
               os.path.join("checkpoints", "latest"), os.path.join("checkpoints", "best"))
# The file that marks a SavedModel directory written by `dvae.export`: only such a directory
# is ever replaced.
EXPORT_MARKER = "dvae_export.json"

# Hparams that may change between the commands of one run without changing what it learns:
# where files are, the length of training (a longer run continues the same one; the learning-rate
# schedule and KL warm-up follow the new length from the step reached), how often and with
# how many samples it is evaluated and saved, and how many steps one call of the compiled
# training loop runs, and how long a multi-worker run waits for its workers. `dataset` names
# the data; `data_dir` only says where the published files are, and their hashes are checked.
RESUME_SAFE = frozenset({
    "num_train_iter", "eval_every", "eval_batch_size", "eval_iw_samples",
    "periodic_eval_iw_samples", "checkpoint_every_steps", "checkpoint_every_secs", "log_dir",
    "export_dir", "data_dir", "verify_data", "steps_per_execution", "startup_timeout_secs"})
# Hparams spelled in the directory path, outermost first (the seed beside the digest).
PATH_KEYS = ("dataset", "struct", "baseline", "k", "seed")
DIGEST_LENGTH = 8

# Peak bytes of one training process: its base (the TensorFlow runtime and compiled functions,
# 0.7 GiB measured with no data), and per row of a training step or an evaluation call, per
# input and per unit of network width (see `memory_needed`), and per chain and latent unit.
BASE_BYTES = 1 << 30
TRAIN_BYTES_PER_INPUT, TRAIN_BYTES_PER_WIDTH = 50, 6
EVAL_BYTES_PER_INPUT, EVAL_BYTES_PER_WIDTH = 28, 1
CHAIN_BYTES_PER_UNIT = 40
# Per parameter (the networks', and the prior's: the RBM's weights W ∝ units², or a graph's
# couplings): the variable, its gradient, Adam's two slots, the log Z parameter snapshots and
# the step's temporaries (measured: 37 at 2,000 and 20,000 latent units, bench/memory.py). Per
# node of the full hardware graph, built before the latent units are cut out of it (measured:
# 760 on chimera 256, 1,000 on zephyr 64). Per value of the data: the float32 splits and the
# input pipeline's copy.
BYTES_PER_PARAMETER = 40
GRAPH_BYTES_PER_NODE = 1200
DATA_BYTES_PER_VALUE = 8
# The most couplings of one unit on any of the hardware graphs (zephyr's 20).
MAX_GRAPH_DEGREE = 20


class RunError(Exception):
  """A run that cannot start as asked; the message is one line for the user (exit status 2)."""


def identity(hparams: config.HParams) -> dict[str, typing.Any]:
  """The result-changing hparams of a configuration, as a dict.

  Args:
    hparams: the configuration.

  Returns:
    Every field except those of `RESUME_SAFE`, by name.
  """
  return {key: value for key, value in dataclasses.asdict(hparams).items()
          if key not in RESUME_SAFE}


def _path_components(hparams):
  """The folder names of `PATH_KEYS`: the values, a data file by its stem (`dataset_name`)."""
  return {key: hparams.dataset_name if key == "dataset" else str(getattr(hparams, key))
          for key in PATH_KEYS}


def digest(hparams: config.HParams) -> str:
  """8 hex digits of the result-changing hparams that the path does not spell.

  A value counts when it differs from the field's default, or when the path cannot spell it
  exactly (a dataset given as a file path).

  Args:
    hparams: the configuration.

  Returns:
    `DIGEST_LENGTH` lowercase hex digits of a SHA-256.
  """
  defaults = {field.name: field.default for field in dataclasses.fields(hparams)}
  spelled = {key for key, name in _path_components(hparams).items()
             if name == str(getattr(hparams, key))}
  rest = {key: value for key, value in identity(hparams).items()
          if key not in spelled and value != defaults.get(key, dataclasses.MISSING)}
  text = json.dumps(rest, sort_keys=True, ensure_ascii=True)
  return hashlib.sha256(text.encode()).hexdigest()[:DIGEST_LENGTH]


def run_directory(hparams: config.HParams) -> str:
  """`<log_dir>/<dataset>/<struct>/<baseline>/k<k>/seed<seed>-<digest>` of a configuration.

  Args:
    hparams: the configuration.

  Returns:
    The run directory's path, relative when `log_dir` is.
  """
  dataset, struct, baseline, k, seed = _path_components(hparams).values()
  return os.path.join(hparams.log_dir, dataset, struct, baseline, f"k{k}",
                      f"seed{seed}-{digest(hparams)}")


def read_config(directory: str) -> dict[str, typing.Any] | None:
  """The stored hparams of the run in `directory` as a dict, or None when it has none.

  Args:
    directory: a run directory.

  Returns:
    The content of its `CONFIG` (with the data's fingerprint, if stored), or None when the file
    does not exist.

  Raises:
    RunError: the file exists but cannot be read, or is not a JSON object.
  """
  path = os.path.join(directory, CONFIG)
  try:
    with open(path, encoding="utf-8") as f:
      stored = json.load(f)
  except FileNotFoundError:
    return None
  except (OSError, ValueError) as e:
    raise RunError(f"cannot read the run's configuration {path} ({e}); move that run "
                   "directory away to start anew") from None
  if not isinstance(stored, dict):
    raise RunError(f"{path} is not a JSON object; move that run directory away to start anew")
  return stored


def differences(stored: Mapping[str, typing.Any], hparams: config.HParams
                ) -> tuple[list[tuple[str, typing.Any, typing.Any]],
                           list[tuple[str, typing.Any, typing.Any]]]:
  """(mismatched, changed) between a stored configuration and `hparams`.

  Each is a list of (key, stored value, new value): `mismatched` for result-changing hparams,
  `changed` for resume-safe ones. A key the stored file lacks (a field added after the run was
  made) counts as its default.

  Args:
    stored: a stored configuration (`read_config`); keys that are not fields are ignored.
    hparams: the configuration of this command.

  Returns:
    `(mismatched, changed)`, each in the order of the fields.
  """
  defaults = {field.name: field.default for field in dataclasses.fields(hparams)}
  mismatched, changed = [], []
  for key, value in dataclasses.asdict(hparams).items():
    before = stored.get(key, defaults[key])
    if before != value:
      (changed if key in RESUME_SAFE else mismatched).append((key, before, value))
  return mismatched, changed


def _show(value):
  return json.dumps(value, ensure_ascii=False)


def _refuse_mismatch(directory, mismatched):
  listed = "; ".join(f"{key}: run has {_show(before)}, command gives {_show(value)}"
                     for key, before, value in mismatched)
  raise RunError(f"run directory {directory} holds a run with other hparams ({listed}); "
                 "give the run's values, or move that directory away to start anew")


def is_disk_full(error: BaseException) -> bool:
  """Whether `error` (an OSError, or TensorFlow's error of a failed write) says the disk is full.

  Args:
    error: the exception; its `errno` (ENOSPC, EDQUOT) or its message is read.

  Returns:
    True when it says the disk or the quota is full.
  """
  return (getattr(error, "errno", None) in (errno.ENOSPC, errno.EDQUOT)
          or "No space left on device" in str(error) or "Disk quota exceeded" in str(error))


def open_no_follow(path: str, flags: int, mode: int = 0o644) -> typing.TextIO:
  """`os.open(path, flags | O_NOFOLLOW)` as a file object (text, UTF-8); a link is a RunError.

  `flags` decides the mode of the file object: O_RDONLY reads, O_APPEND appends, O_RDWR reads
  and writes, O_WRONLY writes.

  Args:
    path: the file.
    flags: `os.O_*` flags; O_NOFOLLOW and O_CLOEXEC are added.
    mode: permissions of a file that O_CREAT creates.

  Returns:
    The open text file object, which the caller closes.

  Raises:
    RunError: `path` is a symbolic link.
    OSError: any other failure of `os.open`.
  """
  try:
    descriptor = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
  except OSError as e:
    if e.errno == errno.ELOOP:
      raise RunError(f"{path} is a symbolic link; a run directory holds only the files this "
                     "program writes there: remove the link") from None
    raise
  access = ("r" if flags & os.O_ACCMODE == os.O_RDONLY else "a" if flags & os.O_APPEND
            else "r+" if flags & os.O_RDWR else "w")
  return os.fdopen(descriptor, access, encoding="utf-8")


def refuse_links(directory: str) -> None:
  """Raises RunError when a file or folder of the run in `directory` (`RUN_ENTRIES`) is a link.

  Args:
    directory: a run directory.

  Raises:
    RunError: naming the first link found.
  """
  for name in RUN_ENTRIES:
    path = os.path.join(directory, name)
    if os.path.islink(path):
      raise RunError(f"{path} is a symbolic link; a run directory holds only the files this "
                     "program writes there: remove the link or move the run directory away")


def write_json_atomically(path: str, content: typing.Any) -> None:
  """Writes JSON to a new temporary file and renames it, so `path` is never half-written.

  The temporary file is created exclusively (never through a link) and removed when writing
  fails; a full disk is a RunError that says so.

  Args:
    path: the file to write; its folder is created if missing.
    content: a JSON-able value, written indented with sorted keys.

  Raises:
    RunError: the disk is full.
    OSError: any other failure to write.
    TypeError: `content` is not JSON-able.
  """
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  temporary = f"{path}.tmp-{os.getpid()}"
  try:
    with open_no_follow(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL) as f:
      json.dump(content, f, indent=2, sort_keys=True)
      f.flush()
      os.fsync(f.fileno())
    os.replace(temporary, path)
  except BaseException as e:
    with contextlib.suppress(FileNotFoundError):
      os.remove(temporary)
    if isinstance(e, OSError) and is_disk_full(e):
      raise RunError(f"the disk is full: cannot write {path} ({e.strerror}); free space there "
                     "and run the command again") from None
    raise


def check_writable(directory: str, flag: str) -> None:
  """Raises RunError unless `directory` exists writable or could be created; leaves nothing.

  An existing folder is asked through access(2) (which also sees a read-only mount). A missing
  one is tried for real: the first missing level of `directory` is made and removed again, so
  the probe never writes outside the folder the user named (root passes access(2) on folders
  such as /proc where nothing can be made).

  Args:
    directory: the folder to check.
    flag: the hparam that named it, for the message (e.g. "log_dir").

  Raises:
    RunError: naming the folder, the nearest existing level and the reason.
  """
  target = os.path.abspath(directory)
  existing, first_missing = target, None
  while not os.path.exists(existing):
    existing, first_missing = os.path.dirname(existing), existing
  reason = None
  if not os.path.isdir(existing):
    reason = "not a folder"
  elif first_missing is None:
    if not os.access(existing, os.W_OK | os.X_OK):
      reason = "not writable"
  else:
    try:
      os.mkdir(first_missing)
      os.rmdir(first_missing)
    except OSError as e:
      reason = e.strerror or "not writable"
  if reason:
    raise RunError(f"{flag} {directory} cannot be created or written ({existing}: {reason}); "
                   f"pass a writable --{flag}")


def _inside(path, folder):
  """Whether `path` is `folder` or lies below it (both resolved)."""
  path, folder = os.path.realpath(path), os.path.realpath(folder)
  return os.path.commonpath([path, folder]) == folder


def is_export(path: str) -> bool:
  """Whether `path` is a directory (not a link) that `dvae.export.export_model` wrote.

  Args:
    path: any path.

  Returns:
    True when it holds `EXPORT_MARKER` and is not a symbolic link.
  """
  return not os.path.islink(path) and os.path.isfile(os.path.join(path, EXPORT_MARKER))


def check_export_dir(export_dir: str, log_dir: str, overwrite: bool) -> None:
  """Raises RunError unless `export_dir` may be written: new, or (with `overwrite`) an earlier
  export of this project (it holds `EXPORT_MARKER`), and never `log_dir`, inside it, or above it.

  Args:
    export_dir: where the SavedModel would be written.
    log_dir: the root of the run directories.
    overwrite: whether an earlier export there may be replaced.

  Raises:
    RunError: with the one-line reason.
  """
  if _inside(log_dir, export_dir) or _inside(export_dir, log_dir):
    raise RunError(f"export_dir {export_dir} is the log_dir {log_dir}, inside it or above it; "
                   "give an export directory of its own")
  if not os.path.lexists(export_dir):
    return
  if not overwrite:
    raise RunError(f"export_dir {export_dir} exists; pass --overwrite to replace it")
  if not is_export(export_dir):
    raise RunError(f"export_dir {export_dir} exists and is not a model exported by this program "
                   f"(it has no {EXPORT_MARKER}), so --overwrite does not replace it; give "
                   "another --export_dir or remove it yourself")


# Characters of the holder's command line shown when a run is in use.
_COMMAND_SHOWN = 120


def _holder(lock_file):
  """'process <pid> (<command line>)' from a lock file's content, as far as it can be read."""
  lock_file.seek(0)
  pid = lock_file.read().strip()
  try:
    with open(f"/proc/{int(pid)}/cmdline", "rb") as f:
      command = " ".join(f.read().replace(b"\0", b" ").decode(errors="replace").split())
  except (OSError, ValueError):
    command = ""
  name = f"process {pid}" if pid else "another process"
  if len(command) > _COMMAND_SHOWN:
    command = command[:_COMMAND_SHOWN - 1] + "…"
  return f"{name} ({command})" if command else name


class RunLock:
  """An open run: its directory, locked by this process until `close` (or this process ends).

  Attributes:
    directory: the run directory.
    resumed: whether the directory already held this run's configuration.
  """

  def __init__(self, directory: str, lock_file: typing.TextIO | None, resumed: bool):
    """Holds the lock that the caller took.

    Args:
      directory: the run directory.
      lock_file: the open, locked lock file, which `close` closes; None for a worker of a
        multi-worker run, which holds no lock.
      resumed: whether the directory already held this run's configuration.
    """
    self.directory = directory
    self._lock_file = lock_file
    self.resumed = resumed

  def close(self) -> None:
    """Releases the lock (the lock file stays; its lock, not its presence, marks a run in use).

    Closing again does nothing.
    """
    if self._lock_file is not None:
      self._lock_file.close()
      self._lock_file = None

  def __enter__(self) -> RunLock:
    return self

  def __exit__(self, *exc_info: object) -> None:
    self.close()


def check_tf_config(environ: Mapping[str, str] = os.environ) -> None:
  """Raises RunError unless `TF_CONFIG` describes a cluster: {"cluster": {type: [host:port,
  ...]}, "task": {"type": type, "index": i}} with the task among the cluster's.

  Args:
    environ: the environment variables to read `TF_CONFIG` from.

  Raises:
    RunError: `TF_CONFIG` is unset, empty or malformed (the message shows the expected form).
  """
  text = environ.get("TF_CONFIG")
  form = ('TF_CONFIG must be a JSON object such as {"cluster": {"worker": ["host1:port", '
          '"host2:port"]}, "task": {"type": "worker", "index": 0}}')
  if not text:
    raise RunError(f"distribute=multi_worker needs the TF_CONFIG environment variable; {form}")
  try:
    tf_config = json.loads(text)
    cluster, task = tf_config["cluster"], tf_config["task"]
    kind, index = task["type"], task["index"]
    ok = (isinstance(cluster, dict) and all(
        isinstance(hosts, list) and all(isinstance(h, str) for h in hosts)
        for hosts in cluster.values()) and isinstance(kind, str) and isinstance(index, int)
          and not isinstance(index, bool) and 0 <= index < len(cluster.get(kind, [])))
  except (ValueError, RecursionError, KeyError, TypeError):
    ok = False
  if not ok:
    shown = text if len(text) <= 80 else text[:79] + "…"
    raise RunError(f"TF_CONFIG {shown!r} is malformed; {form}, the task one of the cluster's")


def is_chief() -> bool:
  """Whether this process leads its training cluster (always, unless TF_CONFIG says otherwise).

  In the `TF_CONFIG` of a multi-worker run, the chief is the task of type "chief", or worker 0
  when the cluster has no "chief".

  Returns:
    True for the chief, and when `TF_CONFIG` is unset or unreadable.
  """
  try:
    tf_config = json.loads(os.environ.get("TF_CONFIG") or "{}")
    task, cluster = tf_config.get("task", {}), tf_config.get("cluster", {})
    kind, index = task.get("type", "chief"), int(task.get("index", 0))
  except (ValueError, AttributeError, TypeError):
    return True
  return kind == "chief" or (kind == "worker" and index == 0 and "chief" not in cluster)


def open_run(hparams: config.HParams, log: Callable[[str], object] = print,
             data_fingerprint: str | None = None) -> RunLock:
  """Opens the run of `hparams` for training: checks, locks, stores the configuration.

  Refusals come before anything is written: a directory that cannot be created, a stored
  configuration that differs in a result-changing hparam or in its data, a link in place of a
  file of the run, a run in use by another process.
  The other workers of a multi-worker run (`distribute="multi_worker"`, not `is_chief()`)
  train the chief's run: they check the stored configuration, and leave the lock and the
  configuration file to the chief.

  Args:
    hparams: a validated `dvae.config.HParams`.
    log: callable taking one line (what is resumed, which resume-safe values changed).
    data_fingerprint: the training data's fingerprint (`dvae.data.fingerprint`), kept in
      config.json and compared on every resume; None to neither keep nor compare one.

  Returns:
    A `RunLock` held by this process.

  Raises:
    RunError: with the one-line reason.
  """
  directory = run_directory(hparams)
  check_writable(directory, "log_dir")
  if hparams.export_dir:
    check_writable(hparams.export_dir, "export_dir")
  if os.path.isdir(directory):
    refuse_links(directory)
  stored = read_config(directory)
  if stored is not None:
    _check_stored(directory, stored, hparams, data_fingerprint)
  if hparams.distribute == "multi_worker" and not is_chief():
    log(f"a worker of the multi-worker run in {directory}")
    return RunLock(directory, None, resumed=stored is not None)
  try:
    os.makedirs(directory, exist_ok=True)
    lock_file = open_no_follow(os.path.join(directory, LOCK), os.O_RDWR | os.O_CREAT)
  except OSError as e:
    raise RunError(f"cannot create the run directory {directory} ({e.strerror})"
                   + ("; the disk is full" if is_disk_full(e) else "")) from None
  try:
    fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except OSError as e:
    if e.errno not in (errno.EAGAIN, errno.EACCES):
      raise
    holder = _holder(lock_file)
    lock_file.close()
    raise RunError(f"run directory {directory} is in use by {holder}; wait for it to end or "
                   "stop it, then run this command again") from None
  try:
    # Another process may have created the run between the first look and the lock.
    refuse_links(directory)
    stored = read_config(directory)
    _, changed = _check_stored(directory, stored, hparams, data_fingerprint) if stored else (
        [], [])
    lock_file.truncate(0)
    lock_file.write(f"{os.getpid()}\n")
    lock_file.flush()
    content = dataclasses.asdict(hparams)
    if data_fingerprint is not None:
      content[DATA_FINGERPRINT] = data_fingerprint
    write_json_atomically(os.path.join(directory, CONFIG), content)
  except BaseException:
    lock_file.close()
    raise
  if stored is None:
    log(f"new run in {directory}")
  else:
    log(f"resuming the run in {directory}")
    for key, before, value in changed:
      log(f"  {key} changed from {_show(before)} to {_show(value)} (resume-safe)")
  return RunLock(directory, lock_file, resumed=stored is not None)


def _check_stored(directory, stored, hparams, data_fingerprint):
  """`differences(stored, hparams)`, refusing a result-changing mismatch or other data."""
  mismatched, changed = differences(stored, hparams)
  if mismatched:
    _refuse_mismatch(directory, mismatched)
  before = stored.get(DATA_FINGERPRINT)
  if data_fingerprint is not None and before is not None and before != data_fingerprint:
    raise RunError(f"run directory {directory} was trained on other data than "
                   f"{hparams.dataset} holds now (fingerprint {before}, now {data_fingerprint}); "
                   "give the run's data, or move that directory away to start anew")
  return mismatched, changed


def newest_readable(checkpoints: Sequence[str], verify: Callable[[str], object],
                    log: Callable[[str], object]) -> str | None:
  """The newest checkpoint that `verify` accepts; damaged newer ones are skipped with a warning.

  Args:
    checkpoints: checkpoint names, oldest first.
    verify: callable(name) that raises an exception when the checkpoint cannot be read whole.
    log: callable taking one line.

  Returns:
    The newest readable checkpoint, or None when there are none at all.

  Raises:
    RunError: when checkpoints exist but none is readable; nothing is deleted.
  """
  damaged = []
  for name in reversed(checkpoints):
    try:
      verify(name)
    except Exception as e:  # pylint: disable=broad-except
      reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
      damaged.append(f"{name} ({reason})")
      continue
    for line in damaged:
      log(f"warning: checkpoint {line} is damaged; resuming from {name}")
    return name
  if damaged:
    raise RunError(f"no readable checkpoint: {'; '.join(damaged)}; nothing was deleted; "
                   "restore the files or move the run directory away to start anew")
  return None


# (limit, usage) of the process's memory cgroup: v2, then v1 (whose "no limit" is a huge number).
CGROUP_MEMORY_FILES = (
    ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
    ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"),
)


def available_memory() -> int:
  """Bytes this process can still allocate: MemAvailable, capped by a cgroup limit if any.

  Returns:
    The bytes: MemAvailable of /proc/meminfo (without it, sysconf's available or physical
    pages), capped at the limit of the process's memory cgroup (v2 or v1), if it has one, minus
    the cgroup's usage.
  """
  available = None
  try:
    with open("/proc/meminfo", encoding="ascii") as f:
      for line in f:
        if line.startswith("MemAvailable:"):
          available = int(line.split()[1]) * 1024
  except OSError:
    pass
  if available is None:
    # Without /proc (e.g. macOS, which also lacks SC_AVPHYS_PAGES), the physical memory bounds it.
    try:
      pages = os.sysconf("SC_AVPHYS_PAGES")
    except (ValueError, OSError):
      pages = os.sysconf("SC_PHYS_PAGES")
    available = pages * os.sysconf("SC_PAGE_SIZE")
  for limit_path, usage_path in CGROUP_MEMORY_FILES:
    try:
      with open(limit_path, encoding="ascii") as f:
        limit = f.read().strip()
      with open(usage_path, encoding="ascii") as f:
        used = int(f.read())
      if limit != "max":
        available = min(available, int(limit) - used)
    except (OSError, ValueError):
      pass
  return available


def memory_needed(hparams: config.HParams, num_inputs: int, eval_rows: int,
                  data_values: int = 0) -> dict[str, tuple[int, tuple[str, ...]]]:
  """Estimated peak bytes of one training process, by what drives them.

  A row is one image, or one of its K copies. With D inputs and the network width
      W = Σ_nets (d_in + 3 h n_hidden + d_out)     (every encoder and the decoder; n_hidden layers
                                                    of h units, each with batch norm and tanh),
  a training step holds 50 D + 6 W bytes per row (the D-wide values kept for the gradient —
  the repeated input, logits, the likelihood's terms — and their gradients dominate), an
  evaluation call 28 D + W. These were fitted to the growth of VmHWM on CPU from 2·10⁴ to
  6·10⁴ training rows and 2·10⁴ to 10⁵ evaluation rows for the 1-layer-lin, 2-layer-nonlin
  and 4-layer-nonlin structures, and over-estimate them by 0–15% (training) and 10–40%
  (evaluation). The prior's sampler holds 40 bytes per chain and latent unit (measured: 20
  for PCD, 36 for population annealing, from 2·10⁴ to 2·10⁵ chains of 400 units). Training
  and evaluation alternate, so the larger of the two counts. To these add the parameters —
  the networks' and the prior's (n/2 · n/2 RBM weights for n latent units, ∝ n², or a graph's
  couplings) — 40 bytes each with their gradients and optimizer slots, the full hardware graph
  (`GRAPH_BYTES_PER_NODE` per node) and the data (8 bytes per value); bench/memory.py compares
  the sum with the measured peak.

  Args:
    hparams: a `dvae.config.HParams`.
    num_inputs: D, the data's dimension.
    eval_rows: images × samples of one evaluation call.
    data_values: values of the data's three splits together (Σ N·D).

  Returns:
    dict: label → (bytes, the flags that set them, e.g. ("--num_chains",); empty for the
    TensorFlow runtime).
  """
  units, layers = hparams.latent_units, hparams.num_latent_layers
  hidden = 3 * hparams.num_hidden * getattr(hparams, "hidden_units", 200)
  encoder_out = units * (2 if hparams.baseline == "dvaes_gi" else 1)
  width = sum(num_inputs + i * units + hidden + encoder_out for i in range(layers))
  width += layers * units + hidden + num_inputs
  train_rows = hparams.train_batch_size * hparams.k
  train = train_rows * (TRAIN_BYTES_PER_INPUT * num_inputs + TRAIN_BYTES_PER_WIDTH * width)
  evaluate = eval_rows * (EVAL_BYTES_PER_INPUT * num_inputs + EVAL_BYTES_PER_WIDTH * width)
  rows = (
      (f"training rows (train_batch_size × k = {train_rows:,})", train,
       ("--k", "--train_batch_size")) if train >= evaluate else
      (f"evaluation rows ({eval_rows:,} per call)", evaluate, ("--eval_batch_size",)))
  latents = layers * units
  h = getattr(hparams, "hidden_units", 200)

  def mlp_parameters(d_in, d_out):
    sizes = [d_in] + [h] * hparams.num_hidden + [d_out]
    return sum(a * b + b for a, b in zip(sizes, sizes[1:]))

  networks = sum(mlp_parameters(num_inputs + i * units, encoder_out) for i in range(layers))
  networks += mlp_parameters(latents, num_inputs)
  if hparams.prior == "rbm":
    prior = (latents // 2) * (latents - latents // 2) + latents
    described = f"RBM {latents // 2:,} × {latents - latents // 2:,}"
  else:
    prior = latents * (1 + MAX_GRAPH_DEGREE)
    described = f"{hparams.prior} couplings"
  needed = {
      rows[0]: rows[1:],
      f"sampler chains ({hparams.num_chains:,} × {latents} units)":
          (hparams.num_chains * latents * CHAIN_BYTES_PER_UNIT, ("--num_chains",)),
      f"parameters ({networks:,} of the networks, {prior:,} of the {described}) and their "
      "optimizer state": ((networks + prior) * BYTES_PER_PARAMETER,
                          ("--latent_units", "--hidden_units")),
      "TensorFlow runtime": (BASE_BYTES, ()),
  }
  if hparams.prior != "rbm":
    nodes = hparams.graph_nodes
    needed[f"{hparams.prior} graph of size {hparams.graph_size} ({nodes:,} nodes)"] = (
        nodes * GRAPH_BYTES_PER_NODE, ("--graph_size",))
  if data_values:
    needed[f"data ({data_values:,} values)"] = (data_values * DATA_BYTES_PER_VALUE,
                                                ("--dataset",))
  return needed


def _gib(num_bytes):
  return f"{num_bytes / 2**30:.1f} GiB"


def check_memory(hparams: config.HParams, num_inputs: int, eval_rows: int,
                 available: int | None = None, data_values: int = 0) -> None:
  """Raises RunError when `memory_needed` exceeds the available memory, naming what to lower.

  Args:
    hparams: a `dvae.config.HParams`.
    num_inputs: D, the data's dimension.
    eval_rows: images × samples of one evaluation call.
    available: the bytes available; None for `available_memory()`.
    data_values: values of the data's three splits together (Σ N·D).

  Raises:
    RunError: naming the total, its largest part and the flags that lower that part.
  """
  needed = memory_needed(hparams, num_inputs, eval_rows, data_values)
  available = available_memory() if available is None else available
  total = sum(size for size, _ in needed.values())
  if total <= available:
    return
  label, (size, flags) = max(needed.items(), key=lambda item: item[1][0])
  raise RunError(f"this configuration needs about {_gib(total)} of memory, {_gib(size)} of it "
                 f"for the {label}, but {_gib(available)} is available; lower "
                 f"{' or '.join(flags)}")
