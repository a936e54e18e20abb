"""NASOA from Python: fine-tune a model for a dataset within a time budget, in one call.

.. code-block:: python

    import nasoa
    model = nasoa.fit("builtin:digits", "1m")   # a single-machine cluster, warm-started
    model.accuracy, model.plan, model.curve
    model.predict(images)                       # (class, probability) per image
    nasoa.leaderboard()                         # finished jobs as a pandas DataFrame

- :func:`fit`: plan, fine-tune and return the fine-tuned model (``FineTuned``).
- :class:`Client`: the adaptor service (submit, plan, wait, jobs, cancel, stats, report).
- :func:`leaderboard`, :func:`write_report`: finished jobs as a DataFrame, or an HTML page.
- :func:`job_record`, :func:`plan_record`: jobs and plans as plain values (what ``--json`` prints).
- ``nasoa.cli``: ``nasoa-submit``, the command line on top of this API.

Names are loaded on first use (listed in ``__init__.pyi``).
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)
