"""The memory estimate (`dvae.runs.memory_needed`) against the measured peak of one process.

    python bench/memory.py [--configs units=200 units=2000 units=20000 chimera=16 ...]

Each configuration runs in a fresh subprocess: it builds the run of a small synthetic data set
(1-layer-lin, PCD, batch 100, 100 chains, D = 784) and trains one step; the peak resident set
(VmHWM, `resource.getrusage`) is compared with the estimate. `units=N` sets the latent units
(RBM prior); `chimera=M`, `pegasus=M`, `zephyr=M` put 200 latent units on that graph of size M.
"""

import argparse
import json
import os
import resource
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

DEFAULT_CONFIGS = ("units=200", "units=2000", "units=20000", "chimera=16", "chimera=64",
                   "zephyr=16")


def hparams_of(spec, log_dir):
  from dvae import config  # pylint: disable=g-import-not-at-top
  kind, value = spec.split("=")
  values = dict(struct="1-layer-lin", sampler="pcd", num_chains=100, num_sweeps=1,
                num_train_iter=1, eval_every=1, train_batch_size=100, eval_batch_size=100,
                periodic_eval_iw_samples=1, eval_iw_samples=1, log_dir=log_dir)
  if kind == "units":
    values["latent_units"] = int(value)
  else:
    values.update(prior=kind, graph_size=int(value), baseline="dvaes_power")
  return config.load_hparams(None, values)[0]


def measure(spec, log_dir):
  """In this process: the estimate and the peak after one training step (bytes)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from dvae import data, runs, training  # pylint: disable=g-import-not-at-top
  hp = hparams_of(spec, log_dir)
  rng = np.random.default_rng(0)
  images = (rng.random([300, 784]) < 0.3).astype(np.float32)
  dataset = data.Dataset(train=images[:200], valid=images[200:250], test=images[250:],
                         train_mean=images[:200].mean(0), dynamic_binarization=False)
  estimate = sum(size for size, _ in runs.memory_needed(
      hp, 784, hp.eval_batch_size, data_values=images.size).values())
  run = training.Run(hp, dataset, log=lambda _: None)
  run.model.fit(data.train_dataset(dataset, hp.train_batch_size, hp.seed), steps_per_epoch=1,
                epochs=1, verbose=0)
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
  return {"config": spec, "estimate": estimate, "peak": peak}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--configs", nargs="*", default=DEFAULT_CONFIGS)
  parser.add_argument("--one", help=argparse.SUPPRESS)
  parser.add_argument("--log_dir", default="/tmp/dvae-bench-memory")
  args = parser.parse_args()
  if args.one:
    print(json.dumps(measure(args.one, args.log_dir)))
    return
  print(f"{'configuration':>14} {'estimate GiB':>13} {'peak GiB':>9} {'ratio':>6}")
  for spec in args.configs:
    result = subprocess.run([sys.executable, __file__, "--one", spec, "--log_dir", args.log_dir],
                            capture_output=True, text=True, check=False,
                            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    if result.returncode:
      print(f"{spec:>14} failed: {result.stderr.strip().splitlines()[-1:]}")
      continue
    row = json.loads(result.stdout.strip().splitlines()[-1])
    print(f"{spec:>14} {row['estimate'] / 2**30:13.2f} {row['peak'] / 2**30:9.2f} "
          f"{row['estimate'] / row['peak']:6.2f}", flush=True)


if __name__ == "__main__":
  main()
