"""Benchmarks of vitkd: speed against plain PyTorch and timm, accuracy of the methods on real data.

The scripts ``scripts/bench_speed.py``, ``scripts/bench_accuracy.py`` and ``scripts/bench_losses.py``
are thin command lines over these modules:

* :mod:`vitkd.benchmark.timing`: interleaved repetitions and their median; the loss timings.
* :mod:`vitkd.benchmark.steps`: one training step three ways (vitkd engine, plain PyTorch, timm's
  distillation task) on the same in-memory batches, and the data loader's throughput.
* :mod:`vitkd.benchmark.accuracy`: the ``recipes/bench`` runs over seeds and their aggregation.
* :mod:`vitkd.benchmark.report`: Markdown tables, JSON files and a description of the machine.
* :mod:`vitkd.benchmark.plots`: the accuracy bar chart and learning curves (matplotlib, Agg).
"""
