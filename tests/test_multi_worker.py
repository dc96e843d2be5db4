"""Training under tf.distribute.MultiWorkerMirroredStrategy with two worker processes on
127.0.0.1, against single-device training with the same global batch."""

import json
import signal
import os
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import tensorflow as tf

TESTS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(TESTS)
STEPS = 30

# One process of the run: like run_training.py, it creates the strategy before anything starts
# TensorFlow's runtime, then trains STEPS one-step epochs (the history holds every step's loss)
# and evaluates, which writes results.json, then ends with the other workers.
SCRIPT = textwrap.dedent("""
    import hashlib, json, sys
    sys.path[:0] = [{repo!r}, {tests!r}]
    import tensorflow as tf
    from dvae import data, training
    strategy = training.make_strategy({distribute!r})
    import helpers
    dataset = helpers.synthetic_dataset()
    hp = helpers.tiny_hparams({log_dir!r}, distribute={distribute!r}, num_train_iter=1_000_000,
                              base_lr=2e-2)
    run = training.Run(hp, dataset, log=lambda _: None)
    assert run.strategy is strategy
    history = run.model.fit(data.train_dataset(dataset, hp.train_batch_size, seed=0),
                            steps_per_epoch=1, epochs={steps}, verbose=0)
    chains = strategy.experimental_local_results(run.model.prior_machine.chains.value)[0].numpy()
    run.final_evaluation()
    run.wait_for_workers()
    print(json.dumps({{"loss": history.history["loss"], "chief": run.chief,
                      "replicas": strategy.num_replicas_in_sync, "output": run.output,
                      "chains": hashlib.sha256(chains.tobytes()).hexdigest()}}))
""")


def free_ports(count):
  sockets = [socket.socket() for _ in range(count)]
  for s in sockets:
    s.bind(("127.0.0.1", 0))
  ports = [s.getsockname()[1] for s in sockets]
  for s in sockets:
    s.close()
  return ports


class MultiWorkerTrainingTest(tf.test.TestCase):

  def test_two_workers_follow_single_device_loss_and_only_the_chief_writes(self):
    log_dir = self.get_temp_dir()
    workers = [f"127.0.0.1:{port}" for port in free_ports(2)]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    envs = [dict(env, TF_CONFIG=json.dumps({"cluster": {"worker": workers},
                                            "task": {"type": "worker", "index": index}}))
            for index in range(2)]
    commands = [(SCRIPT.format(repo=REPO, tests=TESTS, log_dir=os.path.join(log_dir, name),
                               distribute=distribute, steps=STEPS), environment)
                for name, distribute, environment in (("multi", "multi_worker", envs[0]),
                                                      ("multi", "multi_worker", envs[1]),
                                                      ("single", "none", env))]
    processes = []
    try:
      processes = [subprocess.Popen([sys.executable, "-c", script], cwd=REPO, env=environment,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                   for script, environment in commands]
      outputs = [process.communicate(timeout=300) for process in processes]
    finally:
      for process in processes:
        if process.poll() is None:
          process.kill()
          process.wait()
    for process, (stdout, stderr) in zip(processes, outputs):
      self.assertEqual(process.returncode, 0, stderr[-3000:])
    chief, other, single = (json.loads(stdout.strip().splitlines()[-1]) for stdout, _ in outputs)
    self.assertEqual((chief["chief"], other["chief"]), (True, False))
    self.assertEqual((chief["replicas"], other["replicas"], single["replicas"]), (2, 2, 1))

    # Both workers log the same loss: the mean over the workers of their half-batches' losses.
    np.testing.assert_allclose(chief["loss"], other["loss"], rtol=1e-6)
    # Same global batch of 20, same data order, same initial weights; the workers draw their
    # own posterior and sampler noise and normalise their own half-batches, so the trajectory
    # agrees with single-device training up to that noise (as the mirrored test states).
    multi, alone = np.array(chief["loss"]), np.array(single["loss"])
    relative = np.abs(multi - alone) / alone
    trajectories = f"multi-worker {multi.round(2)}, single device {alone.round(2)}"
    self.assertLess(relative.max(), 0.05, trajectories)
    self.assertLess(relative.mean(), 0.02, trajectories)
    self.assertNotEqual(chief["chains"], other["chains"], "each worker should keep its own chains")

    # One results.json, in the run directory, written by the chief; the other worker wrote
    # to its own temporary directory, removed when it ended.
    found = [os.path.join(root, name) for root, _, names in os.walk(os.path.join(log_dir, "multi"))
             for name in names if name == "results.json"]
    self.assertEqual(found, [os.path.join(chief["output"], "results.json")])
    self.assertFalse(os.path.exists(other["output"]))


class StartUpTest(tf.test.TestCase):
  """A worker whose peer never starts: one line after the timeout, or at once on SIGTERM."""

  def start(self, timeout):
    workers = [f"127.0.0.1:{port}" for port in free_ports(2)]
    tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": 0}}
    return subprocess.Popen(
        [sys.executable, os.path.join(REPO, "run_training.py"), "--distribute=multi_worker",
         f"--startup_timeout_secs={timeout}", "--num_train_iter=1",
         f"--log_dir={os.path.join(self.get_temp_dir(), 'logs')}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", DVAE_OFFLINE="1",
                 TF_CONFIG=json.dumps(tf_config)))

  def test_a_peer_that_never_starts_ends_start_up_with_one_line(self):
    process = self.start(timeout=5)
    _, stderr = process.communicate(timeout=120)
    self.assertEqual(process.returncode, 2, stderr)
    self.assertLen(stderr.strip().splitlines(), 1, stderr)
    self.assertIn("did not all start within 5 s", stderr)

  def test_sigterm_while_waiting_for_the_peers_is_honoured(self):
    process = self.start(timeout=600)
    time.sleep(15)  # past TensorFlow's import, waiting for the peer
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    self.assertEqual(process.returncode, 130, stderr)
    self.assertIn("stopped by SIGTERM", stderr)
