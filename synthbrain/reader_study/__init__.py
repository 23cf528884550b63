"""Reader study: people shown a blinded, shuffled mix of real and synthetic volumes label each one
real, synthetic or unsure, in the browser; the answers are then analysed.

Three steps, each a command (``synthbrain reader-study create | serve | analyse``) and a function:

- :func:`~synthbrain.reader_study.create.create_study` draws real volumes from a prepared cohort and
  synthetic ones from a generator (or a folder it wrote), brings both through the same intensity
  handling and writes a blinded study folder (:mod:`synthbrain.reader_study.study` describes it),
  then checks it for trivial cues (:mod:`synthbrain.reader_study.cues`).
- :func:`~synthbrain.reader_study.server.create_app` is the Flask application a reader opens in the
  browser; answers go to a SQLite database in the study folder
  (:mod:`synthbrain.reader_study.store`).
- :func:`~synthbrain.reader_study.analysis.analyse` computes per-reader accuracy, sensitivity and
  specificity with Wilson intervals, agreement (Cohen's and Fleiss' kappa), accuracy against
  confidence and the synthetic cases that fooled readers most, and writes a Markdown report.

The modules are imported on use, so ``import synthbrain.reader_study`` stays light.
"""
