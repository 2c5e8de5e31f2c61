"""Sample quality: the ADM evaluation suite (FID, sFID, Inception Score, precision/recall) and the
embedded shapes evaluator that needs no download.

Modules:

- :mod:`ditscale.metrics.frechet`: feature statistics and the Fréchet distance (numpy/scipy).
- :mod:`ditscale.metrics.scores`: Inception Score and improved precision/recall (numpy).
- :mod:`ditscale.metrics.inception`: the FID-Inception network (pytorch-fid weight layout) and ADM's
  TF1-style preprocessing.
- :mod:`ditscale.metrics.shapes_evaluator`: a small network trained on the procedural ``shapes`` data,
  for a Fréchet distance and GenEval-style attribute accuracy.
- :mod:`ditscale.metrics.batch`: ADM-format ``.npz`` sample / reference batches and image folders.
- :mod:`ditscale.metrics.frame`: the frame of a score: the real-vs-real floor of two halves of the
  reference and the chance level of an accuracy (numpy).
- :mod:`ditscale.metrics.evaluate`: one call from two batches to the metrics (and, asked, their frame).
"""
