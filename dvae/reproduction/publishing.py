"""Publishing a grid's results: the markdown page, the CSV and the plots.

Every results.json of the grid goes into `<results_dir>/<name>.md`, `.csv` and `.png`. The page
gives, per setting, the mean test NLL over the seeds with its interval (`estimates`), beside the
paper's NLL where SPEC §8 has the same dataset, K and baseline (dvae/paper.py; not for proxy
data); then each claim as paired differences with its verdict. Rows of an earlier publication
(`--reuse_csv`) stand for runs whose directories are gone and are marked "reused". The plot shows
the means with their intervals, the paper's values, the validation learning curves averaged over
seeds, and (`<name>_claims.png`) the claims' intervals.
"""

import csv
import math
import os
import statistics

from dvae import paper
from dvae.reproduction import estimates, grids, running

CAVEAT = (
    "The paper's rows were trained for 1e6 steps with population annealing, and the poster does "
    "not name their structure (values this low belong to its hierarchical nonlinear structures). "
    "The paper column is therefore the paper's best setting for the same dataset, K and "
    "baseline, not the same cell. Compare the ordering of the baselines, not absolute values.")
PROXY_CAVEAT = (
    "The data is a proxy for the named data set, so no value of the paper is quoted: the paper's "
    "NLLs are not comparable with these.")



def _shown_value(key, value):
  if key == "baseline":
    return paper.BASELINE_TITLES.get(value, value)
  return value


def _describe(hparams):
  """`K=5, DVAE# power`: hparams as a reader names them."""
  names = {"k": "K", "baseline": None}
  return ", ".join(str(_shown_value(key, value)) if names.get(key, key) is None
                   else f"{names.get(key, key)}={value}" for key, value in hparams.items()) or "—"


def _plus_minus(e):
  if e is None:
    return "—"
  return _number(e.mean) + ("" if e.stderr is None else f" ± {_number(e.stderr)}")


def _interval(e):
  return "—" if e is None or e.low is None else f"[{_number(e.low)}, {_number(e.high)}]"


CSV_COLUMNS = ("dataset", "struct", "baseline", "k", "sampler", "seed", "steps", "best_step",
               "test_nll", "val_nll", "paper_nll_best_structure_1e6_steps", "test_iw_samples",
               "val_iw_samples", "wall_seconds", "steps_per_second", "log_z", "log_z_stderr",
               "run_dir_under_log_dir", "reused")


# Numbers an earlier publication's CSV gives for a run, and their types.
PUBLISHED_NUMBERS = {"steps": int, "best_step": int, "test_nll": float, "val_nll": float,
                     "test_iw_samples": int, "val_iw_samples": int, "wall_seconds": float,
                     "steps_per_second": float, "log_z": float, "log_z_stderr": float}


def read_published(path, all_cells):
  """{cell: results} from an earlier publication's CSV of the same grid: a row stands for the cell
  with the same values in the CSV's hparam columns (the identity and extra grid hparams)."""
  with open(path, newline="") as f:
    records = list(csv.DictReader(f))
  published = {}
  for cell in all_cells:
    for record in records:
      if all(record.get(key) == str(cell.hparams.get(key))
             for key in grids.IDENTITY_KEYS + cell.extra_keys):
        published[cell] = {key: None if record.get(key) in (None, "") else kind(float(record[key]))
                           for key, kind in PUBLISHED_NUMBERS.items()}
  return published


def csv_record(row):
  r = row.results
  record = {key: row.value(key) for key in grids.IDENTITY_KEYS + row.cell.extra_keys}
  record.update(
      steps=r["steps"], best_step=r.get("best_step"), test_nll=r["test_nll"],
      val_nll=r["val_nll"], paper_nll_best_structure_1e6_steps=row.paper_nll,
      test_iw_samples=r.get("test_iw_samples"), val_iw_samples=r.get("val_iw_samples"),
      wall_seconds=r.get("wall_seconds"), steps_per_second=r.get("steps_per_second"),
      log_z=r.get("log_z"), log_z_stderr=r.get("log_z_stderr"),
      run_dir_under_log_dir=None if row.reused else os.path.relpath(row.cell.run_dir,
                                                                    row.cell.root),
      reused="yes" if row.reused else None)
  return record


