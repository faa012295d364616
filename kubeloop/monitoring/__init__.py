"""Monitoring: drift, performance decay and the retraining decision.

- ``profile``: the reference profile a registry version carries (what the
  training data looked like), built once at training time;
- ``stats``: per-column sufficient statistics accumulated batch by batch, and
  the drift statistics and verdicts computed from them;
- ``stream``: Parquet or CSV data, local or ``s3://``, read in bounded batches;
- ``decay``: ground-truth labels joined to the prediction logs, the model's
  metric per time window against its metric at training time;
- ``policy``: the retraining decision, a pure function;
- ``report``: the HTML and Markdown report and the JSON verdict.
"""
