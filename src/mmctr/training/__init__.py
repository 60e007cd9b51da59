"""Training: the loop (``loop``), metrics, checkpoints and run directories, submissions.

Import from the submodules; this package stays empty so that ``mmctr.config`` can import
``mmctr.config.train`` without pulling in the loop.
"""