def write_csv(path, rows, extra_keys, proxy_data):
  columns = [column for column in CSV_COLUMNS[:6] + extra_keys + CSV_COLUMNS[6:]
             if not (proxy_data and column == "paper_nll_best_structure_1e6_steps")]
  with open(path, "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=columns, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for row in rows:
      writer.writerow({k: "" if v is None else v for k, v in csv_record(row).items()})


def _number(value, digits=2):
  return "—" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _values(items, get):
  """The distinct values of `get(item)`, sorted; None left out."""
  values = {get(item) for item in items} - {None}
  try:
    return sorted(values)
  except TypeError:  # a grid may mix types in one hparam
    return sorted(values, key=str)


def _joined(values):
  return ", ".join(str(v) for v in values) if values else "—"


def _table(header, lines):
  return (["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
          + ["| " + " | ".join(str(c) for c in line) + " |" for line in lines])


def markdown(grid, all_cells, rows, claim_lines, command, trainer, png_names, reused_from=None):
  """The results page: budget and caveat, the command, the claims, the tables, the plots."""
  done = {row.cell for row in rows}
  steps = _values(rows, lambda row: row.results["steps"])
  budget = _values(all_cells, lambda cell: cell.hparams.get("num_train_iter"))
  structs = _values(all_cells, lambda cell: cell.hparams["struct"])
  seeds = _values(all_cells, lambda cell: cell.hparams["seed"])
  quote_paper = not grid.proxy_data
  lines = [f"# {grid.name}", ""]
  if grid.description:
    lines += [grid.description, ""]
  fraction = (f"{_joined([f'{100 * b / 1e6:.2g}%' for b in budget])} of the paper's 1e6"
              if budget else "against the paper's 1e6")
  lines += [
      f"Budget: {_joined(budget) if budget else 'the trainer default'} training steps per run "
      f"(`num_train_iter`; runs reached {_joined(steps)}), {fraction}, with the "
      f"{_joined(structs)} structure. Seeds: {_joined(seeds)}; a setting's test NLL is the mean "
      f"over its seeds ± its standard error, with the {estimates.CONFIDENCE:.0%} Student-t "
      "interval.",
      "",
      f"**Caveat.** {CAVEAT if quote_paper else PROXY_CAVEAT}",
      "",
      "Test NLL is the importance-weighted bound of the best-validation checkpoint with "
      f"{_joined(_values(rows, lambda row: row.results.get('test_iw_samples')))} samples "
      f"(validation: {_joined(_values(rows, lambda row: row.results.get('val_iw_samples')))}); "
      "wall time covers training and evaluation, steps/s training alone; log Z is the AIS "
      "estimate used for the final evaluation.",
      "",
      "Command (from the repository root):",
      "",
      f"    {command}",
      "",
  ]
  if trainer:
    lines += [f"`<trainer>` was {trainer}.", ""]
  if any(row.reused for row in rows):
    lines += [f"Runs marked *reused* were not trained for this page: their numbers are rows of "
              f"`{reused_from}`, an earlier publication of this grid with the same hparams "
              "(`--reuse_csv`; without it the command trains them).", ""]
  if claim_lines:
    lines += ["## Claims", "",
              "Δ = test NLL(a) − test NLL(b) of runs that differ only in the claim's hparams, "
              "paired by seed; a negative Δ favours the claim. Verdict from the "
              f"{estimates.CONFIDENCE:.0%} interval of the mean Δ: *holds* (below 0), *reversed* "
              "(above 0), *not resolved at this budget* (contains 0).", ""]
    lines += _table(
        ["claim", "a", "b", "setting", "seeds", "Δ (a − b) ± s.e.",
         f"{estimates.CONFIDENCE:.0%} interval", "verdict"],
        [[line.claim.text, _describe(line.claim.a), _describe(line.claim.b),
          _describe(line.context), _joined(line.seeds), _plus_minus(line.difference),
          _interval(line.difference), line.verdict] for line in claim_lines])
    if "claims" in png_names:
      lines += ["", f"![Paired differences of the claims]({png_names['claims']})"]
    lines.append("")
  extra = all_cells[0].extra_keys if all_cells else ()
  lines += ["## Per setting", ""]
  lines += _table(
      ["dataset", "struct", "baseline", "K", "sampler", *extra, "seeds",
       "test NLL ± s.e.", f"{estimates.CONFIDENCE:.0%} interval"]
      + ([paper.SETTING] if quote_paper else [])
      + ["val NLL", "wall time per run", "steps/s"],
      [[first.value("dataset"), first.value("struct"),
        _shown_value("baseline", first.value("baseline")), first.value("k"),
        first.value("sampler"), *(first.value(key) for key in extra),
        _joined([row.value("seed") for row in group]), _plus_minus(test), _interval(test)]
       + ([_number(first.paper_nll)] if quote_paper else [])
       + [_number(statistics.fmean(row.results["val_nll"] for row in group)),
          _minutes([row.results.get("wall_seconds") for row in group]),
          _number(_mean_of_known([row.results.get("steps_per_second") for row in group]), 1)]
       for group in estimates.settings(rows)
       for first, test in [(group[0],
                            estimates.estimate([row.results["test_nll"] for row in group]))]])
  if "nll" in png_names:
    lines += ["", f"![NLL per baseline and validation learning curves]({png_names['nll']})"]
  missing = [cell for cell in all_cells if cell not in done]
  if missing:
    lines += ["", f"Not finished ({len(missing)} of {len(all_cells)} runs):", ""]
    lines += [f"- {cell.label}" + ("" if running.read_results(cell) is None else
                                   f" (its {running.RESULTS} was made with other hparams)")
              for cell in missing]
  lines += ["", "<details><summary>Every run</summary>", ""]
  lines += _table(
      ["baseline", "K", "sampler", *extra, "seed", "run", "steps", "test NLL", "val NLL",
       "wall time", "steps/s", "log Z ± stderr"],
      [[_shown_value("baseline", row.value("baseline")), row.value("k"), row.value("sampler"),
        *(row.value(key) for key in extra), row.value("seed"),
        "reused" if row.reused else "here", row.results["steps"],
        _number(row.results["test_nll"]), _number(row.results["val_nll"]),
        _minutes([row.results.get("wall_seconds")]),
        _number(row.results.get("steps_per_second"), 1),
        f"{_number(row.results.get('log_z'))} ± {_number(row.results.get('log_z_stderr'))}"]
       for row in rows])
  lines += ["", "</details>", "", "<details><summary>The trainer command of each run</summary>",
            ""]
  lines += [f"    python run_training.py {' '.join(cell.trainer_args(shown=True))}"
            for cell in all_cells]
  lines += ["", "</details>", ""]
  return "\n".join(lines)


def _mean_of_known(values):
  known = [v for v in values if v is not None]
  return statistics.fmean(known) if known else None


def _minutes(seconds):
  mean = _mean_of_known(seconds)
  return "—" if mean is None else f"{mean / 60:.1f} min"


def _mean_curve(histories):
  """[(step, mean val NLL)] over the steps every history reached."""
  steps = set.intersection(*(set(dict(history)) for history in histories))
  return [(step, statistics.fmean(dict(history)[step] for history in histories))
          for step in sorted(steps)]


def plot(path, rows, curves, quote_paper):
  """Per dataset: mean test NLL per baseline with its interval (beside the paper's), and the
  validation NLL curves averaged over seeds.

  Args:
    path: the PNG to write.
    rows: finished runs.
    curves: [(cell, [(step, val_nll)])] for every run with a learning curve so far.
    quote_paper: whether to draw the paper's values.
  """
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top

  datasets = list(dict.fromkeys([row.value("dataset") for row in rows]
                                + [cell.hparams["dataset"] for cell, _ in curves]))
  figure, axes = plt.subplots(len(datasets), 2, figsize=(14, 4.8 * len(datasets)), squeeze=False)
  colors = plt.get_cmap("tab10").colors
  styles = ("-", "--", ":", "-.")
  for (nll_axes, curve_axes), dataset in zip(axes, datasets):
    mine = [row for row in rows if row.value("dataset") == dataset]
    traced = [(cell, history) for cell, history in curves if cell.hparams["dataset"] == dataset]
    # Settings besides K and the baseline that differ between runs go into every label.
    extra_keys = (mine[0].cell.extra_keys if mine else traced[0][0].extra_keys)
    varying = estimates.varying_keys(
        [row.cell.hparams for row in mine] + [cell.hparams for cell, _ in traced],
        ("struct", "sampler") + extra_keys)

    def setting(hparams, varying=varying):
      return (hparams["k"], *(hparams.get(key) for key in varying))

    def describe(key, varying=varying):
      return ", ".join([f"K={key[0]}"] + [f"{name}={v}" for name, v in zip(varying, key[1:])])

    baselines = [b for b in paper.BASELINES if any(r.value("baseline") == b for r in mine)]
    baselines += sorted({r.value("baseline") for r in mine} - set(baselines))
    groups = estimates.settings(mine)
    series = list(dict.fromkeys(setting(group[0].cell.hparams) for group in groups))
    width = 0.8 / max(len(series), 1)
    for s, key in enumerate(series):
      members = [group for group in groups if setting(group[0].cell.hparams) == key]
      color = colors[s % len(colors)]
      # Series sit side by side around each baseline's tick.
      x = [baselines.index(group[0].value("baseline")) - 0.4 + width * (s + 0.5)
           for group in members]
      means = [estimates.estimate([row.results["test_nll"] for row in group]) for group in members]
      nll_axes.errorbar(x, [e.mean for e in means],
                        yerr=[0 if e.low is None else e.high - e.mean for e in means],
                        fmt="o", capsize=3, color=color,
                        label=f"ours, {describe(key)} (mean, {estimates.CONFIDENCE:.0%} interval)")
      quoted = [(xi, group[0].paper_nll) for xi, group in zip(x, members)
                if quote_paper and group[0].paper_nll is not None]
      if quoted:
        nll_axes.plot(*zip(*quoted), "D", mfc="none", color=color,
                      label=f"{paper.SETTING}, K={key[0]}")
    nll_axes.set_xticks(range(len(baselines)))
    nll_axes.set_xticklabels([paper.BASELINE_TITLES.get(b, b) for b in baselines], rotation=30,
                             ha="right")
    nll_axes.set_ylabel("test NLL (nats)")
    nll_axes.set_title(f"{dataset}: NLL per baseline (lower is better)")
    nll_axes.grid(axis="y", alpha=0.3)
    if series:
      nll_axes.legend(fontsize="small")

    # Colour: the baseline; line style: K and the other varying settings.
    averaged = {}
    for cell, history in traced:
      averaged.setdefault(estimates.hparams_key(cell.hparams, without=("seed",)),
                          (cell, []))[1].append(history)
    settings_seen = list(dict.fromkeys(setting(cell.hparams) for cell, _ in averaged.values()))
    for cell, histories in averaged.values():
      curve = _mean_curve(histories)
      if not curve:
        continue
      baseline = cell.hparams["baseline"]
      index = paper.BASELINES.index(baseline) if baseline in paper.BASELINES else -1
      curve_axes.plot(*zip(*curve),
                      styles[settings_seen.index(setting(cell.hparams)) % len(styles)],
                      color=colors[index % len(colors)], marker=".",
                      label=f"{paper.BASELINE_TITLES.get(baseline, baseline)}, "
                            f"{describe(setting(cell.hparams))}")
    curve_axes.set_xlabel("training step")
    curve_axes.set_ylabel("validation NLL (nats), mean over seeds")
    curve_axes.set_title(f"{dataset}: validation NLL during training")
    curve_axes.grid(alpha=0.3)
    if traced:
      curve_axes.legend(fontsize="x-small", ncol=2)
  figure.tight_layout()
  figure.savefig(path, dpi=100)
  plt.close(figure)


def plot_claims(path, claim_lines):
  """Each claim line's mean paired difference with its interval; left of 0 favours the claim."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top

  shown = [line for line in claim_lines if line.difference is not None]
  figure, axes = plt.subplots(figsize=(10, 1.2 + 0.45 * len(shown)))
  y = list(range(len(shown)))[::-1]
  for yi, line in zip(y, shown):
    e = line.difference
    half = 0 if e.low is None else e.high - e.mean
    axes.errorbar([e.mean], [yi], xerr=[half], fmt="o", capsize=3,
                  color={"holds": "tab:green", "reversed": "tab:red"}.get(line.verdict, "0.4"))
  axes.axvline(0, color="black", linewidth=0.8)
  axes.set_yticks(y)
  axes.set_yticklabels([f"{line.claim.text} ({_describe(line.context)})" for line in shown],
                       fontsize="small")
  axes.set_xlabel(f"Δ test NLL (a − b), nats: mean over seeds, {estimates.CONFIDENCE:.0%} "
                  "interval\n"
                  "green: holds, red: reversed, grey: not resolved")
  axes.grid(axis="x", alpha=0.3)
  figure.tight_layout()
  figure.savefig(path, dpi=100)
  plt.close(figure)


def collect(grid, all_cells, results_dir, command, trainer=None, published=None,
            reused_from=None):
  """Writes <results_dir>/<name>.md, .csv and .png (and _claims.png) from the finished runs, and
  from `published` rows ({cell: results}, see `read_published`) for cells with no results.json."""
  rows, curves = [], []
  for cell in all_cells:
    results = running.read_results(cell)
    if results is not None and running.mismatch(cell, results):
      continue  # another configuration's run; cli.main has reported it
    if results is not None:
      rows.append(running.Row(cell, results))
    elif cell in (published or {}):
      rows.append(running.Row(cell, published[cell], reused=True))
    history = running.read_history(cell)
    if history:
      curves.append((cell, history))
  os.makedirs(results_dir, exist_ok=True)
  stem = os.path.join(results_dir, grid.name)
  claim_lines = estimates.test_claims(grid.claims, all_cells, rows)
  png_names = {}
  if rows or curves:
    plot(f"{stem}.png", rows, curves, quote_paper=not grid.proxy_data)
    png_names["nll"] = f"{grid.name}.png"
  if any(line.difference is not None for line in claim_lines):
    plot_claims(f"{stem}_claims.png", claim_lines)
    png_names["claims"] = f"{grid.name}_claims.png"
  write_csv(f"{stem}.csv", rows, all_cells[0].extra_keys if all_cells else (), grid.proxy_data)
  with open(f"{stem}.md", "w") as f:
    f.write(markdown(grid, all_cells, rows, claim_lines, command, trainer, png_names,
                     reused_from))
  print(f"collected {len(rows)} of {len(all_cells)} runs into {stem}.md, .csv"
        + "".join(f", {name}" for name in png_names.values()), flush=True)
