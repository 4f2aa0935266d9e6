"""Ray Tune searches over coarse-ranker settings, scored by a simulated online A/B.

    python -m tuning --config configs/tune_default.toml      (python -m tuning --help)

- ``tuning.config``: the search config (TOML -> ``SearchConfig``), the search space;
- ``tuning.search``: shared inputs built once, the ``Tuner`` (searcher, ASHA, failures,
  resume), the results table;
- ``tuning.trial``: one trial: train, report each epoch, score offline and online;
- ``tuning.online``: the paired (common random numbers) A/B against the control;
- ``tuning.agreement``: Kendall tau of each offline metric with the online lift;
- ``tuning.report``: tables, plots, ``best.toml``.
"""
