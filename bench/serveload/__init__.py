"""The parts of bench/serve_load.py, the load test of `mmctr serve` (see its docstring).

``procs``: start the server, read its memory and CPU from /proc; ``bodies``: seeded request
bodies, valid and malformed; ``client``: send them and time them, and the in-process reference;
``report``: the JSON report.
"""
