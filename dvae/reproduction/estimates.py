"""The statistics of a results page: means over seeds with Student-t intervals, and claims
tested by paired differences.

A setting (a run's hparams but its seed) gives the mean test NLL over its seeds with its standard
error and 95% Student-t interval. A claim "a beats b" gives, for every finished run that matches
"a", the run with the same hparams but "b"'s values: Δ = NLL(a) − NLL(b) for that seed, and the
mean Δ over seeds with its 95% interval decides the verdict: "holds" (interval below 0),
"reversed" (above 0) or "not resolved at this budget". One claim gives one line per setting of
the other grid hparams (e.g. per K).
"""

import dataclasses
import json
import math
import statistics

from scipy import stats

from dvae.reproduction import grids

# Two-sided level of every interval on the pages.
CONFIDENCE = 0.95


@dataclasses.dataclass(frozen=True)
class Estimate:
  """The mean of n values, its standard error and its Student-t interval at CONFIDENCE.

  With x̄ the mean and s the sample standard deviation, the standard error is s/√n and the
  interval x̄ ± t_{n−1}((1 + CONFIDENCE)/2) · s/√n; both are None for fewer than 2 values.
  """
  n: int
  mean: float
  stderr: float | None = None
  low: float | None = None
  high: float | None = None


def estimate(values):
  values = [float(v) for v in values]
  mean = statistics.fmean(values)
  if len(values) < 2:
    return Estimate(len(values), mean)
  stderr = statistics.stdev(values) / math.sqrt(len(values))
  half = float(stats.t.ppf((1 + CONFIDENCE) / 2, len(values) - 1)) * stderr
  return Estimate(len(values), mean, stderr, mean - half, mean + half)


def verdict(difference):
  """The verdict on "a beats b" from the interval of Δ = NLL(a) − NLL(b)."""
  if difference is None or difference.low is None:
    return "not resolved (fewer than 2 paired seeds)"
  if difference.high < 0:
    return "holds"
  if difference.low > 0:
    return "reversed"
  return "not resolved at this budget"


def hparams_key(hparams, without=()):
  return json.dumps({k: v for k, v in hparams.items() if k not in without}, sort_keys=True)


def settings(rows):
  """The finished runs grouped by their hparams but the seed, in the grid's order."""
  groups = {}
  for row in rows:
    groups.setdefault(hparams_key(row.cell.hparams, without=("seed",)), []).append(row)
  return list(groups.values())


def varying_keys(hparams, keys):
  """The keys among `keys` whose value differs between the dicts in `hparams`."""
  return [key for key in keys if len({str(h.get(key)) for h in hparams}) > 1]


@dataclasses.dataclass(frozen=True)
class ClaimLine:
  """One claim at one setting of the other grid hparams: its paired differences over seeds."""
  claim: grids.Claim
  context: dict
  seeds: tuple
  difference: Estimate | None

  @property
  def verdict(self):
    return verdict(self.difference)


def test_claims(claims, all_cells, rows):
  """Each claim's paired differences: for a finished run matching `a`, the finished run with the
  same hparams but `b`'s values gives Δ = NLL(a) − NLL(b) for that seed; one line per setting of
  the other varying hparams, one line with no pairs for a claim whose runs have not finished."""
  by_hparams = {hparams_key(row.cell.hparams): row for row in rows}
  keys = list(dict.fromkeys(key for cell in all_cells for key in cell.hparams))
  varying = varying_keys([cell.hparams for cell in all_cells], keys)
  lines = []
  for claim in claims:
    groups = {}
    for row in rows:
      hparams = row.cell.hparams
      if any(hparams.get(key) != value for key, value in claim.a.items()):
        continue
      partner = by_hparams.get(hparams_key({**hparams, **claim.b}))
      if partner is None:
        continue
      context = {key: hparams.get(key) for key in varying
                 if key not in claim.a and key != "seed"}
      groups.setdefault(hparams_key(context), (context, []))[1].append(
          (hparams["seed"], row.results["test_nll"] - partner.results["test_nll"]))
    for context, pairs in groups.values():
      lines.append(ClaimLine(claim, context, tuple(seed for seed, _ in pairs),
                             estimate([difference for _, difference in pairs])))
    if not groups:
      lines.append(ClaimLine(claim, {}, (), None))
  return lines
